//! The coordinator: the one thread that sees every input item and every acknowledgement.
//!
//! It feeds records to the batcher and their batches to the writer, states to the checkpoint,
//! stream statuses to the overwrite bookkeeping (prepare before a stream's first staged batch,
//! publish after its last), and echoes each state once every record before it is committed. It ends
//! when the input is over and every piece of work is acknowledged, at the first failure, or within a
//! bounded time after SIGTERM.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{never, select, Receiver, Sender};

use super::batch::Batch;
use super::batcher::{Appended, Batcher};
use super::checkpoint::{Checkpoint, ReadyState, StateScope};
use super::collapse::Upsert;
use super::overwrite;
use super::plan::Plan;
use super::reader::{Chunk, Item};
use super::record_limit::RecordLimit;
use super::writer::{Ack, Work};
use super::Summary;
use crate::config::Settings;
use crate::config::ValueFormat;
use crate::error::Failure;
use crate::metrics::{Metrics, Totals};
use crate::protocol::expire_at::Moment;
use crate::protocol::output::{Level, Output};
use crate::protocol::state::{self, Scope};

/// How long after SIGTERM the committing of in-flight batches may take (a platform kills the
/// process 10 s after SIGTERM; the TRACE and the exit must come before that).
const TERMINATE_GRACE: Duration = Duration::from_secs(5);

/// How often the metrics file is written (and once at the end).
const METRICS_EVERY: Duration = Duration::from_secs(5);

/// Where one catalog stream stands in this run.
#[derive(Debug, Default, Clone)]
struct StreamProgress {
    prepared: bool,
    records: u64,
    /// Records that took a position (an id) in the stream: all but appended records whose
    /// moment had passed (`ttl_field`), which are not written. What a staging mark counts (an
    /// upserted stream's marks only say that a state was echoed).
    positions: u64,
    status_seen: bool,
    published: bool,
}

pub(super) struct Coordinator {
    batcher: Batcher,
    checkpoint: Checkpoint,
    linger: Duration,
    sealed: Vec<Batch>,
    outbox: Vec<Work>,
    ready: Vec<ReadyState>,
    streams: Vec<StreamProgress>,
    plan: Arc<Plan>,
    any_status: bool,
    /// Prepare, state and publish work sent and not yet acknowledged.
    awaiting: usize,
    /// Whether the writer reported a failure (then it is not waited for).
    writer_failed: bool,
    /// Whether states wait for durable checkpoints (so they go through the writer).
    durable: bool,
    /// The largest record the servers accept (their proto-max-bulk-len).
    limit: RecordLimit,
    summary: Summary,
    /// The run's counters, shown as progress lines and written to the metrics file.
    metrics: Arc<Metrics>,
    /// When the next progress line is due, and the totals of the last one.
    progress: (Instant, Totals),
    progress_interval: Duration,
    /// Where the metrics go, and when they are next written there.
    metrics_file: Option<(std::path::PathBuf, Instant)>,
}

impl Coordinator {
    /// A coordinator for the streams of `plan`.
    pub(super) fn new(
        settings: &Settings,
        plan: Arc<Plan>,
        limit: RecordLimit,
        metrics: Arc<Metrics>,
    ) -> Self {
        let now = Instant::now();
        Coordinator {
            batcher: Batcher::new(
                plan.formats(),
                settings.batch_size.get(),
                settings.batch_bytes.get(),
            ),
            checkpoint: Checkpoint::new(plan.len()),
            linger: settings.batch_linger,
            sealed: Vec::new(),
            outbox: Vec::new(),
            ready: Vec::new(),
            streams: vec![StreamProgress::default(); plan.len()],
            plan,
            any_status: false,
            awaiting: 0,
            writer_failed: false,
            durable: settings.durability.is_on(),
            limit,
            summary: Summary::default(),
            progress: (now + settings.progress_interval, metrics.totals()),
            progress_interval: settings.progress_interval,
            metrics_file: settings
                .metrics_file
                .clone()
                .map(|p| (p, now + METRICS_EVERY)),
            metrics,
        }
    }

    /// Logs a progress line when one is due, and writes the metrics file when that is due.
    fn report(&mut self, out: &Output) {
        let now = Instant::now();
        if now >= self.progress.0 {
            let (line, totals) = self.metrics.progress_line(&self.progress.1);
            out.log(Level::Info, line);
            // Never more than one line per interval, however late this turn came.
            self.progress = (now + self.progress_interval, totals);
        }
        if let Some((path, due)) = &mut self.metrics_file {
            if now >= *due {
                *due = now + METRICS_EVERY;
                if let Err(e) = self.metrics.write_file(path) {
                    out.log(
                        Level::Warn,
                        format!("Could not write the metrics file {}: {e}.", path.display()),
                    );
                }
            }
        }
    }

    /// When [`Self::report`] next has something to do.
    fn next_report(&self) -> Instant {
        let file = self.metrics_file.as_ref().map(|(_, due)| *due);
        file.into_iter().fold(self.progress.0, Instant::min)
    }

    /// Whether the writer reported a failure (then it must not be waited for).
    pub(super) fn writer_failed(&self) -> bool {
        self.writer_failed
    }

    /// What was committed and echoed.
    pub(super) fn into_summary(self) -> Summary {
        self.summary
    }

