//! What a run has done so far, counted as it happens by the writer and the coordinator, and shown
//! three ways: a progress line every interval, a summary at the end, and a Prometheus text file.
//!
//! The counters are `prometheus` crate metrics, so the file is encoded by that crate (the text
//! exposition format, version 0.0.4, which a node exporter's textfile collector reads) from the
//! very numbers the progress lines and the summary read. Metric names:
//!
//! | metric | type | what |
//! |---|---|---|
//! | `destination_redis_records_written_total{stream}` | counter | records committed |
//! | `destination_redis_bytes_written_total{stream}` | counter | bytes of batch arguments committed |
//! | `destination_redis_batches_written_total{stream}` | counter | batches committed |
//! | `destination_redis_states_echoed_total` | counter | states echoed |
//! | `destination_redis_retries_total` | counter | batches sent again (a reconnect, a reload, a busy server) |
//! | `destination_redis_reconnects_total` | counter | connections restored |
//! | `destination_redis_batches_in_flight` | gauge | batches sent and not yet answered |
//! | `destination_redis_used_memory_bytes` | gauge | the server's `used_memory` when last read |
//! | `destination_redis_maxmemory_bytes` | gauge | the server's `maxmemory` when last read (0: none) |
//! | `destination_redis_script_call_seconds` | histogram | time of each batch call, from the previous reply (or the send) to its reply |

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

use crate::protocol::StreamDescriptor;

/// One stream's counters.
struct StreamCounts {
    name: String,
    records: IntCounter,
    bytes: IntCounter,
    batches: IntCounter,
    published: AtomicBool,
}

/// Every counter of a run.
pub struct Metrics {
    registry: Registry,
    streams: Vec<StreamCounts>,
    states: IntCounter,
    retries: IntCounter,
    reconnects: IntCounter,
    in_flight: IntGauge,
    used_memory: IntGauge,
    maxmemory: IntGauge,
    calls: Histogram,
    slowest_call_us: AtomicU64,
    largest_batch: AtomicU64,
    started: Instant,
}

/// The totals at one moment (for a progress line, and the interval since the last one).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Records committed.
    pub records: u64,
    /// Bytes committed.
    pub bytes: u64,
    /// Batches committed.
    pub batches: u64,
    /// States echoed.
    pub states: u64,
    /// Batches sent again.
    pub retries: u64,
    /// Connections restored.
    pub reconnects: u64,
    /// Batches in flight.
    pub in_flight: i64,
    /// The server's `used_memory` (0: not read).
    pub used_memory: i64,
    /// The server's `maxmemory` (0: none, or not read).
    pub maxmemory: i64,
    /// Seconds since the run started.
    pub seconds: f64,
}

