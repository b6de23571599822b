//! Options per stream: the top-level `record_key`, `ttl_seconds` and `ttl_field`, and the list
//! `stream_options`, whose entries (`{"namespace": …, "stream": …, "record_key": …, "ttl_seconds":
//! …, "ttl_field": …}`) override them
//! for one stream, or, without
//! `namespace`, for every catalog stream of that name (an entry with the exact namespace wins).
//! Later options (expiry, value format) join the same entries.

use serde_json::{Map, Value};

use super::fields::{field, int_field, string_field, ConfigError};

/// The longest `ttl_seconds` accepted: ten years.
pub const MAX_TTL_SECONDS: u64 = 10 * 366 * 24 * 3600;

/// `ttl_seconds` of `map` at `at`: a whole number of seconds from 1 to [`MAX_TTL_SECONDS`].
fn ttl_seconds_field(map: &Map<String, Value>, at: &str) -> Result<Option<u64>, ConfigError> {
    let bad = || {
        field(
            at,
            &format!("must be a whole number of seconds from 1 to {MAX_TTL_SECONDS} (ten years), or absent for records that never expire"),
        )
    };
    match int_field(map, "ttl_seconds").map_err(|_| bad())? {
        None => Ok(None),
        Some(n) => u64::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_TTL_SECONDS).contains(n))
            .map(Some)
            .ok_or_else(bad),
    }
}
use crate::protocol::catalog::FieldPath;
use crate::protocol::StreamDescriptor;

/// `ttl_field` of `map` at `at`: a field name, or a list of names for a nested field.
fn expire_at_field(map: &Map<String, Value>, at: &str) -> Result<Option<FieldPath>, ConfigError> {
    let bad = || {
        field(
            at,
            "must be the name of a field of the records' data (\"expires_at\"), or a list of names for a nested one ([\"meta\", \"expires_at\"])",
        )
    };
    match map.get("ttl_field") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(name)) if !name.is_empty() => Ok(Some(vec![name.clone()])),
        Some(Value::Array(names)) if !names.is_empty() => names
            .iter()
            .map(|n| match n {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                _ => Err(bad()),
            })
            .collect::<Result<FieldPath, _>>()
            .map(Some),
        Some(_) => Err(bad()),
    }
}

/// Where a stream's records live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordKey {
    /// `<namespace>:<stream>:<id>`, ids from the stream's counter (the Java layout).
    #[default]
    Sequence,
    /// `<namespace>:<stream>:<pk field>:<value>…`, one key per primary key (no counter).
    PrimaryKey,
}

impl RecordKey {
    /// The config's name of it.
    pub fn name(self) -> &'static str {
        match self {
            RecordKey::Sequence => "sequence",
            RecordKey::PrimaryKey => "primary_key",
        }
    }

    fn parse(text: &str, at: &str) -> Result<Self, ConfigError> {
        match text.trim() {
            "sequence" => Ok(RecordKey::Sequence),
            "primary_key" => Ok(RecordKey::PrimaryKey),
            other => Err(field(
                at,
                &format!("{other:?} is not a record key; use \"sequence\" (<namespace>:<stream>:<id>, the default) or \"primary_key\" (<namespace>:<stream>:<pk field>:<value>)"),
            )),
        }
    }
}

/// How a stream's records are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValueFormat {
    /// A hash of `_airbyte_ab_id`, `_airbyte_emitted_at` and `_airbyte_data` (the Java layout).
    #[default]
    Hash,
    /// A hash with one field per top-level field of the data, and `_airbyte_ab_id` and
    /// `_airbyte_emitted_at`.
    Fields,
    /// A string key holding the data's JSON text.
    String,
    /// One Redis stream per catalog stream, at the stream's key, one entry per record.
    Stream,
}

impl ValueFormat {
    /// The config's name of it.
    pub fn name(self) -> &'static str {
        match self {
            ValueFormat::Hash => "hash",
            ValueFormat::Fields => "fields",
            ValueFormat::String => "string",
            ValueFormat::Stream => "stream",
        }
    }

    /// The format named `text` (as the config and the format marker write it).
    pub fn from_name(text: &str) -> Option<Self> {
        [
            ValueFormat::Hash,
            ValueFormat::Fields,
            ValueFormat::String,
            ValueFormat::Stream,
        ]
        .into_iter()
        .find(|f| f.name() == text)
    }

    fn parse(text: &str, at: &str) -> Result<Self, ConfigError> {
        Self::from_name(text.trim()).ok_or_else(|| {
            field(
                at,
                &format!("{text:?} is not a value format; use \"hash\" (the default: _airbyte_ab_id, _airbyte_emitted_at, _airbyte_data), \"fields\" (one hash field per data field), \"string\" (the data's JSON text) or \"stream\" (a Redis stream per catalog stream)"),
            )
        })
    }
}

