//! Overwrite and truncate refreshes: a stream's new generation is staged, then published.
//!
//! Every step below is safe to stop at any Redis command and to repeat (proved by
//! `tests/it/overwrite_stops.rs`, which cuts an overwrite at each of its commands in turn):
//!
//! * **Prepare** (before a stream's first staged batch): staging of another generation, or of a
//!   stream whose source cannot resume (`is_resumable: false`), is discarded; staging of the same
//!   generation (a failed attempt being retried) is kept up to where the source restarted: the new
//!   attempt's first record is compared with the record at position 1 and after each mark (a mark is
//!   the position of an echoed state); the latest equal one is the restart point, and without one
//!   everything up to the last mark is kept. The logical view (staging counter, marks) shrinks first
//!   in one script call (`staging_trim.lua`, which remembers the highest staged id), and the staged
//!   records above it are deleted afterwards.
//! * **Publish** (the stream completed): first a read-only pass finds any key in the way of records
//!   1..n that is not a record (`publish_check.lua`: a `config_error`, nothing published). Then a
//!   roll-forward series of short calls: a marker records (n, old counter, moved); staged records are
//!   RENAMEd over records 1..n, each step advancing the marker's `moved` in the same call (so a
//!   missing staged record is an error unless the marker says it moved); records n+1..old are
//!   deleted by range; leftovers above that are swept with SCAN only when a probe finds one; the
//!   counter becomes n. Any run that finds a marker finishes the publish first, so after any failure
//!   plus recovery a stream holds exactly its old or exactly its new records; one that cannot finish
//!   (a key in the way) blocks only its own stream.
//! * **After a publish** the generation's metadata and marks stay for a week: the platform retries a
//!   failed sync from its last echoed state, which may come before the publish, and that attempt
//!   resumes the published records (live records 1..restart point count as staged) instead of
//!   publishing only what it resends.
//! * **Deduplicated streams** (`upserts` in the sequence layout: a truncate refresh of an
//!   `append_dedup` stream) stage
//!   through `upsert_batch.lua` with their own index (`StagingKeys::index`), so staged ids are not
//!   positions: a key keeps its id when updated, a delete leaves a gap. Prepare keeps the staging
//!   of the same generation whole when a state was echoed for it (what the source sends again is
//!   upserted over it) or discards it
//!   (its index with its counter, in the same call); a generation already published takes this
//!   attempt's records into the live stream directly (nothing to publish). The publish marker
//!   records `dedup`, so any run finishes it alike: a gap deletes the live record at that id, and
//!   the staged index replaces the live one in the finish. Streams keyed by primary key go by SCAN
//!   instead of id ranges: `keyed.rs`.
//! * Staged records and the staging bookkeeping expire a week after their last use (a generation
//!   never resumed does not stay forever); the publish removes the expiry from the records it moves.
//!
//! | file | job |
//! |---|---|
//! | `prepare.rs` | ready a stream's staging for this run (trim to the restart point), record marks |
//! | `first.rs` | a stream's first record, and how each value format stores a record (restart points) |
//! | `publish.rs` | check, then roll the staged records forward into place |
//! | `recover.rs` | finish the publishes an earlier run left under way |
//! | `keyed.rs` | the same by SCAN for a stream keyed by primary key (`record_key: primary_key`) |

mod calls;
mod first;
mod keyed;
mod prepare;
mod publish;
mod recover;

use super::batch::{Expiry, StreamCall};
use crate::config::ValueFormat;
use crate::connect::Context;
use crate::error::Failure;
use crate::keys::{StagingKeys, StreamKeys};
use crate::protocol::upsert::{KeyText, UpsertFields};

pub use first::FirstRecord;
pub use prepare::{mark, prepare, Prepared};
pub use publish::{publish, sweep_leftovers, PublishReport};
pub use recover::{recover, Recovery};

