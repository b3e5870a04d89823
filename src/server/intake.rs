//! Buffered request bodies (intercepted requests, model-routed peeks, `/v1/compress`) under
//! three bounds, so that no body, however it is built, costs more than the process can hold:
//!
//! - a process-wide [`ByteBudget`] of bytes held at once: a body's bytes are reserved before
//!   they are read (by `Content-Length`, else chunk by chunk), and an estimate of its parsed
//!   form before it is parsed; past the budget a request waits, then gets 503;
//! - a structural [`scan`] that counts JSON values (stopping at `max_json_values`) without
//!   building a tree: 1.15 million `{"role":"a","content":"b"}` messages fit in 31 MB but
//!   would cost over a gigabyte as a `serde_json::Value`;
//! - the scan and the parse run on blocking threads, never on the async runtime.
//!
//! Invariant: every byte counted here is released when the request's [`Reservation`] drops.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ProxyError;

/// Heap bytes of one parsed JSON value with `preserve_order` and `arbitrary_precision`,
/// measured: 1M tiny values parse into about 116 MB.
pub const PARSED_BYTES_PER_VALUE: u64 = 128;

/// The budget is counted in KiB: a semaphore takes at most `u32::MAX` permits at once.
const UNIT: u64 = 1024;

/// Bytes of request bodies (and their parsed form) the process holds at once.
#[derive(Debug)]
pub struct ByteBudget {
    sem: Arc<Semaphore>,
    capacity: u32,
    wait: Duration,
}

/// What one request holds of the [`ByteBudget`]; released on drop.
#[derive(Debug, Default)]
pub struct Reservation(Option<OwnedSemaphorePermit>);

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.0.as_ref().map_or(0, |p| p.num_permits() as u64 * UNIT)
    }
}

impl ByteBudget {
    /// `bytes` in all; a request waits at most `wait` for its share.
    pub fn new(bytes: u64, wait: Duration) -> Self {
        let capacity = bytes.div_ceil(UNIT).clamp(1, u64::from(u32::MAX >> 3)) as u32;
        Self {
            sem: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            wait,
        }
    }

    /// Bytes not reserved by any request.
    pub fn available(&self) -> u64 {
        self.sem.available_permits() as u64 * UNIT
    }

    /// Adds `bytes` to `held`, waiting for them. A request never needs more than the whole
    /// budget: past it, the reservation is capped so that the request can still run alone.
    pub async fn reserve(&self, held: &mut Reservation, bytes: u64) -> Result<(), ProxyError> {
        let have = held.0.as_ref().map_or(0, |p| p.num_permits() as u64);
        let want = bytes
            .div_ceil(UNIT)
            .min(u64::from(self.capacity).saturating_sub(have)) as u32;
        if want == 0 {
            return Ok(());
        }
        let permit = match self.sem.clone().try_acquire_many_owned(want) {
            Ok(p) => p,
            Err(_) => {
                match tokio::time::timeout(self.wait, self.sem.clone().acquire_many_owned(want))
                    .await
                {
                    Ok(Ok(p)) => p,
                    _ => {
                        metrics::counter!("lingua_requests_overloaded_total", "reason" => "buffered_bytes")
                            .increment(1);
                        return Err(ProxyError::Overloaded(
                            "request bytes held by the proxy are at `max_buffered_bytes`",
                        ));
                    }
                }
            }
        };
        match &mut held.0 {
            Some(p) => p.merge(permit),
            slot @ None => *slot = Some(permit),
        }
        Ok(())
    }
}

/// Reads the whole body into `held`'s share of `budget`: `content_length` up front, else each
/// chunk as it arrives. 413 past `limit`, 408 when the client takes longer than `timeout` to
/// send it, 503 when the budget stays full; a partial body is never forwarded.
pub async fn collect(
    incoming: Incoming,
    content_length: Option<u64>,
    limit: u64,
    timeout: Duration,
    budget: &ByteBudget,
    held: &mut Reservation,
) -> Result<Bytes, ProxyError> {
    // Reserved before reading: the wait for the budget is not the client's slowness.
    if let Some(len) = content_length {
        if len > limit {
            return Err(ProxyError::BodyTooLarge { limit });
        }
        budget.reserve(held, len).await?;
    }
    let read = async {
        let mut body = incoming;
        let mut buf = BytesMut::with_capacity(content_length.unwrap_or(0) as usize);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ProxyError::BadRequestBody(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            let total = (buf.len() + data.len()) as u64;
            if total > limit {
                return Err(ProxyError::BodyTooLarge { limit });
            }
            if content_length.is_none_or(|len| total > len) {
                budget.reserve(held, data.len() as u64).await?;
            }
            buf.extend_from_slice(&data);
        }
        Ok(buf.freeze())
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(ProxyError::RequestTimeout(timeout.as_millis() as u64)),
    }
}

/// What the structural scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// Valid JSON with this many values (objects, arrays, keys and scalars each count one).
    Fits { values: u64 },
    /// More than the limit: never parsed into a tree.
    TooComplex { limit: u64 },
    /// Not JSON (or nested deeper than serde_json's recursion limit): serde_json's message.
    Invalid(String),
}

/// Counts `raw`'s JSON values, stopping at `max_values`; allocates nothing per value.
pub fn scan(raw: &[u8], max_values: u64) -> Shape {
    let left = Cell::new(max_values.saturating_add(1));
    let mut de = serde_json::Deserializer::from_slice(raw);
    let counted = Counter { left: &left }
        .deserialize(&mut de)
        .and_then(|()| de.end());
    match counted {
        Ok(()) => Shape::Fits {
            values: max_values.saturating_add(1) - left.get(),
        },
        Err(_) if left.get() == 0 => Shape::TooComplex { limit: max_values },
        Err(e) => Shape::Invalid(e.to_string()),
    }
}