/// `value_format` of `map` at `at`, if set.
fn value_format_field(
    map: &Map<String, Value>,
    at: &str,
) -> Result<Option<ValueFormat>, ConfigError> {
    match string_field(map, "value_format").map_err(|_| {
        field(
            at,
            "must be one of \"hash\", \"fields\", \"string\", \"stream\"",
        )
    })? {
        Some(text) if !text.trim().is_empty() => ValueFormat::parse(&text, at).map(Some),
        _ => Ok(None),
    }
}

/// `stream_maxlen` of `map` at `at`: a whole number of entries from 1.
fn stream_maxlen_field(map: &Map<String, Value>, at: &str) -> Result<Option<u64>, ConfigError> {
    let bad = || {
        field(at, "must be a whole number of entries, at least 1, or absent for streams that are not trimmed")
    };
    match int_field(map, "stream_maxlen").map_err(|_| bad())? {
        None => Ok(None),
        Some(n) => u64::try_from(n)
            .ok()
            .filter(|n| *n >= 1)
            .map(Some)
            .ok_or_else(bad),
    }
}

/// One entry of `stream_options`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOption {
    /// The namespace it is for; `None` matches every namespace.
    pub namespace: Option<String>,
    /// The stream's name.
    pub stream: String,
    /// Its record key, if the entry sets one.
    pub record_key: Option<RecordKey>,
    /// Its records' time to live, if the entry sets one.
    pub ttl_seconds: Option<u64>,
    /// The field its records' expiry moment is read from, if the entry sets one.
    pub ttl_field: Option<FieldPath>,
    /// Its value format, if the entry sets one.
    pub value_format: Option<ValueFormat>,
    /// Its Redis stream's approximate length limit, if the entry sets one.
    pub stream_maxlen: Option<u64>,
}

/// The options of every stream: the defaults and the per-stream entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// The top-level `record_key`.
    pub record_key: RecordKey,
    /// The top-level `ttl_seconds`: every record key written expires that long after its write.
    pub ttl_seconds: Option<u64>,
    /// The top-level `ttl_field`: each record expires at the moment this field of its data names.
    pub ttl_field: Option<FieldPath>,
    /// The top-level `value_format`.
    pub value_format: ValueFormat,
    /// The top-level `stream_maxlen`: a `stream`-format stream is trimmed to about this many
    /// entries.
    pub stream_maxlen: Option<u64>,
    /// The `stream_options` entries, in config order.
    pub entries: Vec<StreamOption>,
}

impl StreamOptions {
    /// Reads `record_key` and `stream_options` from the config.
    pub fn from_config(map: &Map<String, Value>) -> Result<Self, ConfigError> {
        let record_key = match string_field(map, "record_key")? {
            Some(text) if !text.trim().is_empty() => RecordKey::parse(&text, "record_key")?,
            _ => RecordKey::default(),
        };
        let ttl_seconds = ttl_seconds_field(map, "ttl_seconds")?;
        let ttl_field = expire_at_field(map, "ttl_field")?;
        let value_format = value_format_field(map, "value_format")?.unwrap_or_default();
        let stream_maxlen = stream_maxlen_field(map, "stream_maxlen")?;
        let list = match map.get("stream_options") {
            None | Some(Value::Null) => {
                return Ok(StreamOptions {
                    record_key,
                    ttl_seconds,
                    ttl_field,
                    value_format,
                    stream_maxlen,
                    entries: vec![],
                })
            }
            Some(Value::Array(list)) => list,
            Some(_) => {
                return Err(field(
                    "stream_options",
                    "must be a list of objects such as {\"stream\": \"users\", \"record_key\": \"primary_key\"}",
                ))
            }
        };
        let mut entries: Vec<StreamOption> = Vec::new();
        for (i, item) in list.iter().enumerate() {
            let at = format!("stream_options[{i}]");
            let Value::Object(obj) = item else {
                return Err(field(&at, "must be an object with \"stream\" (and optionally \"namespace\", \"record_key\", \"ttl_seconds\", \"ttl_field\", \"value_format\", \"stream_maxlen\")"));
            };
            let stream = string_field(obj, "stream")
                .map_err(|e| e.within(&at))?
                .filter(|s| !s.is_empty())
                .ok_or_else(|| field(&format!("{at}.stream"), "is required: the stream's name"))?;
            let namespace = string_field(obj, "namespace").map_err(|e| e.within(&at))?;
            let record_key = match string_field(obj, "record_key").map_err(|e| e.within(&at))? {
                Some(text) => Some(RecordKey::parse(&text, &format!("{at}.record_key"))?),
                None => None,
            };
            let ttl_seconds = ttl_seconds_field(obj, &format!("{at}.ttl_seconds"))?;
            let entry_ttl_field = expire_at_field(obj, &format!("{at}.ttl_field"))?;
            let entry_format = value_format_field(obj, &format!("{at}.value_format"))?;
            let entry_maxlen = stream_maxlen_field(obj, &format!("{at}.stream_maxlen"))?;
            for key in obj.keys() {
                if ![
                    "stream",
                    "namespace",
                    "record_key",
                    "ttl_seconds",
                    "ttl_field",
                    "value_format",
                    "stream_maxlen",
                ]
                .contains(&key.as_str())
                {
                    return Err(field(
                        &format!("{at}.{key}"),
                        "is not a stream option; the options are namespace, stream, record_key, ttl_seconds, ttl_field, value_format and stream_maxlen",
                    ));
                }
            }
            if let Some(j) = entries
                .iter()
                .position(|e| e.stream == stream && e.namespace == namespace)
            {
                return Err(field(
                    &at,
                    &format!("names the same stream as stream_options[{j}]; merge the two entries"),
                ));
            }
            entries.push(StreamOption {
                namespace,
                stream,
                record_key,
                ttl_seconds,
                ttl_field: entry_ttl_field,
                value_format: entry_format,
                stream_maxlen: entry_maxlen,
            });
        }
        Ok(StreamOptions {
            record_key,
            ttl_seconds,
            ttl_field,
            value_format,
            stream_maxlen,
            entries,
        })
    }

