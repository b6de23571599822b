//! Parsing one line of `write`'s stdin.
//!
//! Lenient where the protocol asks for it: blank lines, unknown fields, unknown message types and
//! explicit nulls are accepted, and LOG, TRACE, CONTROL and the like are ignored. Strict where data
//! could be lost: a line that is not a JSON object, a RECORD without a readable `stream` or whose
//! `data` is not an object is an [`InputError`] naming the line. The record's `data` is kept as its
//! own text ([`RawValue`]), never parsed into a value and re-serialized, so key order, number text
//! and escapes survive exactly.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::Failure;

/// One parsed input line.
#[derive(Debug)]
pub enum Message<'a> {
    /// A RECORD.
    Record(Record<'a>),
    /// A STATE, with its own text.
    State(&'a RawValue),
    /// A TRACE STREAM_STATUS: a stream started, is running, completed or did not complete.
    StreamStatus {
        /// The stream (its namespace may be absent even when the catalog's has one).
        stream: crate::protocol::StreamDescriptor,
        /// `STARTED`, `RUNNING`, `COMPLETE` or `INCOMPLETE`.
        status: String,
    },
    /// Anything this destination does not act on (LOG, TRACE, CONTROL, unknown types).
    Ignored,
}

/// A RECORD's fields, borrowed from the line where possible.
#[derive(Debug)]
pub struct Record<'a> {
    /// The stream's name.
    pub stream: Cow<'a, str>,
    /// The stream's namespace (absent or null is `None`).
    pub namespace: Option<Cow<'a, str>>,
    /// Epoch milliseconds.
    pub emitted_at: i64,
    /// The text of `data`, a JSON object, exactly as it came.
    pub data: &'a RawValue,
}

/// A line of input this destination cannot accept.
#[derive(Debug, thiserror::Error)]
#[error("line {line} of the input {reason}")]
pub struct InputError {
    /// 1-based line number on stdin.
    pub line: u64,
    /// What is wrong with it.
    pub reason: String,
}

impl From<InputError> for Failure {
    fn from(err: InputError) -> Self {
        Failure::system(
            format!("Invalid input: {err}; the sync stopped there after committing every record before it."),
            &err,
        )
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    record: Option<RecordFields<'a>>,
    #[serde(borrow, default)]
    state: Option<&'a RawValue>,
    #[serde(borrow, default)]
    trace: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct TraceFields {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    stream_status: Option<StatusFields>,
}

#[derive(Deserialize)]
struct StatusFields {
    stream_descriptor: crate::protocol::StreamDescriptor,
    status: String,
}

#[derive(Deserialize)]
struct RecordFields<'a> {
    #[serde(borrow, default)]
    stream: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    namespace: Option<Cow<'a, str>>,
    #[serde(default)]
    emitted_at: Option<serde_json::Number>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// Parses one line (without its `\n`). Blank lines give `Ok(None)`. `now_ms` gives the time for a
/// record without `emitted_at` (asked only then).
pub fn parse_line(
    line: &str,
    line_no: u64,
    now_ms: impl Fn() -> i64,
) -> Result<Option<Message<'_>>, InputError> {
    let text = line.trim_end_matches('\r');
    if text.trim().is_empty() {
        return Ok(None);
    }
    let fail = |reason: String| InputError {
        line: line_no,
        reason,
    };
    let envelope: Envelope<'_> = serde_json::from_str(text).map_err(|e| {
        let what = if e.is_data() {
            "is not a valid Airbyte message"
        } else {
            "is not valid JSON"
        };
        fail(format!("{what} ({e})"))
    })?;
    match envelope.kind.as_deref() {
        Some("RECORD") => {
            let record = envelope
                .record
                .ok_or_else(|| fail("is a RECORD without a \"record\" object".into()))?;
            let stream = record
                .stream
                .ok_or_else(|| fail("is a RECORD without a \"stream\" name".into()))?;
            let data = record.data.ok_or_else(|| {
                fail(format!("is a RECORD of stream {stream:?} without \"data\""))
            })?;
            if !data.get().starts_with('{') {
                return Err(fail(format!(
                    "is a RECORD of stream {stream:?} whose \"data\" is not a JSON object"
                )));
            }
            let emitted_at = match record.emitted_at {
                None => now_ms(),
                Some(n) => epoch_ms(&n).ok_or_else(|| {
                    fail(format!(
                        "is a RECORD whose \"emitted_at\" ({n}) is not epoch milliseconds"
                    ))
                })?,
            };
            Ok(Some(Message::Record(Record {
                stream,
                namespace: record.namespace,
                emitted_at,
                data,
            })))
        }
        Some("STATE") => match envelope.state {
            Some(state) if state.get().starts_with('{') => Ok(Some(Message::State(state))),
            _ => Err(fail("is a STATE without a \"state\" object".into())),
        },
        Some("TRACE") => {
            // A malformed trace is ignored like any other message this destination does not act on.
            let status = envelope
                .trace
                .and_then(|t| serde_json::from_str::<TraceFields>(t.get()).ok())
                .filter(|t| t.kind.as_deref() == Some("STREAM_STATUS"))
                .and_then(|t| t.stream_status);
            Ok(Some(match status {
                Some(s) => Message::StreamStatus {
                    stream: s.stream_descriptor,
                    status: s.status,
                },
                None => Message::Ignored,
            }))
        }
        _ => Ok(Some(Message::Ignored)),
    }
}

/// Integer or float milliseconds (floats are truncated); `None` when out of range.
fn epoch_ms(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    (f.is_finite() && f.abs() < 9.2e18).then_some(f.trunc() as i64)
}

