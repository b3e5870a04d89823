//! The event log: JSON lines appended by a dedicated writer thread, rotated by size.
//!
//! Request handlers only push into a channel bounded by events and by bytes (`queue`,
//! `queue_bytes`); past the bytes an event's content is left out, and when it still does not fit
//! the event is dropped and counted (`lingua_events_dropped_total`) rather than slowing a request
//! down or holding prompt copies without bound. The writer flushes
//! whenever the channel runs empty, so a quiet proxy's log is always complete on disk.
//!
//! The log survives its file being moved or deleted by someone else (an operator, logrotate
//! without `copytruncate`): before each batch the writer compares the open file's device and
//! inode with what the path names now, and reopens the path when they differ. What was written
//! before stays in the moved file; the proxy's own rotated files are left intact.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use super::event::Event;

/// Handle for appending events; cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    tx: SyncSender<(Event, u64)>,
    dropped: Arc<AtomicU64>,
    /// Bytes held by queued events, and their bound.
    queued_bytes: Arc<AtomicU64>,
    max_bytes: u64,
    /// Events accepted but not yet written and flushed.
    pending: Arc<AtomicU64>,
    path: PathBuf,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open the event log {path}: {source}")]
pub struct EventLogError {
    path: PathBuf,
    source: std::io::Error,
}

struct Writer {
    path: PathBuf,
    rotate_bytes: u64,
    keep_files: usize,
    out: BufWriter<File>,
    size: u64,
    /// Device and inode of the open file.
    id: FileId,
}

/// Which file an open handle or a path is (device and inode); `None` where the platform has no
/// such notion (the check is then skipped).
type FileId = Option<(u64, u64)>;

#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_id(_meta: &std::fs::Metadata) -> FileId {
    None
}

fn open(path: &Path) -> std::io::Result<(BufWriter<File>, u64, FileId)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    // Prompts and answers may be inside (`log_content`): owner only, rotations included (a
    // rename keeps the mode), and a file an older version left readable is narrowed.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let meta = file.metadata()?;
    Ok((BufWriter::new(file), meta.len(), file_id(&meta)))
}

