//! A batch: the records of one stream that one script call writes, and the call that writes them.

use super::resp;
use crate::config::ValueFormat;
use crate::keys::{StreamKeys, STAGING_TTL_SECONDS, TOKEN_TTL_SECONDS};
use crate::scripts::{LuaScript, APPEND_STREAM, UPSERT_BATCH, UPSERT_KEYED};

/// A sealed batch of one stream's records, ready to send.
#[derive(Debug)]
pub struct Batch {
    /// Index of the stream in the catalog.
    pub stream: usize,
    /// The batch's sequence number within this run and stream (1, 2, ...).
    pub seq: u64,
    /// Number of input records it holds.
    pub records: usize,
    /// Number of records its call sends: `records`, less the repeats of a key that an upsert
    /// batch collapsed and the records that had expired before they were batched.
    pub entries: usize,
    /// Number of arguments in `body`.
    pub args: usize,
    /// Input ordinal of the batch's first record: its identity for the checkpoint.
    pub first_ordinal: u64,
    /// The records' ARGV, RESP-encoded: emitted_at and data (and the moment it expires, for a
    /// stream with `ttl_field`) per record.
    pub body: Vec<u8>,
}

impl Batch {
    /// A batch of one record (`check`'s write probe): batch `seq` of catalog stream `stream`.
    pub fn single(stream: usize, seq: u64, emitted_at: i64, data: &[u8]) -> Self {
        let mut body = Vec::new();
        resp::bulk_int(&mut body, emitted_at);
        resp::bulk(&mut body, data);
        Batch {
            stream,
            seq,
            records: 1,
            entries: 1,
            args: 2,
            first_ordinal: 0,
            body,
        }
    }
}

/// Where a load's input stands after a record: which input, the byte offset after the record in
/// it (decompressed) and the lines up to there, and how many records of the load that makes
/// (earlier runs included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InputPosition {
    /// Index of the input (0 for the first file or stdin).
    pub input: u32,
    /// Bytes of that input (decompressed) up to the end of the record.
    pub offset: u64,
    /// Lines of that input up to the end of the record (for messages after a resume).
    pub line: u64,
    /// Records of the load loaded up to and including this one (rejected ones not counted).
    pub records: u64,
}

impl InputPosition {
    /// The text the scripts store: `<input> <offset> <line> <records>`.
    pub fn text(&self) -> String {
        format!(
            "{} {} {} {}",
            self.input, self.offset, self.line, self.records
        )
    }

    /// Reads [`Self::text`] back.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(' ');
        let position = InputPosition {
            input: parts.next()?.parse().ok()?,
            offset: parts.next()?.parse().ok()?,
            line: parts.next()?.parse().ok()?,
            records: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(position)
    }
}

/// Times to live the append script sets, in seconds (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// Of every record key the batch writes.
    pub records: u64,
    /// Of the counter (and of an `append_dedup` stream's index or tombstones).
    pub counter: u64,
    /// Whether each record carries the moment it expires (`ttl_field`): one more argument per
    /// record, its epoch milliseconds (0: `records` applies).
    pub moments: bool,
    /// Whether those moments are recorded for a publish instead of set (a staged generation,
    /// whose records keep the staging's expiry until they are published: see
    /// [`crate::keys::StagingKeys::moments`]).
    pub record_moments: bool,
}

impl Expiry {
    /// Live records and their counter never expire.
    pub const NONE: Expiry = Expiry {
        records: 0,
        counter: 0,
        moments: false,
        record_moments: false,
    };
    /// Staged records and the staging counter expire unless their generation is resumed or
    /// published (each batch refreshes the counter's expiry; prepare refreshes the rest).
    pub const STAGING: Expiry = Expiry {
        records: STAGING_TTL_SECONDS,
        counter: STAGING_TTL_SECONDS,
        moments: false,
        record_moments: false,
    };

    /// The flag argument that tells the script whether records carry their moments.
    fn moments_flag(self) -> &'static [u8] {
        match (self.moments, self.record_moments) {
            (false, _) => b"0",
            (true, false) => b"1",
            (true, true) => b"2",
        }
    }
}

/// The unchanging parts of a stream's script call, encoded once.
#[derive(Debug, Clone)]
pub struct StreamCall {
    /// `EVALSHA sha <numkeys> <keys>` without the array header.
    head: Vec<u8>,
    /// The arguments between the sequence number and the records.
    tail: Vec<u8>,
    /// How many arguments `head`, the sequence number and `tail` are.
    fixed_args: usize,
    /// How its records are stored.
    pub format: ValueFormat,
    /// Whether its records carry the moment they expire (`ttl_field`).
    pub moments: bool,
    /// The keys, for error messages.
    pub keys: StreamKeys,
    /// This run's token key of the stream.
    pub token: String,
    /// The hash an upserting stream keeps beside its records: the primary-key index (`record_key:
    /// sequence`) or the tombstones (`record_key: primary_key`).
    pub index: Option<String>,
    /// A load's position key: every batch of the call ends with the input position after its last
    /// record, which the script writes there in the same call (see [`InputPosition`]).
    pub position_key: Option<String>,
}