    /// Moves input to the writer and commits to the output until the input ends and every piece of
    /// work is acknowledged, or something fails. Input failures are returned only after everything
    /// before the bad line is committed and its states echoed.
    pub(super) fn drive(
        &mut self,
        chunks: Receiver<Chunk>,
        work: &Sender<Work>,
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
            self.report(out);
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
                .chain([self.next_report()])
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
                            self.end_of_input(false);
                        }
                    }
                    Err(_) => {
                        input_open = false;
                        input_failure = self.end_of_input(true);
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
                        self.end_of_input(false);
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
            Ack::Note(message) => out.log(Level::Info, message),
            Ack::Echo(line) => {
                self.awaiting -= 1;
                self.summary.states += 1;
                self.metrics.state_echoed();
                out.send(line);
            }
            Ack::Published { stream, report } => {
                self.awaiting -= 1;
                self.metrics.published(stream);
                let stream = &self.plan[stream].descriptor;
                out.log(Level::Info, report.summary(stream));
                if let Some(warning) = report.warning(stream) {
                    out.log(Level::Warn, warning);
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
                    upsert,
                    moment,
                    fields,
                    position,
                } => {
                    let data = &chunk.arena[data];
                    if let Err(too_large) = self.limit.admit(data.len() as u64) {
                        let record = format!(
                            "The record on line {line} (record {} of stream {} in this sync) is {} bytes",
                            self.streams[stream].records + 1,
                            self.plan[stream].descriptor,
                            data.len()
                        );
                        return Some(too_large.failure(&record));
                    }
                    let progress = &mut self.streams[stream];
                    if progress.published {
                        return Some(Failure::system(
                            format!("A record of stream {} arrived after its COMPLETE status; the stream was already published.", self.plan[stream].descriptor),
                            "record after COMPLETE",
                        ));
                    }
                    progress.records += 1;
                    if self.plan[stream].is_overwrite() && !progress.prepared {
                        progress.prepared = true;
                        self.move_sealed();
                        let key = upsert.as_ref().map(|p| chunk.arena[p.key.clone()].to_vec());
                        self.outbox.push(Work::Prepare {
                            stream,
                            first: Some(overwrite::FirstRecord {
                                data: data.to_vec(),
                                key,
                            }),
                        });
                        self.awaiting += 1;
                    }
                    if upsert.is_some() || moment != Some(Moment::Passed) {
                        self.streams[stream].positions += 1;
                    }
                    let ordinal = self.checkpoint.record(stream);
                    if let Some(position) = position {
                        self.batcher.position_next(position);
                    }
                    let opened = match upsert {
                        Some(picked) => {
                            let record = Upsert {
                                key: &chunk.arena[picked.key],
                                cursor: &chunk.arena[picked.cursor],
                                delete: picked.delete,
                                emitted_at,
                                data,
                                moment: moment.map(Moment::millis),
                                fields: (self.plan[stream].format == ValueFormat::Fields)
                                    .then_some(fields),
                            };
                            self.batcher
                                .push_upsert(stream, record, ordinal, now, &mut self.sealed)
                        }
                        None => {
                            let record = Appended {
                                emitted_at,
                                data,
                                fields,
                                moment,
                            };
                            self.batcher
                                .push(stream, record, ordinal, now, &mut self.sealed)
                        }
                    };
                    if opened {
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
            (self.plan[i].is_overwrite() && p.prepared).then_some((i, p.positions))
        };
        match scope {
            Scope::Stream(Some(i)) => mark(i).into_iter().collect(),
            Scope::Global => (0..self.streams.len()).filter_map(mark).collect(),
            Scope::Stream(None) => Vec::new(),
        }
    }

    /// Seals the stream's batch and queues its publish (once), after everything it wrote.
    fn publish(&mut self, stream: usize) {
        let p = &mut self.streams[stream];
        if !self.plan[stream].is_overwrite() || p.published {
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
                first: None,
            });
            self.awaiting += 1;
        }
        self.outbox.push(Work::Publish { stream });
        self.awaiting += 1;
    }

    /// The input ended: seal everything; at a clean end, publish the overwrite streams of a source
    /// that sent no stream statuses at all (older sources). An overwrite stream that cannot be
    /// published (a status but no COMPLETE, or no status while other streams had one) makes the
    /// sync fail once everything is committed and every state echoed: the data was not replaced,
    /// and a retry resumes its staging.
    fn end_of_input(&mut self, clean: bool) -> Option<Failure> {
        self.batcher.seal_all(&mut self.sealed);
        self.move_sealed();
        if !clean {
            return None;
        }
        let mut unpublished = Vec::new();
        for stream in 0..self.streams.len() {
            if !self.plan[stream].is_overwrite() || self.streams[stream].published {
                continue;
            }
            if !self.any_status {
                self.publish(stream);
            } else {
                unpublished.push(self.plan[stream].descriptor.to_string());
            }
        }
        (!unpublished.is_empty()).then(|| overwrite::not_published(&unpublished))
    }

    fn move_sealed(&mut self) {
        self.outbox.extend(self.sealed.drain(..).map(Work::Batch));
    }

    /// Echoes ready states, or, when overwrite streams need their marks recorded first, queues them
    /// for the writer (which hands them back in order).
    fn queue_ready_states(&mut self, out: &Output) {
        self.checkpoint.take_ready(&mut self.ready);
        let through_writer = self.durable || self.plan.overwrites().next().is_some();
        let mut echoed = false;
        for state in self.ready.drain(..) {
            if through_writer {
                self.awaiting += 1;
                self.outbox.push(Work::State(state));
            } else {
                self.summary.states += 1;
                self.metrics.state_echoed();
                out.send(state.line);
                echoed = true;
            }
        }
        if echoed {
            // The writer keeps acknowledged batches until a state is echoed (to resend them after
            // a reconnect): tell it, or it keeps them up to its byte cap.
            self.outbox.push(Work::Echoed);
        }
    }
}
