//! Memory back-pressure: the writer reads the servers' `used_memory` and `maxmemory` (`INFO
//! memory`) before it sends a group of batches (every 50 ms at most, or sooner when the bytes sent
//! since the last reading, weighed by how much memory a byte has taken so far, bring it near; every
//! second when no server has a `maxmemory` it refuses writes at),
//! and when a server's used memory plus the group's reaches `memory_pause_ratio` of its
//! `maxmemory` it sends nothing
//! (no batch is ever sent in part), says so once, reads again every second, and goes on when the
//! memory falls below; after `memory_wait_ms` the sync fails with a transient error. Where `INFO`
//! is denied, or the ratio is 0, a full server ends the sync with the OOM `config_error`, as
//! without back-pressure.

use std::time::{Duration, Instant};

use super::Writer;
use crate::connect::classify;
use crate::error::Failure;
use crate::protocol::output::Level;

/// How often memory is read while sending, at most.
const READ_EVERY: Duration = Duration::from_millis(50);
/// How often memory is read for the progress lines alone (back-pressure off).
const READ_EVERY_OFF: Duration = Duration::from_secs(1);
/// How often a paused writer reads memory again.
const PAUSED_EVERY: Duration = Duration::from_secs(1);

/// The writer's memory state.
#[derive(Debug)]
pub struct MemoryGate {
    /// `memory_pause_ratio` (0: off).
    ratio: f64,
    /// `memory_wait_ms`.
    wait: Duration,
    /// When memory may be read next.
    next_read: Instant,
    /// `INFO` was refused: nothing is read any more.
    denied: bool,
    /// The last readings, and the bytes of batches sent since.
    last: Vec<Reading>,
    sent_since: u64,
    /// How many bytes of memory a byte of batch arguments has taken (learned from consecutive
    /// readings; 2 until then), so that the bytes sent between two readings count for what they
    /// will weigh.
    growth: f64,
}

/// One server's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reading {
    addr: String,
    used: u64,
    max: u64,
    /// Whether the server refuses writes when full: every policy but `allkeys-*` (a `volatile-*`
    /// policy refuses once no key with a TTL is left); a server that evicts any key to make room
    /// sits near its limit by design, and is never waited for.
    refuses: bool,
}

impl MemoryGate {
    /// A gate pausing at `ratio` of `maxmemory` (0: never), waiting at most `wait`.
    pub fn new(ratio: f64, wait: Duration) -> Self {
        MemoryGate {
            ratio,
            wait,
            next_read: Instant::now(),
            denied: false,
            last: Vec::new(),
            sent_since: 0,
            growth: 2.0,
        }
    }

    /// Whether `reading`, with `bytes` more sent (weighed by the growth), is at or above the ratio.
    fn over(&self, reading: &Reading, bytes: u64) -> bool {
        self.ratio > 0.0
            && reading.refuses
            && reading.max > 0
            && reading.used as f64 + self.growth * bytes as f64 >= self.ratio * reading.max as f64
    }

    /// Takes new readings: learns the growth from what the bytes sent since the last ones did.
    fn take(&mut self, readings: Vec<Reading>) {
        let before: u64 = self.last.iter().map(|r| r.used).sum();
        let now: u64 = readings.iter().map(|r| r.used).sum();
        if self.sent_since >= 64 * 1024 && now > before && !self.last.is_empty() {
            let seen = (now - before) as f64 / self.sent_since as f64;
            self.growth = (0.5 * self.growth + 0.5 * seen).clamp(1.0, 8.0);
        }
        self.last = readings;
        self.sent_since = 0;
    }
}

/// `used_memory`, `maxmemory` and whether the server refuses writes when full (its policy is
/// not `allkeys-*`; also when the reply does not say), from the text of `INFO memory`.
fn parse_info(text: &str) -> Option<(u64, u64, bool)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let number = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok());
    let refuses = field("maxmemory_policy").is_none_or(|p| !p.starts_with("allkeys"));
    Some((
        number("used_memory")?,
        number("maxmemory").unwrap_or(0),
        refuses,
    ))
}

