//! A load's input formats: JSON Lines, one JSON array (read as a stream, never whole), and CSV
//! with a header row. Each yields one JSON object text per record, with the byte offset and the
//! line count after it.
//!
//! A record that is not a JSON object (a line that is not JSON, a CSV row with the wrong number of
//! fields) is a [`Piece::Bad`]: the load stops there or, with `--skip-bad`, goes on. Input that
//! breaks the structure itself (a JSON array cut short, bytes after its end) is a [`Fatal`] error.

use std::io::{self, BufRead};

use super::source::Opened;
use crate::cli::InputFormat;

/// The next thing an input holds.
#[derive(Debug)]
pub enum Piece<'a> {
    /// A record: its data as JSON object text.
    Record {
        /// The JSON text.
        json: &'a str,
        /// Offset after it.
        end: u64,
        /// Lines up to its end.
        line: u64,
    },
    /// Something that cannot be a record.
    Bad {
        /// Why, as a sentence part: "is not JSON (…)".
        reason: String,
        /// Its text, as far as it is known (for the rejects file).
        text: String,
        /// Offset after it.
        end: u64,
        /// The line it starts on.
        line: u64,
    },
}

/// Input that cannot be read on: a broken structure, or an I/O error.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    /// Reading failed.
    #[error("reading failed after line {line}: {source}")]
    Io {
        /// Lines read before.
        line: u64,
        /// The error.
        source: io::Error,
    },
    /// The structure is broken.
    #[error("line {line}: {reason}")]
    Structure {
        /// Where.
        line: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Reads one input's records.
pub enum Parser {
    /// JSON Lines.
    Lines(Lines),
    /// One JSON array.
    Array(Array),
    /// CSV with a header row.
    Csv(Csv),
}

impl Parser {
    /// A parser of `format` over `input`, which starts at `offset` (bytes) after `line` lines,
    /// where an earlier run stopped (0 and 0: the start). A CSV parser resumed after the start
    /// takes the header row it was given (`header`, read from the input's start).
    pub fn new(
        format: InputFormat,
        input: Box<dyn Opened>,
        offset: u64,
        line: u64,
        header: Option<csv::StringRecord>,
        infer: bool,
    ) -> Self {
        match format {
            InputFormat::Jsonl => Parser::Lines(Lines {
                input,
                buf: Vec::new(),
                offset,
                line,
            }),
            InputFormat::Json => Parser::Array(Array {
                input,
                buf: Vec::new(),
                offset,
                line,
                state: if offset == 0 {
                    ArrayState::Start
                } else {
                    ArrayState::AfterElement
                },
            }),
            InputFormat::Csv => Parser::Csv(Csv {
                reader: csv::ReaderBuilder::new()
                    .has_headers(false)
                    .flexible(true)
                    .from_reader(input),
                header,
                record: csv::StringRecord::new(),
                json: String::new(),
                offset,
                line,
                infer,
            }),
        }
    }

    /// Whether the next read may have to wait for input (see [`Opened::drained`]).
    pub fn drained(&self) -> bool {
        match self {
            Parser::Lines(p) => p.input.drained(),
            Parser::Array(p) => p.input.drained(),
            Parser::Csv(p) => p.reader.get_ref().drained(),
        }
    }

    /// The next piece, or `None` at the end of the input.
    pub fn next_piece(&mut self) -> Result<Option<Piece<'_>>, Fatal> {
        match self {
            Parser::Lines(p) => p.next(),
            Parser::Array(p) => p.next(),
            Parser::Csv(p) => p.next(),
        }
    }
}

/// Reads the header row of a CSV input.
pub fn csv_header(input: Box<dyn Opened>) -> Result<Option<csv::StringRecord>, Fatal> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(input);
    let mut header = csv::StringRecord::new();
    match reader.read_record(&mut header) {
        Ok(true) => Ok(Some(header)),
        Ok(false) => Ok(None),
        Err(e) => Err(Fatal::Structure {
            line: 1,
            reason: format!("the CSV header row cannot be read: {e}"),
        }),
    }
}