/// Keys per publish or delete call: each call stays in the low milliseconds.
pub const CHUNK: u64 = 500;
/// Records per publish step: each one may free an old record (RENAME over it) and moves an expiry,
/// so a step of 250 takes about as long as a check or delete call of 500.
pub const MOVE_CHUNK: u64 = 250;
/// SCAN COUNT hint of one sweep step.
const SCAN_COUNT: u64 = 1000;
/// Sweep steps at most: a bound on the loop (ten billion keys scanned, beyond any real keyspace).
const MAX_SCAN_STEPS: u64 = 10_000_000;

/// A stream written by overwrite: its live keys, its staging keys, its generation.
#[derive(Debug, Clone)]
pub struct OverwriteStream {
    /// The stream's own keys.
    pub live: StreamKeys,
    /// Its staging keys.
    pub staging: StagingKeys,
    /// The generation being written.
    pub generation: i64,
    /// Whether the source can resume the stream from a state (the catalog's `is_resumable`; true
    /// when it does not say). Staging of an earlier attempt of a stream that cannot resume is
    /// discarded: its source starts over, and a content match could not tell.
    pub resumable: bool,
    /// How its records are upserted as they are staged: a truncate refresh of an `append_dedup`
    /// stream (deduplicated, see the module documentation), or any overwrite with `record_key:
    /// primary_key` (`KeyText::Path`: one key per primary key); `None` for a plain overwrite.
    pub upserts: Option<UpsertFields>,
    /// The published records' time to live in seconds (`ttl_seconds`; 0: they never expire):
    /// given by the publish, which replaces the staging expiry with it.
    pub ttl: u64,
    /// How its records are stored: the staged generation's format becomes the stream's at the
    /// publish, whatever it was before. In the `stream` format the generation is staged as one
    /// Redis stream (at the staging counter's key), which the publish renames over the stream's.
    pub format: ValueFormat,
    /// In the `stream` format: the approximate length the Redis stream is trimmed to.
    pub maxlen: Option<u64>,
    /// Whether its records carry the moments they expire (`ttl_field`): staged ones record them
    /// (`keys::StagingKeys::moments`), and the publish gives each record its own.
    pub moments: bool,
    /// For a `load`: what to keep of the staging of its generation, which the load's committed
    /// position describes exactly (no content match is needed, or done).
    pub load: Option<LoadStaging>,
}

/// What a `load` keeps of a staged generation (its own: the generation is the load's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadStaging {
    /// The load starts: anything staged before is discarded.
    StartOver,
    /// The load resumes after its committed position: everything staged is kept (each batch
    /// wrote the position in the same call as its records, so the two agree).
    KeepAll,
}

impl OverwriteStream {
    /// The overwrite keys of a stream with these live keys.
    pub fn new(live: StreamKeys, generation: i64, resumable: bool) -> Self {
        let staging = StagingKeys::for_counter(&live.counter);
        OverwriteStream {
            live,
            staging,
            generation,
            resumable,
            upserts: None,
            ttl: 0,
            format: ValueFormat::Hash,
            maxlen: None,
            moments: false,
            load: None,
        }
    }

    /// The call that writes this stream's live keys in run `run_id` (what the rights probe checks;
    /// and where a deduplicated stream's batches go when an earlier attempt published this
    /// generation already).
    pub fn live_call(&self, run_id: &str) -> StreamCall {
        let expiry = Expiry {
            records: self.ttl,
            moments: self.moments,
            ..Expiry::NONE
        };
        self.call(self.live.clone(), run_id, expiry)
    }

    /// The call that stages this stream's records in run `run_id`.
    pub fn staging_call(&self, run_id: &str) -> StreamCall {
        let expiry = Expiry {
            moments: self.moments,
            record_moments: self.moments,
            ..Expiry::STAGING
        };
        self.call(self.staging_as_stream(), run_id, expiry)
    }

