//! `write`: Airbyte messages on stdin → atomic, pipelined batches in Redis, states echoed after commit.
//!
//! Three threads and the coordinator (this module's [`run`]):
//!
//! | part        | job |
//! |-------------|-----|
//! | `reader`    | stdin lines → routed records and states, in chunks (bounded channel) |
//! | coordinator | records → `batcher`; states → `checkpoint`; commits → echo ready states |
//! | `writer`    | sealed batches → pipelined EVALSHA on one connection; commits back (unbounded) |
//! | output      | every stdout line ([`crate::protocol::output::Output`]) |
//!
//! Memory is bounded: a fixed number of chunks between reader and coordinator, a fixed number of
//! batches in flight, and one open batch per stream capped in records and bytes.

pub mod batch;
pub mod batcher;
pub mod checkpoint;
pub mod overwrite;
pub mod reader;
pub mod resp;
pub mod retry;
pub mod router;
pub mod writer;

use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, never, select, unbounded, Receiver};

use crate::config::Settings;
use crate::connect::{self, Context};
use crate::error::{Failure, FailureType};
use crate::keys::{self, StreamKeys};
use crate::protocol::catalog::{self, SyncMode};
use crate::protocol::output::{Level, Output};
use crate::protocol::state;
use crate::protocol::StreamDescriptor;
use crate::scripts::{APPEND_BATCH, CHECK_RIGHTS};
use batch::{Batch, StreamCall};
use batcher::Batcher;
use checkpoint::{Checkpoint, ReadyState, StateScope};
use overwrite::OverwriteStream;
use reader::{Chunk, Item};
use retry::Retry;
use router::Router;
use writer::{Ack, Work, Writer};

/// Chunks waiting between the reader and the coordinator, at most.
const CHUNKS_IN_QUEUE: usize = 8;
/// How long after SIGTERM the committing of in-flight batches may take.
const TERMINATE_GRACE: Duration = Duration::from_secs(10);

/// What a finished `write` did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Records committed.
    pub records: u64,
    /// Batches committed.
    pub batches: u64,
    /// States echoed.
    pub states: u64,
}

