//! The edge checks every request passes before routing: path normalisation, Origin and Host
//! checks, and the Content-Length + Transfer-Encoding scan of raw HTTP/1 bytes.
//!
//! Each check either passes or yields a [`ProxyError`] the server renders in the route's error shape.
//! Nothing here reads bodies or knows about compression.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::{HeaderMap, Uri, header};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::ProxyError;

/// The client's address, set on every request by the connection that carried it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub(crate) std::net::SocketAddr);

/// Refuses request paths whose meaning a URL parser (ours when building the upstream URL, or
/// the upstream's) could change: dot-segments (`.`, `..`, also as `%2e`), backslashes, encoded
/// slashes or backslashes (`%2f`, `%5c`) and empty segments (`//`). Nothing is rewritten: a
/// path either passes unchanged or is refused, so routing and the upstream see the same path.
pub(crate) fn check_path(path: &str) -> Result<(), ProxyError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(ProxyError::InvalidPath("the path must start with '/'"));
    };
    if path.contains('\\') {
        return Err(ProxyError::InvalidPath("backslashes are not allowed"));
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err(ProxyError::InvalidPath(
            "encoded slashes (%2F, %5C) are not allowed",
        ));
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() && i != last {
            return Err(ProxyError::InvalidPath(
                "empty path segments (//) are not allowed",
            ));
        }
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        if decoded == "." || decoded == ".." {
            return Err(ProxyError::InvalidPath(
                "dot-segments (., .., %2e) are not allowed",
            ));
        }
    }
    Ok(())
}

/// The request's host as the client addressed it: the URI authority (HTTP/2, absolute-form)
/// or the `Host` header.
pub(crate) fn request_host<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|v| v.to_str().ok()))
}

/// A browser's `Origin` must be listed in `allowed` (`*` allows any); with an empty list only
/// same-origin pages pass (the Origin's host and port equal the request's Host). Requests
/// without `Origin` (SDKs, curl, same-origin GETs) always pass.
pub(crate) fn check_origin(
    headers: &HeaderMap,
    host: Option<&str>,
    allowed: &[String],
) -> Result<(), ProxyError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return Ok(());
    }
    if allowed.is_empty() {
        let origin_host = origin
            .parse::<Uri>()
            .ok()
            .and_then(|u| u.authority().map(|a| a.as_str().to_ascii_lowercase()));
        if let (Some(o), Some(h)) = (origin_host, host)
            && o.eq_ignore_ascii_case(h)
        {
            return Ok(());
        }
    }
    Err(ProxyError::Forbidden(
        "this Origin is not allowed (server.allowed_origins)",
    ))
}