impl Writer {
    /// Before a group of batches of these sizes is sent: how many of its first batches memory has
    /// room for (at least one, all when back-pressure is off). Reads the servers' memory when due,
    /// and while not even the first batch fits below the ratio, waits (see the module).
    pub(super) fn memory_room(&mut self, sizes: &[u64]) -> Result<usize, Failure> {
        if self.memory.denied || sizes.is_empty() {
            return Ok(sizes.len());
        }
        let total: u64 = sizes.iter().sum();
        // Between readings, the last ones plus what was sent since: a fresh reading when that
        // comes near the ratio, or when one is due.
        let pending = self.memory.sent_since + total;
        let near = self
            .memory
            .last
            .iter()
            .any(|r| self.memory.over(r, pending));
        if near || Instant::now() >= self.memory.next_read {
            // Servers with nothing to wait for (no maxmemory, or one that evicts) are read
            // seldom: a reading costs a round trip, and a limit set meanwhile is seen within a
            // second (or at the first OOM refusal, which reads at once).
            let watched = self.memory.last.is_empty()
                || self.memory.last.iter().any(|r| r.refuses && r.max > 0);
            let every = match self.memory.ratio > 0.0 && watched {
                true => READ_EVERY,
                false => READ_EVERY_OFF,
            };
            self.memory.next_read = Instant::now() + every;
            let Some(readings) = self.read_memory() else {
                return Ok(sizes.len());
            };
            if let Some(full) = readings
                .iter()
                .find(|r| self.memory.over(r, sizes[0]))
                .cloned()
            {
                self.memory_pause(full, sizes[0])?;
            }
        }
        // As many batches as fit (never none: the first fits now, or was waited for).
        let mut room = 0;
        let mut bytes = self.memory.sent_since;
        for size in sizes {
            bytes += size;
            if room > 0 && self.memory.last.iter().any(|r| self.memory.over(r, bytes)) {
                break;
            }
            room += 1;
        }
        self.memory.sent_since += sizes[..room].iter().sum::<u64>();
        Ok(room)
    }

    /// Whether one more batch of `size` bytes may be sent while replies are still on their way
    /// (when no reading can be taken): back-pressure is off, or no reading is due and the last
    /// ones, with the bytes sent since, leave room for it.
    pub(super) fn memory_fits_unread(&mut self, size: u64) -> bool {
        if self.memory.denied || self.memory.ratio <= 0.0 {
            return true;
        }
        let bytes = self.memory.sent_since + size;
        if Instant::now() >= self.memory.next_read
            || self.memory.last.iter().any(|r| self.memory.over(r, bytes))
        {
            return false;
        }
        self.memory.sent_since = bytes;
        true
    }

