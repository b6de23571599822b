//! The stream plan: what is fixed about each catalog stream for one run, built once at the start
//! from the catalog and the config and shared read-only by every thread. Each thread keeps only its
//! own progress, in vectors indexed like the plan (the catalog's order).

use std::ops::Index;

use super::batch::{Expiry, StreamCall};
use super::overwrite::OverwriteStream;
use crate::keys::{Layout, StreamKeys};
use crate::protocol::catalog::{ConfiguredStream, SyncMode};
use crate::protocol::upsert::UpsertFields;
use crate::protocol::StreamDescriptor;
use crate::scripts::APPEND_BATCH;

/// How a stream's records are written.
#[derive(Debug, Clone)]
pub enum Mode {
    /// After the stream's existing records.
    Append,
    /// Into staging, then published over the stream's records (see [`super::overwrite`]).
    Overwrite(OverwriteStream),
    /// `append_dedup`: each record replaces its primary key's record (`lua/upsert_batch.lua`).
    Dedup(UpsertFields),
}

/// One catalog stream in this run.
#[derive(Debug, Clone)]
pub struct StreamPlan {
    /// The catalog's name for it.
    pub descriptor: StreamDescriptor,
    /// The script call its batches are sent as (into staging, for an overwrite stream).
    pub call: StreamCall,
    /// How it is written.
    pub mode: Mode,
}

impl StreamPlan {
    /// Its overwrite keys, when it is replaced.
    pub fn overwrite(&self) -> Option<&OverwriteStream> {
        match &self.mode {
            Mode::Overwrite(ow) => Some(ow),
            Mode::Append | Mode::Dedup(_) => None,
        }
    }

    /// The fields its records are deduplicated by, for an `append_dedup` stream.
    pub fn upsert_fields(&self) -> Option<&UpsertFields> {
        match &self.mode {
            Mode::Dedup(fields) => Some(fields),
            Mode::Append | Mode::Overwrite(_) => None,
        }
    }

    /// Whether it is replaced (staged, then published).
    pub fn is_overwrite(&self) -> bool {
        self.overwrite().is_some()
    }
}

/// Every catalog stream of the run, in catalog order.
#[derive(Debug, Clone)]
pub struct Plan {
    streams: Vec<StreamPlan>,
    run_id: String,
    layout: Layout,
}

impl Plan {
    /// The plan of `streams` for run `run_id`, keys in `layout`.
    pub fn new(streams: &[ConfiguredStream], layout: Layout, run_id: &str) -> Self {
        let streams = streams
            .iter()
            .map(|s| {
                let keys = StreamKeys::with_layout(&s.descriptor, layout);
                let (call, mode) = match &s.mode {
                    SyncMode::Append => (
                        StreamCall::new(&APPEND_BATCH, keys, run_id, Expiry::NONE),
                        Mode::Append,
                    ),
                    SyncMode::Dedup {
                        primary_key,
                        cursor,
                    } => (
                        StreamCall::upsert(keys, run_id),
                        Mode::Dedup(UpsertFields::new(primary_key.clone(), cursor.clone())),
                    ),
                    SyncMode::Overwrite {
                        generation,
                        resumable,
                    } => {
                        let ow = OverwriteStream::new(keys, *generation, *resumable);
                        let call = StreamCall::new(
                            &APPEND_BATCH,
                            ow.staging_as_stream(),
                            run_id,
                            Expiry::STAGING,
                        );
                        (call, Mode::Overwrite(ow))
                    }
                };
                StreamPlan {
                    descriptor: s.descriptor.clone(),
                    call,
                    mode,
                }
            })
            .collect();
        Plan {
            streams,
            run_id: run_id.to_string(),
            layout,
        }
    }

    /// The number of streams.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether the catalog has no stream.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// The streams, in catalog order.
    pub fn iter(&self) -> impl Iterator<Item = &StreamPlan> {
        self.streams.iter()
    }

    /// The descriptors, in catalog order.
    pub fn descriptors(&self) -> Vec<StreamDescriptor> {
        self.iter().map(|s| s.descriptor.clone()).collect()
    }

    /// The overwrite streams' keys.
    pub fn overwrites(&self) -> impl Iterator<Item = &OverwriteStream> {
        self.iter().filter_map(StreamPlan::overwrite)
    }

    /// Every stream's call as if it were appended to its live keys: what the rights probe checks
    /// (an overwrite stream's publish writes there too).
    pub fn live_calls(&self) -> Vec<StreamCall> {
        self.iter()
            .map(|s| {
                let keys = StreamKeys::with_layout(&s.descriptor, self.layout);
                match s.mode {
                    Mode::Dedup(_) => StreamCall::upsert(keys, &self.run_id),
                    Mode::Append | Mode::Overwrite(_) => {
                        StreamCall::new(&APPEND_BATCH, keys, &self.run_id, Expiry::NONE)
                    }
                }
            })
            .collect()
    }

    /// Every stream's dedup fields (`None` for a stream that is not `append_dedup`), in catalog
    /// order: what the reader picks from each record.
    pub fn upsert_fields(&self) -> Vec<Option<UpsertFields>> {
        self.iter().map(|s| s.upsert_fields().cloned()).collect()
    }

    /// Every stream's batch call.
    pub fn calls(&self) -> Vec<StreamCall> {
        self.iter().map(|s| s.call.clone()).collect()
    }
}

impl Index<usize> for Plan {
    type Output = StreamPlan;

    fn index(&self, stream: usize) -> &StreamPlan {
        &self.streams[stream]
    }
}
