//! A neutral model of a conversation: ordered messages, each with a role and text segments that
//! point back into the request JSON. Each API surface (`crate::api`) builds it from its own
//! request format; the policy only ever sees this model.
//!
//! Rewriting splices new string literals into the ORIGINAL request bytes, so every byte outside
//! the replaced text values (key order, number formatting, escapes, whitespace) stays identical.

use std::ops::Range;

use serde_json::Value;

/// One step of a path into the request JSON.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathElem {
    Key(String),
    Index(usize),
}

/// A compressible text value inside the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Where the JSON string lives (e.g. `messages/3/content/1/text`).
    pub path: Vec<PathElem>,
    pub text: String,
}

/// One message: its position, role and text segments. Non-text parts and every other field
/// (`tool_calls`, `name`, `tool_call_id`, ...) are not represented and therefore never touched.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub index: usize,
    pub role: String,
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Conversation {
    pub messages: Vec<Message>,
    /// How many leading messages lie at or before the request's last provider cache
    /// breakpoint (Anthropic `cache_control`, Responses `prompt_cache_breakpoint`); 0 when it
    /// has none. `[compression] freeze_cached_prefix` leaves them alone.
    pub cache_prefix: usize,
}

impl Conversation {
    /// Appends a message with the next index; messages without text are not recorded.
    pub fn push(&mut self, role: impl Into<String>, segments: Vec<Segment>) {
        if segments.is_empty() {
            return;
        }
        self.messages.push(Message {
            index: self.messages.len(),
            role: role.into(),
            segments,
        });
    }

    /// Marks every message recorded so far as part of the provider's cached prefix (a cache
    /// breakpoint follows them).
    pub fn cache_breakpoint(&mut self) {
        self.cache_prefix = self.messages.len();
    }
}

impl Segment {
    /// The string at `path`.
    pub fn at(path: Vec<PathElem>, text: &str) -> Self {
        Self {
            path,
            text: text.to_string(),
        }
    }
}

impl From<&str> for PathElem {
    fn from(k: &str) -> Self {
        Self::Key(k.to_string())
    }
}

impl From<usize> for PathElem {
    fn from(i: usize) -> Self {
        Self::Index(i)
    }
}

/// Produces the rewritten body: `edits` replace the string values at their paths. Splices into
/// `raw` when the paths can be located there (the normal case); otherwise re-serialises `json`.
pub fn rewrite(raw: &[u8], json: &Value, edits: &[(Vec<PathElem>, String)]) -> Vec<u8> {
    if edits.is_empty() {
        return raw.to_vec();
    }
    if let Some(out) = splice(raw, edits) {
        return out;
    }
    let mut value = json.clone();
    for (path, text) in edits {
        if let Some(slot) = pointer_mut(&mut value, path) {
            *slot = Value::String(text.clone());
        }
    }
    serde_json::to_vec(&value).unwrap_or_else(|_| raw.to_vec())
}

fn pointer_mut<'a>(mut v: &'a mut Value, path: &[PathElem]) -> Option<&'a mut Value> {
    for p in path {
        v = match p {
            PathElem::Key(k) => v.get_mut(k.as_str())?,
            PathElem::Index(i) => v.get_mut(*i)?,
        };
    }
    Some(v)
}

/// Splices the edits into the raw bytes; `None` if a path cannot be found, a target is not a
/// string, or the result would not be valid JSON.
pub fn splice(raw: &[u8], edits: &[(Vec<PathElem>, String)]) -> Option<Vec<u8>> {
    let tree = SpanParser { raw, pos: 0 }.parse_document()?;
    let mut repl: Vec<(Range<usize>, Vec<u8>)> = Vec::with_capacity(edits.len());
    for (path, text) in edits {
        let node = tree.find(raw, path)?;
        if raw.get(node.range.start) != Some(&b'"') {
            return None;
        }
        repl.push((node.range.clone(), serde_json::to_vec(text).ok()?));
    }
    repl.sort_by_key(|(r, _)| r.start);
    let mut out = Vec::with_capacity(raw.len());
    let mut at = 0;
    for (range, bytes) in repl {
        if range.start < at {
            return None; // the same value edited twice
        }
        out.extend_from_slice(raw.get(at..range.start)?);
        out.extend_from_slice(&bytes);
        at = range.end;
    }
    out.extend_from_slice(raw.get(at..)?);
    serde_json::from_slice::<serde::de::IgnoredAny>(&out).ok()?;
    Some(out)
}

#[derive(Debug)]
enum Node {
    Scalar,
    Object(Vec<(Range<usize>, Span)>),
    Array(Vec<Span>),
}

#[derive(Debug)]
struct Span {
    range: Range<usize>,
    node: Node,
}

impl Span {
    fn find(&self, raw: &[u8], path: &[PathElem]) -> Option<&Span> {
        let mut cur = self;
        for p in path {
            cur = match (p, &cur.node) {
                (PathElem::Index(i), Node::Array(items)) => items.get(*i)?,
                // serde_json keeps the LAST value of a duplicated key.
                (PathElem::Key(k), Node::Object(fields)) => fields
                    .iter()
                    .rev()
                    .find(|(kr, _)| key_equals(raw, kr.clone(), k))
                    .map(|(_, v)| v)?,
                _ => return None,
            };
        }
        Some(cur)
    }
}

