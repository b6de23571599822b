//! `write`: Airbyte messages on stdin → atomic, pipelined batches in Redis, states echoed after commit.
//!
//! [`run`] sets up (catalog, connection, scripts, recovery, rights) and starts three threads beside
//! the coordinator:
//!
//! | part          | job |
//! |---------------|-----|
//! | `reader`      | stdin lines → routed records, states and statuses, in chunks (bounded channel) |
//! | `coordinator` | records → `batcher`; states → `checkpoint`; statuses → overwrite prepare/publish |
//! | `writer`      | work → pipelined EVALSHA, one connection per node, reconnect and resend; acks back |
//! | output        | every stdout line ([`crate::protocol::output::Output`]) |
//!
//! Pure parts: `batch`, `resp`, `batcher`, `checkpoint`, `router`, `retry`, `verdict` (what a
//! batch reply calls for). Redis-facing parts: `writer` (its `send`, `recovery` and `parts`),
//! `durable` (WAIT/WAITAOF before a state), `rights` (the ACL probe), `record_limit` (the largest
//! record the servers take) and `overwrite` (the staging and publish protocol).
//!
//! Memory is bounded: a fixed number of chunks between reader and coordinator, a fixed number of
//! batches in flight, and one open batch per stream capped in records and bytes.

pub mod batch;
pub mod batcher;
pub mod checkpoint;
pub mod collapse;
mod coordinator;
mod durable;
mod formats;
pub mod overwrite;
mod plan;
pub mod reader;
mod record_limit;
pub mod resp;
mod retained;
pub mod retry;
mod rights;
pub mod router;
pub mod shape;
mod verdict;
pub mod writer;

use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

use crate::config::Settings;
use crate::connect::nodes::Nodes;
use crate::connect::{self, Context};
use crate::error::{Failure, FailureType};
use crate::java_staging;
use crate::keys;
use crate::metrics::Metrics;
use crate::protocol::catalog::{self, ConfiguredStream};
use crate::protocol::output::{self, Level, Output};
use coordinator::Coordinator;
use overwrite::OverwriteStream;
use plan::Plan;
use reader::Chunk;
use record_limit::RecordLimit;
use retained::Retained;
use retry::Retry;
use router::Router;
use writer::{Ack, Work, Writer};

/// How long a failed or cancelled run waits for the writer to stop before it exits anyway.
const WRITER_WIND_DOWN: Duration = Duration::from_secs(2);

/// Chunks waiting between the reader and the coordinator, at most.
const CHUNKS_IN_QUEUE: usize = 8;

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
    let streams = catalog::load(catalog_path, settings.truncate_refreshes)?;
    let front = move |streams: Arc<reader::Streams>, tx: Sender<Chunk>| {
        reader::read_all(BufReader::with_capacity(256 * 1024, input), streams, tx)
    };
    run_streams(settings, streams, front, None, out)
}

/// What `load` adds to a run of its one stream: its batches end with the load's input position,
/// which the scripts write to `position_key` with the records (see [`batch::InputPosition`]).
#[derive(Debug, Clone)]
pub struct LoadRun {
    /// The run's id ([`new_run_id`]), which the load's record names as its owner: the scripts
    /// refuse the batches of any other run (see `load::record::LoadRecord::begin`).
    pub run_id: String,
    /// The load's key (`keys::load_key`), in the stream's slot.
    pub position_key: String,
    /// Whether an earlier run of the load committed records: an overwrite keeps what it staged
    /// (exactly what the position counts), instead of starting the staging over.
    pub continuing: bool,
    /// `--dry-run`: connect and check rights, read every record, write nothing.
    pub dry_run: bool,
}

