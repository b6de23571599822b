//! Decides when each STATE may be echoed, and with which `recordCount`.
//!
//! Every record gets an ordinal (its position among all records of the input). A state that arrives
//! after `P` records may be echoed once no batch holding any of those records is still open or
//! unacknowledged. A batch is known by its first record's ordinal, so "the smallest first-ordinal of
//! the batches not yet committed" is all it takes: the state is ready when that is ≥ `P` (or there
//! is none). States leave in input order, each once.

use std::collections::{BTreeSet, VecDeque};

use crate::protocol::state::Scope;

/// A state's scope resolved against the catalog: a stream's index, or `None` for a stream the
/// catalog does not have.
pub type StateScope = Scope<Option<usize>>;

/// A state ready to leave: its echo line, and the staging marks to record first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyState {
    /// The STATE line to print.
    pub line: String,
    /// For each overwrite stream in the state's scope: (stream, its records in this run before the
    /// state), recorded as staging marks before the echo.
    pub marks: Vec<(usize, u64)>,
}

/// The states waiting for their records, and the counts they will carry.
pub struct Checkpoint {
    records_seen: u64,
    uncommitted: BTreeSet<u64>,
    waiting: VecDeque<(u64, ReadyState)>,
    stream_counts: Vec<u64>,
    global_count: u64,
}

impl Checkpoint {
    /// A checkpoint for `streams` catalog streams.
    pub fn new(streams: usize) -> Self {
        Checkpoint {
            records_seen: 0,
            uncommitted: BTreeSet::new(),
            waiting: VecDeque::new(),
            stream_counts: vec![0; streams],
            global_count: 0,
        }
    }

    /// Counts a record of `stream` and returns its ordinal.
    pub fn record(&mut self, stream: usize) -> u64 {
        self.stream_counts[stream] += 1;
        self.global_count += 1;
        self.records_seen += 1;
        self.records_seen - 1
    }

    /// A batch whose first record has `first_ordinal` was opened.
    pub fn batch_opened(&mut self, first_ordinal: u64) {
        self.uncommitted.insert(first_ordinal);
    }

    /// The batch whose first record has `first_ordinal` is committed in Redis.
    pub fn batch_committed(&mut self, first_ordinal: u64) {
        self.uncommitted.remove(&first_ordinal);
    }

    /// The record count a state of `scope` carries now; resets that scope's count.
    pub fn take_count(&mut self, scope: StateScope) -> u64 {
        match scope {
            Scope::Stream(Some(i)) => std::mem::take(&mut self.stream_counts[i]),
            Scope::Stream(None) => 0,
            Scope::Global => std::mem::take(&mut self.global_count),
        }
    }

    /// Queues a state; it waits for the records that came before it.
    pub fn push_state(&mut self, line: String, marks: Vec<(usize, u64)>) {
        self.waiting
            .push_back((self.records_seen, ReadyState { line, marks }));
    }

    /// Takes the states that are ready, in input order.
    pub fn take_ready(&mut self, out: &mut Vec<ReadyState>) {
        let horizon = self.uncommitted.first().copied().unwrap_or(u64::MAX);
        while let Some((before, _)) = self.waiting.front() {
            if *before > horizon {
                break;
            }
            if let Some((_, state)) = self.waiting.pop_front() {
                out.push(state);
            }
        }
    }

    /// Whether every opened batch is committed.
    pub fn all_committed(&self) -> bool {
        self.uncommitted.is_empty()
    }

    /// States still waiting.
    pub fn waiting_states(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(states: &[ReadyState]) -> Vec<&str> {
        states.iter().map(|s| s.line.as_str()).collect()
    }

    #[test]
    fn state_waits_for_every_earlier_batch() {
        let mut c = Checkpoint::new(2);
        let a = c.record(0); // batch A of stream 0 opens with record 0
        c.batch_opened(a);
        let b = c.record(1); // batch B of stream 1 opens with record 1
        c.batch_opened(b);
        assert_eq!(c.take_count(Scope::Global), 2);
        c.push_state("s1".into(), vec![]);
        c.record(0); // record 2 joins batch A
        assert_eq!(c.take_count(Scope::Stream(Some(0))), 2);
        c.push_state("s2".into(), vec![]);
        let mut out: Vec<ReadyState> = Vec::new();
        c.batch_committed(b);
        c.take_ready(&mut out);
        assert!(out.is_empty(), "batch A is still open");
        c.batch_committed(a);
        c.take_ready(&mut out);
        assert_eq!(lines(&out), ["s1", "s2"]);
    }

    #[test]
    fn state_before_any_record_is_ready_at_once() {
        let mut c = Checkpoint::new(1);
        c.push_state("s0".into(), vec![]);
        let r = c.record(0);
        c.batch_opened(r);
        c.push_state("s1".into(), vec![]);
        let mut out: Vec<ReadyState> = Vec::new();
        c.take_ready(&mut out);
        assert_eq!(lines(&out), ["s0"]);
        assert_eq!(c.waiting_states(), 1);
    }

    #[test]
    fn a_later_batch_does_not_hold_back_an_earlier_state() {
        let mut c = Checkpoint::new(1);
        let r0 = c.record(0);
        c.batch_opened(r0);
        c.push_state("s".into(), vec![]);
        c.batch_committed(r0);
        let r1 = c.record(0);
        c.batch_opened(r1);
        let mut out: Vec<ReadyState> = Vec::new();
        c.take_ready(&mut out);
        assert_eq!(lines(&out), ["s"]);
    }
}
