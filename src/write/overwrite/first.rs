//! A stream's first record in a run, and how a stream in each value format stores a record: what
//! `prepare.rs` and `keyed.rs` compare to tell where a resumed source restarted.

use redis::Value;

use crate::config::ValueFormat;
use crate::write::resp;
use crate::write::shape::METADATA_FIELDS;

/// A stream's first record in this run: what tells where its source restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstRecord {
    /// Its data as the batch sends it: the minified JSON text, or for a stream in the `fields`
    /// format its RESP-encoded name and value pairs.
    pub data: Vec<u8>,
    /// For an upserted stream: its key text.
    pub key: Option<Vec<u8>>,
}

/// A record as a stream in a given format stores it: what a restart point is found by (the staged
/// or published records are compared with the new attempt's first record).
pub(super) enum StoredRecord<'a> {
    /// The data's text (`hash`: its `_airbyte_data`; `string`: the key's value; `stream`: its
    /// entry's `_airbyte_data`).
    Text(&'a [u8]),
    /// The data fields of a `fields` record hash, sorted (`None`: data that has none).
    Fields(Option<Vec<(Vec<u8>, Vec<u8>)>>),
}

impl<'a> StoredRecord<'a> {
    /// How a stream in `format` stores a record with `data` (the data's text; for `fields`, its
    /// fields as the batch sends them, RESP-encoded name and value pairs).
    pub(super) fn new(format: ValueFormat, data: &'a [u8]) -> Self {
        if format != ValueFormat::Fields {
            return StoredRecord::Text(data);
        }
        let fields = resp::bulks(data).map(|parts| {
            let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = parts
                .chunks_exact(2)
                .map(|pair| (pair[0].to_vec(), pair[1].to_vec()))
                .collect();
            pairs.sort();
            pairs
        });
        StoredRecord::Fields(fields)
    }

    /// Queues in `pipe` the command that reads how a stream in `format` stores record `id` at
    /// `key` (the record's key; in the `stream` format, the Redis stream, whose entry `0-<id>` it
    /// is).
    pub(super) fn read(pipe: &mut redis::Pipeline, format: ValueFormat, key: &str, id: u64) {
        match format {
            ValueFormat::String => pipe.cmd("GET").arg(key),
            ValueFormat::Fields => pipe.cmd("HGETALL").arg(key),
            ValueFormat::Stream => {
                let entry = format!("0-{id}");
                pipe.cmd("XRANGE").arg(key).arg(&entry).arg(&entry)
            }
            ValueFormat::Hash => pipe.cmd("HGET").arg(key).arg("_airbyte_data"),
        };
    }

    /// Whether `reply` (`HGET`, `GET` or `HGETALL` of a record key) is this record.
    pub(super) fn is(&self, reply: &Value) -> bool {
        match self {
            StoredRecord::Text(data) => match reply {
                Value::BulkString(stored) => stored.as_slice() == *data,
                // An XRANGE of one entry: its `_airbyte_data`.
                Value::Array(_) => {
                    type Entries = Vec<(String, std::collections::HashMap<Vec<u8>, Vec<u8>>)>;
                    redis::from_redis_value::<Entries>(reply.clone()).is_ok_and(|entries| {
                        entries
                            .first()
                            .and_then(|(_, f)| f.get(&b"_airbyte_data"[..]))
                            == Some(&data.to_vec())
                    })
                }
                _ => false,
            },
            StoredRecord::Fields(None) => false,
            StoredRecord::Fields(Some(expected)) => {
                type Hash = std::collections::HashMap<Vec<u8>, Vec<u8>>;
                let Ok(stored) = redis::from_redis_value::<Hash>(reply.clone()) else {
                    return false;
                };
                if stored.is_empty() {
                    // No record there.
                    return false;
                }
                let mut stored: Vec<(Vec<u8>, Vec<u8>)> = stored
                    .into_iter()
                    .filter(|(name, _)| !METADATA_FIELDS.iter().any(|m| m.as_bytes() == name))
                    .collect();
                stored.sort();
                stored == *expected
            }
        }
    }
}