/// Checks that `text` is one JSON object; the reason it is not, otherwise.
fn object_check(text: &str) -> Result<(), String> {
    match serde_json::from_str::<&serde_json::value::RawValue>(text) {
        Err(e) => Err(format!("is not JSON ({e})")),
        Ok(_) if !text.trim_start().starts_with('{') => {
            Err("is JSON but not an object: each record must be a JSON object".into())
        }
        Ok(_) => Ok(()),
    }
}

/// The piece `bytes` make, ending at offset `end`: a record (`lines` up to its end) when they are
/// one JSON object, else a bad one (starting on line `first_line`), saying why.
fn piece(bytes: &[u8], end: u64, first_line: u64, lines: u64) -> Piece<'_> {
    let bad = |reason: String, text: String| Piece::Bad {
        reason,
        text,
        end,
        line: first_line,
    };
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text.trim_end(),
        Err(e) => {
            let text = String::from_utf8_lossy(bytes).trim_end().to_string();
            return bad(format!("is not UTF-8 text ({e})"), text);
        }
    };
    match object_check(text) {
        Ok(()) => Piece::Record {
            json: text,
            end,
            line: lines,
        },
        Err(reason) => bad(reason, text.to_string()),
    }
}

/// JSON Lines: one object per line; blank lines are skipped.
pub struct Lines {
    input: Box<dyn Opened>,
    buf: Vec<u8>,
    offset: u64,
    line: u64,
}

