//! Groups records into batches: one open batch per stream, sealed when it reaches its record count
//! or byte cap, when it has waited `linger`, or when the input ends.
//!
//! A record larger than the byte cap travels alone as a batch of one. Sequence numbers are given at
//! sealing, per stream, starting at 1: the order in which the writer must apply them.

use std::time::{Duration, Instant};

use super::batch::{Batch, InputPosition};
use super::collapse::{Collapsed, Upsert};
use super::resp;
use crate::config::ValueFormat;
use crate::protocol::expire_at::Moment;

struct OpenBatch {
    records: usize,
    /// Records not sent: they had expired before they were batched.
    passed: usize,
    /// Arguments in `body`.
    args: usize,
    data_bytes: usize,
    first_ordinal: u64,
    opened_at: Instant,
    /// An append batch's record arguments, encoded as they arrive.
    body: Vec<u8>,
    /// An upsert batch's records, one per key (encoded at sealing).
    upserts: Option<Collapsed>,
    /// A load's input position after the batch's last record (sent as its last argument).
    position: Option<InputPosition>,
}

/// One record offered to an append batch.
#[derive(Debug, Clone, Copy)]
pub struct Appended<'a> {
    /// Epoch milliseconds.
    pub emitted_at: i64,
    /// The minified data text; for a stream in the `fields` format, the data's fields as
    /// RESP-encoded name and value pairs.
    pub data: &'a [u8],
    /// How many pairs `data` holds (`fields` format).
    pub fields: usize,
    /// When it expires, for a stream with `ttl_field`.
    pub moment: Option<Moment>,
}

/// The open batches of every stream.
pub struct Batcher {
    open: Vec<Option<OpenBatch>>,
    formats: Vec<ValueFormat>,
    next_seq: Vec<u64>,
    max_records: usize,
    max_bytes: usize,
    /// The input position after the record the next push adds (a load's).
    next_position: Option<InputPosition>,
}

impl Batcher {
    /// A batcher for streams in these value formats (catalog order), with the given limits.
    pub fn new(formats: Vec<ValueFormat>, max_records: usize, max_bytes: usize) -> Self {
        let streams = formats.len();
        Batcher {
            open: (0..streams).map(|_| None).collect(),
            formats,
            next_seq: vec![1; streams],
            max_records,
            max_bytes,
            next_position: None,
        }
    }

    /// Gives the input position after the record the next push adds: a load's batches end with
    /// the position of their last record (see [`super::batch::StreamCall::positioned`]).
    pub fn position_next(&mut self, position: InputPosition) {
        self.next_position = Some(position);
    }

    /// Adds a record to its stream's open batch, encoded as its stream's value format asks (see
    /// `lua/append_batch.lua` and `lua/append_stream.lua`); sealed batches are appended to
    /// `sealed`. A record whose moment has passed counts in its batch but is not sent. Returns
    /// true when the record opened a new batch (it is that batch's first record).
    pub fn push(
        &mut self,
        stream: usize,
        record: Appended<'_>,
        ordinal: u64,
        now: Instant,
        sealed: &mut Vec<Batch>,
    ) -> bool {
        if record.moment == Some(Moment::Passed) {
            return self.add(stream, 0, ordinal, now, sealed, |batch| batch.passed += 1);
        }
        let format = self.formats[stream];
        self.add(stream, record.data.len(), ordinal, now, sealed, |batch| {
            if batch.body.capacity() == 0 {
                batch.body.reserve(64 * 1024);
            }
            let body = &mut batch.body;
            match format {
                ValueFormat::Hash | ValueFormat::Stream => {
                    resp::bulk_int(body, record.emitted_at);
                    resp::bulk(body, record.data);
                    batch.args += 2;
                }
                ValueFormat::String => {
                    resp::bulk(body, record.data);
                    batch.args += 1;
                }
                ValueFormat::Fields => {
                    resp::bulk_int(body, record.emitted_at);
                    resp::bulk_int(body, record.fields as i64);
                    body.extend_from_slice(record.data);
                    batch.args += 2 + 2 * record.fields;
                }
            }
            if let Some(m) = record.moment {
                resp::bulk_int(&mut batch.body, m.millis());
                batch.args += 1;
            }
        })
    }