    fn call(&self, keys: StreamKeys, run_id: &str, expiry: Expiry) -> StreamCall {
        match &self.upserts {
            None => StreamCall::append(keys, run_id, expiry, self.format, self.maxlen),
            Some(f) if f.key_text == KeyText::Path => {
                StreamCall::upsert_keyed(keys, run_id, f.deletes, expiry, self.format)
            }
            Some(_) => StreamCall::upsert(keys, run_id, expiry, self.format),
        }
    }

    /// Whether its staged ids are not positions (upserts in the sequence layout: a key keeps its
    /// id, a delete leaves a gap).
    pub fn is_dedup(&self) -> bool {
        self.upserts
            .as_ref()
            .is_some_and(|f| f.key_text == KeyText::Json)
    }

    /// Whether its records live one per primary key (`record_key: primary_key`): staged and
    /// published by key, with SCAN.
    pub fn is_keyed(&self) -> bool {
        self.upserts
            .as_ref()
            .is_some_and(|f| f.key_text == KeyText::Path)
    }

    /// The keys the append script writes for this stream: the staging counter and records.
    pub fn staging_as_stream(&self) -> StreamKeys {
        StreamKeys {
            counter: self.staging.counter.clone(),
            record_prefix: self.staging.record_prefix.clone(),
        }
    }
}

/// Whether a state was echoed for the staged generation (its marks are not empty): only then did
/// the platform take any of it as written, and only then does a retry resume it.
pub(super) fn any_state_echoed(
    con: &mut redis::Connection,
    s: &OverwriteStream,
    ctx: &Context,
) -> Result<bool, Failure> {
    let marks: u64 = redis::cmd("LLEN")
        .arg(&s.staging.marks)
        .query(con)
        .map_err(|e| crate::connect::classify(&e, ctx))?;
    Ok(marks > 0)
}

/// What tells a stream's records from other keys under its prefix (the record rule of the
/// scripts that check, move or delete records): its value format, and for `string` records,
/// whose type alone says nothing, the counter that gave their ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRule {
    /// The records' value format.
    pub format: ValueFormat,
    /// The counter that gave their ids: a string key with a higher id is not a record.
    pub limit: u64,
}

impl RecordRule {
    /// The rule of records in `format` (the format marker's text; none: `hash`) given ids up to
    /// `limit`.
    pub fn new(format: Option<&str>, limit: u64) -> Self {
        RecordRule {
            format: format
                .and_then(ValueFormat::from_name)
                .unwrap_or(ValueFormat::Hash),
            limit,
        }
    }

    /// The two script arguments that carry it.
    pub fn args(&self) -> [String; 2] {
        [self.format.name().to_string(), self.limit.to_string()]
    }
}

/// Deletes records `from..=to` under `prefix` in chunks; returns the keys left alone (not records).
fn delete_range(
    con: &mut redis::Connection,
    prefix: &str,
    from: u64,
    to: u64,
    rule: RecordRule,
    ctx: &Context,
    calls: &mut u64,
) -> Result<Removed, Failure> {
    let mut removed = Removed::default();
    let mut start = from;
    while start <= to {
        let end = (start + CHUNK - 1).min(to);
        let step = calls::delete_range(con, prefix, start, end, rule, ctx)?;
        *calls += 1;
        removed.deleted += step.deleted;
        removed.skipped += step.skipped;
        start = end + 1;
    }
    Ok(removed)
}

/// The failure of a sync whose overwrite `streams` (named) ended without COMPLETE: their old records
/// are unchanged and the new ones stay staged for the next attempt.
pub fn not_published(streams: &[String]) -> Failure {
    Failure::transient(
        format!(
            "Stream(s) {} did not report COMPLETE, so their new records were not published: their old records are unchanged and the new ones stay staged (states were echoed for them, so the next attempt resumes them). Retry the sync.",
            streams.join(", ")
        ),
        "overwrite streams without COMPLETE",
    )
}

/// What a delete (of a range, or by SCAN) did under a stream's prefix.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Records deleted.
    pub deleted: u64,
    /// Keys that were not records, left alone.
    pub skipped: u64,
}
