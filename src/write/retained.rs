//! Batches the server acknowledged since the last echoed state, kept to be sent again after a
//! reconnect.
//!
//! A master can acknowledge a batch and then lose it: a failover to a replica that had not yet
//! received it, or a crash with `appendfsync everysec`. After every reconnect the writer sends
//! these batches again, in order; the per-run sequence tokens make each one a no-op where it was
//! kept and a write where it was lost. Once a state is echoed they are dropped (with durable
//! checkpoints on, `WAIT` has then confirmed them on the replicas), and their bytes are capped.

use std::collections::VecDeque;

use super::batch::Batch;

/// Bytes of batch bodies kept at most; older batches are dropped first beyond it.
pub const RETAINED_BYTES: usize = 16 * 1024 * 1024;

/// The acknowledged batches since the last echoed state, oldest first.
#[derive(Debug, Default)]
pub struct Retained {
    batches: VecDeque<Batch>,
    bytes: usize,
}

impl Retained {
    /// Keeps an acknowledged batch (dropping the oldest beyond [`RETAINED_BYTES`]).
    pub fn push(&mut self, batch: Batch) {
        self.bytes += batch.body.len();
        self.batches.push_back(batch);
        while self.bytes > RETAINED_BYTES && self.batches.len() > 1 {
            if let Some(old) = self.batches.pop_front() {
                self.bytes -= old.body.len();
            }
        }
    }

    /// Forgets everything (a state was echoed).
    pub fn clear(&mut self) {
        self.batches.clear();
        self.bytes = 0;
    }

    /// Forgets one stream's batches (its staging was published: they must never be sent again).
    pub fn drop_stream(&mut self, stream: usize) {
        self.batches.retain(|b| b.stream != stream);
        self.bytes = self.batches.iter().map(|b| b.body.len()).sum();
    }

    /// The kept batches, oldest first.
    pub fn batches(&self) -> impl ExactSizeIterator<Item = &Batch> {
        self.batches.iter()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}