/// With the proxy on a loopback address and no proxy keys, a request must name a loopback
/// host (`localhost`, `*.localhost`, `127.0.0.0/8`, `[::1]`): a page whose DNS name was rebound
/// to 127.0.0.1 still sends its own name as Host and is refused.
pub(crate) fn check_loopback_host(host: Option<&str>) -> Result<(), ProxyError> {
    let Some(host) = host else {
        return Ok(());
    };
    if is_loopback_name(strip_port(host)) {
        Ok(())
    } else {
        Err(ProxyError::Forbidden(
            "the proxy listens on loopback and only answers loopback Host names \
             (server.loopback_host_check)",
        ))
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn is_loopback_name(host: &str) -> bool {
    let lower = host.to_ascii_lowercase();
    let lower = lower.trim_end_matches('.');
    lower == "localhost"
        || lower.ends_with(".localhost")
        || lower.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Marks a request whose head carried both `Content-Length` and `Transfer-Encoding`.
///
/// hyper drops `Content-Length` in that case (RFC 9112 §6.3: Transfer-Encoding wins) and closes
/// the connection after the response, so the service cannot see the conflict; [`ScanIo`] reads
/// the raw bytes and the connection inserts this marker into the request's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AmbiguousLength;

/// A request's `Transfer-Encoding` may name `chunked` only: the server decodes chunked framing,
/// and any other coding (`gzip, chunked`) would be dropped on the way upstream, leaving coded
/// bytes labelled as plain. RFC 9112 section 6.1: 501 for a coding the server does not
/// understand.
pub(crate) fn check_transfer_coding(headers: &http::HeaderMap) -> Result<(), ProxyError> {
    for value in headers.get_all(http::header::TRANSFER_ENCODING) {
        let text = value.to_str().unwrap_or("?");
        let unknown = text
            .split(',')
            .map(str::trim)
            .any(|c| !c.eq_ignore_ascii_case("chunked"));
        if unknown {
            return Err(ProxyError::UnsupportedTransferCoding(
                text.chars().take(64).collect(),
            ));
        }
    }
    Ok(())
}

/// Largest request head the scanner buffers; beyond it scanning stops (hyper refuses such heads).
const MAX_HEAD: usize = 256 * 1024;
const MAX_HEADERS: usize = 128;
const MAX_LINE: usize = 4096;

enum ScanState {
    Head,
    FixedBody(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    /// Not HTTP/1 requests any more (HTTP/2, an upgrade, a parse error, a flagged request).
    Done,
}

/// What the scanner of one connection found, shared with the connection's service.
#[derive(Debug)]
pub(crate) struct ScanReport {
    /// 1-based number of the first request whose head has both `Content-Length` and
    /// `Transfer-Encoding` (0: none).
    pub(crate) flagged: AtomicU64,
    /// The number of request heads read when the scanner had to stop following the framing
    /// (an upgrade, `CONNECT`, a flagged request, a head over [`MAX_HEAD`], bytes that are not
    /// HTTP/1); `u64::MAX` while it follows. HTTP/1 requests after it cannot be vouched for:
    /// the response to that request closes the connection, and later ones are refused.
    pub(crate) blind_after: AtomicU64,
}

impl Default for ScanReport {
    fn default() -> Self {
        Self {
            flagged: AtomicU64::new(0),
            blind_after: AtomicU64::new(u64::MAX),
        }
    }
}

/// Follows HTTP/1 message framing on the raw request bytes of one connection (see
/// [`ScanReport`]).
pub(crate) struct LengthScan {
    state: ScanState,
    buf: Vec<u8>,
    requests: u64,
    report: Arc<ScanReport>,
}

impl LengthScan {
    pub(crate) fn new(report: Arc<ScanReport>) -> Self {
        Self {
            state: ScanState::Head,
            buf: Vec::new(),
            requests: 0,
            report,
        }
    }

    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                ScanState::Done => return,
                ScanState::Head => {
                    if self.buf.is_empty() {
                        // hyper skips blank lines before a request line
                        let skip = data
                            .iter()
                            .take_while(|b| **b == b'\r' || **b == b'\n')
                            .count();
                        data = &data[skip..];
                        if data.is_empty() {
                            return;
                        }
                    }
                    let before = self.buf.len();
                    self.buf.extend_from_slice(data);
                    match self.parse_head() {
                        Some(len) => {
                            let used = len.saturating_sub(before);
                            data = &data[used..];
                            self.buf.clear();
                        }
                        None => {
                            if self.buf.len() > MAX_HEAD {
                                self.stop();
                            }
                            return;
                        }
                    }
                }
                ScanState::FixedBody(left) => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    data = &data[n as usize..];
                    if *left == 0 {
                        self.state = ScanState::Head;
                    }
                }
                ScanState::ChunkData(left) => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    data = &data[n as usize..];
                    if *left == 0 {
                        self.state = ScanState::ChunkDataEnd;
                    }
                }
                ScanState::ChunkSize | ScanState::ChunkDataEnd | ScanState::Trailers => {
                    let Some(end) = data.iter().position(|b| *b == b'\n') else {
                        self.buf.extend_from_slice(data);
                        if self.buf.len() > MAX_LINE {
                            self.stop();
                        }
                        return;
                    };
                    self.buf.extend_from_slice(&data[..end]);
                    data = &data[end + 1..];
                    let line = std::mem::take(&mut self.buf);
                    self.on_line(line.strip_suffix(b"\r").unwrap_or(&line));
                }
            }
        }
    }

    fn stop(&mut self) {
        self.state = ScanState::Done;
        self.buf = Vec::new();
        self.report
            .blind_after
            .fetch_min(self.requests, Ordering::Relaxed);
    }

    fn on_line(&mut self, line: &[u8]) {
        match self.state {
            ScanState::ChunkSize => {
                let size = line
                    .split(|b| *b == b';')
                    .next()
                    .unwrap_or(b"")
                    .trim_ascii();
                match std::str::from_utf8(size)
                    .ok()
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                {
                    Some(0) => self.state = ScanState::Trailers,
                    Some(n) => self.state = ScanState::ChunkData(n),
                    None => self.stop(),
                }
            }
            ScanState::ChunkDataEnd => {
                if line.is_empty() {
                    self.state = ScanState::ChunkSize;
                } else {
                    self.stop();
                }
            }
            ScanState::Trailers if line.is_empty() => self.state = ScanState::Head,
            _ => {}
        }
    }

    /// Parses the buffered head; returns its length when complete.
    fn parse_head(&mut self) -> Option<usize> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let len = match req.parse(&self.buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return None,
            Err(_) => {
                self.stop();
                return None;
            }
        };
        self.requests += 1;
        let mut content_length: Option<u64> = None;
        let mut transfer_encoding = false;
        let mut opaque = req.method == Some("CONNECT");
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                content_length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .or(Some(u64::MAX));
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                transfer_encoding = true;
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                opaque = true;
            }
        }
        if content_length.is_some() && transfer_encoding {
            self.report.flagged.store(self.requests, Ordering::Relaxed);
            self.stop();
            return None;
        }
        self.state = if opaque {
            ScanState::Done
        } else if transfer_encoding {
            ScanState::ChunkSize
        } else {
            match content_length {
                Some(u64::MAX) => ScanState::Done,
                Some(n) if n > 0 => ScanState::FixedBody(n),
                _ => ScanState::Head,
            }
        };
        if matches!(self.state, ScanState::Done) {
            self.stop();
            return None;
        }
        Some(len)
    }
}

