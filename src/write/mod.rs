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
pub mod reader;
pub mod resp;
pub mod router;
pub mod writer;

use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, never, select, unbounded, Receiver};

use crate::config::Settings;
use crate::connect::{self, Context};
use crate::error::Failure;
use crate::keys::{self, StreamKeys};
use crate::protocol::catalog;
use crate::protocol::output::{Level, Output};
use crate::protocol::state;
use crate::scripts::{APPEND_BATCH, CHECK_RIGHTS};
use batch::{Batch, StreamCall};
use batcher::Batcher;
use checkpoint::Checkpoint;
use reader::{Chunk, Item};
use router::Router;
use writer::{Ack, Writer};

/// Chunks waiting between the reader and the coordinator, at most.
const CHUNKS_IN_QUEUE: usize = 8;
/// How long to wait for one reply during `write` (a batch call takes milliseconds).
const WRITE_REPLY_TIMEOUT: Duration = Duration::from_secs(60);

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

    let reply_timeout = WRITE_REPLY_TIMEOUT.max(settings.connect_timeout);
    let connected = connect::connect(settings, reply_timeout)?;
    for w in &connected.warnings {
        out.log(Level::Warn, w);
    }
    let mut con = connected.con;
    let ctx = Context::new(settings, "while writing");
    writer::load_scripts(&mut con, &ctx)?;

    let run_id = new_run_id()?;
    let calls: Vec<StreamCall> = descriptors
        .iter()
        .map(|d| StreamCall::new(&APPEND_BATCH, StreamKeys::new(d), &run_id))
        .collect();
    check_rights(&mut con, &calls, &ctx)?;
    out.log(
        Level::Info,
        format!(
            "Writing {} stream(s) to Redis at {} db {} (run {run_id}, batches of up to {} records, {} in flight).",
            calls.len(),
            settings.address(),
            settings.db,
            settings.batch_size,
            settings.max_in_flight
        ),
    );

    let (chunk_tx, chunk_rx) = bounded::<Chunk>(CHUNKS_IN_QUEUE);
    let router = Arc::new(Router::new(&descriptors));
    std::thread::spawn(move || {
        reader::read_all(
            BufReader::with_capacity(256 * 1024, input),
            router,
            chunk_tx,
        )
    });

    let (batch_tx, batch_rx) = bounded::<Batch>(settings.max_in_flight.get());
    let (ack_tx, ack_rx) = unbounded::<Ack>();
    let writer = Writer {
        con,
        calls: Arc::new(calls),
        ctx,
        max_group: settings.max_in_flight.get(),
    };
    let writer_thread = std::thread::spawn(move || writer.run(batch_rx, ack_tx));

    let mut coordinator = Coordinator {
        batcher: Batcher::new(
            descriptors.len(),
            settings.batch_size.get(),
            settings.batch_bytes.get(),
        ),
        checkpoint: Checkpoint::new(descriptors.len()),
        linger: settings.batch_linger,
        sealed: Vec::new(),
        ready: Vec::new(),
        summary: Summary::default(),
    };
    let result = coordinator.drive(chunk_rx, &batch_tx, &ack_rx, out);
    drop(batch_tx);
    if result.is_ok() {
        // Every batch was acknowledged; the writer is only waiting for the channel to close.
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

struct Coordinator {
    batcher: Batcher,
    checkpoint: Checkpoint,
    linger: Duration,
    sealed: Vec<Batch>,
    ready: Vec<String>,
    summary: Summary,
}

impl Coordinator {
    /// Moves input to the writer and commits to the output until the input ends and every batch is
    /// committed, or something fails. Input failures are returned only after everything before the
    /// bad line is committed and its states echoed.
    fn drive(
        &mut self,
        chunks: Receiver<Chunk>,
        batches: &crossbeam_channel::Sender<Batch>,
        acks: &Receiver<Ack>,
        out: &Output,
    ) -> Result<(), Failure> {
        let mut input_open = true;
        let mut input_failure: Option<Failure> = None;
        loop {
            // Checked on every turn: under steady input the timeout arm below never fires, and a
            // quiet stream's batch (and every state behind it) must not wait for a busy one.
            if let Some(cutoff) = Instant::now().checked_sub(self.linger) {
                self.batcher.seal_opened_before(cutoff, &mut self.sealed);
            }
            for batch in self.sealed.drain(..) {
                if batches.send(batch).is_err() {
                    // The writer stopped: its failure is waiting in `acks`.
                    break;
                }
            }
            self.echo_ready(out);
            if !input_open && self.checkpoint.all_committed() {
                return match input_failure {
                    Some(f) => Err(f),
                    None => Ok(()),
                };
            }
            let chunk_source = if input_open { chunks.clone() } else { never() };
            let deadline = self.batcher.next_linger_deadline(self.linger);
            let timeout = deadline.map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(Instant::now())
            });
            select! {
                recv(chunk_source) -> chunk => match chunk {
                    Ok(chunk) => {
                        if let Some(f) = self.take_chunk(chunk) {
                            input_failure = Some(f);
                            input_open = false;
                            self.batcher.seal_all(&mut self.sealed);
                        }
                    }
                    Err(_) => {
                        input_open = false;
                        self.batcher.seal_all(&mut self.sealed);
                    }
                },
                recv(acks) -> ack => match ack {
                    Ok(Ack::Committed { first_ordinal, records }) => {
                        self.checkpoint.batch_committed(first_ordinal);
                        self.summary.records += records as u64;
                        self.summary.batches += 1;
                    }
                    Ok(Ack::Failed(f)) => {
                        self.drain_commits(acks);
                        self.echo_ready(out);
                        return Err(f);
                    }
                    Err(_) => {
                        return Err(Failure::system("The Redis writer stopped unexpectedly.", "writer thread ended"));
                    }
                },
                default(timeout) => {}
            }
        }
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
                } => {
                    let ordinal = self.checkpoint.record(stream);
                    let opened = self.batcher.push(
                        stream,
                        emitted_at,
                        &chunk.arena[data],
                        ordinal,
                        now,
                        &mut self.sealed,
                    );
                    if opened {
                        self.checkpoint.batch_opened(ordinal);
                    }
                }
                Item::State { text, scope } => {
                    let count = self.checkpoint.take_count(scope);
                    match state::echo_line(&text, count) {
                        Ok(line) => self.checkpoint.push_state(line),
                        Err(e) => {
                            return Some(Failure::system("A STATE message could not be echoed.", e))
                        }
                    }
                }
                Item::Failed(f) => return Some(f),
            }
        }
        None
    }

    fn drain_commits(&mut self, acks: &Receiver<Ack>) {
        while let Ok(Ack::Committed {
            first_ordinal,
            records,
        }) = acks.try_recv()
        {
            self.checkpoint.batch_committed(first_ordinal);
            self.summary.records += records as u64;
            self.summary.batches += 1;
        }
    }

    fn echo_ready(&mut self, out: &Output) {
        self.checkpoint.take_ready(&mut self.ready);
        for line in self.ready.drain(..) {
            self.summary.states += 1;
            out.send(line);
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

/// A random id for this run's batch tokens (never derived from the input).
fn new_run_id() -> Result<String, Failure> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| Failure::system("No randomness for the run id.", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