/// `events.jsonl` → `events.jsonl.1`.
pub fn rotated_path(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl Writer {
    /// Reopens the path when the open file is no longer the one it names (moved or deleted).
    fn follow_path(&mut self) -> std::io::Result<()> {
        if self.id.is_none() {
            return Ok(());
        }
        let now = match std::fs::metadata(&self.path) {
            Ok(meta) => file_id(&meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if now == self.id {
            return Ok(());
        }
        // Whatever is buffered belongs to the old file (still open, wherever it is now).
        self.out.flush()?;
        let (out, size, id) = open(&self.path)?;
        tracing::warn!(path = %self.path.display(), "the event log file was moved or deleted; reopened it");
        metrics::counter!("lingua_events_reopened_total").increment(1);
        self.out = out;
        self.size = size;
        self.id = id;
        Ok(())
    }

    fn write(&mut self, event: &Event) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.rotate_bytes {
            self.rotate()?;
        }
        self.out.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// Shifts `path.{k}` to `path.{k+1}` (dropping the oldest) and starts an empty `path`.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        if self.keep_files == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(rotated_path(&self.path, self.keep_files));
            for k in (1..self.keep_files).rev() {
                let from = rotated_path(&self.path, k);
                if from.exists() {
                    std::fs::rename(&from, rotated_path(&self.path, k + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated_path(&self.path, 1))?;
        }
        let (out, size, id) = open(&self.path)?;
        self.out = out;
        self.size = size;
        self.id = id;
        Ok(())
    }

    fn run(mut self, rx: Receiver<(Event, u64)>, pending: Arc<AtomicU64>, bytes: Arc<AtomicU64>) {
        while let Ok(first) = rx.recv() {
            if let Err(e) = self.follow_path() {
                tracing::error!(path = %self.path.display(), error = %e, "cannot reopen the event log");
            }
            let mut next = Some(first);
            let mut batch = 0;
            while let Some((event, size)) = next {
                batch += 1;
                if let Err(e) = self.write(&event) {
                    tracing::error!(path = %self.path.display(), error = %e, "cannot write the event log");
                    metrics::counter!("lingua_events_dropped_total", "reason" => "io").increment(1);
                }
                drop(event);
                bytes.fetch_sub(size, Ordering::AcqRel);
                next = rx.try_recv().ok();
            }
            if let Err(e) = self.out.flush() {
                tracing::error!(path = %self.path.display(), error = %e, "cannot flush the event log");
            }
            pending.fetch_sub(batch, Ordering::AcqRel);
        }
        let _ = self.out.flush();
    }
}

impl EventLog {
    /// Opens (appending to) `path` and starts the writer thread; at most `capacity` events and
    /// `max_bytes` bytes wait for it.
    pub fn open(
        path: &Path,
        rotate_bytes: u64,
        keep_files: usize,
        capacity: usize,
        max_bytes: u64,
    ) -> Result<Self, EventLogError> {
        let (out, size, id) = open(path).map_err(|source| EventLogError {
            path: path.to_owned(),
            source,
        })?;
        let writer = Writer {
            path: path.to_owned(),
            rotate_bytes: rotate_bytes.max(1),
            keep_files,
            out,
            size,
            id,
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity.max(1));
        let pending = Arc::new(AtomicU64::new(0));
        let writer_pending = pending.clone();
        let queued_bytes = Arc::new(AtomicU64::new(0));
        let writer_bytes = queued_bytes.clone();
        std::thread::Builder::new()
            .name("lingua-events".into())
            .spawn(move || writer.run(rx, writer_pending, writer_bytes))
            .map_err(|source| EventLogError {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            queued_bytes,
            max_bytes,
            pending,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues one event; never blocks.
    pub fn append(&self, mut event: Event) {
        let mut size = event.approx_bytes();
        if !self.take_bytes(size) {
            event.omit_content();
            size = event.approx_bytes();
            metrics::counter!("lingua_events_content_omitted_total").increment(1);
            if !self.take_bytes(size) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("lingua_events_dropped_total", "reason" => "queue_bytes")
                    .increment(1);
                return;
            }
        }
        self.pending.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send((event, size)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.give_back(size);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("lingua_events_dropped_total", "reason" => "queue_full")
                    .increment(1);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.give_back(size);
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts `size` more queued bytes unless that passes `max_bytes`.
    fn take_bytes(&self, size: u64) -> bool {
        self.queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(size).filter(|&n| n <= self.max_bytes)
            })
            .is_ok()
    }

    fn give_back(&self, size: u64) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
        self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
    }

    /// Bytes held by events waiting for the writer.
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes.load(Ordering::Acquire)
    }

    /// Events accepted but not yet on disk (written and flushed).
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Acquire)
    }

    /// Waits (blocking) until every accepted event is on disk, at most `timeout`; returns
    /// whether it got there.
    pub fn wait_flushed(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while self.pending() > 0 {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        true
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_ids(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Event>(l).ok())
            .map(|e| e.request_id)
            .collect()
    }

    #[test]
    fn wait_flushed_means_on_disk() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("events.jsonl");
        let log =
            EventLog::open(&path, 1 << 20, 1, 1024, u64::MAX).unwrap_or_else(|e| panic!("{e}"));
        for i in 0..200 {
            log.append(Event {
                request_id: format!("r{i}"),
                ..Event::default()
            });
        }
        assert!(log.wait_flushed(std::time::Duration::from_secs(10)));
        assert_eq!(log.pending(), 0);
        assert_eq!(read_ids(&path).len(), 200);
    }

    #[test]
    fn queued_bytes_are_bounded_content_first() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("events.jsonl");
        let log =
            EventLog::open(&path, 1 << 30, 1, 1024, 64 * 1024).unwrap_or_else(|e| panic!("{e}"));
        let big = |id: &str| Event {
            request_id: id.into(),
            prompt: Some(serde_json::json!([{"role": "user", "content": "x".repeat(100_000)}])),
            answer: Some("y".repeat(1000)),
            ..Event::default()
        };
        // Fits: kept whole.
        log.append(Event {
            prompt: None,
            answer: Some("small answer".into()),
            ..big("small")
        });
        log.append(Event {
            prompt: None,
            ..big("mid")
        });
        // A prompt larger than the whole queue: the event stays, its content goes.
        log.append(big("big"));
        assert!(log.wait_flushed(std::time::Duration::from_secs(10)));
        assert_eq!(log.queued_bytes(), 0);
        let events: Vec<Event> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert_eq!(events.len(), 3);
        assert!(!events[1].content_omitted);
        assert_eq!(events[1].answer.as_deref().map(str::len), Some(1000));
        assert_eq!(events[2].request_id, "big");
        assert!(events[2].content_omitted);
        assert!(events[2].prompt.is_none() && events[2].answer.is_none());
        assert_eq!(log.dropped(), 0);

        // A queue smaller than an event's fixed part: dropped and counted.
        let tiny = EventLog::open(&dir.path().join("tiny.jsonl"), 1 << 20, 1, 1024, 100)
            .unwrap_or_else(|e| panic!("{e}"));
        tiny.append(Event::default());
        assert_eq!(tiny.dropped(), 1);
        assert_eq!(tiny.pending(), 0);
    }

    fn append_ids(log: &EventLog, ids: std::ops::Range<usize>) {
        for i in ids {
            log.append(Event {
                request_id: format!("r{i:03}"),
                ..Event::default()
            });
        }
        assert!(log.wait_flushed(std::time::Duration::from_secs(10)));
    }

    fn ids(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("r{i:03}")).collect()
    }

    /// The log and its rotations are readable by the owner only.
    #[cfg(unix)]
    #[test]
    fn files_are_created_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "").unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("{e}"));
        let log = EventLog::open(&path, 200, 2, 1024, u64::MAX).unwrap_or_else(|e| panic!("{e}"));
        append_ids(&log, 0..20);
        let mode = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(mode(&path), 0o600);
        assert!(rotated_path(&path, 1).exists());
        assert_eq!(mode(&rotated_path(&path, 1)), 0o600);
    }

    #[test]
    fn reopens_a_deleted_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("events.jsonl");
        let log =
            EventLog::open(&path, 1 << 20, 2, 1024, u64::MAX).unwrap_or_else(|e| panic!("{e}"));
        append_ids(&log, 0..10);
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
        append_ids(&log, 10..25);
        assert_eq!(read_ids(&path), ids(10..25));
    }

    #[test]
    fn reopens_a_moved_file_and_leaves_it_intact() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("events.jsonl");
        let moved = dir.path().join("archived.jsonl");
        // small files: the proxy's own rotation runs too, before and after the move
        let log = EventLog::open(&path, 2000, 3, 1024, u64::MAX).unwrap_or_else(|e| panic!("{e}"));
        append_ids(&log, 0..3);
        std::fs::rename(&path, &moved).unwrap_or_else(|e| panic!("{e}"));
        append_ids(&log, 3..14);
        assert_eq!(
            read_ids(&moved),
            ids(0..3),
            "the moved file is not written to"
        );
        let mut all = Vec::new();
        for p in [
            rotated_path(&path, 3),
            rotated_path(&path, 2),
            rotated_path(&path, 1),
            path.clone(),
        ] {
            all.extend(read_ids(&p));
        }
        assert_eq!(
            all,
            ids(3..14),
            "rotated files keep every line after the move"
        );
        // moved while the writer is busy: every event lands in one of the two files
        let busy = dir.path().join("busy.jsonl");
        let log =
            EventLog::open(&busy, 1 << 20, 0, 4096, u64::MAX).unwrap_or_else(|e| panic!("{e}"));
        let mover = {
            let (busy, gone) = (busy.clone(), dir.path().join("busy.old"));
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(2));
                std::fs::rename(&busy, &gone).unwrap_or_else(|e| panic!("{e}"));
            })
        };
        for i in 0..2000 {
            log.append(Event {
                request_id: format!("r{i:04}"),
                ..Event::default()
            });
            if i % 100 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        mover.join().unwrap_or_else(|_| panic!("mover panicked"));
        assert!(log.wait_flushed(std::time::Duration::from_secs(10)));
        log.append(Event {
            request_id: "last".into(),
            ..Event::default()
        });
        assert!(log.wait_flushed(std::time::Duration::from_secs(10)));
        let mut seen = read_ids(&dir.path().join("busy.old"));
        seen.extend(read_ids(&busy));
        assert_eq!(seen.len(), 2001, "no event is lost across the move");
        assert_eq!(read_ids(&busy).last().map(String::as_str), Some("last"));
    }

    #[test]
    fn rotates_by_size_and_keeps_every_line() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("logs/events.jsonl");
        let log = EventLog::open(&path, 600, 2, 64, u64::MAX).unwrap_or_else(|e| panic!("{e}"));
        for i in 0..12 {
            log.append(Event {
                v: 1,
                request_id: format!("r{i:02}"),
                ..Event::default()
            });
        }
        drop(log);
        // the writer thread ends once the channel is closed; wait for the last line
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let all = loop {
            let mut all = Vec::new();
            for p in [rotated_path(&path, 2), rotated_path(&path, 1), path.clone()] {
                all.extend(read_ids(&p));
            }
            if all.last().is_some_and(|id| id == "r11") || std::time::Instant::now() > deadline {
                break all;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        // an event line is ~390 bytes here, so 600-byte files hold one line each and only the
        // newest three (current + 2 kept) survive
        let kept: Vec<String> = (9..12).map(|i| format!("r{i:02}")).collect();
        assert_eq!(all, kept);
        assert!(!rotated_path(&path, 3).exists());
        for p in [rotated_path(&path, 1), path.clone()] {
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            assert!(len > 0 && len <= 600, "{} has {len} bytes", p.display());
        }
    }
}