/// Runs `write`: reads `input` to its end and writes its records. Prints states (and logs) to `out`.
pub fn run<R: Read + Send + 'static>(
    settings: &Settings,
    catalog_path: &Path,
    input: R,
    out: &Output,
) -> Result<Summary, Failure> {
    let started = Instant::now();
    let streams = catalog::load(catalog_path, settings.truncate_refreshes)?;
    let descriptors: Vec<_> = streams.iter().map(|s| s.descriptor.clone()).collect();
    keys::check_catalog(&descriptors)
        .map_err(|m| Failure::config(format!("Invalid catalog: {m}."), &m))?;

    let reply_timeout = settings.reply_timeout;
    let ctx = Context::new(settings, "while writing");
    let run_id = new_run_id()?;
    let overwrites: Vec<Option<OverwriteStream>> = streams
        .iter()
        .map(|s| match s.mode {
            SyncMode::Append => None,
            SyncMode::Overwrite { generation } => Some(OverwriteStream::new(
                StreamKeys::new(&s.descriptor),
                generation,
            )),
        })
        .collect();
    let calls: Vec<StreamCall> = descriptors
        .iter()
        .zip(&overwrites)
        .map(|(d, ow)| {
            let target = ow
                .as_ref()
                .map_or_else(|| StreamKeys::new(d), OverwriteStream::staging_as_stream);
            StreamCall::new(&APPEND_BATCH, target, &run_id)
        })
        .collect();
    let live_calls: Vec<StreamCall> = descriptors
        .iter()
        .map(|d| StreamCall::new(&APPEND_BATCH, StreamKeys::new(d), &run_id))
        .collect();
    // Setup rides through a restarting or briefly unreachable server like the writes do.
    let mut retry = Retry::new(settings.retry_budget);
    let mut con = loop {
        let attempt = connect::connect(settings, reply_timeout).and_then(|connected| {
            let mut con = connected.con;
            writer::load_scripts(&mut con, &ctx)?;
            let recovered = overwrite::recover(&mut con, &ctx)?;
            check_rights(&mut con, &live_calls, &ctx)?;
            check_rights(&mut con, &calls, &ctx)?;
            Ok((con, connected.warnings, recovered))
        });
        match attempt {
            Ok((con, warnings, recovered)) => {
                for w in &warnings {
                    out.log(Level::Warn, w);
                }
                for counter in recovered {
                    out.log(Level::Info, format!("Finished the publish of stream key {counter:?} that an earlier run left under way."));
                }
                break con;
            }
            Err(f) if f.failure_type == FailureType::Transient => retry.wait(&f)?,
            Err(f) => return Err(f),
        }
    };
    let max_record_bytes = proto_max_bulk_len(&mut con);
    let overwrite_count = overwrites.iter().flatten().count();
    out.log(
        Level::Info,
        format!(
            "Writing {} stream(s) ({overwrite_count} by overwrite) to Redis at {} db {} (run {run_id}, batches of up to {} records, {} in flight).",
            calls.len(),
            settings.address(),
            settings.db,
            settings.batch_size,
            settings.max_in_flight
        ),
    );

    let terminate = sigterm_channel()?;
    let (chunk_tx, chunk_rx) = bounded::<Chunk>(CHUNKS_IN_QUEUE);
    let router = Arc::new(Router::new(&descriptors));
    std::thread::spawn(move || {
        reader::read_all(
            BufReader::with_capacity(256 * 1024, input),
            router,
            chunk_tx,
        )
    });

    let (work_tx, work_rx) = bounded::<Work>(settings.max_in_flight.get());
    let (ack_tx, ack_rx) = unbounded::<Ack>();
    let stream_state: Vec<StreamProgress> = overwrites
        .iter()
        .map(|ow| StreamProgress {
            overwrite: ow.is_some(),
            ..StreamProgress::default()
        })
        .collect();
    let writer = Writer {
        con,
        calls: Arc::new(calls),
        overwrite: overwrites,
        sweep: settings.sweep_leftovers,
        ctx,
        max_group: settings.max_in_flight.get(),
        settings: settings.clone(),
        reply_timeout,
    };
    let writer_thread = std::thread::spawn(move || writer.run(work_rx, ack_tx));

    let mut coordinator = Coordinator {
        batcher: Batcher::new(
            descriptors.len(),
            settings.batch_size.get(),
            settings.batch_bytes.get(),
        ),
        checkpoint: Checkpoint::new(descriptors.len()),
        linger: settings.batch_linger,
        sealed: Vec::new(),
        outbox: Vec::new(),
        ready: Vec::new(),
        streams: stream_state,
        descriptors,
        any_status: false,
        awaiting: 0,
        writer_failed: false,
        max_record_bytes,
        summary: Summary::default(),
    };
    let result = coordinator.drive(chunk_rx, &work_tx, &ack_rx, &terminate, out);
    drop(work_tx);
    if !coordinator.writer_failed {
        // Everything sent was acknowledged (the sync succeeded, or stopped at bad input): the writer
        // only waits for the channel to close, then removes this run's tokens.
        let _ = writer_thread.join();
    }
    let summary = coordinator.summary;
    if result.is_ok() {
        let secs = started.elapsed().as_secs_f64();
        out.log(
            Level::Info,
            format!(
                "Wrote {} records in {} batches and echoed {} states in {secs:.2} s ({:.0} records/s).",
                summary.records,
                summary.batches,
                summary.states,
                summary.records as f64 / secs.max(1e-9)
            ),
        );
    }
    result.map(|()| summary)
}

/// Where one catalog stream stands in this run.
#[derive(Debug, Default, Clone)]
struct StreamProgress {
    overwrite: bool,
    prepared: bool,
    records: u64,
    status_seen: bool,
    published: bool,
}