    /// The entry that applies to `stream`: the one with its exact namespace, else one without a
    /// namespace.
    fn entry(&self, stream: &StreamDescriptor) -> Option<&StreamOption> {
        let named = |e: &&StreamOption| e.stream == stream.name;
        self.entries
            .iter()
            .filter(named)
            .find(|e| e.namespace.is_some() && e.namespace == stream.namespace)
            .or_else(|| {
                self.entries
                    .iter()
                    .filter(named)
                    .find(|e| e.namespace.is_none())
            })
    }

    /// The record key of `stream`.
    pub fn record_key(&self, stream: &StreamDescriptor) -> RecordKey {
        self.entry(stream)
            .and_then(|e| e.record_key)
            .unwrap_or(self.record_key)
    }

    /// The time to live of `stream`'s record keys, if they expire.
    pub fn ttl_seconds(&self, stream: &StreamDescriptor) -> Option<u64> {
        self.entry(stream)
            .and_then(|e| e.ttl_seconds)
            .or(self.ttl_seconds)
    }

    /// The field `stream`'s records name their expiry moment in, if any.
    pub fn ttl_field(&self, stream: &StreamDescriptor) -> Option<&FieldPath> {
        self.entry(stream)
            .and_then(|e| e.ttl_field.as_ref())
            .or(self.ttl_field.as_ref())
    }

    /// The value format of `stream`.
    pub fn value_format(&self, stream: &StreamDescriptor) -> ValueFormat {
        self.entry(stream)
            .and_then(|e| e.value_format)
            .unwrap_or(self.value_format)
    }

    /// The approximate length limit of `stream`'s Redis stream, if any.
    pub fn stream_maxlen(&self, stream: &StreamDescriptor) -> Option<u64> {
        self.entry(stream)
            .and_then(|e| e.stream_maxlen)
            .or(self.stream_maxlen)
    }