impl Lines {
    fn next(&mut self) -> Result<Option<Piece<'_>>, Fatal> {
        // Blank lines are skipped.
        loop {
            self.buf.clear();
            let n = self
                .input
                .read_until(b'\n', &mut self.buf)
                .map_err(|source| Fatal::Io {
                    line: self.line,
                    source,
                })?;
            if n == 0 {
                return Ok(None);
            }
            self.offset += n as u64;
            self.line += 1;
            if !self.buf.iter().all(u8::is_ascii_whitespace) {
                break;
            }
        }
        let (end, line) = (self.offset, self.line);
        // A UTF-8 byte-order mark at the start of the input is not data.
        let bytes = match self.offset == self.buf.len() as u64 {
            true => self.buf.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&self.buf),
            false => &self.buf[..],
        };
        Ok(Some(piece(bytes, end, line, line)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArrayState {
    /// Before the `[`.
    Start,
    /// After `[`: a value or `]`.
    First,
    /// After a value: `,` or `]`.
    AfterElement,
    /// After the `]`.
    Done,
}

/// One JSON array of objects, read element by element: memory holds one element at a time.
pub struct Array {
    input: Box<dyn Opened>,
    buf: Vec<u8>,
    offset: u64,
    line: u64,
    state: ArrayState,
}

impl Array {
    fn broken(&self, reason: impl Into<String>) -> Fatal {
        Fatal::Structure {
            line: self.line + 1,
            reason: reason.into(),
        }
    }

    /// The next byte that is not white space (not consumed), or `None` at the end.
    fn peek_token(&mut self) -> Result<Option<u8>, Fatal> {
        loop {
            let line = self.line + 1;
            let buf = self
                .input
                .fill_buf()
                .map_err(|source| Fatal::Io { line, source })?;
            if buf.is_empty() {
                return Ok(None);
            }
            let skip = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
            let lines = buf[..skip].iter().filter(|b| **b == b'\n').count() as u64;
            let found = buf.get(skip).copied();
            // A byte-order mark before the array is not data.
            let bom = self.offset == 0 && buf.starts_with(b"\xEF\xBB\xBF");
            let used = if bom { 3 } else { skip };
            self.input.consume(used);
            self.offset += used as u64;
            self.line += lines;
            if let (Some(b), false) = (found, bom) {
                return Ok(Some(b));
            }
        }
    }

    fn consume(&mut self, n: usize) {
        self.input.consume(n);
        self.offset += n as u64;
    }

    fn next(&mut self) -> Result<Option<Piece<'_>>, Fatal> {
        loop {
            match self.state {
                ArrayState::Done => return Ok(None),
                ArrayState::Start => match self.peek_token()? {
                    Some(b'[') => {
                        self.consume(1);
                        self.state = ArrayState::First;
                    }
                    None => return Err(self.broken("the input is empty, not a JSON array")),
                    Some(_) => return Err(self.broken("is not a JSON array (it does not start with [): for one object per line, use --format jsonl")),
                },
                ArrayState::First => match self.peek_token()? {
                    Some(b']') => {
                        self.consume(1);
                        return self.end();
                    }
                    Some(_) => break,
                    None => return Err(self.broken("the JSON array is cut short")),
                },
                ArrayState::AfterElement => match self.peek_token()? {
                    Some(b',') => {
                        self.consume(1);
                        break;
                    }
                    Some(b']') => {
                        self.consume(1);
                        return self.end();
                    }
                    Some(b) => {
                        return Err(self.broken(format!(
                            "expected , or ] after an element of the JSON array, found {:?}",
                            b as char
                        )))
                    }
                    None => return Err(self.broken("the JSON array is cut short")),
                },
            }
        }
        // A value starts at the next token.
        let Some(_) = self.peek_token()? else {
            return Err(self.broken("the JSON array is cut short"));
        };
        let line = self.line + 1;
        self.buf.clear();
        self.scan_value()?;
        self.state = ArrayState::AfterElement;
        Ok(Some(piece(&self.buf, self.offset, line, self.line)))
    }

    /// After the `]`: only white space may follow.
    fn end(&mut self) -> Result<Option<Piece<'_>>, Fatal> {
        self.state = ArrayState::Done;
        match self.peek_token()? {
            None => Ok(None),
            Some(_) => Err(self.broken("there is more after the end of the JSON array")),
        }
    }

    /// Copies one JSON value into `buf`: an object or array up to its closing bracket (strings
    /// and their escapes respected), a string up to its closing quote, or a number or literal up
    /// to the next `,`, `]` or white space. Its validity is checked afterwards.
    fn scan_value(&mut self) -> Result<(), Fatal> {
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        let mut scalar = false;
        loop {
            let line = self.line + 1;
            let buf = self
                .input
                .fill_buf()
                .map_err(|source| Fatal::Io { line, source })?;
            if buf.is_empty() {
                if scalar && !in_string {
                    return Ok(());
                }
                return Err(self.broken("the JSON array is cut short inside an element"));
            }
            let mut used = 0;
            let mut done = false;
            for &b in buf {
                if self.buf.is_empty() && used == 0 {
                    match b {
                        b'{' | b'[' => depth = 1,
                        b'"' => in_string = true,
                        _ => scalar = true,
                    }
                    used += 1;
                    continue;
                }
                if in_string {
                    used += 1;
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                        if depth == 0 {
                            done = true;
                            break;
                        }
                    }
                    continue;
                }
                if scalar {
                    if b == b',' || b == b']' || b.is_ascii_whitespace() {
                        done = true;
                        break;
                    }
                    used += 1;
                    continue;
                }
                used += 1;
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            done = true;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let taken = &buf[..used];
            self.line += taken.iter().filter(|b| **b == b'\n').count() as u64;
            self.buf.extend_from_slice(taken);
            self.consume(used);
            if done {
                return Ok(());
            }
        }
    }
}

/// CSV with a header row: each row becomes an object of the header's names.
pub struct Csv {
    reader: csv::Reader<Box<dyn Opened>>,
    header: Option<csv::StringRecord>,
    record: csv::StringRecord,
    json: String,
    offset: u64,
    line: u64,
    infer: bool,
}

