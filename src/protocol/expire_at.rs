//! `ttl_field`: the moment a record expires, read from a field of its `data` by the same targeted
//! walk as the primary key: epoch seconds, epoch milliseconds (a number above 10^11), or a date-time
//! (RFC 3339 with any offset; without one it is UTC, as a cursor's date-time).

use serde_json::value::RawValue;

use super::catalog::FieldPath;
use super::upsert::path_text;
use super::walk::{lookup, walk};

/// Numbers above this are epoch milliseconds, others epoch seconds (10^11 s is the year 5138;
/// 10^11 ms is 1973).
const MILLIS_ABOVE: f64 = 1e11;

/// The last moment accepted: the end of the year 9999, in epoch milliseconds. Beyond it a value is
/// more likely in micro- or nanoseconds than a moment.
const LAST_MS: f64 = 253_402_300_799_999.0;

/// Where a stream's records keep the moment they expire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpireAtField {
    /// The path into `data` (one name for a top-level field).
    pub path: FieldPath,
}

/// When one record expires, as its batch is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// Its field is missing or null: the stream's `ttl_seconds` applies, if any.
    Default,
    /// At these epoch milliseconds, later than when the record was read.
    At(i64),
    /// Already past when the record was read: it is not written (an upsert deletes its key).
    Passed,
}

impl Moment {
    /// The script argument: the epoch milliseconds, or 0 for [`Moment::Default`] (and
    /// [`Moment::Passed`], which is never sent).
    pub fn millis(self) -> i64 {
        match self {
            Moment::At(ms) => ms,
            Moment::Default | Moment::Passed => 0,
        }
    }
}

/// Why a record's `ttl_field` value is not a moment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MomentError {
    /// The value is there but names no moment.
    #[error("has {value} in its ttl_field {field}, which is not a moment: use epoch seconds, epoch milliseconds or an RFC 3339 timestamp such as \"2026-12-31T23:59:59Z\"")]
    NotAMoment {
        /// The path, as the user wrote it.
        field: String,
        /// The value's JSON text (cut at 80 characters).
        value: String,
    },
    /// The data is not a JSON object.
    #[error("has data that is not a JSON object ({0})")]
    NotAnObject(String),
}

impl ExpireAtField {
    /// The field at `path` (non-empty).
    pub fn new(path: FieldPath) -> Self {
        ExpireAtField { path }
    }

    /// When the record `data` (a JSON object's text) expires, seen at `now_ms`.
    pub fn moment(&self, data: &str, now_ms: i64) -> Result<Moment, MomentError> {
        Ok(match self.moment_ms(data)? {
            None => Moment::Default,
            Some(ms) if ms <= now_ms => Moment::Passed,
            Some(ms) => Moment::At(ms),
        })
    }

    /// The moment the record `data` (a JSON object's text) expires, in epoch milliseconds, or
    /// `None` when the field is missing or null (the stream's `ttl_seconds`, if any, then applies).
    pub fn moment_ms(&self, data: &str) -> Result<Option<i64>, MomentError> {
        let Some((first, rest)) = self.path.split_first() else {
            return Ok(None);
        };
        let not_object = |e: super::walk::NotAnObject| MomentError::NotAnObject(e.0);
        let Some(top) = walk(data, std::slice::from_ref(first)).map_err(not_object)?[0] else {
            return Ok(None);
        };
        let value = match rest {
            [] => Some(top),
            _ => lookup(top.get(), rest).map_err(not_object)?,
        };
        match value {
            None => Ok(None),
            Some(v) if v.get().trim() == "null" => Ok(None),
            Some(v) => moment_of(v).map(Some).ok_or_else(|| {
                let text = v.get().trim();
                MomentError::NotAMoment {
                    field: path_text(&self.path),
                    value: text.chars().take(80).collect(),
                }
            }),
        }
    }
}

/// A JSON number as epoch seconds or milliseconds, or a JSON string as a date-time or date.
fn moment_of(value: &RawValue) -> Option<i64> {
    let text = value.get().trim();
    if text.starts_with('"') {
        return super::cursor::instant_micros(text).map(|us| us.div_euclid(1000));
    }
    let n: f64 = serde_json::from_str(text).ok()?;
    if !n.is_finite() {
        return None;
    }
    let ms = if n.abs() > MILLIS_ABOVE {
        n
    } else {
        n * 1000.0
    };
    (ms.abs() <= LAST_MS).then(|| ms.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(path: &[&str], data: &str) -> Result<Option<i64>, MomentError> {
        ExpireAtField::new(path.iter().map(|s| s.to_string()).collect()).moment_ms(data)
    }

    #[test]
    fn seconds_milliseconds_and_timestamps_name_the_same_moment() {
        let want = Some(1_798_761_599_000);
        assert_eq!(at(&["e"], r#"{"e":1798761599}"#), Ok(want));
        assert_eq!(at(&["e"], r#"{"e":1798761599000}"#), Ok(want));
        assert_eq!(at(&["e"], r#"{"e":1798761599.0004}"#), Ok(want));
        assert_eq!(at(&["e"], r#"{"e":"2026-12-31T23:59:59Z"}"#), Ok(want));
        assert_eq!(at(&["e"], r#"{"e":"2027-01-01T00:59:59+01:00"}"#), Ok(want));
        assert_eq!(at(&["e"], r#"{"e":"2026-12-31 23:59:59"}"#), Ok(want));
        assert_eq!(
            at(
                &["m", "e"],
                r#"{"x":[1,{"e":2}],"m":{"e":"2026-12-31T23:59:59Z"}}"#
            ),
            Ok(want)
        );
    }

    #[test]
    fn a_moment_at_or_before_now_has_passed() {
        let f = ExpireAtField::new(vec!["e".into()]);
        assert_eq!(f.moment(r#"{"e":100}"#, 100_001), Ok(Moment::Passed));
        assert_eq!(f.moment(r#"{"e":100}"#, 100_000), Ok(Moment::Passed));
        assert_eq!(f.moment(r#"{"e":100}"#, 99_999), Ok(Moment::At(100_000)));
        assert_eq!(f.moment(r#"{"e":null}"#, 0), Ok(Moment::Default));
        assert_eq!(Moment::At(5).millis(), 5);
        assert_eq!(Moment::Default.millis(), 0);
    }

    #[test]
    fn missing_and_null_fall_back_and_other_values_are_named() {
        assert_eq!(at(&["e"], r#"{"x":1}"#), Ok(None));
        assert_eq!(at(&["e"], r#"{"e":null}"#), Ok(None));
        assert_eq!(at(&["m", "e"], r#"{"m":5}"#), Ok(None));
        // Nanoseconds and microseconds since the epoch are not taken for milliseconds.
        for bad in [
            r#""tomorrow""#,
            "true",
            "[1]",
            r#"{"s":1}"#,
            "1e400",
            "1767225600000000000",
            "1767225600000000",
        ] {
            let err = at(&["e"], &format!(r#"{{"e":{bad}}}"#)).unwrap_err();
            assert!(matches!(err, MomentError::NotAMoment { .. }), "{bad}");
            assert!(err.to_string().contains("ttl_field e"), "{err}");
        }
        assert!(matches!(
            at(&["e"], "[1]"),
            Err(MomentError::NotAnObject(_))
        ));
    }
}
