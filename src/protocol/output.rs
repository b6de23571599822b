//! What this destination prints, and the one thread that prints it.
//!
//! Every stdout line goes through [`Output`]: a queue and a thread, so a caller that does not read
//! stdout yet (some harnesses write all of stdin first) never stops the reading and writing of
//! records. Each line is flushed as it is written, so a STATE reaches the platform at once.

use std::io::Write;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{unbounded, Sender};
use serde_json::{json, Value};

use crate::error::Failure;

/// Severity of a LOG message.
#[derive(Debug, Clone, Copy)]
pub enum Level {
    /// Something the user should look at.
    Warn,
    /// Progress and facts.
    Info,
}

/// The stdout printer: a queue drained by one thread.
pub struct Output {
    tx: Sender<Printed>,
    thread: JoinHandle<std::io::Result<()>>,
    /// LOG messages as plain text lines (`load` on stderr) instead of Airbyte LOG messages.
    plain: bool,
    /// Plain INFO messages are dropped (`load --quiet`).
    quiet: bool,
}

impl Output {
    /// Starts the printer thread over `sink`.
    pub fn start<W: Write + Send + 'static>(mut sink: W) -> Self {
        let (tx, rx) = unbounded::<Printed>();
        let thread = std::thread::spawn(move || {
            for printed in rx {
                let Printed::Line(mut line) = printed else {
                    break;
                };
                line.push('\n');
                sink.write_all(line.as_bytes())?;
                sink.flush()?;
            }
            Ok(())
        });
        Output {
            tx,
            thread,
            plain: false,
            quiet: false,
        }
    }

    /// Starts a printer whose LOG messages are plain lines (`warning: ` before a warning): for
    /// people, as `load` writes them to stderr; `quiet` drops the INFO ones.
    pub fn plain<W: Write + Send + 'static>(sink: W, quiet: bool) -> Self {
        Output {
            plain: true,
            quiet,
            ..Self::start(sink)
        }
    }

    /// Queues one complete message line (without its newline).
    pub fn send(&self, line: String) {
        // The printer only stops when stdout is gone; then there is no one left to tell.
        let _ = self.tx.send(Printed::Line(line));
    }

    /// Queues a LOG message.
    pub fn log(&self, level: Level, message: impl AsRef<str>) {
        self.logger().log(level, message);
    }

    /// A handle that logs through this printer from another thread.
    pub fn logger(&self) -> Logger {
        Logger {
            tx: self.tx.clone(),
            plain: self.plain,
            quiet: self.quiet,
        }
    }

    /// Waits until every line queued so far is written (a [`Logger`] still held by a thread that
    /// is being abandoned does not hold it up; what it logs later is dropped). Returns the
    /// printer's I/O error, if any.
    pub fn finish(self) -> std::io::Result<()> {
        let _ = self.tx.send(Printed::End);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the stdout printer panicked")))
    }
}

/// What the printer thread is given: a line, or the end.
enum Printed {
    Line(String),
    End,
}

/// Logs through an [`Output`] from any thread (the writer, while the coordinator waits on it).
#[derive(Clone)]
pub struct Logger {
    tx: Sender<Printed>,
    plain: bool,
    quiet: bool,
}

impl Logger {
    /// Queues a LOG message (a plain line for a plain printer; INFO dropped when quiet).
    pub fn log(&self, level: Level, message: impl AsRef<str>) {
        let message = message.as_ref();
        let line = match (self.plain, level) {
            (false, _) => log_line(level, message),
            (true, Level::Warn) => format!("warning: {message}"),
            (true, Level::Info) if self.quiet => return,
            (true, Level::Info) => message.to_string(),
        };
        // The printer only stops when its output is gone; then there is no one left to tell.
        let _ = self.tx.send(Printed::Line(line));
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A LOG message line.
pub fn log_line(level: Level, message: &str) -> String {
    let level = match level {
        Level::Warn => "WARN",
        Level::Info => "INFO",
    };
    json!({"type": "LOG", "log": {"level": level, "message": message}}).to_string()
}

/// A TRACE error line for `failure`.
pub fn trace_error_line(failure: &Failure) -> String {
    json!({
        "type": "TRACE",
        "trace": {
            "type": "ERROR",
            "emitted_at": now_ms() as f64,
            "error": {
                "message": failure.message,
                "internal_message": failure.internal,
                "failure_type": failure.failure_type.as_str(),
            }
        }
    })
    .to_string()
}

/// A CONNECTION_STATUS line: SUCCEEDED for `Ok`, FAILED with the message for `Err`.
pub fn connection_status_line(result: &Result<(), Failure>) -> String {
    let status = match result {
        Ok(()) => json!({"status": "SUCCEEDED"}),
        Err(f) => json!({"status": "FAILED", "message": f.message}),
    };
    json!({"type": "CONNECTION_STATUS", "connectionStatus": status}).to_string()
}

/// The SPEC message line for `spec`.
pub fn spec_line(spec: Value) -> String {
    json!({"type": "SPEC", "spec": spec}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_has_the_protocol_fields() {
        let line = trace_error_line(&Failure::transient("Redis went away.", "os error 104"));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["trace"]["type"], "ERROR");
        assert!(v["trace"]["emitted_at"].is_f64());
        assert_eq!(v["trace"]["error"]["failure_type"], "transient_error");
        assert_eq!(v["trace"]["error"]["internal_message"], "os error 104");
    }

    #[test]
    fn output_keeps_order() {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Output::start(Sink(buf.clone()));
        for i in 0..100 {
            out.send(format!("{i}"));
        }
        out.finish().unwrap();
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let expected: String = (0..100).map(|i| format!("{i}\n")).collect();
        assert_eq!(text, expected);
    }
}
