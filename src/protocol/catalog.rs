//! The configured catalog (`--catalog`): which streams to write, and how.
//!
//! Only the fields that decide where and how records are written are read (for `append_dedup`, the
//! primary key and the cursor field too); everything else in the file (json_schema, ...) is ignored.
//! Absent or null generation ids count as 0.

use std::path::Path;

use serde::Deserialize;

use super::StreamDescriptor;
use crate::error::Failure;

/// A problem with the catalog file, naming the stream or field.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file could not be read.
    #[error("cannot read the catalog file {path}: {source}")]
    Read {
        /// The path given with `--catalog`.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a configured catalog.
    #[error("the catalog file {path} is not a configured catalog: {reason}")]
    Shape {
        /// The path given with `--catalog`.
        path: String,
        /// What the parser said.
        reason: String,
    },
    /// A stream cannot be written as configured.
    #[error("stream {stream}: {reason}")]
    Stream {
        /// The stream.
        stream: StreamDescriptor,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

impl From<CatalogError> for Failure {
    fn from(err: CatalogError) -> Self {
        Failure::config(format!("Invalid catalog: {err}."), &err)
    }
}

/// A path to a field of a record's data: `["id"]`, or `["org", "id"]` for a nested one.
pub type FieldPath = Vec<String>;

/// How an `append_dedup` stream picks the newest version of a key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dedup {
    /// The cursor field, if the stream has one.
    pub cursor: Option<FieldPath>,
    /// Whether the stream's JSON schema says the cursor is a date-time or a date.
    pub cursor_is_time: bool,
}

/// How a stream's records reach Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncMode {
    /// Records are appended after the stream's existing records.
    Append,
    /// `append_dedup`: one record per primary key, the newest by cursor (ties to the later
    /// arrival); a record whose data has a non-null `_ab_cdc_deleted_at` deletes its key's record.
    /// Its [`ConfiguredStream::primary_key`] is never empty.
    Dedup(Dedup),
    /// Records are staged, and replace the stream's records once the stream completes.
    Overwrite {
        /// The generation being written (0 when the platform sends none).
        generation: i64,
        /// The stream's `is_resumable` (true when absent): false means its source starts over on
        /// every attempt, so staging left by an earlier attempt is discarded.
        resumable: bool,
        /// For a truncate refresh of an `append_dedup` stream: the new generation is deduplicated
        /// as it is staged (its primary key is never empty).
        dedup: Option<Dedup>,
    },
}

/// One configured stream, as the writer needs it.
#[derive(Debug, Clone)]
pub struct ConfiguredStream {
    /// The stream's identity.
    pub descriptor: StreamDescriptor,
    /// How its records are written.
    pub mode: SyncMode,
    /// Its primary key's fields, in order: the catalog's `primary_key`, else the stream's
    /// `source_defined_primary_key`; empty when neither gives one.
    pub primary_key: Vec<FieldPath>,
}

#[derive(Deserialize)]
struct RawCatalog {
    streams: Vec<RawConfiguredStream>,
}

#[derive(Deserialize)]
struct RawStream {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    is_resumable: Option<bool>,
    #[serde(default)]
    source_defined_primary_key: Option<Vec<FieldPath>>,
    #[serde(default)]
    default_cursor_field: Option<FieldPath>,
    #[serde(default)]
    json_schema: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawConfiguredStream {
    stream: RawStream,
    #[serde(default)]
    destination_sync_mode: Option<String>,
    #[serde(default)]
    generation_id: Option<i64>,
    #[serde(default)]
    minimum_generation_id: Option<i64>,
    #[serde(default)]
    primary_key: Option<Vec<FieldPath>>,
    #[serde(default)]
    cursor_field: Option<FieldPath>,
}

/// Reads the catalog file and decides each stream's mode.
pub fn load(path: &Path, truncate_refreshes: bool) -> Result<Vec<ConfiguredStream>, CatalogError> {
    let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, truncate_refreshes).map_err(|err| match err {
        CatalogError::Shape { reason, .. } => CatalogError::Shape {
            path: path.display().to_string(),
            reason,
        },
        other => other,
    })
}