/// Byte classes for [`minify_into`]: 0 ordinary, 1 `"`, 2 `\\`, 3 insignificant whitespace.
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'"' as usize] = 1;
    t[b'\\' as usize] = 2;
    t[b' ' as usize] = 3;
    t[b'\n' as usize] = 3;
    t[b'\r' as usize] = 3;
    t[b'\t' as usize] = 3;
    t
};

/// Appends `json` to `out` without insignificant whitespace; everything else (key order, escapes,
/// number text, duplicate keys) is kept byte for byte. `json` must be valid JSON.
pub fn minify_into(json: &str, out: &mut Vec<u8>) {
    let bytes = json.as_bytes();
    out.reserve(bytes.len());
    let mut i = 0;
    let mut start = 0;
    while i < bytes.len() {
        match CLASS[bytes[i] as usize] {
            1 => {
                // Skip the string: to its closing quote, stepping over escapes.
                i += 1;
                while i < bytes.len() {
                    match CLASS[bytes[i] as usize] {
                        1 => break,
                        2 => i += 2,
                        _ => i += 1,
                    }
                }
                i += 1;
            }
            3 => {
                out.extend_from_slice(&bytes[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(line: &str) -> Record<'_> {
        match parse_line(line, 1, || 7).unwrap() {
            Some(Message::Record(r)) => r,
            other => panic!("not a record: {other:?}"),
        }
    }

    #[test]
    fn record_keeps_data_text() {
        let r = record(
            r#"{"type":"RECORD","record":{"stream":"s","namespace":null,"emitted_at":5,"data":{"b":1.10, "a":1e400},"meta":null},"log":null}"#,
        );
        assert_eq!(r.stream, "s");
        assert!(r.namespace.is_none());
        assert_eq!(r.emitted_at, 5);
        assert_eq!(r.data.get(), r#"{"b":1.10, "a":1e400}"#);
    }

    #[test]
    fn float_and_missing_emitted_at() {
        let r = record(
            r#"{"type":"RECORD","record":{"stream":"s","emitted_at":1795420728479.851,"data":{}}}"#,
        );
        assert_eq!(r.emitted_at, 1795420728479);
        let r = record(r#"{"type":"RECORD","record":{"stream":"s","data":{}}}"#);
        assert_eq!(r.emitted_at, 7);
    }

    #[test]
    fn lenient_lines() {
        assert!(parse_line("", 1, || 0).unwrap().is_none());
        assert!(parse_line("  \r", 1, || 0).unwrap().is_none());
        for line in [
            r#"{"type":"LOG","log":{"level":"INFO","message":"hi"}}"#,
            r#"{"type":"TRACE","trace":{"type":"STREAM_STATUS"}}"#,
            r#"{"type":"TRACE","trace":{"type":"ERROR","error":{"message":"x"}}}"#,
            r#"{"type":"SOMETHING_NEW","x":1}"#,
            r#"{"type":"LOG","record":{"stream":"s","data":5}}"#,
        ] {
            assert!(
                matches!(parse_line(line, 1, || 0).unwrap(), Some(Message::Ignored)),
                "{line}"
            );
        }
    }

    #[test]
    fn stream_status_is_read() {
        let line = r#"{"type":"TRACE","trace":{"type":"STREAM_STATUS","emitted_at":1.0,"stream_status":{"stream_descriptor":{"name":"u","namespace":null},"status":"COMPLETE"}}}"#;
        match parse_line(line, 1, || 0).unwrap() {
            Some(Message::StreamStatus { stream, status }) => {
                assert_eq!(stream.name, "u");
                assert_eq!(status, "COMPLETE");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_lines_name_the_line() {
        for (line, needle) in [
            ("not json", "not valid JSON"),
            (
                r#"{"type":"RECORD","record":{"stream":"s","emitted_at":1,"data":[1]}}"#,
                "not a JSON object",
            ),
            (
                r#"{"type":"RECORD","record":{"stream":"s","emitted_at":1,"data":null}}"#,
                "without \"data\"",
            ),
            (
                r#"{"type":"RECORD","record":{"stream":5,"emitted_at":1,"data":{}}}"#,
                "not a valid Airbyte message",
            ),
            (
                r#"{"type":"RECORD","record":{"stream":"s","emitted_at":"x","data":{}}}"#,
                "not a valid Airbyte message",
            ),
            (r#"{"type":"RECORD"}"#, "without a \"record\""),
            (r#"[1,2]"#, "not a valid Airbyte message"),
            (r#"{"type":"STATE","state":null}"#, "STATE without"),
        ] {
            let err = parse_line(line, 42, || 0).unwrap_err();
            assert_eq!(err.line, 42);
            assert!(err.to_string().contains(needle), "{line}: {err}");
        }
    }

    proptest::proptest! {
        /// Minifying any JSON value's pretty form gives its compact form, for strings with quotes,
        /// backslashes and whitespace inside.
        #[test]
        fn minify_equals_compact_serialization(v in json_strategy()) {
            let pretty = serde_json::to_string_pretty(&v).unwrap();
            let mut out = Vec::new();
            minify_into(&pretty, &mut out);
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&v).unwrap());
        }
    }

    fn json_strategy() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[ \\t\\n\\\\\"a-zé]{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[ a-z\\\"]{0,5}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn minify_keeps_strings_and_numbers() {
        let mut out = Vec::new();
        minify_into(
            "{ \"a b\" : [ 1.10 ,\n\t\"x\\\" y\" ], \"c\":1e400 }",
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a b":[1.10,"x\" y"],"c":1e400}"#
        );
    }
}
