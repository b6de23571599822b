//! The stream plan: what is fixed about each catalog stream for one run, built once at the start
//! from the catalog and the config and shared read-only by every thread. Each thread keeps only its
//! own progress, in vectors indexed like the plan (the catalog's order).

use std::ops::Index;

use super::batch::{Expiry, StreamCall};
use super::overwrite::{LoadStaging, OverwriteStream};
use crate::config::{RecordKey, StreamOptions, ValueFormat};
use crate::error::Failure;
use crate::keys::{Layout, StreamKeys};
use crate::protocol::catalog::{ConfiguredStream, Dedup, FieldPath, SyncMode};
use crate::protocol::expire_at::ExpireAtField;
use crate::protocol::upsert::{KeyText, UpsertFields};
use crate::protocol::StreamDescriptor;

/// How a stream's records are written.
#[derive(Debug, Clone)]
pub enum Mode {
    /// After the stream's existing records.
    Append,
    /// Into staging, then published over the stream's records (see [`super::overwrite`]).
    Overwrite(Box<OverwriteStream>),
    /// Upserts: `append_dedup` (each record replaces its primary key's record unless that one is
    /// newer; `lua/upsert_batch.lua` with `record_key: sequence`, `lua/upsert_keyed.lua` with
    /// `primary_key`), or `append` with `record_key: primary_key` (the last write wins).
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
    /// Where its records say when they expire (`ttl_field`), if they do.
    pub expire_at: Option<ExpireAtField>,
    /// How its records are stored.
    pub format: ValueFormat,
}

impl StreamPlan {
    /// Its overwrite keys, when it is replaced.
    pub fn overwrite(&self) -> Option<&OverwriteStream> {
        match &self.mode {
            Mode::Overwrite(ow) => Some(ow),
            Mode::Append | Mode::Dedup(_) => None,
        }
    }

