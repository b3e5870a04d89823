//! Misbehaving upstreams and clients for the fault tests: raw TCP, so that every byte (and every
//! missing byte) on the wire is the test's choice.
#![allow(
    unsafe_code,
    reason = "SO_LINGER 0 with setsockopt, for real TCP resets"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// What a [`RawUpstream`] does once it has read a request.
#[derive(Clone, Debug)]
pub enum Script {
    /// Writes these byte strings (sleeping `pause` between them), then closes cleanly.
    Write {
        parts: Vec<Vec<u8>>,
        pause: Duration,
    },
    /// Writes these byte strings, then resets the connection (RST, no clean end).
    WriteThenReset {
        parts: Vec<Vec<u8>>,
        pause: Duration,
    },
}

/// A raw-TCP upstream on loopback that follows a [`Script`] for every request and records the
/// requests it read (head and body, as bytes).
pub struct RawUpstream {
    pub addr: std::net::SocketAddr,
    pub requests: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    pub async fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let script = script.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut stream).await else {
                        return;
                    };
                    recorded.lock().unwrap().push(request);
                    let (parts, pause, reset) = match script {
                        Script::Write { parts, pause } => (parts, pause, false),
                        Script::WriteThenReset { parts, pause } => (parts, pause, true),
                    };
                    for (i, p) in parts.iter().enumerate() {
                        if i > 0 {
                            tokio::time::sleep(pause).await;
                        }
                        if stream.write_all(p).await.is_err() {
                            return;
                        }
                        let _ = stream.flush().await;
                    }
                    if reset {
                        tokio::time::sleep(pause).await;
                        reset_now(stream);
                    } else {
                        let _ = stream.shutdown().await;
                    }
                });
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// Closes `stream` with a TCP reset (`SO_LINGER` 0).
pub fn reset_now(stream: TcpStream) {
    let std = stream.into_std().unwrap();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a correctly sized `linger` value.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&std),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_LINGER)");
    drop(std);
}

/// Reads one HTTP/1 request (head, then a `content-length` or chunked body).
pub async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let body = &buf[head_end..];
        let complete = match length {
            Some(n) => body.len() >= n,
            None if chunked => find(body, b"0\r\n\r\n").is_some(),
            None => true,
        };
        if complete {
            return Some(buf);
        }
        let n = stream.read(&mut tmp).await.ok()?;
        if n == 0 {
            return Some(buf);
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One chunk of a chunked HTTP/1 body.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// The head of a chunked `text/event-stream` response.
pub fn sse_head() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\
cache-control: no-cache\r\n\r\n"
        .to_vec()
}

/// `data: <json>\n\n` of a streamed chat-completion chunk with `content`.
pub fn sse_content(content: &str) -> String {
    let chunk = serde_json::json!({"id": "chatcmpl-raw", "object": "chat.completion.chunk",
        "created": 1, "model": "raw", "choices": [{"index": 0, "delta": {"content": content},
        "finish_reason": null}]});
    format!("data: {chunk}\n\n")
}

/// A loopback port nothing listens on (bound, then released).
pub fn refused_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A listener whose accept queue is full and that never accepts: connects to it hang until the
/// connector's timeout (Linux drops SYNs to a listener with a full queue). Keep the returned
/// values alive for as long as the blackhole is needed.
pub async fn full_backlog() -> (TcpListener, Vec<TcpStream>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    // Connect until one attempt no longer completes: the queue is full from then on.
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            _ => return (listener, fillers),
        }
    }
    panic!("the accept queue of a listen(0) socket never filled");
}

/// Sends raw bytes to `addr` and reads until the peer closes (or `limit` passes); returns what
/// arrived and whether the read ended with an error (reset) rather than a clean end.
pub async fn raw_exchange(
    addr: std::net::SocketAddr,
    request: &[u8],
    limit: Duration,
) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut tmp = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut tmp)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) => return (out, false),
            Ok(Ok(n)) => out.extend_from_slice(&tmp[..n]),
            Ok(Err(_)) => return (out, true),
        }
    }
}