impl StreamCall {
    /// The call of `script` (`append_batch.lua`) for a stream with `keys` in run `run_id`, its
    /// records stored as hashes of the Java layout.
    pub fn new(script: &LuaScript, keys: StreamKeys, run_id: &str, expiry: Expiry) -> Self {
        Self::shaped(script, keys, run_id, expiry, ValueFormat::Hash)
    }

    /// The call that appends to a stream with `keys` in run `run_id`, its records stored in
    /// `format` (`append_stream.lua` for the stream format, trimmed to about `maxlen` entries;
    /// `append_batch.lua` otherwise). A Redis stream that expires (`expiry.counter`, the
    /// staging's, as [`Expiry::STAGING`] gives) is a staged generation: its entries take their
    /// positions as ids (`0-1`, `0-2`, …), which is what marks and restart points count.
    pub fn append(
        keys: StreamKeys,
        run_id: &str,
        expiry: Expiry,
        format: ValueFormat,
        maxlen: Option<u64>,
    ) -> Self {
        if format != ValueFormat::Stream {
            return Self::shaped(&crate::scripts::APPEND_BATCH, keys, run_id, expiry, format);
        }
        let token = keys.token(run_id);
        let marker = keys.format_marker();
        let mut tail = Vec::new();
        resp::bulk_int(&mut tail, TOKEN_TTL_SECONDS as i64);
        resp::bulk_int(&mut tail, maxlen.unwrap_or(0) as i64);
        resp::bulk(&mut tail, if expiry.counter > 0 { b"1" } else { b"0" });
        resp::bulk_int(&mut tail, expiry.counter as i64);
        resp::bulk(&mut tail, b"");
        let head = head(&APPEND_STREAM, &[&keys.counter, &token, &marker]);
        StreamCall {
            head,
            tail,
            fixed_args: 12,
            format,
            moments: expiry.moments,
            keys,
            token,
            index: None,
            position_key: None,
        }
    }

    /// `append_batch.lua` with `format` (hash, fields or string): KEYS counter, token (and, but
    /// for `hash`, the format marker); ARGV sequence, record prefix, token TTL, record TTL, counter
    /// TTL, moments flag, format, format marker, then each record's arguments (see
    /// `lua/append_batch.lua`). The marker of a `hash` stream never exists: declared, it would make
    /// a node importing the stream's slot answer TRYAGAIN to every batch; the other formats' marker
    /// exists from the first batch on and is declared, so that such a node waits for it to move
    /// rather than find it missing.
    fn shaped(
        script: &LuaScript,
        keys: StreamKeys,
        run_id: &str,
        expiry: Expiry,
        format: ValueFormat,
    ) -> Self {
        let token = keys.token(run_id);
        let marker = keys.format_marker();
        let mut tail = Vec::new();
        resp::bulk(&mut tail, keys.record_prefix.as_bytes());
        resp::bulk_int(&mut tail, TOKEN_TTL_SECONDS as i64);
        resp::bulk_int(&mut tail, expiry.records as i64);
        resp::bulk_int(&mut tail, expiry.counter as i64);
        resp::bulk(&mut tail, expiry.moments_flag());
        resp::bulk(&mut tail, format.name().as_bytes());
        resp::bulk(&mut tail, marker.as_bytes());
        resp::bulk(&mut tail, b"");
        let declared = match format {
            ValueFormat::Hash => vec![keys.counter.as_str(), token.as_str()],
            _ => vec![keys.counter.as_str(), token.as_str(), marker.as_str()],
        };
        let head = head(script, &declared);
        StreamCall {
            head,
            tail,
            fixed_args: 12 + declared.len(),
            format,
            moments: expiry.moments,
            keys,
            token,
            index: None,
            position_key: None,
        }
    }

    /// The call of `upsert_batch.lua` for an `append_dedup` stream with `keys` in run `run_id`,
    /// its records stored in `format`: KEYS counter, token, index (and, but for `hash`, the
    /// format marker, as [`Self::append`] declares it); ARGV sequence, record prefix, token TTL,
    /// record TTL, counter and index TTL, moments flag, format, format marker, then four (or
    /// five) arguments per record (see [`super::collapse`]).
    pub fn upsert(keys: StreamKeys, run_id: &str, expiry: Expiry, format: ValueFormat) -> Self {
        let token = keys.token(run_id);
        let index = keys.index();
        let marker = keys.format_marker();
        let mut tail = Vec::new();
        resp::bulk(&mut tail, keys.record_prefix.as_bytes());
        resp::bulk_int(&mut tail, TOKEN_TTL_SECONDS as i64);
        resp::bulk_int(&mut tail, expiry.records as i64);
        resp::bulk_int(&mut tail, expiry.counter as i64);
        resp::bulk(&mut tail, expiry.moments_flag());
        resp::bulk(&mut tail, format.name().as_bytes());
        resp::bulk(&mut tail, marker.as_bytes());
        resp::bulk(&mut tail, b"");
        let mut declared = vec![keys.counter.as_str(), token.as_str(), index.as_str()];
        if format != ValueFormat::Hash {
            declared.push(&marker);
        }
        let head = head(&UPSERT_BATCH, &declared);
        StreamCall {
            head,
            tail,
            fixed_args: 12 + declared.len(),
            format,
            moments: expiry.moments,
            keys,
            token,
            index: Some(index),
            position_key: None,
        }
    }