/// Runs the pipeline over `streams`: `front` reads the input into chunks (on its own thread), the
/// coordinator batches and checkpoints, the writer sends. Prints states (and logs) to `out`.
pub fn run_streams<F>(
    settings: &Settings,
    streams: Vec<ConfiguredStream>,
    front: F,
    load: Option<LoadRun>,
    out: &Output,
) -> Result<Summary, Failure>
where
    F: FnOnce(Arc<reader::Streams>, Sender<Chunk>) + Send + 'static,
{
    let started = Instant::now();
    // From here on SIGTERM never takes the default action (exit 143, no TRACE): before the writer
    // runs it ends the process at once with a TRACE, afterwards the coordinator winds down.
    let setup_done = Arc::new(AtomicBool::new(false));
    let cancelled = Arc::new(AtomicBool::new(false));
    let terminate = sigterm_channel(setup_done.clone(), cancelled.clone())?;
    let dry_run = load.as_ref().is_some_and(|l| l.dry_run);
    let descriptors: Vec<_> = streams.iter().map(|s| s.descriptor.clone()).collect();
    let layout = settings.layout;
    keys::check_catalog(&descriptors, layout)
        .map_err(|m| Failure::config(format!("Invalid catalog: {m}."), &m))?;

    let route = connect::route(settings)?;
    for w in &route.warnings {
        out.log(Level::Warn, w);
    }
    let reply_timeout = settings.reply_timeout;
    let ctx = Context::at(settings, &route.entry, "while writing");
    let run_id = match &load {
        Some(load) => load.run_id.clone(),
        None => new_run_id()?,
    };
    let mut plan = Plan::new(&streams, layout, &settings.stream_options, &run_id)?;
    if let Some(load) = &load {
        plan.position(&load.position_key, load.continuing);
    }
    let plan = Arc::new(plan);
    for warning in settings.stream_options.unmatched(&descriptors) {
        out.log(Level::Warn, warning);
    }
    let live_calls = plan.live_calls();
    let calls = plan.calls();
    // Setup rides through a restarting or briefly unreachable server like the writes do.
    let mut retry = Retry::new(settings.retry_budget);
    let mut nodes = loop {
        let attempt = Nodes::open(settings, &route.entry, reply_timeout).and_then(|mut nodes| {
            // A dry run writes nothing, not even the end of an interrupted publish.
            let recovered = match dry_run {
                true => overwrite::Recovery::default(),
                false => overwrite::recover(&mut nodes)?,
            };
            let counters: Vec<&str> = live_calls.iter().map(|c| c.keys.counter.as_str()).collect();
            if let Some(f) = recovered.blocking(&counters) {
                return Err(f);
            }
            rights::check_rights(&mut nodes, &live_calls)?;
            rights::check_rights(&mut nodes, &calls)?;
            formats::check_formats(&mut nodes, &plan.format_checked_calls())?;
            let staged: Vec<&OverwriteStream> = plan.overwrites().collect();
            rights::check_publish_rights(&mut nodes, &staged)?;
            Ok((nodes, recovered))
        });
        match attempt {
            Ok((mut nodes, recovered)) => {
                for w in nodes.take_warnings() {
                    out.log(Level::Warn, w);
                }
                for line in recovered.finished_messages() {
                    out.log(Level::Info, line);
                }
                for line in recovered.stuck_messages() {
                    out.log(Level::Warn, line);
                }
                break nodes;
            }
            Err(f) if f.failure_type == FailureType::Transient => retry.wait(&f)?,
            Err(f) => return Err(f),
        }
    };
    let limit = RecordLimit::read(&mut nodes, settings, reply_timeout);
    if settings.delete_java_staging && !dry_run {
        let started = Instant::now();
        let found = java_staging::sweep(&mut nodes, true, java_staging::DELETE_STEPS)?;
        out.log(
            Level::Info,
            format!(
                "delete_java_staging: deleted {} record(s) a failed sync of the Java connector left staged under tmp:{} ({} SCAN steps, {} ms).",
                found.records,
                found.example.map(|e| format!(" (e.g. {e:?})")).unwrap_or_default(),
                found.calls,
                started.elapsed().as_millis()
            ),
        );
    }
    let overwrite_count = plan.overwrites().count();
    out.log(
        Level::Info,
        format!(
            "Writing {} stream(s) ({overwrite_count} by overwrite) to Redis at {} db {} (run {run_id}, batches of up to {} records, {} in flight).",
            plan.len(),
            route.entry.shown,
            settings.db,
            settings.batch_size,
            settings.max_in_flight
        ),
    );

    setup_done.store(true, Ordering::SeqCst);
    let (chunk_tx, chunk_rx) = bounded::<Chunk>(CHUNKS_IN_QUEUE);
    let descriptors = plan.descriptors();
    let streams = Arc::new(reader::Streams {
        router: Router::new(&descriptors),
        upserts: plan.upsert_fields(),
        expire_at: plan.expire_at_fields(),
        formats: plan.formats(),
        descriptors,
    });
    std::thread::spawn(move || front(streams, chunk_tx));
    if dry_run {
        return count_records(chunk_rx);
    }

    let metrics = Arc::new(Metrics::new(&plan.descriptors()));
    let (work_tx, work_rx) = bounded::<Work>(settings.max_in_flight.get());
    let (ack_tx, ack_rx) = unbounded::<Ack>();
    let servers = nodes.servers();
    let writer = Writer {
        durable_on: servers,
        nodes,
        plan: plan.clone(),
        calls: plan.calls(),
        sweep: settings.sweep_leftovers,
        ctx,
        max_group: settings.max_in_flight.get(),
        settings: settings.clone(),
        retained: Retained::default(),
        redirects: Default::default(),
        metrics: metrics.clone(),
        memory: writer::MemoryGate::new(settings.memory_pause_ratio, settings.memory_wait),
        log: out.logger(),
        cancelled,
    };
    let writer_thread = std::thread::spawn(move || writer.run(work_rx, ack_tx));

    let mut coordinator = Coordinator::new(settings, plan, limit, metrics.clone());
    let result = coordinator.drive(chunk_rx, &work_tx, &ack_rx, &terminate, out);
    drop(work_tx);
    if result.is_ok() {
        // Everything sent was acknowledged: the writer only waits for the channel to close, then
        // removes this run's tokens.
        let _ = writer_thread.join();
    } else if !coordinator.writer_failed() {
        // After a failure or SIGTERM the writer may still wait for a reply that is not coming
        // (in-flight batches were abandoned: each is atomic and no echoed state covers them).
        let until = Instant::now() + WRITER_WIND_DOWN;
        while !writer_thread.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let summary = coordinator.into_summary();
    // The summary and the metrics file's last state, whatever the outcome.
    for line in metrics.summary_lines() {
        out.log(Level::Info, line);
    }
    if let Some(path) = &settings.metrics_file {
        if let Err(e) = metrics.write_file(path) {
            out.log(
                Level::Warn,
                format!("Could not write the metrics file {}: {e}.", path.display()),
            );
        }
    }
    // (A load prints its own summary.)
    if result.is_ok() && load.is_none() {
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

/// Reads every chunk and counts its records, writing nothing (a dry run): the first input failure
/// is returned.
fn count_records(chunks: Receiver<Chunk>) -> Result<Summary, Failure> {
    let mut summary = Summary::default();
    for chunk in chunks {
        for item in chunk.items {
            match item {
                reader::Item::Record { .. } => summary.records += 1,
                reader::Item::Failed(f) => return Err(f),
                reader::Item::State { .. } | reader::Item::Status { .. } => {}
            }
        }
    }
    Ok(summary)
}

/// A channel that receives one message per SIGTERM once `setup_done` is set (the default action,
/// exiting, is replaced), which also sets `cancelled` (a writer paused for memory stops waiting). Before that, nothing of this run is committed and setup may wait on a
/// silent server far longer than a platform's grace period, so SIGTERM prints the TRACE itself and
/// ends the process with exit code 1.
fn sigterm_channel(
    setup_done: Arc<AtomicBool>,
    cancelled: Arc<AtomicBool>,
) -> Result<Receiver<()>, Failure> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM])
        .map_err(|e| Failure::system("Could not install the SIGTERM handler.", e))?;
    let (tx, rx) = unbounded();
    std::thread::spawn(move || {
        for _ in signals.forever() {
            if !setup_done.load(Ordering::SeqCst) {
                let f = Failure::transient(
                    "The sync was cancelled (SIGTERM) while it was connecting to Redis and getting ready; nothing was written.",
                    "SIGTERM during setup",
                );
                // One write of a whole line: it cannot interleave with the printer's lines.
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "{}", output::trace_error_line(&f));
                let _ = stdout.flush();
                std::process::exit(1);
            }
            cancelled.store(true, Ordering::SeqCst);
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// A new random id for a run's batch tokens (never derived from the input): 16 hex digits.
pub fn new_run_id() -> Result<String, Failure> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| Failure::system("No randomness for the run id.", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
