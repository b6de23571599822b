//! What an `append_dedup` record says about itself: its primary key, its cursor and whether it is a
//! CDC delete, read by a targeted walk of its `data` (only the named fields are looked at; nothing
//! is re-serialized, the stored text stays the input's).
//!
//! * The **key** is the JSON array of the primary-key values in primary-key order, each one
//!   canonical (strings re-escaped the one way serde_json writes them, everything else minified),
//!   so `"A"` and `"\u0041"` are the same key. A missing or null value is an error.
//! * The **cursor** is encoded so that [`cursor_wins`] (and the script, which mirrors it) orders it
//!   as Airbyte's dedup does: absent or null (`""`) < any number (`n<text>`, compared as numbers)
//!   < any string (`s<text>`, compared byte by byte); booleans are the numbers 0 and 1, objects and
//!   arrays compare as their minified text.
//! * A record is a **delete** when its data has a non-null `_ab_cdc_deleted_at`.

use serde_json::value::RawValue;

use super::catalog::FieldPath;
use super::cursor;
pub use super::cursor::cursor_wins;
use super::input::minify_into;
use super::walk::{lookup, walk, NotAnObject};

/// The data field that marks a CDC delete when it is present and not null.
pub const CDC_DELETED_AT: &str = "_ab_cdc_deleted_at";

/// How a record's key text is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyText {
    /// The JSON array of the key's values (`[42,"acme"]`): the index field of `record_key:
    /// sequence`.
    Json,
    /// `<pk field>:<value>[:<pk field>:<value>…]` with `%`, `:`, `{`, `}` percent-encoded (a nested
    /// field's path joined by `.`; a string value as its text, any other value as its minified
    /// JSON): the record key's suffix under `record_key: primary_key`.
    Path,
}

/// The fields an upserting stream reads from each record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpsertFields {
    /// The primary key's paths, in order.
    pub primary_key: Vec<FieldPath>,
    /// The cursor's path, if any.
    pub cursor: Option<FieldPath>,
    /// How the key is written.
    pub key_text: KeyText,
    /// Whether `_ab_cdc_deleted_at` deletes (`append_dedup`), or is data like any other field.
    pub deletes: bool,
    /// Whether the cursor is a date-time or date (its JSON schema says so): such a string
    /// compares as the instant it names, whatever its time zone.
    pub cursor_is_time: bool,
    /// The distinct top-level fields the paths start with (the one walk of `data` looks for
    /// these), `_ab_cdc_deleted_at` first.
    top: Vec<String>,
}

/// A record's upsert identity, appended to a buffer: `key` and `cursor` are ranges of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picked {
    /// Where the canonical key text is.
    pub key: std::ops::Range<usize>,
    /// Where the encoded cursor is.
    pub cursor: std::ops::Range<usize>,
    /// Whether the record deletes its key.
    pub delete: bool,
}

/// Why a record's upsert identity cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// A primary-key field is missing or null.
    #[error("has no value for its primary-key field {0}")]
    MissingKey(String),
    /// The data is not a JSON object.
    #[error("has data that is not a JSON object ({0})")]
    NotAnObject(String),
}

impl From<NotAnObject> for PickError {
    fn from(e: NotAnObject) -> Self {
        PickError::NotAnObject(e.0)
    }
}

impl UpsertFields {
    /// The fields of an `append_dedup` stream with this primary key (paths non-empty) and cursor,
    /// its key written as `key_text`.
    pub fn new(primary_key: Vec<FieldPath>, cursor: Option<FieldPath>, key_text: KeyText) -> Self {
        let mut top = vec![CDC_DELETED_AT.to_string()];
        for path in primary_key.iter().chain(&cursor) {
            if let Some(first) = path.first() {
                if !top.contains(first) {
                    top.push(first.clone());
                }
            }
        }
        UpsertFields {
            primary_key,
            cursor,
            key_text,
            deletes: true,
            cursor_is_time: false,
            top,
        }
    }

    /// The fields of an `append` stream keyed by primary key: no cursor, no deletes, so the last
    /// write of a key wins.
    pub fn last_write_wins(primary_key: Vec<FieldPath>) -> Self {
        UpsertFields {
            deletes: false,
            ..Self::new(primary_key, None, KeyText::Path)
        }
    }

    /// Reads the key, cursor and delete mark of `data` (a JSON object's text), appending the key
    /// and the cursor to `out`. `data` is walked once at the top level (and once more inside each
    /// object a nested path goes through).
    pub fn pick(&self, data: &str, out: &mut Vec<u8>) -> Result<Picked, PickError> {
        let top = walk(data, &self.top)?;
        let at = |path: &[String]| -> Result<Option<&RawValue>, PickError> {
            let Some((first, rest)) = path.split_first() else {
                return Ok(None);
            };
            match self
                .top
                .iter()
                .position(|t| t == first)
                .and_then(|i| top[i])
            {
                Some(v) if rest.is_empty() => Ok(Some(v)),
                Some(v) => Ok(lookup(v.get(), rest)?),
                None => Ok(None),
            }
        };
        let key_start = out.len();
        if self.key_text == KeyText::Json {
            out.push(b'[');
        }
        for (i, path) in self.primary_key.iter().enumerate() {
            let value = at(path)?
                .filter(|v| v.get() != "null")
                .ok_or_else(|| PickError::MissingKey(path_text(path)))?;
            match self.key_text {
                KeyText::Json => {
                    if i > 0 {
                        out.push(b',');
                    }
                    canonical_into(value.get(), out);
                }
                KeyText::Path => {
                    if i > 0 {
                        out.push(b':');
                    }
                    escape_into(&path_text(path), out);
                    out.push(b':');
                    let mut text = Vec::new();
                    match serde_json::from_str::<String>(value.get()) {
                        Ok(s) => text.extend_from_slice(s.as_bytes()),
                        Err(_) => minify_into(value.get(), &mut text),
                    }
                    escape_into(&String::from_utf8_lossy(&text), out);
                }
            }
        }
        if self.key_text == KeyText::Json {
            out.push(b']');
        }
        let cursor_start = out.len();
        if let Some(path) = &self.cursor {
            if let Some(value) = at(path)? {
                cursor::encode_into(value.get(), self.cursor_is_time, out);
            }
        }
        Ok(Picked {
            key: key_start..cursor_start,
            cursor: cursor_start..out.len(),
            delete: self.deletes && top[0].is_some_and(|v| v.get() != "null"),
        })
    }
}