    /// The fields its records are deduplicated by, for an `append_dedup` stream (also one that
    /// is refreshed).
    pub fn upsert_fields(&self) -> Option<&UpsertFields> {
        match &self.mode {
            Mode::Dedup(fields) => Some(fields),
            Mode::Overwrite(ow) => ow.upserts.as_ref(),
            Mode::Append => None,
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
}

impl Plan {
    /// The plan of `streams` for run `run_id`, keys in `layout`, record keys as `options` say.
    /// Fails with a `config_error` for a stream whose options its sync mode cannot honour.
    pub fn new(
        streams: &[ConfiguredStream],
        layout: Layout,
        options: &StreamOptions,
        run_id: &str,
    ) -> Result<Self, Failure> {
        let streams = streams
            .iter()
            .map(|s| {
                let d = &s.descriptor;
                let expiry = StreamExpiry {
                    ttl_seconds: options.ttl_seconds(d),
                    ttl_field: options.ttl_field(d),
                };
                let shape = Shape {
                    format: options.value_format(d),
                    maxlen: options.stream_maxlen(d),
                };
                stream_plan(s, layout, options.record_key(d), expiry, shape, run_id)
            })
            .collect::<Result<_, _>>()?;
        Ok(Plan {
            streams,
            run_id: run_id.to_string(),
        })
    }

    /// This run's id (its batch tokens' names carry it).
    pub fn run_id(&self) -> &str {
        &self.run_id
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
            .map(|s| match &s.mode {
                Mode::Overwrite(ow) => ow.live_call(&self.run_id),
                Mode::Append | Mode::Dedup(_) => s.call.clone(),
            })
            .collect()
    }

    /// The live calls of the streams whose records must already be in the format they write:
    /// all but overwrites, whose publish replaces every record and may change the format.
    pub fn format_checked_calls(&self) -> Vec<StreamCall> {
        self.iter()
            .filter(|s| s.overwrite().is_none())
            .map(|s| s.call.clone())
            .collect()
    }

    /// Every stream's dedup fields (`None` for a stream that is not `append_dedup`), in catalog
    /// order: what the reader picks from each record.
    pub fn upsert_fields(&self) -> Vec<Option<UpsertFields>> {
        self.iter().map(|s| s.upsert_fields().cloned()).collect()
    }

    /// Every stream's `ttl_field` (`None`: its records carry no moment), in catalog order: what
    /// the reader reads from each record.
    pub fn expire_at_fields(&self) -> Vec<Option<ExpireAtField>> {
        self.iter().map(|s| s.expire_at.clone()).collect()
    }

    /// Every stream's value format, in catalog order.
    pub fn formats(&self) -> Vec<ValueFormat> {
        self.iter().map(|s| s.format).collect()
    }

    /// Makes every stream's batches record a load's input position at `key` (see
    /// [`super::LoadRun`]); `continuing`: an overwrite keeps what earlier runs of the load staged.
    pub fn position(&mut self, key: &str, continuing: bool) {
        for s in &mut self.streams {
            s.call = s.call.clone().positioned(key.to_string());
            if let Mode::Overwrite(ow) = &mut s.mode {
                ow.load = Some(if continuing {
                    LoadStaging::KeepAll
                } else {
                    LoadStaging::StartOver
                });
            }
        }
    }

    /// Every stream's batch call.
    pub fn calls(&self) -> Vec<StreamCall> {
        self.iter().map(|s| s.call.clone()).collect()
    }
}

/// A stream's expiry options.
struct StreamExpiry<'a> {
    ttl_seconds: Option<u64>,
    ttl_field: Option<&'a FieldPath>,
}

/// A stream's value format options.
struct Shape {
    format: ValueFormat,
    maxlen: Option<u64>,
}

/// The plan of one catalog stream.
fn stream_plan(
    s: &ConfiguredStream,
    layout: Layout,
    record_key: RecordKey,
    expiry: StreamExpiry<'_>,
    shape: Shape,
    run_id: &str,
) -> Result<StreamPlan, Failure> {
    let keys = StreamKeys::with_layout(&s.descriptor, layout);
    // Record keys expire; counters, indexes and tombstones never do.
    let live = Expiry {
        records: expiry.ttl_seconds.unwrap_or(0),
        counter: 0,
        moments: expiry.ttl_field.is_some(),
        record_moments: false,
    };
    let refuse = |why: &str| {
        let message = format!("Invalid configuration for stream {}: {why}.", s.descriptor);
        Failure::config(message.clone(), message)
    };
    let format = shape.format;
    let upserted = matches!(
        s.mode,
        SyncMode::Dedup(_) | SyncMode::Overwrite { dedup: Some(_), .. }
    );
    if format == ValueFormat::Stream && (upserted || record_key == RecordKey::PrimaryKey) {
        return Err(refuse("value_format \"stream\" does not work with append_dedup or record_key \"primary_key\" (a Redis stream keeps every entry: they are not upserted one by one); use \"hash\", \"fields\" or \"string\" for this stream in stream_options"));
    }
    let keyed = record_key == RecordKey::PrimaryKey;
    if keyed && matches!(format, ValueFormat::String | ValueFormat::Stream) {
        return Err(refuse(&format!("value_format {:?} does not work with record_key \"primary_key\": a record there could not be told from another tool's key of the same name (it has no room for _airbyte_ab_id); use value_format \"fields\" (one hash field per data field) or record_key \"sequence\" for this stream", format.name())));
    }
    if format == ValueFormat::Stream && (expiry.ttl_seconds.is_some() || expiry.ttl_field.is_some())
    {
        return Err(refuse("value_format \"stream\" keeps all records in one Redis stream, whose entries cannot expire one by one: drop ttl_seconds and ttl_field for this stream (set them per stream in stream_options), and bound the stream with stream_maxlen"));
    }
    if keyed && s.primary_key.is_empty() {
        return Err(refuse("record_key \"primary_key\" needs a primary key, and the catalog gives none (neither primary_key nor the stream's source_defined_primary_key); choose one, or use record_key \"sequence\" for this stream in stream_options"));
    }
    let (call, mode) = match &s.mode {
        SyncMode::Append if keyed => (
            StreamCall::upsert_keyed(keys, run_id, false, live, format),
            Mode::Dedup(UpsertFields::last_write_wins(s.primary_key.clone())),
        ),
        SyncMode::Append => (
            StreamCall::append(keys, run_id, live, format, shape.maxlen),
            Mode::Append,
        ),
        SyncMode::Dedup(dedup) => {
            let (call, text) = match record_key {
                RecordKey::PrimaryKey => (
                    StreamCall::upsert_keyed(keys, run_id, true, live, format),
                    KeyText::Path,
                ),
                RecordKey::Sequence => (
                    StreamCall::upsert(keys, run_id, live, format),
                    KeyText::Json,
                ),
            };
            (call, Mode::Dedup(upsert_fields(s, dedup, text)))
        }
        SyncMode::Overwrite {
            generation,
            resumable,
            dedup,
        } => {
            let mut ow = OverwriteStream::new(keys, *generation, *resumable);
            ow.ttl = live.records;
            ow.format = format;
            ow.moments = live.moments;
            ow.maxlen = shape.maxlen;
            let text = if keyed { KeyText::Path } else { KeyText::Json };
            ow.upserts = match dedup {
                Some(dedup) => Some(upsert_fields(s, dedup, text)),
                None if keyed => Some(UpsertFields::last_write_wins(s.primary_key.clone())),
                None => None,
            };
            (ow.staging_call(run_id), Mode::Overwrite(Box::new(ow)))
        }
    };
    Ok(StreamPlan {
        descriptor: s.descriptor.clone(),
        call,
        mode,
        expire_at: expiry.ttl_field.cloned().map(ExpireAtField::new),
        format,
    })
}

/// The fields an `append_dedup` stream's records are deduplicated by.
fn upsert_fields(s: &ConfiguredStream, dedup: &Dedup, key_text: KeyText) -> UpsertFields {
    let mut fields = UpsertFields::new(s.primary_key.clone(), dedup.cursor.clone(), key_text);
    fields.cursor_is_time = dedup.cursor_is_time;
    fields
}

impl Index<usize> for Plan {
    type Output = StreamPlan;

    fn index(&self, stream: usize) -> &StreamPlan {
        &self.streams[stream]
    }
}