struct Coordinator {
    batcher: Batcher,
    checkpoint: Checkpoint,
    linger: Duration,
    sealed: Vec<Batch>,
    outbox: Vec<Work>,
    ready: Vec<ReadyState>,
    streams: Vec<StreamProgress>,
    descriptors: Vec<StreamDescriptor>,
    any_status: bool,
    /// Prepare, state and publish work sent and not yet acknowledged.
    awaiting: usize,
    /// Whether the writer reported a failure (then it is not waited for).
    writer_failed: bool,
    /// The largest record the server accepts (its proto-max-bulk-len).
    max_record_bytes: u64,
    summary: Summary,
}

impl Coordinator {
    /// Moves input to the writer and commits to the output until the input ends and every piece of
    /// work is acknowledged, or something fails. Input failures are returned only after everything
    /// before the bad line is committed and its states echoed.
    fn drive(
        &mut self,
        chunks: Receiver<Chunk>,
        work: &crossbeam_channel::Sender<Work>,
        acks: &Receiver<Ack>,
        terminate: &Receiver<()>,
        out: &Output,
    ) -> Result<(), Failure> {
        let mut input_open = true;
        let mut input_failure: Option<Failure> = None;
        let mut give_up_at: Option<Instant> = None;
        loop {
            if let (Some(at), Some(f)) = (give_up_at, &input_failure) {
                if Instant::now() >= at {
                    // In-flight batches are abandoned: each is atomic, and no state covers them.
                    return Err(f.clone());
                }
            }
            // Checked on every turn: under steady input the timeout arm below never fires, and a
            // quiet stream's batch (and every state behind it) must not wait for a busy one.
            if let Some(cutoff) = Instant::now().checked_sub(self.linger) {
                self.batcher.seal_opened_before(cutoff, &mut self.sealed);
                self.move_sealed();
            }
            self.queue_ready_states(out);
            for item in self.outbox.drain(..) {
                if work.send(item).is_err() {
                    // The writer stopped: its failure is waiting in `acks`.
                    break;
                }
            }
            if !input_open
                && self.checkpoint.all_committed()
                && self.awaiting == 0
                && self.checkpoint.waiting_states() == 0
            {
                return match input_failure {
                    Some(f) => Err(f),
                    None => Ok(()),
                };
            }
            let chunk_source = if input_open { chunks.clone() } else { never() };
            let deadline = self
                .batcher
                .next_linger_deadline(self.linger)
                .into_iter()
                .chain(give_up_at)
                .min();
            let timeout = deadline.map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(Instant::now())
            });
            let terminate_source = if give_up_at.is_none() {
                terminate.clone()
            } else {
                never()
            };
            select! {
                recv(chunk_source) -> chunk => match chunk {
                    Ok(chunk) => {
                        if let Some(f) = self.take_chunk(chunk) {
                            input_failure = Some(f);
                            input_open = false;
                            self.end_of_input(false, out);
                        }
                    }
                    Err(_) => {
                        input_open = false;
                        self.end_of_input(true, out);
                    }
                },
                recv(terminate_source) -> _ => {
                    // SIGTERM (how Airbyte cancels): stop reading, commit what was read (batches are
                    // atomic), echo the states of committed records, then fail. Bounded in time.
                    out.log(Level::Warn, "SIGTERM: stopping; committing the records read so far, publishing nothing.");
                    give_up_at = Some(Instant::now() + TERMINATE_GRACE);
                    if input_open || input_failure.is_none() {
                        input_open = false;
                        input_failure = Some(Failure::transient(
                            "The sync was cancelled (SIGTERM); states were echoed for every committed record.",
                            "SIGTERM",
                        ));
                        self.end_of_input(false, out);
                    }
                }
                recv(acks) -> ack => match ack {
                    Ok(ack) => self.take_ack(ack, out)?,
                    Err(_) => {
                        return Err(Failure::system("The Redis writer stopped unexpectedly.", "writer thread ended"));
                    }
                },
                default(timeout) => {}
            }
        }
    }

    fn take_ack(&mut self, ack: Ack, out: &Output) -> Result<(), Failure> {
        match ack {
            Ack::Committed {
                first_ordinal,
                records,
            } => {
                self.checkpoint.batch_committed(first_ordinal);
                self.summary.records += records as u64;
                self.summary.batches += 1;
            }
            Ack::Prepared => self.awaiting -= 1,
            Ack::Reconnected(message) => out.log(Level::Warn, message),
            Ack::Echo(line) => {
                self.awaiting -= 1;
                self.summary.states += 1;
                out.send(line);
            }
            Ack::Published { stream, report } => {
                self.awaiting -= 1;
                out.log(
                    Level::Info,
                    format!(
                        "Published stream {}: {} records replaced {} in {} ms ({} script calls).",
                        self.descriptors[stream],
                        report.published,
                        report.old,
                        report.millis,
                        report.calls
                    ),
                );
                if report.skipped > 0 {
                    out.log(
                        Level::Warn,
                        format!(
                            "Stream {}: {} keys under its record prefix are not records of this destination and were left alone.",
                            self.descriptors[stream], report.skipped
                        ),
                    );
                }
            }
            Ack::Failed(f) => {
                self.writer_failed = true;
                return Err(f);
            }
        }
        Ok(())
    }

    /// Feeds a chunk to the batcher and checkpoint; returns the input failure it ends with, if any.
    fn take_chunk(&mut self, chunk: Chunk) -> Option<Failure> {
        let now = Instant::now();
        for item in chunk.items {
            match item {
                Item::Record {
                    stream,
                    emitted_at,
                    data,
                    line,
                } => {
                    let data = &chunk.arena[data];
                    if data.len() as u64 > self.max_record_bytes {
                        return Some(Failure::config(
                            format!(
                                "The record on line {line} (record {} of stream {} in this sync) is {} bytes, more than the server's proto-max-bulk-len of {} bytes: raise proto-max-bulk-len on the server, or make the source send smaller records.",
                                self.streams[stream].records + 1,
                                self.descriptors[stream],
                                data.len(),
                                self.max_record_bytes
                            ),
                            "record above proto-max-bulk-len",
                        ));
                    }
                    let progress = &mut self.streams[stream];
                    if progress.published {
                        return Some(Failure::system(
                            format!("A record of stream {} arrived after its COMPLETE status; the stream was already published.", self.descriptors[stream]),
                            "record after COMPLETE",
                        ));
                    }
                    progress.records += 1;
                    if progress.overwrite && !progress.prepared {
                        progress.prepared = true;
                        self.move_sealed();
                        self.outbox.push(Work::Prepare {
                            stream,
                            first_data: Some(data.to_vec()),
                        });
                        self.awaiting += 1;
                    }
                    let ordinal = self.checkpoint.record(stream);
                    if self
                        .batcher
                        .push(stream, emitted_at, data, ordinal, now, &mut self.sealed)
                    {
                        self.checkpoint.batch_opened(ordinal);
                    }
                }
                Item::State { text, scope } => {
                    let count = self.checkpoint.take_count(scope);
                    let marks = self.marks_for(scope);
                    match state::echo_line(&text, count) {
                        Ok(line) => self.checkpoint.push_state(line, marks),
                        Err(e) => {
                            return Some(Failure::system("A STATE message could not be echoed.", e))
                        }
                    }
                }
                Item::Status { streams, complete } => {
                    self.any_status = true;
                    for stream in streams {
                        self.streams[stream].status_seen = true;
                        if complete {
                            self.publish(stream);
                        }
                    }
                }
                Item::Failed(f) => return Some(f),
            }
        }
        self.move_sealed();
        None
    }

    /// The staging marks a state of `scope` records: its overwrite streams' records so far.
    fn marks_for(&self, scope: StateScope) -> Vec<(usize, u64)> {
        let mark = |i: usize| {
            let p = &self.streams[i];
            (p.overwrite && p.prepared).then_some((i, p.records))
        };
        match scope {
            StateScope::Stream(i) => mark(i).into_iter().collect(),
            StateScope::Global => (0..self.streams.len()).filter_map(mark).collect(),
            StateScope::UnknownStream => Vec::new(),
        }
    }

    /// Seals the stream's batch and queues its publish (once), after everything it wrote.
    fn publish(&mut self, stream: usize) {
        let p = &mut self.streams[stream];
        if !p.overwrite || p.published {
            return;
        }
        p.published = true;
        let prepare = !p.prepared;
        p.prepared = true;
        self.batcher.seal_stream(stream, &mut self.sealed);
        self.move_sealed();
        if prepare {
            self.outbox.push(Work::Prepare {
                stream,
                first_data: None,
            });
            self.awaiting += 1;
        }
        self.outbox.push(Work::Publish { stream });
        self.awaiting += 1;
    }

    /// The input ended: seal everything; at a clean end, publish the overwrite streams of a source
    /// that sent no stream statuses at all (older sources).
    fn end_of_input(&mut self, clean: bool, out: &Output) {
        self.batcher.seal_all(&mut self.sealed);
        self.move_sealed();
        if !clean {
            return;
        }
        for stream in 0..self.streams.len() {
            let p = &self.streams[stream];
            if !p.overwrite || p.published {
                continue;
            }
            if !self.any_status {
                self.publish(stream);
            } else {
                out.log(
                    Level::Warn,
                    format!(
                        "Stream {} did not report COMPLETE: its new records stay staged and its old records are unchanged.",
                        self.descriptors[stream]
                    ),
                );
            }
        }
    }

    fn move_sealed(&mut self) {
        self.outbox.extend(self.sealed.drain(..).map(Work::Batch));
    }

    /// Echoes ready states, or, when overwrite streams need their marks recorded first, queues them
    /// for the writer (which hands them back in order).
    fn queue_ready_states(&mut self, out: &Output) {
        self.checkpoint.take_ready(&mut self.ready);
        let through_writer = self.streams.iter().any(|p| p.overwrite);
        for state in self.ready.drain(..) {
            if through_writer {
                self.awaiting += 1;
                self.outbox.push(Work::State(state));
            } else {
                self.summary.states += 1;
                out.send(state.line);
            }
        }
    }
}