/// Parses catalog text (see [`load`]).
pub fn parse(text: &str, truncate_refreshes: bool) -> Result<Vec<ConfiguredStream>, CatalogError> {
    let raw: RawCatalog = serde_json::from_str(text).map_err(|e| CatalogError::Shape {
        path: String::new(),
        reason: e.to_string(),
    })?;
    raw.streams
        .into_iter()
        .map(|s| configure(s, truncate_refreshes))
        .collect()
}

fn configure(
    raw: RawConfiguredStream,
    truncate_refreshes: bool,
) -> Result<ConfiguredStream, CatalogError> {
    let generation = raw.generation_id.unwrap_or(0);
    let minimum = raw.minimum_generation_id.unwrap_or(0);
    let descriptor = StreamDescriptor {
        name: raw.stream.name,
        namespace: raw.stream.namespace,
    };
    let refuse = |reason: String| CatalogError::Stream {
        stream: descriptor.clone(),
        reason,
    };
    let mode = raw.destination_sync_mode.as_deref().unwrap_or("append");
    let overwrite = match mode {
        "append" | "append_dedup" => false,
        "overwrite" => true,
        other => {
            return Err(refuse(format!(
                "destination sync mode {other:?} is not supported; use \"append\", \"append_dedup\" or \"overwrite\""
            )))
        }
    };
    if minimum > generation {
        return Err(refuse(format!(
            "minimum_generation_id {minimum} is above generation_id {generation}; the platform never sends that: check the catalog"
        )));
    }
    if minimum > 0 && minimum < generation {
        return Err(refuse(format!(
            "minimum_generation_id {minimum} is between 0 and generation_id {generation}; deleting older generations is not supported"
        )));
    }
    let truncate_refresh = truncate_refreshes && minimum > 0 && minimum == generation;
    let primary_key = non_empty_paths(raw.primary_key)
        .or_else(|| non_empty_paths(raw.stream.source_defined_primary_key))
        .unwrap_or_default();
    let dedup = match mode {
        "append_dedup" => {
            if primary_key.is_empty() {
                return Err(refuse("destination sync mode \"append_dedup\" needs a primary key, and the catalog gives none (neither primary_key nor the stream's source_defined_primary_key); choose one, or use \"append\"".into()));
            }
            let cursor = [raw.cursor_field, raw.stream.default_cursor_field]
                .into_iter()
                .flatten()
                .find(|path| !path.is_empty());
            let cursor_is_time = match (&cursor, &raw.stream.json_schema) {
                (Some(path), Some(schema)) => is_time(schema, path),
                _ => false,
            };
            Some(Dedup {
                cursor,
                cursor_is_time,
            })
        }
        _ => None,
    };
    let mode = match dedup {
        _ if overwrite || truncate_refresh => SyncMode::Overwrite {
            generation,
            resumable: raw.stream.is_resumable.unwrap_or(true),
            dedup,
        },
        Some(dedup) => SyncMode::Dedup(dedup),
        None => SyncMode::Append,
    };
    Ok(ConfiguredStream {
        descriptor,
        mode,
        primary_key,
    })
}

/// Whether the schema of the field at `path` says it holds a date-time or a date (`format`, or
/// Airbyte's `airbyte_type`).
fn is_time(schema: &serde_json::Value, path: &[String]) -> bool {
    let mut node = schema;
    for name in path {
        match node.get("properties").and_then(|p| p.get(name)) {
            Some(next) => node = next,
            None => return false,
        }
    }
    let format = node.get("format").and_then(|f| f.as_str());
    let airbyte = node.get("airbyte_type").and_then(|f| f.as_str());
    matches!(format, Some("date-time" | "date"))
        || airbyte.is_some_and(|t| t.starts_with("timestamp") || t == "date")
}

