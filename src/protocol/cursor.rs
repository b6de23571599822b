//! A record's cursor, encoded so that one byte-wise rule (here, and mirrored by the upsert
//! scripts) orders versions as Airbyte's dedup does: absent or null (`""`) < any number
//! (`n<text>`, compared as numbers) < any string (`s<text>`, compared byte by byte). Booleans are
//! the numbers 0 and 1, objects and arrays compare as their minified text, and a date-time or date
//! cursor (by its JSON schema) is the number of microseconds since the epoch of the instant it
//! names, so time zones do not matter.

use std::cmp::Ordering;

use super::input::minify_into;

/// Appends the encoding of the cursor value `value` (JSON text); `is_time`: its schema says it
/// is a date-time or a date.
pub fn encode_into(value: &str, is_time: bool, out: &mut Vec<u8>) {
    match is_time.then(|| instant_micros(value)).flatten() {
        Some(micros) => {
            out.push(b'n');
            out.extend_from_slice(micros.to_string().as_bytes());
        }
        None => encode_cursor_into(value, out),
    }
}

/// Whether a record with cursor `new` replaces a stored one with cursor `old` (both encoded as
/// above): unless the stored one is newer. Equal cursors go to the later arrival, `new`.
pub fn cursor_wins(new: &[u8], old: &[u8]) -> bool {
    compare_cursors(new, old) != Ordering::Less
}

fn compare_cursors(a: &[u8], b: &[u8]) -> Ordering {
    let rank = |c: &[u8]| match c.first() {
        None => 0,
        Some(b'n') => 1,
        Some(_) => 2,
    };
    match rank(a).cmp(&rank(b)) {
        Ordering::Equal => {}
        other => return other,
    }
    if rank(a) == 1 {
        let num = |c: &[u8]| {
            std::str::from_utf8(&c[1..])
                .ok()
                .and_then(|t| t.parse::<f64>().ok())
        };
        if let (Some(x), Some(y)) = (num(a), num(b)) {
            return x.partial_cmp(&y).unwrap_or(Ordering::Equal);
        }
    }
    a.cmp(b)
}

/// The instant a JSON string names, in microseconds since the epoch: RFC 3339 with any offset,
/// a date-time without one (UTC, `T` or a space between date and time), or a date (its midnight,
/// UTC). `None` for anything else, which then compares as text.
pub(crate) fn instant_micros(value: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    let text: String = serde_json::from_str(value).ok()?;
    let text = text.trim();
    let utc = DateTime::parse_from_rfc3339(text)
        .map(|t| t.naive_utc())
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
        .or_else(|_| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
        })
        .ok()?;
    Some(utc.and_utc().timestamp_micros())
}

/// Appends the cursor encoding of a JSON value (see the module's documentation).
fn encode_cursor_into(value: &str, out: &mut Vec<u8>) {
    match value.trim() {
        "null" => {}
        "true" => out.extend_from_slice(b"n1"),
        "false" => out.extend_from_slice(b"n0"),
        v if v.starts_with('"') => {
            out.push(b's');
            match serde_json::from_str::<String>(v) {
                Ok(s) => out.extend_from_slice(s.as_bytes()),
                Err(_) => out.extend_from_slice(v.as_bytes()),
            }
        }
        v if v.starts_with(['{', '[']) => {
            out.push(b's');
            minify_into(v, out);
        }
        v => {
            out.push(b'n');
            out.extend_from_slice(v.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(value: &str, is_time: bool) -> String {
        let mut out = Vec::new();
        encode_into(value, is_time, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn date_time_cursors_compare_as_instants() {
        let utc = enc(r#""2024-05-01T10:00:00Z""#, true);
        let east = enc(r#""2024-05-01T11:30:00+02:00""#, true);
        // As text "...11:30..." sorts after "...10:00..."; as instants it is half an hour earlier.
        assert!(
            !cursor_wins(east.as_bytes(), utc.as_bytes()),
            "{east} vs {utc}"
        );
        assert_eq!(utc, enc(r#""2024-05-01 10:00:00""#, true), "no offset: UTC");
        assert_eq!(
            enc(r#""2024-05-01""#, true),
            enc(r#""2024-05-01T00:00:00.000000Z""#, true)
        );
        assert_eq!(enc(r#""soon""#, true), "ssoon", "not a date: text");
        assert_eq!(enc(r#""2024-05-01""#, false), "s2024-05-01");
    }

    #[test]
    fn cursor_order_is_airbytes() {
        // Numbers as numbers, strings as text, absent below both, ties to the new one.
        assert!(cursor_wins(b"n10", b"n9"));
        assert!(!cursor_wins(b"n9", b"n10"));
        assert!(cursor_wins(b"n1e1", b"n10"), "equal numbers tie");
        assert!(cursor_wins(b"sb", b"sa"));
        assert!(!cursor_wins(b"s10", b"s9"), "strings compare as text");
        assert!(cursor_wins(b"n0", b""));
        assert!(!cursor_wins(b"", b"n0"));
        assert!(cursor_wins(b"", b""));
        assert!(cursor_wins(b"sa", b"n99"));
        assert!(cursor_wins(b"n-1", b"n-2"));
    }
}