impl Metrics {
    /// The counters of a run over these streams (catalog order).
    pub fn new(streams: &[StreamDescriptor]) -> Self {
        let registry =
            Registry::new_custom(Some("destination_redis".into()), None).unwrap_or_default();
        let per_stream = |name: &str, help: &str| {
            let vec = IntCounterVec::new(Opts::new(name, help), &["stream"])
                .unwrap_or_else(|_| unreachable_metric(name));
            let _ = registry.register(Box::new(vec.clone()));
            vec
        };
        let records = per_stream("records_written_total", "Records committed");
        let bytes = per_stream("bytes_written_total", "Bytes of batch arguments committed");
        let batches = per_stream("batches_written_total", "Batches committed");
        let streams = streams
            .iter()
            .map(|d| {
                let name = match &d.namespace {
                    Some(ns) => format!("{ns}.{}", d.name),
                    None => d.name.clone(),
                };
                StreamCounts {
                    records: records.with_label_values(&[name.as_str()]),
                    bytes: bytes.with_label_values(&[name.as_str()]),
                    batches: batches.with_label_values(&[name.as_str()]),
                    name,
                    published: AtomicBool::new(false),
                }
            })
            .collect();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).unwrap_or_else(|_| unreachable_metric(name));
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).unwrap_or_else(|_| unreachable_metric(name));
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        let states = counter("states_echoed_total", "States echoed");
        let retries = counter("retries_total", "Batches sent again");
        let reconnects = counter("reconnects_total", "Connections restored");
        let in_flight = gauge("batches_in_flight", "Batches sent and not yet answered");
        let used_memory = gauge(
            "used_memory_bytes",
            "The server's used_memory when last read",
        );
        let maxmemory = gauge(
            "maxmemory_bytes",
            "The server's maxmemory when last read (0: none)",
        );
        let name = "script_call_seconds";
        let buckets = exponential_buckets(0.0005, 2.0, 14).unwrap_or_default();
        let calls = Histogram::with_opts(
            HistogramOpts::new(
                name,
                "Time of each batch call, from the previous reply (or the send) to its reply",
            )
            .buckets(buckets),
        )
        .unwrap_or_else(|_| unreachable_metric(name));
        let _ = registry.register(Box::new(calls.clone()));
        Metrics {
            registry,
            streams,
            states,
            retries,
            reconnects,
            in_flight,
            used_memory,
            maxmemory,
            calls,
            slowest_call_us: AtomicU64::new(0),
            largest_batch: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// A batch of `stream` with `records` records and `bytes` bytes of arguments is committed.
    pub fn committed(&self, stream: usize, records: usize, bytes: usize) {
        if let Some(s) = self.streams.get(stream) {
            s.records.inc_by(records as u64);
            s.bytes.inc_by(bytes as u64);
            s.batches.inc();
        }
        self.largest_batch
            .fetch_max(records as u64, Ordering::Relaxed);
    }

    /// A batch call took `took`.
    pub fn call(&self, took: Duration) {
        self.calls.observe(took.as_secs_f64());
        self.slowest_call_us
            .fetch_max(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// A state was echoed.
    pub fn state_echoed(&self) {
        self.states.inc();
    }

    /// `n` batches are sent again.
    pub fn retried(&self, n: usize) {
        self.retries.inc_by(n as u64);
    }

    /// A connection was restored.
    pub fn reconnected(&self) {
        self.reconnects.inc();
    }

    /// `n` batches are in flight now.
    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.set(n as i64);
    }

    /// The server's memory, as `INFO memory` gave it.
    pub fn set_memory(&self, used: u64, max: u64) {
        self.used_memory.set(used as i64);
        self.maxmemory.set(max as i64);
    }

    /// A stream was published (overwrite).
    pub fn published(&self, stream: usize) {
        if let Some(s) = self.streams.get(stream) {
            s.published.store(true, Ordering::Relaxed);
        }
    }

    /// The totals now.
    pub fn totals(&self) -> Totals {
        let sum = |f: fn(&StreamCounts) -> u64| self.streams.iter().map(f).sum();
        Totals {
            records: sum(|s| s.records.get()),
            bytes: sum(|s| s.bytes.get()),
            batches: sum(|s| s.batches.get()),
            states: self.states.get(),
            retries: self.retries.get(),
            reconnects: self.reconnects.get(),
            in_flight: self.in_flight.get(),
            used_memory: self.used_memory.get(),
            maxmemory: self.maxmemory.get(),
            seconds: self.started.elapsed().as_secs_f64(),
        }
    }

    /// One progress line: the totals now, the rate since `before` and overall.
    pub fn progress_line(&self, before: &Totals) -> (String, Totals) {
        let now = self.totals();
        let interval = (now.seconds - before.seconds).max(1e-3);
        let memory = match (now.used_memory, now.maxmemory) {
            (0, _) => "server memory not read".to_string(),
            (used, 0) => format!("server used_memory {} (no maxmemory)", mib(used as u64)),
            (used, max) => format!(
                "server used_memory {} of maxmemory {} ({:.0}%)",
                mib(used as u64),
                mib(max as u64),
                used as f64 * 100.0 / max as f64
            ),
        };
        let line = format!(
            "Progress: {} records ({}) written in {} batches; {:.0} records/s over the last {:.0} s, {:.0} overall; {} batches in flight; {} states echoed; {} retries, {} reconnects; {memory}.",
            now.records,
            mib(now.bytes),
            now.batches,
            (now.records - before.records) as f64 / interval,
            interval,
            now.records as f64 / now.seconds.max(1e-3),
            now.in_flight,
            now.states,
            now.retries,
            now.reconnects,
        );
        (line, now)
    }

    /// The summary at the end: one line per stream, then one for the run.
    pub fn summary_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .streams
            .iter()
            .map(|s| {
                format!(
                    "Stream {}: {} records ({}) in {} batches{}.",
                    s.name,
                    s.records.get(),
                    mib(s.bytes.get()),
                    s.batches.get(),
                    if s.published.load(Ordering::Relaxed) {
                        ", published"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        let t = self.totals();
        lines.push(format!(
            "Run: {:.2} s, {} records, {:.0} records/s, {} states echoed, {} retries, {} reconnects, largest batch {} records, slowest script call {:.1} ms.",
            t.seconds,
            t.records,
            t.records as f64 / t.seconds.max(1e-3),
            t.states,
            t.retries,
            t.reconnects,
            self.largest_batch.load(Ordering::Relaxed),
            self.slowest_call_us.load(Ordering::Relaxed) as f64 / 1000.0,
        ));
        lines
    }

    /// The metrics in the text exposition format.
    pub fn encode(&self) -> String {
        let mut text = Vec::new();
        // Writing into memory cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut text);
        String::from_utf8_lossy(&text).into_owned()
    }

    /// Writes [`Self::encode`] to `path` atomically: into a temporary file beside it, then renamed
    /// over it, so a scraper never reads half a file.
    pub fn write_file(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, self.encode())?;
        std::fs::rename(&tmp, path)
    }
}

/// A metric whose fixed name and help the crate refused: a bug here, not an input problem.
fn unreachable_metric(name: &str) -> ! {
    panic!("the metric {name} is malformed")
}

/// Bytes as MiB with one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streams() -> Vec<StreamDescriptor> {
        vec![
            StreamDescriptor {
                name: "users".into(),
                namespace: Some("app".into()),
            },
            StreamDescriptor {
                name: "events".into(),
                namespace: None,
            },
        ]
    }

    #[test]
    fn counts_add_up_in_totals_summary_and_the_file() {
        let m = Metrics::new(&streams());
        m.committed(0, 500, 20_000);
        m.committed(0, 200, 8_000);
        m.committed(1, 10, 400);
        m.state_echoed();
        m.retried(3);
        m.reconnected();
        m.call(Duration::from_millis(7));
        m.call(Duration::from_millis(2));
        m.published(1);
        let t = m.totals();
        assert_eq!((t.records, t.bytes, t.batches), (710, 28_400, 3));
        assert_eq!((t.states, t.retries, t.reconnects), (1, 3, 1));
        let summary = m.summary_lines();
        assert_eq!(
            summary[0],
            "Stream app.users: 700 records (0.0 MiB) in 2 batches."
        );
        assert_eq!(
            summary[1],
            "Stream events: 10 records (0.0 MiB) in 1 batches, published."
        );
        assert!(
            summary[2].contains("largest batch 500 records, slowest script call 7.0 ms"),
            "{}",
            summary[2]
        );
        let text = m.encode();
        assert!(
            text.contains("destination_redis_records_written_total{stream=\"app.users\"} 700"),
            "{text}"
        );
        assert!(
            text.contains("destination_redis_reconnects_total 1"),
            "{text}"
        );
        assert!(
            text.contains("destination_redis_script_call_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE destination_redis_batches_in_flight gauge"),
            "{text}"
        );
    }

    #[test]
    fn a_progress_line_gives_the_interval_rate_and_memory() {
        let m = Metrics::new(&streams());
        m.committed(0, 100, 1000);
        m.set_memory(50 * 1024 * 1024, 100 * 1024 * 1024);
        let before = Totals::default();
        let (line, now) = m.progress_line(&before);
        assert_eq!(now.records, 100);
        assert!(
            line.starts_with("Progress: 100 records (0.0 MiB) written in 1 batches;"),
            "{line}"
        );
        assert!(
            line.contains("server used_memory 50.0 MiB of maxmemory 100.0 MiB (50%)"),
            "{line}"
        );
    }
}