/// The paths, when there is at least one and none of them is empty.
fn non_empty_paths(paths: Option<Vec<FieldPath>>) -> Option<Vec<FieldPath>> {
    paths.filter(|p| !p.is_empty() && p.iter().all(|path| !path.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(stream_json: &str, truncate: bool) -> Result<Vec<ConfiguredStream>, CatalogError> {
        parse(&format!(r#"{{"streams":[{stream_json}]}}"#), truncate)
    }

    #[test]
    fn append_with_nulls() {
        let s = one(r#"{"stream":{"name":"u","namespace":null,"json_schema":{}},"destination_sync_mode":"append","generation_id":null,"sync_id":null}"#, true).unwrap();
        assert_eq!(s[0].descriptor.name, "u");
        assert_eq!(s[0].descriptor.namespace, None);
        assert_eq!(s[0].mode, SyncMode::Append);
    }

    #[test]
    fn modes_and_refreshes() {
        let s = one(r#"{"stream":{"name":"u"},"destination_sync_mode":"overwrite","generation_id":7,"minimum_generation_id":0}"#, true).unwrap();
        assert_eq!(
            s[0].mode,
            SyncMode::Overwrite {
                generation: 7,
                resumable: true,
                dedup: None,
            }
        );
        let s = one(r#"{"stream":{"name":"u","is_resumable":false},"destination_sync_mode":"overwrite","generation_id":7}"#, true).unwrap();
        assert_eq!(
            s[0].mode,
            SyncMode::Overwrite {
                generation: 7,
                resumable: false,
                dedup: None,
            }
        );
        let refresh = r#"{"stream":{"name":"u"},"destination_sync_mode":"append","generation_id":1,"minimum_generation_id":1}"#;
        assert_eq!(
            one(refresh, true).unwrap()[0].mode,
            SyncMode::Overwrite {
                generation: 1,
                resumable: true,
                dedup: None,
            }
        );
        assert_eq!(one(refresh, false).unwrap()[0].mode, SyncMode::Append);
        let err = one(
            r#"{"stream":{"name":"u"},"destination_sync_mode":"append_dedup"}"#,
            true,
        )
        .unwrap_err();
        assert!(err.to_string().contains("needs a primary key"), "{err}");
        let err = one(
            r#"{"stream":{"name":"u"},"generation_id":3,"minimum_generation_id":2}"#,
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("minimum_generation_id 2"), "{err}");
        let err = one(
            r#"{"stream":{"name":"u"},"generation_id":3,"minimum_generation_id":4}"#,
            true,
        )
        .unwrap_err();
        assert!(err.to_string().contains("above generation_id 3"), "{err}");
    }

    #[test]
    fn dedup_takes_the_configured_key_and_cursor_before_the_sources() {
        let s = one(r#"{"stream":{"name":"u","source_defined_primary_key":[["x"]],"default_cursor_field":["c"]},"destination_sync_mode":"append_dedup","primary_key":[["id"],["org","id"]],"cursor_field":["updated"]}"#, true).unwrap();
        assert_eq!(
            s[0].mode,
            SyncMode::Dedup(Dedup {
                cursor: Some(vec!["updated".into()]),
                cursor_is_time: false,
            })
        );
        assert_eq!(
            s[0].primary_key,
            vec![vec!["id".to_string()], vec!["org".into(), "id".into()]]
        );
        let s = one(r#"{"stream":{"name":"u","source_defined_primary_key":[["x"]],"default_cursor_field":["c"]},"destination_sync_mode":"append_dedup","primary_key":[],"cursor_field":[]}"#, true).unwrap();
        assert_eq!(
            s[0].mode,
            SyncMode::Dedup(Dedup {
                cursor: Some(vec!["c".into()]),
                cursor_is_time: false,
            })
        );
        assert_eq!(s[0].primary_key, vec![vec!["x".to_string()]]);
        let s = one(
            r#"{"stream":{"name":"u"},"destination_sync_mode":"append_dedup","primary_key":[["id"]]}"#,
            true,
        )
        .unwrap();
        assert!(matches!(
            &s[0].mode,
            SyncMode::Dedup(Dedup { cursor: None, .. })
        ));
        let s = one(r#"{"stream":{"name":"u","json_schema":{"properties":{"m":{"properties":{"at":{"type":["null","string"],"format":"date-time"}}}}}},"destination_sync_mode":"append_dedup","primary_key":[["id"]],"cursor_field":["m","at"]}"#, true).unwrap();
        assert!(matches!(
            &s[0].mode,
            SyncMode::Dedup(Dedup {
                cursor_is_time: true,
                ..
            })
        ));
        let refresh = r#"{"stream":{"name":"u"},"destination_sync_mode":"append_dedup","primary_key":[["id"]],"generation_id":1,"minimum_generation_id":1}"#;
        assert!(matches!(
            &one(refresh, true).unwrap()[0].mode,
            SyncMode::Overwrite {
                generation: 1,
                dedup: Some(_),
                ..
            }
        ));
        assert!(matches!(
            &one(refresh, false).unwrap()[0].mode,
            SyncMode::Dedup(_)
        ));
    }
}
