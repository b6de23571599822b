//! The stdin reader thread: lines → routed records and states, handed over in chunks.
//!
//! Parsing, routing and removing whitespace from `data` happen here, off the thread that batches,
//! so the two share the work. Records are copied into one arena per chunk (no allocation per
//! record). A chunk is handed over when it is full or when stdin has nothing more buffered, so a
//! quiet source's records are never held back waiting for more input.

use std::io::{BufRead, BufReader, Read};
use std::ops::Range;
use std::sync::Arc;

use crossbeam_channel::Sender;
use serde_json::value::RawValue;

use super::batch::InputPosition;
use super::checkpoint::StateScope;
use super::router::Router;
use super::shape;
use crate::config::ValueFormat;
use crate::error::Failure;
use crate::protocol::expire_at::{ExpireAtField, Moment};
use crate::protocol::input::{self, InputError, Message};
use crate::protocol::output::now_ms;
use crate::protocol::state;
use crate::protocol::upsert::{Picked, UpsertFields};
use crate::protocol::StreamDescriptor;

const CHUNK_ITEMS: usize = 1024;
const CHUNK_BYTES: usize = 1024 * 1024;

/// One input item, in input order.
#[derive(Debug)]
pub enum Item {
    /// A record of catalog stream `stream`; its minified data is `arena[data]`.
    Record {
        /// Catalog index of the stream.
        stream: usize,
        /// Epoch milliseconds.
        emitted_at: i64,
        /// Where its data is in the chunk's arena.
        data: Range<usize>,
        /// Its line number on stdin.
        line: u64,
        /// For an `append_dedup` stream: its key and cursor (in the arena) and whether it deletes.
        upsert: Option<Picked>,
        /// For a stream with `ttl_field`: when it expires.
        moment: Option<Moment>,
        /// For a stream in the `fields` format: how many name and value pairs `data` holds
        /// (RESP-encoded, see [`super::shape`]); 0 otherwise.
        fields: usize,
        /// For a `load`: where its input stands after this record (its batch records it).
        position: Option<InputPosition>,
    },
    /// A state and the records it counts.
    State {
        /// The state object's own text.
        text: Box<RawValue>,
        /// Which records it counts.
        scope: StateScope,
    },
    /// A stream status for these catalog streams (exact match, or every stream of that name when
    /// the status has no namespace and none matches exactly).
    Status {
        /// Catalog indexes.
        streams: Vec<usize>,
        /// Whether the status is COMPLETE (anything else means: not complete).
        complete: bool,
    },
    /// The input cannot be accepted past this point.
    Failed(Failure),
}

/// A run of input items and the bytes their records point into.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The items, in input order.
    pub items: Vec<Item>,
    /// Minified record data.
    pub arena: Vec<u8>,
}

/// What the reader needs to know about the catalog: where records go, and what to pick from the
/// records of `append_dedup` streams (by catalog index).
pub struct Streams {
    /// Record → catalog stream.
    pub router: Router,
    /// The dedup fields of each catalog stream (`None`: not `append_dedup`).
    pub upserts: Vec<Option<UpsertFields>>,
    /// The `ttl_field` of each catalog stream (`None`: its records carry no moment).
    pub expire_at: Vec<Option<ExpireAtField>>,
    /// The value format of each catalog stream.
    pub formats: Vec<ValueFormat>,
    /// Each catalog stream's name, for messages.
    pub descriptors: Vec<StreamDescriptor>,
}

/// Reads `input` to its end (or to the first bad line), sending chunks to `tx`.
pub fn read_all<R: Read>(mut input: BufReader<R>, streams: Arc<Streams>, tx: Sender<Chunk>) {
    let mut line = Vec::new();
    let mut line_no = 0u64;
    let mut chunk = Chunk::default();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                let f = Failure::transient(
                    format!("Reading the input failed after line {line_no}: {e}."),
                    &e,
                );
                chunk.items.push(Item::Failed(f));
                break;
            }
        }
        line_no += 1;
        // A UTF-8 byte-order mark before the first message (some tools write one) is not data.
        let text = match line_no {
            1 => line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&line),
            _ => &line[..],
        };
        if let Err(f) = parse_into(text, line_no, &streams, &mut chunk) {
            chunk.items.push(Item::Failed(f));
            break;
        }
        // Nothing more buffered: the next read may block, so hand over what we have.
        let idle = input.buffer().is_empty();
        let full = chunk.items.len() >= CHUNK_ITEMS || chunk.arena.len() >= CHUNK_BYTES;
        if (idle || full) && tx.send(std::mem::take(&mut chunk)).is_err() {
            return;
        }
    }
    if !chunk.items.is_empty() {
        let _ = tx.send(chunk);
    }
}