/// Fails before any data moves when the user may not write some stream's keys (Redis 7+).
fn check_rights(
    con: &mut redis::Connection,
    calls: &[StreamCall],
    ctx: &Context,
) -> Result<(), Failure> {
    let mut pipe = redis::pipe();
    for call in calls {
        pipe.cmd("EVALSHA")
            .arg(&CHECK_RIGHTS.sha)
            .arg(2)
            .arg(&call.keys.counter)
            .arg(&call.token)
            .arg(&call.keys.record_prefix);
    }
    let replies: Vec<redis::Value> = pipe
        .ignore_errors()
        .query(con)
        .map_err(|e| connect::classify(&e, ctx))?;
    for (call, reply) in calls.iter().zip(replies) {
        if let redis::Value::ServerError(e) = reply {
            let ctx = Context {
                during: format!("checking the rights on stream key {:?}", call.keys.counter),
                ..ctx.clone()
            };
            return Err(connect::classify(&redis::RedisError::from(e), &ctx));
        }
    }
    Ok(())
}

/// A channel that receives one message per SIGTERM (the default action, exiting, is replaced).
fn sigterm_channel() -> Result<Receiver<()>, Failure> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM])
        .map_err(|e| Failure::system("Could not install the SIGTERM handler.", e))?;
    let (tx, rx) = unbounded();
    std::thread::spawn(move || {
        for _ in signals.forever() {
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// The server's largest accepted argument (512 MiB, Redis's default, when CONFIG is not allowed).
fn proto_max_bulk_len(con: &mut redis::Connection) -> u64 {
    let reply: Option<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("proto-max-bulk-len")
        .query(con)
        .ok();
    reply
        .and_then(|v| v.get(1).and_then(|n| n.parse().ok()))
        .unwrap_or(512 * 1024 * 1024)
}

/// A random id for this run's batch tokens (never derived from the input).
fn new_run_id() -> Result<String, Failure> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| Failure::system("No randomness for the run id.", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
