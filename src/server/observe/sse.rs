//! Splitting a `text/event-stream` into events as its bytes arrive: every byte is looked at
//! once, whatever the chunking, and every line ending the SSE specification allows (CRLF, LF,
//! CR, mixed freely) is recognised, so every blank-line form ends an event (`\n\n`,
//! `\r\n\r\n`, `\r\r`, `\n\r\n`, `\r\n\n`, ...).

/// Finds event ends in a stream fed piece by piece. The state carries across pieces, so a
/// caller passes only bytes it has not passed before.
#[derive(Debug, Clone)]
pub(crate) struct EventSplitter {
    /// No byte of the current line seen yet (true at the start of an event).
    line_empty: bool,
    /// The last byte was a CR: an LF right after it belongs to the same line ending.
    after_cr: bool,
    /// Bytes looked at so far.
    scanned: u64,
}

impl Default for EventSplitter {
    fn default() -> Self {
        Self {
            line_empty: true,
            after_cr: false,
            scanned: 0,
        }
    }
}

impl EventSplitter {
    /// Scans `bytes`, the continuation of what was scanned before. Returns the index just past
    /// the first event end in it (the caller passes the bytes after it next), or `None` when
    /// `bytes` holds none (all of it was scanned).
    ///
    /// An event ending in a bare CR is complete at once; an LF that turns out to follow it is
    /// part of that line ending and starts nothing, but it is counted in the next piece.
    pub(crate) fn next_end(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b != b'\n' && b != b'\r' {
                // Line content: jump to the next line ending.
                self.line_empty = false;
                self.after_cr = false;
                match bytes[i..].iter().position(|&b| b == b'\n' || b == b'\r') {
                    Some(n) => {
                        i += n;
                        continue;
                    }
                    None => break,
                }
            }
            i += 1;
            if b == b'\n' && self.after_cr {
                self.after_cr = false;
                continue;
            }
            self.after_cr = b == b'\r';
            if self.line_empty {
                // A blank line: the event ends here, with the LF of a CRLF when it is already
                // here.
                if self.after_cr && bytes.get(i) == Some(&b'\n') {
                    i += 1;
                    self.after_cr = false;
                }
                self.scanned += i as u64;
                return Some(i);
            }
            self.line_empty = true;
        }
        self.scanned += bytes.len() as u64;
        None
    }

    /// Bytes looked at so far: at most the bytes fed, however the stream was chunked.
    #[cfg_attr(not(test), allow(dead_code, reason = "read by the tests only"))]
    pub(crate) fn scanned(&self) -> u64 {
        self.scanned
    }
}

/// The lines of an event with their byte offsets; CRLF, LF and CR all end a line. Like
/// [`str::lines`], a final line ending does not start an empty line.
pub(crate) fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= text.len() {
            return None;
        }
        let rest = &text[pos..];
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        let start = pos;
        pos += end;
        if rest[end..].starts_with("\r\n") {
            pos += 2;
        } else if end < rest.len() {
            pos += 1;
        }
        Some((start, &rest[..end]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Event ends (absolute offsets) found when `stream` arrives in `chunks`.
    fn ends(stream: &[u8], cuts: &[usize]) -> (Vec<usize>, u64) {
        let mut s = EventSplitter::default();
        let mut found = Vec::new();
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(stream.len());
        for w in bounds.windows(2) {
            let mut at = w[0];
            while let Some(e) = s.next_end(&stream[at..w[1]]) {
                at += e;
                found.push(at);
            }
        }
        (found, s.scanned())
    }

    #[test]
    fn every_blank_line_form_ends_an_event() {
        for (stream, want) in [
            (&b"data: a\n\ndata: b"[..], vec![9]),
            (b"data: a\r\n\r\ndata: b", vec![11]),
            (b"data: a\r\rdata: b", vec![9]),
            (b"data: a\n\r\ndata: b", vec![10]),
            (b"data: a\r\n\ndata: b", vec![10]),
            (b"data: a\r\r\ndata: b", vec![10]),
            (b"data: a\n\rdata: b", vec![9]),
            // lines ended three ways inside one event
            (b"event: x\rid: 1\r\ndata: a\n\n", vec![25]),
            (b"data: a\n", vec![]),
            (b"data: a\r\n", vec![]),
            (b"data: a\r", vec![]),
        ] {
            assert_eq!(
                ends(stream, &[]).0,
                want,
                "{:?}",
                String::from_utf8_lossy(stream)
            );
        }
    }

    #[test]
    fn chunking_never_changes_the_events() {
        let stream = b"event: m\r\ndata: 1\r\n\r\ndata: 2\n\ndata: 3\r\rdata: 4\n\r\ndata: 5\r\n\n: c\ndata: 6\r\r\ndata: 7";
        let (whole, _) = ends(stream, &[]);
        assert_eq!(whole.len(), 6);
        for cut in 1..stream.len() {
            let (got, scanned) = ends(stream, &[cut]);
            // A CR-ended event cut before its LF ends one byte earlier; the LF opens nothing.
            let normalise = |v: &[usize]| -> Vec<usize> {
                v.iter()
                    .map(|&e| {
                        if stream.get(e) == Some(&b'\n') {
                            e + 1
                        } else {
                            e
                        }
                    })
                    .collect()
            };
            assert_eq!(normalise(&got), normalise(&whole), "cut at {cut}");
            assert_eq!(scanned, stream.len() as u64);
        }
        let every: Vec<usize> = (1..stream.len()).collect();
        let (got, scanned) = ends(stream, &every);
        assert_eq!(got.len(), whole.len());
        assert_eq!(scanned, stream.len() as u64, "each byte is scanned once");
    }

    #[test]
    fn lines_split_on_every_ending() {
        let text = "event: x\rid: 1\r\ndata: a\n\n";
        let got: Vec<(usize, &str)> = lines(text).collect();
        assert_eq!(
            got,
            vec![(0, "event: x"), (9, "id: 1"), (16, "data: a"), (24, "")]
        );
        assert_eq!(lines("a").collect::<Vec<_>>(), vec![(0, "a")]);
        assert_eq!(lines("").count(), 0);
    }
}
