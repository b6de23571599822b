//! The `fields` value format: a record's data as hash fields, one per top-level field, encoded
//! as the script's RESP arguments while the reader reads the line.
//!
//! Strings are their unescaped text; numbers keep their exact input text (`1.50`, `1e400` and
//! `12345678901234567890123` unchanged); booleans are `true`/`false`; objects and arrays are their
//! minified JSON text; null fields are left out. Nested fields are not flattened.

use super::resp;
use crate::protocol::input::minify_into;
use crate::protocol::walk::each_field;

/// The fields a record hash of the `fields` format carries besides the data's: every one its id
/// and emitted_at, and a record upserted by primary key (`record_key: primary_key`) its cursor.
pub const METADATA_FIELDS: [&str; 3] = ["_airbyte_ab_id", "_airbyte_emitted_at", "_airbyte_cursor"];

/// Why a record cannot be stored in the `fields` format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldsError {
    /// The data is not a JSON object.
    #[error("has data that is not a JSON object ({0})")]
    NotAnObject(String),
    /// A data field has the name of a metadata field.
    #[error("has a data field named {0:?}, which the fields format keeps for its own metadata")]
    Reserved(String),
}

/// Appends the name and value of each non-null top-level field of `data` (a JSON object's text)
/// to `out`, as RESP bulk strings; returns how many fields it wrote.
pub fn fields_into(data: &str, out: &mut Vec<u8>) -> Result<usize, FieldsError> {
    let mut count = 0;
    let mut reserved = None;
    let mut text = Vec::new();
    each_field(data, |name, value| {
        let raw = value.get();
        if raw == "null" {
            return;
        }
        if METADATA_FIELDS.contains(&name) {
            reserved.get_or_insert_with(|| name.to_string());
            return;
        }
        text.clear();
        match raw.as_bytes().first() {
            Some(b'"') => match serde_json::from_str::<&str>(raw) {
                Ok(s) => text.extend_from_slice(s.as_bytes()),
                Err(_) => match serde_json::from_str::<String>(raw) {
                    Ok(s) => text.extend_from_slice(s.as_bytes()),
                    Err(_) => text.extend_from_slice(raw.as_bytes()),
                },
            },
            Some(b'{' | b'[') => minify_into(raw, &mut text),
            _ => text.extend_from_slice(raw.as_bytes()),
        }
        resp::bulk(out, name.as_bytes());
        resp::bulk(out, &text);
        count += 1;
    })
    .map_err(|e| FieldsError::NotAnObject(e.0))?;
    match reserved {
        Some(name) => Err(FieldsError::Reserved(name)),
        None => Ok(count),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(data: &str) -> Result<Vec<String>, FieldsError> {
        let mut out = Vec::new();
        let n = fields_into(data, &mut out)?;
        let text = String::from_utf8(out).unwrap();
        let parts: Vec<String> = text
            .split("\r\n")
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, s)| s.to_string())
            .collect();
        assert_eq!(parts.len(), 2 * n);
        Ok(parts)
    }

    #[test]
    fn values_keep_their_exact_text() {
        let data = r#"{"s":"a\u0041\"b","n":1.50,"big":12345678901234567890123,"e":1e400,
            "t":true,"f":false,"z":null,"o":{ "x" : [1, 2] },"a":[ ],"s2":"plain"}"#;
        assert_eq!(
            fields(data).unwrap(),
            [
                "s",
                "aA\"b",
                "n",
                "1.50",
                "big",
                "12345678901234567890123",
                "e",
                "1e400",
                "t",
                "true",
                "f",
                "false",
                "o",
                r#"{"x":[1,2]}"#,
                "a",
                "[]",
                "s2",
                "plain"
            ]
        );
        assert_eq!(fields("{}").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn metadata_names_and_non_objects_are_refused() {
        assert_eq!(
            fields(r#"{"a":1,"_airbyte_ab_id":5}"#),
            Err(FieldsError::Reserved("_airbyte_ab_id".into()))
        );
        assert!(fields(r#"{"_airbyte_data":"kept"}"#).is_ok());
        assert!(matches!(fields("[1]"), Err(FieldsError::NotAnObject(_))));
    }
}