/// A visitor that counts each value down from `left`, failing when it reaches zero.
#[derive(Clone, Copy)]
struct Counter<'a> {
    left: &'a Cell<u64>,
}

impl Counter<'_> {
    fn tick<E: de::Error>(self) -> Result<(), E> {
        match self.left.get() {
            0 | 1 => {
                self.left.set(0);
                Err(E::custom("too many JSON values"))
            }
            n => {
                self.left.set(n - 1);
                Ok(())
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Counter<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.tick()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.tick()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.tick()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.tick()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.tick()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.tick()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.tick()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.tick()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    /// With `arbitrary_precision` a number arrives as a one-entry map; it counts a little more
    /// than a plain number, which only makes the estimate safer.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.tick()?;
        while map.next_key::<IgnoredAny>()?.is_some() {
            self.tick()?;
            map.next_value_seed(self)?;
        }
        Ok(())
    }
}

/// Runs `f` on a blocking thread; a panic there is an internal error, not a fallen proxy.
pub async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ProxyError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ProxyError::Internal(format!("body parsing stopped: {e}")))
}

/// Bodies up to this size are scanned and parsed where they are (tens of microseconds at
/// most); handing them to a blocking thread would cost more, in context switches, than the
/// parse.
pub const INLINE_PARSE_BYTES: usize = 16 * 1024;

/// [`off_runtime`] for work over `len` bytes of body: inline up to [`INLINE_PARSE_BYTES`].
pub async fn off_runtime_if_large<T: Send + 'static>(
    len: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ProxyError> {
    if len > INLINE_PARSE_BYTES {
        return off_runtime(f).await;
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| ProxyError::Internal("body parsing stopped: it panicked".into()))
}

/// What [`parse_with`] made of a body.
#[derive(Debug)]
pub enum Parsed<T> {
    /// The body fitted and `parse` ran on it.
    Value(T),
    /// More than `max_json_values`: not parsed.
    TooComplex { limit: u64 },
    /// Not JSON: serde_json's message.
    Invalid(String),
}

/// Scans `raw`; when it fits, reserves its parsed form in `budget` and runs `parse` on it, off
/// the runtime unless the body is small.
pub async fn parse_with<T: Send + 'static>(
    raw: &Bytes,
    max_values: u64,
    budget: &ByteBudget,
    held: &mut Reservation,
    parse: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> Result<Parsed<T>, ProxyError> {
    let bytes = raw.clone();
    let values = match off_runtime_if_large(raw.len(), move || scan(&bytes, max_values)).await? {
        Shape::Fits { values } => values,
        Shape::TooComplex { limit } => return Ok(Parsed::TooComplex { limit }),
        Shape::Invalid(e) => return Ok(Parsed::Invalid(e)),
    };
    // Strings are copied out of the body; each value carries its own node.
    budget
        .reserve(held, raw.len() as u64 + values * PARSED_BYTES_PER_VALUE)
        .await?;
    let bytes = raw.clone();
    off_runtime_if_large(raw.len(), move || Parsed::Value(parse(&bytes))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_counts_every_value_and_stops_at_the_limit() {
        // object, key, array, 3 scalars, key, string
        let raw = br#"{"a":[1,true,null],"b":"x"}"#;
        assert_eq!(scan(raw, 100), Shape::Fits { values: 8 });
        assert_eq!(scan(raw, 8), Shape::Fits { values: 8 });
        assert_eq!(scan(raw, 7), Shape::TooComplex { limit: 7 });
        assert!(matches!(scan(b"{\"a\":", 100), Shape::Invalid(_)));
        assert!(matches!(scan(b"{} {}", 100), Shape::Invalid(_)));
        let deep = "[".repeat(1000) + &"]".repeat(1000);
        assert!(
            matches!(scan(deep.as_bytes(), 1_000_000), Shape::Invalid(m) if m.contains("recursion"))
        );
    }

    #[test]
    fn scan_of_many_tiny_messages_stops_early() {
        let mut s = String::from(r#"{"messages":["#);
        for i in 0..100_000 {
            if i > 0 {
                s.push(',');
            }
            s.push_str(r#"{"role":"a","content":"b"}"#);
        }
        s.push_str("]}");
        assert_eq!(scan(s.as_bytes(), 1000), Shape::TooComplex { limit: 1000 });
        assert!(
            matches!(scan(s.as_bytes(), 1_000_000), Shape::Fits { values } if values > 500_000)
        );
    }

    #[tokio::test]
    async fn budget_waits_then_refuses_and_releases_on_drop() {
        let budget = ByteBudget::new(10 * 1024, Duration::from_millis(50));
        let mut a = Reservation::default();
        budget.reserve(&mut a, 6 * 1024).await.unwrap();
        budget.reserve(&mut a, 1).await.unwrap();
        assert_eq!(a.bytes(), 7 * 1024);
        let mut b = Reservation::default();
        let e = budget.reserve(&mut b, 4 * 1024).await.unwrap_err();
        assert!(matches!(e, ProxyError::Overloaded(_)), "{e}");
        drop(a);
        budget.reserve(&mut b, 4 * 1024).await.unwrap();
        // Larger than the whole budget: capped so that it can run alone.
        drop(b);
        let mut c = Reservation::default();
        budget.reserve(&mut c, 1 << 30).await.unwrap();
        assert_eq!(c.bytes(), 10 * 1024);
        assert_eq!(budget.available(), 0);
        drop(c);
        assert_eq!(budget.available(), 10 * 1024);
    }
}