/// A client connection whose incoming bytes pass through a [`LengthScan`].
pub(crate) struct ScanIo<T> {
    inner: T,
    scan: LengthScan,
}

impl<T> ScanIo<T> {
    pub(crate) fn new(inner: T, report: Arc<ScanReport>) -> Self {
        Self {
            inner,
            scan: LengthScan::new(report),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ScanIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &result {
            this.scan.feed(&buf.filled()[before..]);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ScanIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn paths() {
        for ok in [
            "/v1/chat/completions",
            "/v1/models/",
            "/",
            "/v1/files/a.b",
            "/v1/x%2ey",
            "/v1/...",
        ] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/v1/./chat/completions",
            "/v1/../x",
            "/v1/%2e/chat/completions",
            "/v1/%2E%2e/x",
            "/v1/.%2E",
            "/v1/chat\\completions",
            "/v1/chat%2fcompletions",
            "/v1/chat%5Ccompletions",
            "/v1//chat/completions",
            "/v1/..",
            "*",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }

    fn with_origin(o: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        h
    }

    #[test]
    fn origins() {
        let none: Vec<String> = Vec::new();
        assert!(check_origin(&HeaderMap::new(), Some("127.0.0.1:8080"), &none).is_ok());
        let same = with_origin("http://127.0.0.1:8080");
        assert!(check_origin(&same, Some("127.0.0.1:8080"), &none).is_ok());
        assert!(check_origin(&same, Some("127.0.0.1:9090"), &none).is_err());
        let evil = with_origin("https://evil.example");
        assert!(check_origin(&evil, Some("127.0.0.1:8080"), &none).is_err());
        assert!(check_origin(&with_origin("null"), Some("127.0.0.1:8080"), &none).is_err());
        let listed = vec!["https://app.example".to_string()];
        assert!(check_origin(&with_origin("https://app.example"), None, &listed).is_ok());
        assert!(check_origin(&evil, None, &listed).is_err());
        // with a list, same-origin no longer passes by itself
        assert!(check_origin(&same, Some("127.0.0.1:8080"), &listed).is_err());
        assert!(check_origin(&evil, None, &["*".to_string()]).is_ok());
    }

    #[test]
    fn loopback_hosts() {
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "localhost:1",
            "LOCALHOST",
            "app.localhost:3000",
            "[::1]:8080",
            "127.1.2.3",
        ] {
            assert!(check_loopback_host(Some(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "10.0.0.1:8080",
            "localhost.evil.example",
            "[::2]:80",
        ] {
            assert!(check_loopback_host(Some(bad)).is_err(), "{bad}");
        }
        assert!(check_loopback_host(None).is_ok());
    }

    fn scan(chunks: &[&[u8]]) -> u64 {
        scan_report(chunks).flagged.load(Ordering::Relaxed)
    }

    fn scan_report(chunks: &[&[u8]]) -> Arc<ScanReport> {
        let report = Arc::new(ScanReport::default());
        let mut s = LengthScan::new(report.clone());
        for c in chunks {
            s.feed(c);
        }
        report
    }

    /// Where the scanner has to stop following the framing, it says after which request, so
    /// the connection can be closed instead of passing unscanned requests.
    #[test]
    fn records_where_it_goes_blind() {
        let blind = |chunks: &[&[u8]]| scan_report(chunks).blind_after.load(Ordering::Relaxed);
        let plain = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(blind(&[plain, plain]), u64::MAX);
        for opaque in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: foo\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(
                blind(&[plain, opaque]),
                2,
                "{}",
                String::from_utf8_lossy(opaque)
            );
        }
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD + 10));
        assert_eq!(blind(&[plain, huge.as_bytes()]), 1);
        let both = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(blind(&[plain, both]), 2);
    }

    #[test]
    fn flags_content_length_with_transfer_encoding() {
        let both = b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(scan(&[both]), 1);
        // byte by byte
        let bytes: Vec<&[u8]> = both.chunks(1).collect();
        assert_eq!(scan(&bytes), 1);
        let te_first =
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n";
        assert_eq!(scan(&[te_first]), 1);
    }

    #[test]
    fn follows_framing_across_requests() {
        // a fixed body that looks like a head, then a chunked body with a fake head, then the
        // ambiguous third request
        let body_len = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n".len();
        let first = format!(
            "POST / HTTP/1.1\r\nContent-Length: {body_len}\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n"
        );
        let second = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let third =
            b"\r\nPOST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(scan(&[first.as_bytes(), second]), 0);
        assert_eq!(scan(&[first.as_bytes(), second, third]), 3);
        let all = [first.as_bytes(), second, third].concat();
        let bytes: Vec<&[u8]> = all.chunks(3).collect();
        assert_eq!(scan(&bytes), 3);
    }

    #[test]
    fn stops_on_http2_and_garbage() {
        let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        preface.extend_from_slice(
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(scan(&[&preface]), 0);
    }
}