    /// Waits until no server is at or above the ratio, reading every second; fails after
    /// `memory_wait_ms`.
    fn memory_pause(&mut self, full: Reading, bytes: u64) -> Result<(), Failure> {
        let ratio = self.memory.ratio;
        self.log.log(Level::Warn, format!(
            "Redis at {} uses {} of its maxmemory of {} bytes, at or above memory_pause_ratio {ratio}: the writer pauses (every batch sent is committed) and checks again every second, for up to memory_wait_ms ({} s). Free memory or raise maxmemory to let it go on.",
            full.addr,
            full.used,
            full.max,
            self.memory.wait.as_secs()
        ));
        let paused = Instant::now();
        let mut last = full;
        loop {
            if paused.elapsed() >= self.memory.wait {
                return Err(Failure::transient(
                    format!(
                        "Redis at {} stayed at or above memory_pause_ratio {ratio} of its maxmemory ({} of {} bytes used) for memory_wait_ms ({} s); states were echoed for every committed record. Free memory or raise maxmemory, then run the sync again.",
                        last.addr,
                        last.used,
                        last.max,
                        self.memory.wait.as_secs()
                    ),
                    "memory pause timed out",
                ));
            }
            // SIGTERM while paused: stop here (the coordinator may be waiting to hand over work).
            let until = Instant::now() + PAUSED_EVERY.min(self.memory.wait);
            while Instant::now() < until {
                if self.cancelled.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(Failure::transient(
                        "The sync was cancelled (SIGTERM) while the writer was paused for memory; states were echoed for every committed record.",
                        "SIGTERM during a memory pause",
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let Some(readings) = self.read_memory() else {
                return Ok(());
            };
            match readings.iter().find(|r| self.memory.over(r, bytes)) {
                Some(full) => last = full.clone(),
                None => {
                    self.log.log(Level::Info, format!(
                        "Redis memory is below memory_pause_ratio {ratio} again: the writer goes on after a pause of {:.1} s.",
                        paused.elapsed().as_secs_f64()
                    ));
                    self.memory.next_read = Instant::now() + READ_EVERY;
                    return Ok(());
                }
            }
        }
    }

    /// Whether an OOM refusal is waited for (back-pressure on and `INFO` readable).
    pub(super) fn waits_for_memory(&self) -> bool {
        self.memory.ratio > 0.0 && !self.memory.denied
    }

    /// After an OOM refusal (`oom`, its failure) with back-pressure on: waits for memory as a
    /// pause would, when a server is at or above the ratio; otherwise (a server that is full far
    /// below it, by its own accounting) the refusal stands.
    pub(super) fn memory_after_oom(&mut self, oom: Failure) -> Result<(), Failure> {
        let readings = self.read_memory().unwrap_or_default();
        match readings.iter().find(|r| self.memory.over(r, 0)).cloned() {
            Some(full) => self.memory_pause(full, 0),
            None => Err(oom),
        }
    }

    /// Every open connection's server memory (and the metrics' gauges); `None` when `INFO` is
    /// refused or unreadable (said once; back-pressure is off from then on).
    fn read_memory(&mut self) -> Option<Vec<Reading>> {
        let mut readings = Vec::new();
        for addr in self.nodes.open_addrs() {
            let Ok(link) = self.nodes.link(&addr) else {
                continue;
            };
            let info: Result<String, _> = redis::cmd("INFO").arg("memory").query(&mut link.con);
            let parsed = info.as_deref().ok().and_then(parse_info);
            match (info, parsed) {
                (_, Some((used, max, refuses))) => readings.push(Reading {
                    addr: link.ctx.address.clone(),
                    used,
                    max,
                    refuses,
                }),
                (Err(e), None) if e.is_io_error() || e.is_timeout() => {
                    // The connection is in trouble: the sending finds out and recovers.
                    return Some(readings);
                }
                (result, None) => {
                    self.memory.denied = true;
                    let why = match result {
                        Err(e) => classify(&e, &link.ctx).message,
                        Ok(_) => "its reply has no used_memory".to_string(),
                    };
                    self.log.log(Level::Warn, format!(
                        "INFO memory cannot be read at {} ({why}): memory back-pressure is off, and a full server ends the sync with an out-of-memory error.",
                        link.ctx.address
                    ));
                    return None;
                }
            }
        }
        let used = readings.iter().map(|r| r.used).sum();
        let max = match readings.iter().all(|r| r.max > 0) {
            true => readings.iter().map(|r| r.max).sum(),
            false => 0,
        };
        self.metrics.set_memory(used, max);
        self.memory.take(readings.clone());
        Some(readings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_memory_gives_used_and_max() {
        let text = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory:2097152\r\nmaxmemory_human:2.00M\r\n";
        assert_eq!(parse_info(text), Some((1_048_576, 2_097_152, true)));
        assert_eq!(parse_info("used_memory:5\r\n"), Some((5, 0, true)));
        let lru = "used_memory:5\r\nmaxmemory:9\r\nmaxmemory_policy:allkeys-lru\r\n";
        assert_eq!(parse_info(lru), Some((5, 9, false)));
        let volatile = "used_memory:5\r\nmaxmemory:9\r\nmaxmemory_policy:volatile-lru\r\n";
        assert_eq!(parse_info(volatile), Some((5, 9, true)));
        assert_eq!(parse_info("# Memory\r\n"), None);
    }

    #[test]
    fn the_gate_closes_at_the_ratio_counting_the_bytes_to_send() {
        let gate = MemoryGate::new(0.9, Duration::from_secs(1));
        let at = |used, max| Reading {
            addr: "a".into(),
            used,
            max,
            refuses: true,
        };
        assert!(!gate.over(&at(80, 100), 0));
        assert!(gate.over(&at(80, 100), 10));
        assert!(gate.over(&at(95, 100), 0));
        assert!(!gate.over(&at(1_000, 0), 0), "no maxmemory: never full");
        let evicting = Reading {
            refuses: false,
            ..at(95, 100)
        };
        assert!(
            !gate.over(&evicting, 0),
            "a server that evicts is never waited for"
        );
        let off = MemoryGate::new(0.0, Duration::from_secs(1));
        assert!(!off.over(&at(100, 100), 0));
    }
}
