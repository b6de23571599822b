//! Groups records into batches: one open batch per stream, sealed when it reaches its record count
//! or byte cap, when it has waited `linger`, or when the input ends.
//!
//! A record larger than the byte cap travels alone as a batch of one. Sequence numbers are given at
//! sealing, per stream, starting at 1: the order in which the writer must apply them.

use std::time::{Duration, Instant};

use super::batch::Batch;
use super::collapse::{Collapsed, Upsert};
use super::resp;
use crate::protocol::expire_at::Moment;

struct OpenBatch {
    records: usize,
    /// Records not sent: they had expired before they were batched.
    passed: usize,
    data_bytes: usize,
    first_ordinal: u64,
    opened_at: Instant,
    /// An append batch's record arguments, encoded as they arrive.
    body: Vec<u8>,
    /// An upsert batch's records, one per key (encoded at sealing).
    upserts: Option<Collapsed>,
}

/// The open batches of every stream.
pub struct Batcher {
    open: Vec<Option<OpenBatch>>,
    next_seq: Vec<u64>,
    max_records: usize,
    max_bytes: usize,
}

impl Batcher {
    /// A batcher for `streams` streams with the given limits.
    pub fn new(streams: usize, max_records: usize, max_bytes: usize) -> Self {
        Batcher {
            open: (0..streams).map(|_| None).collect(),
            next_seq: vec![1; streams],
            max_records,
            max_bytes,
        }
    }

    /// Adds a record to its stream's open batch; sealed batches are appended to `sealed`.
    /// `moment` is when it expires, for a stream with `ttl_field` (a record whose moment has
    /// passed counts in its batch but is not sent). Returns true when the record opened a new
    /// batch (it is that batch's first record).
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        stream: usize,
        emitted_at: i64,
        data: &[u8],
        moment: Option<Moment>,
        ordinal: u64,
        now: Instant,
        sealed: &mut Vec<Batch>,
    ) -> bool {
        if moment == Some(Moment::Passed) {
            return self.add(stream, 0, ordinal, now, sealed, |batch| batch.passed += 1);
        }
        self.add(stream, data.len(), ordinal, now, sealed, |batch| {
            if batch.body.capacity() == 0 {
                batch.body.reserve(64 * 1024);
            }
            resp::bulk_int(&mut batch.body, emitted_at);
            resp::bulk(&mut batch.body, data);
            if let Some(m) = moment {
                resp::bulk_int(&mut batch.body, m.millis());
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
            data_bytes: 0,
            first_ordinal: ordinal,
            opened_at: now,
            body: Vec::new(),
            upserts: None,
        });
        write(batch);
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
            let (entries, body) = match &open.upserts {
                Some(upserts) => (upserts.len(), upserts.encode()),
                None => (open.records - open.passed, open.body),
            };
            sealed.push(Batch {
                stream,
                seq,
                records: open.records,
                entries,
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

    proptest! {
        /// Nothing lost, order kept within a stream, no batch over its limits (but a lone big record),
        /// sequence numbers 1, 2, 3 ... per stream.
        #[test]
        fn batches_keep_every_record_in_order(
            records in proptest::collection::vec((0usize..3, 0usize..40), 0..200),
            max_records in 1usize..10,
            max_bytes in 1usize..100,
        ) {
            let mut b = Batcher::new(3, max_records, max_bytes);
            let mut sealed = Vec::new();
            let now = Instant::now();
            for (ordinal, (stream, len)) in records.iter().enumerate() {
                let data = vec![b'x'; *len];
                b.push(*stream, ordinal as i64, &data, None, ordinal as u64, now, &mut sealed);
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
        let mut b = Batcher::new(2, 100, 1000);
        let mut sealed = Vec::new();
        let t0 = Instant::now();
        b.push(0, 1, b"{}", None, 0, t0, &mut sealed);
        b.push(
            1,
            1,
            b"{}",
            None,
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