    /// Adds a record of an `append_dedup` stream to its open batch, where it replaces an earlier
    /// record of its key when its cursor wins (see [`Collapsed`]). Otherwise as [`Self::push`].
    pub fn push_upsert(
        &mut self,
        stream: usize,
        record: Upsert<'_>,
        ordinal: u64,
        now: Instant,
        sealed: &mut Vec<Batch>,
    ) -> bool {
        self.add(stream, record.data.len(), ordinal, now, sealed, |batch| {
            batch
                .upserts
                .get_or_insert_with(Collapsed::default)
                .push(record)
        })
    }

    fn add(
        &mut self,
        stream: usize,
        bytes: usize,
        ordinal: u64,
        now: Instant,
        sealed: &mut Vec<Batch>,
        write: impl FnOnce(&mut OpenBatch),
    ) -> bool {
        let too_big = self.open[stream]
            .as_ref()
            .is_some_and(|b| b.data_bytes + bytes > self.max_bytes);
        if too_big {
            self.seal(stream, sealed);
        }
        let opened = self.open[stream].is_none();
        let batch = self.open[stream].get_or_insert_with(|| OpenBatch {
            records: 0,
            passed: 0,
            args: 0,
            data_bytes: 0,
            first_ordinal: ordinal,
            opened_at: now,
            body: Vec::new(),
            upserts: None,
            position: None,
        });
        write(batch);
        if let Some(position) = self.next_position.take() {
            batch.position = Some(position);
        }
        batch.records += 1;
        batch.data_bytes += bytes;
        if batch.records >= self.max_records || batch.data_bytes >= self.max_bytes {
            self.seal(stream, sealed);
        }
        opened
    }

    /// Seals the stream's open batch, if any.
    pub fn seal_stream(&mut self, stream: usize, sealed: &mut Vec<Batch>) {
        self.seal(stream, sealed);
    }

    /// Seals every open batch.
    pub fn seal_all(&mut self, sealed: &mut Vec<Batch>) {
        for stream in 0..self.open.len() {
            self.seal(stream, sealed);
        }
    }

    /// Seals the batches opened at or before `deadline`.
    pub fn seal_opened_before(&mut self, deadline: Instant, sealed: &mut Vec<Batch>) {
        for stream in 0..self.open.len() {
            if self.open[stream]
                .as_ref()
                .is_some_and(|b| b.opened_at <= deadline)
            {
                self.seal(stream, sealed);
            }
        }
    }

    /// When the oldest open batch will have waited `linger`, if any batch is open.
    pub fn next_linger_deadline(&self, linger: Duration) -> Option<Instant> {
        self.open
            .iter()
            .flatten()
            .map(|b| b.opened_at + linger)
            .min()
    }

