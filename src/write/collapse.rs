//! The records of one open `append_dedup` batch, one per primary key: a repeat of a key replaces
//! the earlier record when its cursor wins (ties go to the later arrival, see
//! [`crate::protocol::upsert::cursor_wins`]), so the script gets each key once.
//!
//! Each record is sent as four arguments: the key text, the encoded cursor, emitted_at, and the
//! data text, which is empty for a delete (a record's data, a JSON object, never is); a stream
//! in the `fields` format sends the number of data fields instead of the data text, followed by
//! their names and values; a stream with `ttl_field` adds one more, the moment it expires.

use std::collections::HashMap;
use std::ops::Range;

use super::resp;
use crate::protocol::upsert::cursor_wins;

/// One record of an upsert batch, as its parts' places in [`Collapsed`]'s arena.
#[derive(Debug, Clone)]
struct Entry {
    key: Range<usize>,
    cursor: Range<usize>,
    data: Range<usize>,
    emitted_at: i64,
    moment: Option<i64>,
    fields: Option<usize>,
    delete: bool,
}

/// One record offered to an upsert batch.
#[derive(Debug, Clone, Copy)]
pub struct Upsert<'a> {
    /// The canonical key text.
    pub key: &'a [u8],
    /// The encoded cursor.
    pub cursor: &'a [u8],
    /// Whether it deletes its key.
    pub delete: bool,
    /// Epoch milliseconds.
    pub emitted_at: i64,
    /// The minified data text.
    pub data: &'a [u8],
    /// For a stream with `ttl_field`: the epoch milliseconds it expires at (0: the stream's
    /// `ttl_seconds` applies), sent as a fifth argument.
    pub moment: Option<i64>,
    /// For a stream in the `fields` format: how many name and value pairs `data` holds (then
    /// RESP-encoded, see [`super::shape`]).
    pub fields: Option<usize>,
}

/// The records of an open upsert batch, one per key, in order of each key's first arrival.
#[derive(Debug, Default)]
pub struct Collapsed {
    arena: Vec<u8>,
    entries: Vec<Entry>,
    by_key: HashMap<Vec<u8>, usize>,
}

impl Collapsed {
    /// Adds `record`: a new key is appended; a repeat replaces its key's record when it wins.
    pub fn push(&mut self, record: Upsert<'_>) {
        let existing = self.by_key.get(record.key).copied();
        if let Some(i) = existing {
            let old = &self.entries[i];
            if !cursor_wins(record.cursor, &self.arena[old.cursor.clone()]) {
                return;
            }
        }
        let mut put = |bytes: &[u8]| {
            let start = self.arena.len();
            self.arena.extend_from_slice(bytes);
            start..self.arena.len()
        };
        let entry = Entry {
            key: put(record.key),
            cursor: put(record.cursor),
            data: if record.delete {
                0..0
            } else {
                put(record.data)
            },
            emitted_at: record.emitted_at,
            moment: record.moment,
            fields: record.fields,
            delete: record.delete,
        };
        match existing {
            Some(i) => self.entries[i] = entry,
            None => {
                self.by_key.insert(record.key.to_vec(), self.entries.len());
                self.entries.push(entry);
            }
        }
    }

    /// The number of distinct keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no record was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The script's record arguments, RESP-encoded, and how many they are.
    pub fn encode(&self) -> (usize, Vec<u8>) {
        let mut body = Vec::with_capacity(self.arena.len() + 48 * self.entries.len());
        let mut args = 0;
        for e in &self.entries {
            args += 4 + usize::from(e.moment.is_some());
            resp::bulk(&mut body, &self.arena[e.key.clone()]);
            resp::bulk(&mut body, &self.arena[e.cursor.clone()]);
            resp::bulk_int(&mut body, e.emitted_at);
            match e.fields {
                // A delete: no data.
                Some(_) if e.delete => resp::bulk(&mut body, b""),
                Some(n) => {
                    resp::bulk_int(&mut body, n as i64);
                    body.extend_from_slice(&self.arena[e.data.clone()]);
                    args += 2 * n;
                }
                None => resp::bulk(&mut body, &self.arena[e.data.clone()]),
            }
            if let Some(ms) = e.moment {
                resp::bulk_int(&mut body, ms);
            }
        }
        (args, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up<'a>(key: &'a str, cursor: &'a str, data: &'a str) -> Upsert<'a> {
        Upsert {
            key: key.as_bytes(),
            cursor: cursor.as_bytes(),
            delete: false,
            emitted_at: 1,
            data: data.as_bytes(),
            moment: None,
            fields: None,
        }
    }

    fn decoded(c: &Collapsed) -> Vec<String> {
        let (args, body) = c.encode();
        assert_eq!(args, 4 * c.len());
        let body = String::from_utf8(body).unwrap();
        body.split("\r\n")
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, s)| s.to_string())
            .collect()
    }

    #[test]
    fn the_winner_of_each_key_stays_at_its_first_place() {
        let mut c = Collapsed::default();
        c.push(up("[1]", "n5", "a5"));
        c.push(up("[2]", "n1", "b1"));
        c.push(up("[1]", "n4", "a4")); // older: ignored
        c.push(up("[1]", "n5", "a5-later")); // tie: the later arrival
        c.push(Upsert {
            delete: true,
            ..up("[2]", "n2", "ignored")
        });
        assert_eq!(c.len(), 2);
        assert_eq!(
            decoded(&c),
            ["[1]", "n5", "1", "a5-later", "[2]", "n2", "1", ""]
        );
        // A delete followed by a re-insert of the same key: the re-insert, when not older.
        c.push(up("[2]", "n2", "b2"));
        assert_eq!(decoded(&c)[4..], ["[2]", "n2", "1", "b2"]);
    }
}