fn key_equals(raw: &[u8], range: Range<usize>, key: &str) -> bool {
    let Some(lit) = raw.get(range) else {
        return false;
    };
    let inner = &lit[1..lit.len().saturating_sub(1).max(1)];
    if !inner.contains(&b'\\') {
        return inner == key.as_bytes();
    }
    serde_json::from_slice::<String>(lit).is_ok_and(|s| s == key)
}

/// A minimal structural scanner over already-validated JSON: records the byte range of every
/// value. It relies on serde_json having accepted the same bytes (nesting depth ≤ 128).
struct SpanParser<'a> {
    raw: &'a [u8],
    pos: usize,
}

impl SpanParser<'_> {
    fn parse_document(mut self) -> Option<Span> {
        let v = self.value(0)?;
        self.ws();
        (self.pos == self.raw.len()).then_some(v)
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.raw.get(self.pos) {
            self.pos += 1;
        }
    }

    fn string(&mut self) -> Option<Range<usize>> {
        let start = self.pos;
        if self.raw.get(self.pos) != Some(&b'"') {
            return None;
        }
        self.pos += 1;
        loop {
            match self.raw.get(self.pos)? {
                b'"' => {
                    self.pos += 1;
                    return Some(start..self.pos);
                }
                b'\\' => self.pos += 2,
                _ => self.pos += 1,
            }
        }
    }

    fn value(&mut self, depth: usize) -> Option<Span> {
        if depth > 256 {
            return None;
        }
        self.ws();
        let start = self.pos;
        match *self.raw.get(self.pos)? {
            b'"' => {
                let range = self.string()?;
                Some(Span {
                    range,
                    node: Node::Scalar,
                })
            }
            b'{' => {
                self.pos += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.raw.get(self.pos) == Some(&b'}') {
                    self.pos += 1;
                } else {
                    loop {
                        self.ws();
                        let key = self.string()?;
                        self.ws();
                        if self.raw.get(self.pos) != Some(&b':') {
                            return None;
                        }
                        self.pos += 1;
                        let v = self.value(depth + 1)?;
                        fields.push((key, v));
                        self.ws();
                        match self.raw.get(self.pos)? {
                            b',' => self.pos += 1,
                            b'}' => {
                                self.pos += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
                Some(Span {
                    range: start..self.pos,
                    node: Node::Object(fields),
                })
            }
            b'[' => {
                self.pos += 1;
                let mut items = Vec::new();
                self.ws();
                if self.raw.get(self.pos) == Some(&b']') {
                    self.pos += 1;
                } else {
                    loop {
                        items.push(self.value(depth + 1)?);
                        self.ws();
                        match self.raw.get(self.pos)? {
                            b',' => self.pos += 1,
                            b']' => {
                                self.pos += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
                Some(Span {
                    range: start..self.pos,
                    node: Node::Array(items),
                })
            }
            _ => {
                while let Some(&b) = self.raw.get(self.pos) {
                    if matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.pos += 1;
                }
                (self.pos > start).then_some(Span {
                    range: start..self.pos,
                    node: Node::Scalar,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{ "model":"gpt-4o", "temperature": 1.50,
  "messages": [
    {"role": "system", "content": "Be \"brief\" \u00e9"},
    {"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "second"}
    ]},
    {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
        "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "result"}
  ]}"#;

    #[test]
    fn model_of_a_chat_request() {
        let json: Value = serde_json::from_str(BODY).unwrap();
        let c = crate::api::chat::conversation(&json).unwrap();
        assert_eq!(c.messages.len(), 4);
        assert_eq!(c.messages[0].role, "system");
        assert_eq!(c.messages[0].segments[0].text, "Be \"brief\" é");
        let texts: Vec<_> = c.messages[1].segments.iter().map(|s| &s.text).collect();
        assert_eq!(texts, ["look", "second"]);
        assert!(c.messages[2].segments.is_empty());
        assert_eq!(c.messages[3].segments[0].text, "result");
    }

    #[test]
    fn splice_changes_only_the_edited_literals() {
        let json: Value = serde_json::from_str(BODY).unwrap();
        let c = crate::api::chat::conversation(&json).unwrap();
        let edits = vec![
            (
                c.messages[0].segments[0].path.clone(),
                "Be \"short\"".to_string(),
            ),
            (c.messages[1].segments[1].path.clone(), "2nd".to_string()),
        ];
        let out = rewrite(BODY.as_bytes(), &json, &edits);
        let expected = BODY
            .replace(r#""Be \"brief\" \u00e9""#, r#""Be \"short\"""#)
            .replace(r#""second""#, r#""2nd""#);
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn duplicate_keys_follow_serde_json() {
        let raw = r#"{"messages":[{"role":"user","content":"a","content":"b"}]}"#;
        let json: Value = serde_json::from_str(raw).unwrap();
        let c = crate::api::chat::conversation(&json).unwrap();
        assert_eq!(c.messages[0].segments[0].text, "b");
        let out = rewrite(
            raw.as_bytes(),
            &json,
            &[(c.messages[0].segments[0].path.clone(), "B".into())],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"messages":[{"role":"user","content":"a","content":"B"}]}"#
        );
    }

    #[test]
    fn no_messages_is_none() {
        let json: Value = serde_json::from_str(r#"{"prompt":"x"}"#).unwrap();
        assert!(crate::api::chat::conversation(&json).is_none());
    }
}