    fn seal(&mut self, stream: usize, sealed: &mut Vec<Batch>) {
        if let Some(open) = self.open[stream].take() {
            let seq = self.next_seq[stream];
            self.next_seq[stream] += 1;
            let (entries, mut args, mut body) = match &open.upserts {
                Some(upserts) => {
                    let (args, body) = upserts.encode();
                    (upserts.len(), args, body)
                }
                None => (open.records - open.passed, open.args, open.body),
            };
            if let Some(position) = open.position {
                resp::bulk(&mut body, position.text().as_bytes());
                args += 1;
            }
            sealed.push(Batch {
                stream,
                seq,
                records: open.records,
                entries,
                args,
                first_ordinal: open.first_ordinal,
                body,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hash(emitted_at: i64, data: &[u8]) -> Appended<'_> {
        Appended {
            emitted_at,
            data,
            fields: 0,
            moment: None,
        }
    }

    #[test]
    fn each_format_sends_its_arguments_and_passed_records_none() {
        let formats = vec![ValueFormat::Hash, ValueFormat::String, ValueFormat::Fields];
        let mut b = Batcher::new(formats, 100, 1000);
        let mut sealed = Vec::new();
        let now = Instant::now();
        let mut pairs = Vec::new();
        resp::bulk(&mut pairs, b"a");
        resp::bulk(&mut pairs, b"1");
        let at = |moment| Appended {
            moment: Some(moment),
            ..hash(7, b"{\"a\":1}")
        };
        b.push(0, at(Moment::At(99)), 0, now, &mut sealed);
        b.push(0, at(Moment::Passed), 1, now, &mut sealed);
        b.push(1, at(Moment::Default), 2, now, &mut sealed);
        let fields = Appended {
            data: &pairs,
            fields: 1,
            ..hash(7, b"")
        };
        b.push(2, fields, 3, now, &mut sealed);
        b.seal_all(&mut sealed);
        let shape: Vec<_> = sealed
            .iter()
            .map(|s| (s.records, s.entries, s.args))
            .collect();
        assert_eq!(shape, [(2, 1, 3), (1, 1, 2), (1, 1, 4)]);
        let text = |i: usize| String::from_utf8(sealed[i].body.clone()).unwrap();
        assert_eq!(text(0), "$1\r\n7\r\n$7\r\n{\"a\":1}\r\n$2\r\n99\r\n");
        assert_eq!(text(1), "$7\r\n{\"a\":1}\r\n$1\r\n0\r\n");
        assert_eq!(text(2), "$1\r\n7\r\n$1\r\n1\r\n$1\r\na\r\n$1\r\n1\r\n");
    }

    proptest! {
        /// Nothing lost, order kept within a stream, no batch over its limits (but a lone big record),
        /// sequence numbers 1, 2, 3 ... per stream.
        #[test]
        fn batches_keep_every_record_in_order(
            records in proptest::collection::vec((0usize..3, 0usize..40), 0..200),
            max_records in 1usize..10,
            max_bytes in 1usize..100,
        ) {
            let mut b = Batcher::new(vec![ValueFormat::Hash; 3], max_records, max_bytes);
            let mut sealed = Vec::new();
            let now = Instant::now();
            for (ordinal, (stream, len)) in records.iter().enumerate() {
                let data = vec![b'x'; *len];
                b.push(*stream, hash(ordinal as i64, &data), ordinal as u64, now, &mut sealed);
            }
            b.seal_all(&mut sealed);
            let mut seen: Vec<Vec<i64>> = vec![Vec::new(); 3];
            let mut seqs = [0u64; 3];
            for batch in &sealed {
                prop_assert_eq!(batch.seq, seqs[batch.stream] + 1);
                seqs[batch.stream] = batch.seq;
                prop_assert!(batch.records >= 1 && batch.records <= max_records);
                let ids = decode_emitted_at(&batch.body);
                prop_assert_eq!(ids.len(), batch.records);
                prop_assert_eq!(ids[0] as u64, batch.first_ordinal);
                let bytes: usize = ids.iter().map(|i| records[*i as usize].1).sum();
                prop_assert!(bytes <= max_bytes || batch.records == 1 || bytes - records[*ids.last().unwrap() as usize].1 < max_bytes);
                seen[batch.stream].extend(ids);
            }
            for (stream, ids) in seen.iter().enumerate() {
                let expected: Vec<i64> = records.iter().enumerate()
                    .filter(|(_, r)| r.0 == stream).map(|(i, _)| i as i64).collect();
                prop_assert_eq!(ids, &expected);
            }
        }
    }

    /// Reads back the emitted_at arguments (every other bulk string) of a batch body.
    fn decode_emitted_at(body: &[u8]) -> Vec<i64> {
        let mut out = Vec::new();
        let mut rest = body;
        let mut i = 0;
        while !rest.is_empty() {
            let end = rest.iter().position(|&c| c == b'\r').unwrap();
            let len: usize = std::str::from_utf8(&rest[1..end]).unwrap().parse().unwrap();
            let value = &rest[end + 2..end + 2 + len];
            if i % 2 == 0 {
                out.push(std::str::from_utf8(value).unwrap().parse().unwrap());
            }
            rest = &rest[end + 4 + len..];
            i += 1;
        }
        out
    }

    #[test]
    fn linger_seals_old_batches_only() {
        let mut b = Batcher::new(vec![ValueFormat::Hash; 2], 100, 1000);
        let mut sealed = Vec::new();
        let t0 = Instant::now();
        b.push(0, hash(1, b"{}"), 0, t0, &mut sealed);
        b.push(
            1,
            hash(1, b"{}"),
            1,
            t0 + Duration::from_millis(50),
            &mut sealed,
        );
        assert_eq!(
            b.next_linger_deadline(Duration::from_millis(100)),
            Some(t0 + Duration::from_millis(100))
        );
        b.seal_opened_before(t0 + Duration::from_millis(10), &mut sealed);
        assert_eq!(sealed.len(), 1);
        assert_eq!(sealed[0].stream, 0);
    }
}
