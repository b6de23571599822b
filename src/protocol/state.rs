//! STATE messages: which records a state counts, and its echo.
//!
//! A state is echoed from its own text: every property is kept with its exact value text and in
//! its order (no added `type` for typeless LEGACY states, extra properties kept), and only
//! `destinationStats` is set to `{"recordCount": N.0}` (replacing any that came in).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::StreamDescriptor;

/// Which records a state's `recordCount` counts: the one scope type, from the message (`S` is the
/// stream's descriptor) to the checkpoint (`S` is its catalog index, `None` when the catalog has no
/// such stream: the state then counts no records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<S = StreamDescriptor> {
    /// A STREAM state: the records of that stream since its previous STREAM state.
    Stream(S),
    /// A GLOBAL or LEGACY state: all records since the previous GLOBAL or LEGACY state.
    Global,
}

impl<S> Scope<S> {
    /// The same scope with its stream turned into `f(stream)` (e.g. resolved against the catalog).
    pub fn map<T>(self, f: impl FnOnce(S) -> T) -> Scope<T> {
        match self {
            Scope::Stream(s) => Scope::Stream(f(s)),
            Scope::Global => Scope::Global,
        }
    }
}

#[derive(Deserialize)]
struct ScopeFields {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    stream: Option<StreamPart>,
}

#[derive(Deserialize)]
struct StreamPart {
    stream_descriptor: StreamDescriptor,
}

/// The scope of a state, or why it cannot be read.
pub fn scope_of(state: &RawValue) -> Result<Scope, String> {
    let fields: ScopeFields = serde_json::from_str(state.get()).map_err(|e| e.to_string())?;
    match fields.kind.as_deref() {
        Some("STREAM") => fields
            .stream
            .map(|s| Scope::Stream(s.stream_descriptor))
            .ok_or_else(|| "a STREAM state without stream.stream_descriptor".to_string()),
        _ => Ok(Scope::Global),
    }
}

/// The object's properties in order, each with its raw value text.
struct Properties<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Properties<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = Properties<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    entries.push(entry);
                }
                Ok(Properties(entries))
            }
        }
        deserializer.deserialize_map(Ordered)
    }
}

/// The whole STATE message line to print for `state` with `record_count` records.
pub fn echo_line(state: &RawValue, record_count: u64) -> Result<String, serde_json::Error> {
    let Properties(entries) = serde_json::from_str(state.get())?;
    let stats = format!("{{\"recordCount\":{record_count}.0}}");
    let mut out = String::with_capacity(state.get().len() + 64);
    out.push_str("{\"type\":\"STATE\",\"state\":{");
    let mut replaced = false;
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(key.as_ref())?);
        out.push(':');
        if key == "destinationStats" && !replaced {
            out.push_str(&stats);
            replaced = true;
        } else {
            out.push_str(value.get());
        }
    }
    if !replaced {
        if !entries.is_empty() {
            out.push(',');
        }
        out.push_str("\"destinationStats\":");
        out.push_str(&stats);
    }
    out.push_str("}}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn legacy_state_echo_keeps_text() {
        let s = raw(r#"{"data":{"cursor":1.10,"big":12345678901234567890123},"id":7}"#);
        assert_eq!(scope_of(&s).unwrap(), Scope::Global);
        assert_eq!(
            echo_line(&s, 3).unwrap(),
            r#"{"type":"STATE","state":{"data":{"cursor":1.10,"big":12345678901234567890123},"id":7,"destinationStats":{"recordCount":3.0}}}"#
        );
    }

    #[test]
    fn stream_state_scope_and_stats_replaced() {
        let s = raw(
            r#"{"type":"STREAM","stream":{"stream_descriptor":{"name":"u","namespace":null},"stream_state":null},"destinationStats":{"recordCount":99.0},"sourceStats":{"recordCount":2.0}}"#,
        );
        assert_eq!(
            scope_of(&s).unwrap(),
            Scope::Stream(StreamDescriptor {
                name: "u".into(),
                namespace: None
            })
        );
        let line = echo_line(&s, 2).unwrap();
        assert!(
            line.contains(r#""destinationStats":{"recordCount":2.0},"sourceStats""#),
            "{line}"
        );
        assert!(!line.contains("99"));
    }

    #[test]
    fn stream_state_without_descriptor_is_an_error() {
        assert!(scope_of(&raw(r#"{"type":"STREAM"}"#)).is_err());
        assert_eq!(
            scope_of(&raw(r#"{"type":"GLOBAL","global":{}}"#)).unwrap(),
            Scope::Global
        );
    }
}