fn parse_into(
    line: &[u8],
    line_no: u64,
    streams: &Streams,
    chunk: &mut Chunk,
) -> Result<(), Failure> {
    let router = &streams.router;
    let bad = |reason: String| {
        Failure::from(InputError {
            line: line_no,
            reason,
        })
    };
    let text = std::str::from_utf8(line).map_err(|e| bad(format!("is not valid UTF-8 ({e})")))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    match input::parse_line(text, line_no, now_ms)? {
        None | Some(Message::Ignored) => Ok(()),
        Some(Message::StreamStatus { stream, status }) => {
            let streams = router.route_status(stream.namespace.as_deref(), &stream.name);
            if !streams.is_empty() {
                chunk.items.push(Item::Status {
                    streams,
                    complete: status == "COMPLETE",
                });
            }
            Ok(())
        }
        Some(Message::Record(r)) => {
            let stream = router
                .route(r.namespace.as_deref(), &r.stream)
                .ok_or_else(|| {
                    let ns = match &r.namespace {
                        Some(ns) => format!("namespace {ns:?}"),
                        None => "no namespace".to_string(),
                    };
                    bad(format!(
                        "is a RECORD of stream {:?} ({ns}), which is not in the configured catalog",
                        r.stream
                    ))
                })?;
            let origin = || format!("Line {line_no} of the input is a RECORD");
            let record = NewRecord {
                stream,
                data: r.data,
                emitted_at: r.emitted_at,
                line: line_no,
            };
            push_record(streams, record, &origin, chunk)
        }
        Some(Message::State(raw)) => {
            let scope = state::scope_of(raw)
                .map_err(|e| bad(format!("is a STATE that cannot be read: {e}")))?
                .map(|d| router.route(d.namespace.as_deref(), &d.name));
            chunk.items.push(Item::State {
                text: raw.to_owned(),
                scope,
            });
            Ok(())
        }
    }
}

/// A record as it arrives, before [`push_record`] shapes it.
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    /// Catalog index of its stream.
    pub stream: usize,
    /// Its data, as JSON text.
    pub data: &'a RawValue,
    /// Epoch milliseconds.
    pub emitted_at: i64,
    /// Its line in the input.
    pub line: u64,
}

/// Adds a record of catalog stream `record.stream` to `chunk`: its data minified (or split into fields),
/// its primary key and cursor picked, its moment read, as the stream's plan asks. A record the
/// stream cannot store is refused with a `config_error` that starts with `origin()` ("Line 7 of
/// the input is a RECORD") and says why and what to fix; the chunk is then left as it was.
pub fn push_record(
    streams: &Streams,
    record: NewRecord<'_>,
    origin: &dyn Fn() -> String,
    chunk: &mut Chunk,
) -> Result<(), Failure> {
    let start = chunk.arena.len();
    let item = record_item(streams, record, origin, chunk);
    match item {
        Ok(item) => {
            chunk.items.push(item);
            Ok(())
        }
        Err(f) => {
            chunk.arena.truncate(start);
            Err(f)
        }
    }
}