impl Csv {
    fn next(&mut self) -> Result<Option<Piece<'_>>, Fatal> {
        loop {
            let read = self.reader.read_record(&mut self.record);
            let pos = self.reader.position();
            let end = self.offset + pos.byte();
            // `line` of the position is where the next row starts (1-based): the lines before it.
            let line = self.line + pos.line() - 1;
            match read {
                Ok(false) => return Ok(None),
                Ok(true) => {}
                Err(e) => {
                    let start = e.position().map_or(line, |p| self.line + p.line());
                    return match e.kind() {
                        csv::ErrorKind::Io(_) => Err(Fatal::Io {
                            line: start,
                            source: io::Error::other(e.to_string()),
                        }),
                        _ => Ok(Some(Piece::Bad {
                            reason: format!("is not a CSV row ({e})"),
                            text: String::new(),
                            end,
                            line: start,
                        })),
                    };
                }
            }
            let Some(header) = &self.header else {
                // The first row is the header.
                self.header = Some(self.record.clone());
                continue;
            };
            if self.record.len() != header.len() {
                let start = self
                    .record
                    .position()
                    .map_or(line, |p| self.line + p.line());
                return Ok(Some(Piece::Bad {
                    reason: format!(
                        "is a CSV row of {} fields, and the header has {}",
                        self.record.len(),
                        header.len()
                    ),
                    text: self.record.iter().collect::<Vec<_>>().join(","),
                    end,
                    line: start,
                }));
            }
            // Written by hand, to keep the columns' order.
            self.json.clear();
            self.json.push('{');
            for (i, (name, value)) in header.iter().zip(self.record.iter()).enumerate() {
                if i > 0 {
                    self.json.push(',');
                }
                self.json
                    .push_str(&serde_json::Value::from(name).to_string());
                self.json.push(':');
                let value = if self.infer {
                    infer(value)
                } else {
                    serde_json::Value::from(value)
                };
                self.json.push_str(&value.to_string());
            }
            self.json.push('}');
            return Ok(Some(Piece::Record {
                json: &self.json,
                end,
                line,
            }));
        }
    }
}

