//! What a load shows while it runs: on a terminal a progress bar on stderr (input bytes against
//! the inputs' size, records, rate, ETA), otherwise a plain line every few seconds.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::front::Counters;

/// How often the bar is redrawn.
const BAR_TICK: Duration = Duration::from_millis(200);

/// The running display; [`Progress::finish`] clears it.
pub struct Progress {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Progress {
    /// Starts showing `counters` (against `total` input bytes, when the inputs' sizes are known):
    /// a bar when stderr is a terminal, else a line every `every`.
    pub fn start(counters: Arc<Counters>, total: Option<u64>, every: Duration) -> Self {
        let (stop, stopped) = bounded::<()>(1);
        let terminal = std::io::stderr().is_terminal();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            if terminal {
                let bar = bar(total);
                loop {
                    let records = counters.records.load(Ordering::Relaxed);
                    bar.set_position(counters.raw_bytes.load(Ordering::Relaxed));
                    bar.set_message(format!(
                        "{} records, {}/s",
                        thousands(records),
                        thousands(rate(records, started.elapsed()))
                    ));
                    if stopped.recv_timeout(BAR_TICK).is_ok() {
                        break;
                    }
                }
                bar.finish_and_clear();
            } else {
                while stopped.recv_timeout(every).is_err() {
                    eprintln!("{}", line(&counters, total, started.elapsed()));
                }
            }
        });
        Progress { stop, thread }
    }

    /// Stops the display (a bar is cleared).
    pub fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

fn bar(total: Option<u64>) -> ProgressBar {
    let bar = match total {
        Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let template = match total {
        Some(_) => "{bar:30} {bytes}/{total_bytes} {msg} (ETA {eta})",
        None => "{spinner} {bytes} read, {msg}",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// One plain progress line: `read 120,000 records (11.2 MiB of 40.0 MiB, 28%), 95,000 records/s`.
pub fn line(counters: &Counters, total: Option<u64>, elapsed: Duration) -> String {
    let records = counters.records.load(Ordering::Relaxed);
    let raw = counters.raw_bytes.load(Ordering::Relaxed);
    let of = match total {
        Some(t) if t > 0 => format!(
            " of {}, {}%",
            mib(t),
            (raw.min(t) as f64 * 100.0 / t as f64) as u64
        ),
        _ => String::new(),
    };
    format!(
        "read {} records ({}{of}), {} records/s",
        thousands(records),
        mib(raw),
        thousands(rate(records, elapsed))
    )
}

fn rate(records: u64, elapsed: Duration) -> u64 {
    (records as f64 / elapsed.as_secs_f64().max(1e-3)) as u64
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(mib(3 * 1024 * 1024 / 2), "1.5 MiB");
    }

    #[test]
    fn a_line_says_records_bytes_share_and_rate() {
        let c = Counters::default();
        c.records.store(120_000, Ordering::Relaxed);
        c.raw_bytes.store(10 * 1024 * 1024, Ordering::Relaxed);
        let l = line(&c, Some(40 * 1024 * 1024), Duration::from_secs(2));
        assert_eq!(
            l,
            "read 120,000 records (10.0 MiB of 40.0 MiB, 25%), 60,000 records/s"
        );
    }
}