    /// A warning for each entry that names no stream of the catalog.
    pub fn unmatched(&self, catalog: &[StreamDescriptor]) -> Vec<String> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                !catalog.iter().any(|d| {
                    d.name == e.stream && (e.namespace.is_none() || e.namespace == d.namespace)
                })
            })
            .map(|(i, e)| {
                let ns = match &e.namespace {
                    Some(ns) => format!("namespace {ns:?}"),
                    None => "any namespace".to_string(),
                };
                format!(
                    "config.stream_options[{i}] names stream {:?} ({ns}), which is not in the catalog; the entry is ignored.",
                    e.stream
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn options(v: Value) -> Result<StreamOptions, ConfigError> {
        StreamOptions::from_config(v.as_object().unwrap())
    }

    fn d(ns: Option<&str>, name: &str) -> StreamDescriptor {
        StreamDescriptor {
            name: name.into(),
            namespace: ns.map(Into::into),
        }
    }

    #[test]
    fn exact_entries_win_over_name_only_ones_and_the_default_applies_elsewhere() {
        let o = options(json!({"record_key": "primary_key", "stream_options": [
            {"stream": "users", "record_key": "sequence"},
            {"namespace": "crm", "stream": "users", "record_key": "primary_key"},
            {"stream": "orders"},
            {"stream": "ghost", "namespace": "x"},
        ]}))
        .unwrap();
        assert_eq!(
            o.record_key(&d(Some("crm"), "users")),
            RecordKey::PrimaryKey
        );
        assert_eq!(o.record_key(&d(Some("shop"), "users")), RecordKey::Sequence);
        assert_eq!(o.record_key(&d(None, "users")), RecordKey::Sequence);
        assert_eq!(o.record_key(&d(None, "orders")), RecordKey::PrimaryKey);
        assert_eq!(o.record_key(&d(None, "other")), RecordKey::PrimaryKey);
        let warnings = o.unmatched(&[d(Some("crm"), "users"), d(None, "orders")]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("stream_options[3]") && warnings[0].contains("ghost"));
        assert_eq!(options(json!({})).unwrap(), StreamOptions::default());
        let o = options(json!({"ttl_seconds": 60, "stream_options": [
            {"stream": "users", "ttl_seconds": "3600"},
            {"stream": "orders", "record_key": "primary_key"},
        ]}))
        .unwrap();
        assert_eq!(o.ttl_seconds(&d(None, "users")), Some(3600));
        assert_eq!(o.ttl_seconds(&d(None, "orders")), Some(60));
        assert_eq!(options(json!({})).unwrap().ttl_seconds(&d(None, "x")), None);
        let o = options(json!({"ttl_field": "exp", "stream_options": [
            {"stream": "users", "ttl_field": ["meta", "exp"]},
            {"stream": "orders", "ttl_field": null},
        ]}))
        .unwrap();
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            o.ttl_field(&d(None, "users")),
            Some(&path(&["meta", "exp"]))
        );
        assert_eq!(o.ttl_field(&d(None, "orders")), Some(&path(&["exp"])));
        assert_eq!(options(json!({})).unwrap().ttl_field(&d(None, "x")), None);
        let o = options(
            json!({"value_format": "fields", "stream_maxlen": 10, "stream_options": [
                {"stream": "users", "value_format": "stream", "stream_maxlen": 5},
                {"stream": "orders", "value_format": "string"},
            ]}),
        )
        .unwrap();
        assert_eq!(o.value_format(&d(None, "users")), ValueFormat::Stream);
        assert_eq!(o.value_format(&d(None, "orders")), ValueFormat::String);
        assert_eq!(o.value_format(&d(None, "x")), ValueFormat::Fields);
        assert_eq!(o.stream_maxlen(&d(None, "users")), Some(5));
        assert_eq!(o.stream_maxlen(&d(None, "orders")), Some(10));
        assert_eq!(
            options(json!({})).unwrap().value_format(&d(None, "x")),
            ValueFormat::Hash
        );
    }

    #[test]
    fn bad_entries_are_named() {
        let err = |v: Value| options(v).unwrap_err().to_string();
        assert!(err(json!({"record_key": "uuid"})).starts_with("config.record_key:"));
        assert!(err(json!({"stream_options": {}})).starts_with("config.stream_options:"));
        assert!(err(json!({"stream_options": [{"namespace": "a"}]}))
            .starts_with("config.stream_options[0].stream:"));
        assert!(
            err(json!({"stream_options": [{"stream": "a", "record_key": "x"}]}))
                .starts_with("config.stream_options[0].record_key:")
        );
        assert!(err(json!({"value_format": "json"})).starts_with("config.value_format:"));
        assert!(err(json!({"stream_maxlen": 0})).starts_with("config.stream_maxlen:"));
        assert!(
            err(json!({"stream_options": [{"stream": "a", "value_format": "xml"}]}))
                .starts_with("config.stream_options[0].value_format:")
        );
        for bad in [json!(""), json!([]), json!(["a", 1]), json!(5)] {
            assert!(err(json!({"ttl_field": bad})).starts_with("config.ttl_field:"));
        }
        assert!(
            err(json!({"stream_options": [{"stream": "a", "ttl_field": {}}]}))
                .starts_with("config.stream_options[0].ttl_field:")
        );
        assert!(err(json!({"stream_options": [{"stream": "a", "ttl": 5}]}))
            .starts_with("config.stream_options[0].ttl:"));
        let twice =
            err(json!({"stream_options": [{"stream": "a"}, {"stream": "b"}, {"stream": "a"}]}));
        assert!(
            twice.starts_with("config.stream_options[2]:") && twice.contains("stream_options[0]"),
            "{twice}"
        );
    }
}