/// Appends `text` with `%`, `:`, `{` and `}` percent-encoded, so a key built of such parts is
/// injective and never ends a hash tag.
fn escape_into(text: &str, out: &mut Vec<u8>) {
    for b in text.bytes() {
        match b {
            b'%' => out.extend_from_slice(b"%25"),
            b':' => out.extend_from_slice(b"%3A"),
            b'{' => out.extend_from_slice(b"%7B"),
            b'}' => out.extend_from_slice(b"%7D"),
            b => out.push(b),
        }
    }
}

/// A path as the user wrote it in the catalog: `id`, or `org.id` for a nested one.
pub fn path_text(path: &[String]) -> String {
    path.join(".")
}

/// Appends the canonical text of a JSON value: a string re-escaped as serde_json writes strings,
/// anything else minified.
fn canonical_into(value: &str, out: &mut Vec<u8>) {
    match serde_json::from_str::<String>(value) {
        Ok(s) => match serde_json::to_string(&s) {
            Ok(text) => out.extend_from_slice(text.as_bytes()),
            Err(_) => minify_into(value, out),
        },
        Err(_) => minify_into(value, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pk: &[&str], cursor: Option<&str>) -> UpsertFields {
        let path = |p: &str| p.split('.').map(String::from).collect::<Vec<_>>();
        UpsertFields::new(
            pk.iter().map(|p| path(p)).collect(),
            cursor.map(path),
            KeyText::Json,
        )
    }

    fn pick(f: &UpsertFields, data: &str) -> Result<(String, String, bool), PickError> {
        let mut out = Vec::new();
        let p = f.pick(data, &mut out)?;
        let text = |r: std::ops::Range<usize>| String::from_utf8(out[r].to_vec()).unwrap();
        Ok((text(p.key), text(p.cursor), p.delete))
    }

    #[test]
    fn keys_are_canonical_and_nested_paths_work() {
        let f = fields(&["id", "org.id"], Some("at"));
        let (key, cursor, delete) = pick(
            &f,
            r#"{"x":[1,{"id":2}], "org":{"id":"\u0041", "n":1}, "id": 7 ,"at":"b"}"#,
        )
        .unwrap();
        assert_eq!(key, r#"[7,"A"]"#);
        assert_eq!(cursor, "sb");
        assert!(!delete);
        let (key, _, _) = pick(&f, r#"{"id":7,"org":{"id":"A"}}"#).unwrap();
        assert_eq!(key, r#"[7,"A"]"#, "the same key, whatever the escapes");
        let (key, _, _) = pick(&f, r#"{"id":{"b": 1, "a" : [1, 2]},"org":{"id":1}}"#).unwrap();
        assert_eq!(key, r#"[{"b":1,"a":[1,2]},1]"#);
    }

    #[test]
    fn path_keys_escape_every_separator() {
        let f = UpsertFields {
            key_text: KeyText::Path,
            ..fields(&["id", "org.id"], None)
        };
        let (key, _, _) = pick(&f, r#"{"id":"a:b%{c}","org":{"id":7.50}}"#).unwrap();
        assert_eq!(key, "id:a%3Ab%25%7Bc%7D:org.id:7.50");
        let appended = UpsertFields::last_write_wins(vec![vec!["id".into()]]);
        let (key, cursor, delete) =
            pick(&appended, r#"{"id":"x","_ab_cdc_deleted_at":1}"#).unwrap();
        assert_eq!((key.as_str(), cursor.as_str(), delete), ("id:x", "", false));
    }

    #[test]
    fn a_missing_or_null_key_is_named() {
        let f = fields(&["id", "org.id"], None);
        assert_eq!(
            pick(&f, r#"{"id":1,"org":{"id":null}}"#),
            Err(PickError::MissingKey("org.id".into()))
        );
        assert_eq!(
            pick(&f, r#"{"id":1,"org":5}"#),
            Err(PickError::MissingKey("org.id".into()))
        );
        assert_eq!(
            pick(&f, r#"{"org":{"id":1}}"#),
            Err(PickError::MissingKey("id".into()))
        );
        assert!(matches!(pick(&f, "[1]"), Err(PickError::NotAnObject(_))));
    }

    #[test]
    fn deletes_and_cursor_encodings() {
        let f = fields(&["id"], Some("c"));
        let enc = |data: &str| pick(&f, data).unwrap();
        assert_eq!(enc(r#"{"id":1}"#).1, "");
        assert_eq!(enc(r#"{"id":1,"c":null}"#).1, "");
        assert_eq!(enc(r#"{"id":1,"c":1.5e3}"#).1, "n1.5e3");
        assert_eq!(enc(r#"{"id":1,"c":true}"#).1, "n1");
        assert_eq!(enc(r#"{"id":1,"c":"2024-01-01"}"#).1, "s2024-01-01");
        assert!(enc(r#"{"id":1,"_ab_cdc_deleted_at":"2024"}"#).2);
        assert!(!enc(r#"{"id":1,"_ab_cdc_deleted_at":null}"#).2);
    }
}