/// A CSV value as JSON with `--csv-infer`: an integer or a finite decimal number, `true` or
/// `false`, null for an empty value, a string otherwise.
fn infer(value: &str) -> serde_json::Value {
    use serde_json::Value;
    if value.is_empty() {
        return Value::Null;
    }
    match value {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    let numeric = value
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    // Leading zeros ("007", a code) and a leading + stay text: a number would change them.
    let leading_zero = |v: &str| v.len() > 1 && v.starts_with('0') && !v.starts_with("0.");
    let plain = !(value.starts_with('+')
        || leading_zero(value)
        || value.strip_prefix('-').is_some_and(leading_zero));
    if numeric && plain {
        if let Ok(i) = value.parse::<i64>() {
            return Value::from(i);
        }
        if let Some(n) = value
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            return Value::Number(n);
        }
    }
    Value::String(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(format: InputFormat, text: &str, offset: u64) -> Vec<(String, u64, u64)> {
        let input: Box<dyn Opened> = Box::new(io::BufReader::new(io::Cursor::new(
            text.as_bytes()[offset as usize..].to_vec(),
        )));
        let mut p = Parser::new(format, input, offset, 0, None, true);
        let mut out = Vec::new();
        while let Some(piece) = p.next_piece().unwrap() {
            match piece {
                Piece::Record { json, end, line } => out.push((json.to_string(), end, line)),
                Piece::Bad {
                    reason, end, line, ..
                } => out.push((format!("BAD {reason}"), end, line)),
            }
        }
        out
    }

    #[test]
    fn json_lines_give_objects_offsets_and_lines() {
        let text = "{\"a\":1}\n\n{\"b\":\"x\\ny\"}\r\nnot json\n[1]\n{\"c\":3}";
        let got = all(InputFormat::Jsonl, text, 0);
        assert_eq!(got[0], ("{\"a\":1}".into(), 8, 1));
        assert_eq!(got[1], ("{\"b\":\"x\\ny\"}".into(), 23, 3));
        assert!(got[2].0.starts_with("BAD is not JSON"), "{got:?}");
        assert!(got[3].0.starts_with("BAD is JSON but not an object"));
        assert_eq!(got[4], ("{\"c\":3}".into(), text.len() as u64, 6));
        // Resumed after the first record: the same records follow.
        let resumed = all(InputFormat::Jsonl, text, 8);
        assert_eq!(resumed[0].0, got[1].0);
        assert_eq!(resumed[0].1, got[1].1);
    }

    #[test]
    fn a_json_array_is_read_element_by_element_and_resumed_after_one() {
        let text = " [ {\"a\":[1,{\"b\":\"]}\\\"\"}]},\n  {\"c\":2} ,3, {\"d\":null}\n] \n";
        let got = all(InputFormat::Json, text, 0);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0].0, "{\"a\":[1,{\"b\":\"]}\\\"\"}]}");
        assert_eq!(got[1].0, "{\"c\":2}");
        assert!(
            got[2].0.starts_with("BAD is JSON but not an object"),
            "{got:?}"
        );
        assert_eq!(got[3].0, "{\"d\":null}");
        let after_first = got[0].1;
        let resumed = all(InputFormat::Json, text, after_first);
        assert_eq!(resumed.len(), 3);
        assert_eq!(resumed[0].0, got[1].0);
        assert_eq!(resumed[2].1, got[3].1);
    }

    #[test]
    fn a_broken_json_array_is_fatal() {
        for text in [
            "{\"a\":1}",
            "[{\"a\":1}",
            "[{\"a\":1}] x",
            "[{\"a\":1} {\"b\":2}]",
            "",
        ] {
            let input: Box<dyn Opened> = Box::new(io::BufReader::new(io::Cursor::new(
                text.as_bytes().to_vec(),
            )));
            let mut p = Parser::new(InputFormat::Json, input, 0, 0, None, false);
            let mut result = Ok(());
            for _ in 0..10 {
                match p.next_piece() {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            assert!(result.is_err(), "{text:?} must be refused");
        }
    }

    #[test]
    fn csv_rows_become_objects_and_bad_rows_are_named() {
        let text = "id,name,score,ok\n1,\"Ann, B\",2.5,true\n2,Bob\n007,\"multi\nline\",,false\n";
        let got = all(InputFormat::Csv, text, 0);
        assert_eq!(
            got[0],
            (
                r#"{"id":1,"name":"Ann, B","score":2.5,"ok":true}"#.into(),
                37,
                2
            )
        );
        assert!(
            got[1].0.starts_with("BAD is a CSV row of 2 fields"),
            "{got:?}"
        );
        assert_eq!(got[1].2, 3);
        assert_eq!(
            got[2].0,
            r#"{"id":"007","name":"multi\nline","score":null,"ok":false}"#
        );
        assert_eq!(got[2].2, 5);
        assert_eq!(got[2].1, text.len() as u64);
    }

    #[test]
    fn inferred_values_keep_text_that_a_number_would_change() {
        assert_eq!(infer("42"), serde_json::json!(42));
        assert_eq!(infer("-3.5e2"), serde_json::json!(-350.0));
        assert_eq!(infer("0.5"), serde_json::json!(0.5));
        assert_eq!(infer("0"), serde_json::json!(0));
        assert_eq!(infer("007"), serde_json::json!("007"));
        assert_eq!(infer("+1"), serde_json::json!("+1"));
        assert_eq!(infer("1e999"), serde_json::json!("1e999"));
        assert_eq!(infer("True"), serde_json::json!("True"));
        assert_eq!(infer(""), serde_json::Value::Null);
    }
}