    /// The call of `upsert_keyed.lua` for a stream keyed by primary key with `keys` in run
    /// `run_id`, its records stored in `format` (`hash` or `fields`): KEYS token, tombstones,
    /// counter (and for `fields` the format marker); ARGV sequence, record prefix, token TTL,
    /// whether cursors are compared (`append_dedup`) or the last write wins (`append`,
    /// `overwrite`), record TTL, tombstones TTL, moments flag, format, format marker, then four
    /// (or five) arguments per record (see [`super::collapse`]).
    pub fn upsert_keyed(
        keys: StreamKeys,
        run_id: &str,
        compare: bool,
        expiry: Expiry,
        format: ValueFormat,
    ) -> Self {
        let token = keys.token(run_id);
        let tombstones = keys.tombstones();
        let marker = keys.format_marker();
        let mut tail = Vec::new();
        resp::bulk(&mut tail, keys.record_prefix.as_bytes());
        resp::bulk_int(&mut tail, TOKEN_TTL_SECONDS as i64);
        resp::bulk(&mut tail, if compare { b"1" } else { b"0" });
        resp::bulk_int(&mut tail, expiry.records as i64);
        resp::bulk_int(&mut tail, expiry.counter as i64);
        resp::bulk(&mut tail, expiry.moments_flag());
        resp::bulk(&mut tail, format.name().as_bytes());
        resp::bulk(&mut tail, marker.as_bytes());
        resp::bulk(&mut tail, b"");
        let mut declared = vec![token.as_str(), tombstones.as_str(), keys.counter.as_str()];
        if format != ValueFormat::Hash {
            declared.push(&marker);
        }
        let head = head(&UPSERT_KEYED, &declared);
        StreamCall {
            head,
            tail,
            fixed_args: 13 + declared.len(),
            format,
            moments: expiry.moments,
            keys,
            token,
            index: Some(tombstones),
            position_key: None,
        }
    }

    /// The same call, its batches ending with their input position, which the script writes to
    /// `key` (`HSET key position …`) in the same call as the records: a load's resume point.
    pub fn positioned(mut self, key: String) -> Self {
        // The tail ends with the empty position key every constructor puts there.
        self.tail.truncate(self.tail.len() - EMPTY_BULK.len());
        resp::bulk(&mut self.tail, key.as_bytes());
        self.position_key = Some(key);
        self
    }

    /// Appends the whole EVALSHA call of `batch` to `out`.
    pub fn encode(&self, batch: &Batch, out: &mut Vec<u8>) {
        resp::array_header(out, self.fixed_args + batch.args);
        out.extend_from_slice(&self.head);
        resp::bulk_int(out, batch.seq as i64);
        out.extend_from_slice(&self.tail);
        out.extend_from_slice(&batch.body);
    }
}

/// An empty bulk string, as [`resp::bulk`] encodes it.
const EMPTY_BULK: &[u8] = b"$0\r\n\r\n";

/// `EVALSHA <sha> <number of keys> <keys…>`, RESP-encoded without the array header.
fn head(script: &LuaScript, keys: &[&str]) -> Vec<u8> {
    let mut head = Vec::new();
    resp::bulk(&mut head, b"EVALSHA");
    resp::bulk(&mut head, script.sha.as_bytes());
    resp::bulk_int(&mut head, keys.len() as i64);
    for key in keys {
        resp::bulk(&mut head, key.as_bytes());
    }
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::StreamDescriptor;
    use crate::scripts::APPEND_BATCH;

    #[test]
    fn call_has_keys_then_argv() {
        let keys = StreamKeys::new(&StreamDescriptor {
            name: "u".into(),
            namespace: Some("n".into()),
        });
        let call = StreamCall::new(&APPEND_BATCH, keys, "run", Expiry::NONE);
        let batch = Batch::single(0, 3, 5, b"{}");
        let mut out = Vec::new();
        call.encode(&batch, &mut out);
        let expected = format!(
            "*16\r\n$7\r\nEVALSHA\r\n$40\r\n{}\r\n$1\r\n2\r\n$3\r\nn:u\r\n$28\r\n_airbyte_redis:token:run:n:u\r\n$1\r\n3\r\n$4\r\nn:u:\r\n$6\r\n604800\r\n$1\r\n0\r\n$1\r\n0\r\n$1\r\n0\r\n$4\r\nhash\r\n$25\r\n_airbyte_redis:format:n:u\r\n$0\r\n\r\n$1\r\n5\r\n$2\r\n{{}}\r\n",
            APPEND_BATCH.sha
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }
}