fn record_item(
    streams: &Streams,
    record: NewRecord<'_>,
    origin: &dyn Fn() -> String,
    chunk: &mut Chunk,
) -> Result<Item, Failure> {
    let NewRecord {
        stream,
        data,
        emitted_at,
        line,
    } = record;
    // A record this stream cannot store: a config_error naming the line, the stream and why.
    let refused = |e: &dyn std::fmt::Display, advice: &str| {
        let why = format!(
            "{} of stream {} that {e}{advice}",
            origin(),
            streams.descriptors[stream]
        );
        Failure::config(why, e)
    };
    let start = chunk.arena.len();
    let fields = match streams.formats[stream] {
        ValueFormat::Fields => shape::fields_into(data.get(), &mut chunk.arena)
            .map_err(|e| refused(&e, ": the value_format \"fields\" stores each data field as a hash field. Fix the source, or choose another value_format for the stream."))?,
        _ => {
            input::minify_into(data.get(), &mut chunk.arena);
            0
        }
    };
    let range = start..chunk.arena.len();
    let mut upsert = match &streams.upserts[stream] {
        Some(fields) => Some(fields.pick(data.get(), &mut chunk.arena).map_err(|e| {
            refused(&e, ": an append_dedup stream needs every record's primary key. Fix the source, or choose another primary key or sync mode for the stream.")
        })?),
        None => None,
    };
    let moment = match &streams.expire_at[stream] {
        Some(field) => Some(field.moment(data.get(), now_ms()).map_err(|e| {
            refused(
                &e,
                ". Fix the source, or choose another ttl_field for the stream.",
            )
        })?),
        None => None,
    };
    // A record that has expired already is not written; an upsert of it deletes its key.
    if let (Some(Moment::Passed), Some(picked)) = (moment, upsert.as_mut()) {
        picked.delete = true;
    }
    Ok(Item::Record {
        stream,
        emitted_at,
        data: range,
        line,
        upsert,
        moment,
        fields,
        position: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn router() -> Arc<Streams> {
        let descriptors = vec![StreamDescriptor {
            name: "s".into(),
            namespace: None,
        }];
        Arc::new(Streams {
            router: Router::new(&descriptors),
            upserts: vec![None],
            expire_at: vec![None],
            formats: vec![ValueFormat::Hash],
            descriptors,
        })
    }

    #[test]
    fn a_byte_order_mark_before_the_first_line_is_skipped() {
        let line = br#"{"type":"RECORD","record":{"stream":"s","emitted_at":1,"data":{}}}"#;
        let mut input = b"\xEF\xBB\xBF".to_vec();
        input.extend_from_slice(line);
        input.push(b'\n');
        let (items, failure) = read(input.clone());
        assert!(failure.is_none(), "{failure:?}");
        assert_eq!(items.len(), 1);
        // Anywhere else it is not JSON, and says so.
        let mut later = line.to_vec();
        later.push(b'\n');
        later.extend_from_slice(&input);
        let (_, failure) = read(later);
        assert!(failure.is_some_and(|f| f.message.contains("line 2")));
    }

    /// Reads `input` and returns every item and the failure, if any.
    fn read(input: Vec<u8>) -> (Vec<Item>, Option<Failure>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        read_all(BufReader::new(std::io::Cursor::new(input)), router(), tx);
        let mut items: Vec<Item> = rx.into_iter().flat_map(|c| c.items).collect();
        let failure = match items.last() {
            Some(Item::Failed(_)) => match items.pop() {
                Some(Item::Failed(f)) => Some(f),
                _ => None,
            },
            _ => None,
        };
        (items, failure)
    }

    fn json_value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            Just("1e400".to_string()),
            Just("123456789012345678901234567890".to_string()),
            "[a-z\\\\\"é😀]{0,8}".prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
        ];
        leaf.prop_recursive(4, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec(("[a-z_]{1,6}", inner), 0..4).prop_map(|v| {
                    let fields: Vec<String> =
                        v.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    proptest! {
        /// Arbitrary bytes never panic: each line is accepted, ignored, or ends the input with a
        /// failure naming its line.
        #[test]
        fn arbitrary_bytes_never_panic(lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..60), 0..8)) {
            let mut input = Vec::new();
            for l in &lines {
                input.extend(l.iter().filter(|b| **b != b'\n'));
                input.push(b'\n');
            }
            let (_, failure) = read(input);
            if let Some(f) = failure {
                prop_assert!(f.message.contains("line "), "{}", f.message);
            }
        }

        /// Every field of a RECORD with a value of any type: a record, or a failure naming line 2.
        #[test]
        fn wrong_types_in_records_are_named(stream in json_value(), ns in json_value(), at in json_value(), data in json_value(), cut in 0usize..200) {
            let record = format!(r#"{{"type":"RECORD","record":{{"stream":{stream},"namespace":{ns},"emitted_at":{at},"data":{data}}}}}"#);
            // Sometimes truncated, too (anywhere, even inside a character).
            let mut bytes = record.into_bytes();
            if cut >= 150 {
                bytes.truncate(cut - 150 + 1);
            }
            let mut input = b"{\"type\":\"LOG\"}\n".to_vec();
            input.extend(bytes);
            input.push(b'\n');
            let (items, failure) = read(input);
            match failure {
                Some(f) => prop_assert!(f.message.contains("line 2"), "{}", f.message),
                None => {
                    prop_assert_eq!(items.len(), 1);
                    let is_record = matches!(items[0], Item::Record { line: 2, .. });
                    prop_assert!(is_record);
                }
            }
        }
    }

    /// `data` is never parsed into a value, so nesting depth costs nothing: stored as its text.
    #[test]
    fn deep_nesting_is_kept_as_text_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let input = format!("{{\"type\":\"RECORD\",\"record\":{{\"stream\":\"s\",\"emitted_at\":1,\"data\":{{\"x\":{deep}}}}}}}\n");
        let (items, failure) = read(input.into_bytes());
        assert!(failure.is_none());
        assert!(matches!(&items[..], [Item::Record { data, .. }] if data.len() == 200_006));
        // A deep state is refused with its line named (states are read as values), not a crash.
        let state =
            format!("{{\"type\":\"STATE\",\"state\":{{\"type\":\"STREAM\",\"stream\":{deep}}}}}\n");
        let (_, failure) = read(state.into_bytes());
        assert!(failure.is_some_and(|f| f.message.contains("line 1")));
    }
}
