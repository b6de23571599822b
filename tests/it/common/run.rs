//! Driving the built binary: one run through pipes (bounded in time), its output parsed into
//! messages, and a `write` fed line by line while its stdout is read.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_destination-redis");
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// What a run of the binary printed, and how it ended.
pub struct RunOutput {
    /// Exit code (None when killed by a signal).
    pub code: Option<i32>,
    /// Everything printed on stdout.
    pub stdout: String,
    /// Everything printed on stderr.
    pub stderr: String,
    /// Every stdout line, parsed.
    pub messages: Vec<Value>,
}

impl RunOutput {
    fn new(code: Option<i32>, stdout: String, stderr: String) -> Self {
        let messages = stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("stdout line is not JSON ({e}): {l}\nstderr: {stderr}")
                })
            })
            .collect();
        RunOutput {
            code,
            stdout,
            stderr,
            messages,
        }
    }

    fn of_type(&self, t: &str) -> Vec<&Value> {
        self.messages.iter().filter(|m| m["type"] == t).collect()
    }

    /// The STATE messages, in order.
    pub fn states(&self) -> Vec<&Value> {
        self.of_type("STATE")
    }

    /// The TRACE ERROR messages.
    pub fn traces(&self) -> Vec<&Value> {
        self.of_type("TRACE")
            .into_iter()
            .filter(|m| m["trace"]["type"] == "ERROR")
            .collect()
    }

    /// The text of every LOG message, in order.
    pub fn logs(&self) -> Vec<String> {
        self.of_type("LOG")
            .into_iter()
            .filter_map(|m| m["log"]["message"].as_str().map(str::to_string))
            .collect()
    }

    /// The CONNECTION_STATUS messages.
    pub fn statuses(&self) -> Vec<&Value> {
        self.of_type("CONNECTION_STATUS")
    }

    /// Asserts that the run printed a `CONNECTION_STATUS` of SUCCEEDED first (`check`).
    #[track_caller]
    pub fn assert_check_succeeded(&self) {
        assert_eq!(
            self.statuses()[0]["connectionStatus"]["status"],
            "SUCCEEDED",
            "{}",
            self.dump()
        );
    }

    /// Asserts that `write` failed: exit 1, exactly one TRACE error, of `failure_type`, whose
    /// message contains `text`.
    #[track_caller]
    pub fn assert_failed_with(&self, failure_type: &str, text: &str) {
        assert_eq!(self.code, Some(1), "{}", self.dump());
        let traces = self.traces();
        assert_eq!(traces.len(), 1, "one TRACE error\n{}", self.dump());
        let err = &traces[0]["trace"]["error"];
        assert_eq!(err["failure_type"], failure_type, "{err}");
        let message = err["message"].as_str().unwrap_or_default();
        assert!(message.contains(text), "the message names {text:?}: {err}");
    }

    /// Everything, for assertion messages (long stdout is cut).
    pub fn dump(&self) -> String {
        let cut = |s: &str| {
            if s.len() > 4000 {
                let end = (0..=4000)
                    .rev()
                    .find(|i| s.is_char_boundary(*i))
                    .unwrap_or(0);
                format!("{}… ({} bytes)", &s[..end], s.len())
            } else {
                s.to_string()
            }
        };
        format!(
            "exit: {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code,
            cut(&self.stdout),
            cut(&self.stderr)
        )
    }
}

/// Spawns the binary with piped stdio.
fn spawn(args: &[&str]) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    spawn_piped(cmd)
}

fn read_to_string_thread<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Waits for the child at most `timeout`; kills it (and panics) past that.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the binary with `args`, writing `stdin` from its own thread while stdout is read.
pub fn run(args: &[&str], stdin: &str) -> RunOutput {
    run_bytes(args, stdin.as_bytes().to_vec())
}

/// [`run`] with arbitrary stdin bytes.
pub fn run_bytes(args: &[&str], stdin: Vec<u8>) -> RunOutput {
    run_child(spawn(args), stdin)
}

/// Runs any command that speaks the protocol (e.g. `docker run … IMAGE write …`) like [`run_bytes`].
pub fn run_command(cmd: Command, stdin: Vec<u8>) -> RunOutput {
    run_child(spawn_piped(cmd), stdin)
}

/// Runs any command with its stdin closed; its exit code, stdout and stderr. Past `timeout` it is
/// killed and the test fails.
pub fn output_within(cmd: Command, timeout: Duration) -> (Option<i32>, String, String) {
    let mut child = spawn_piped(cmd);
    drop(child.stdin.take());
    let out = read_to_string_thread(child.stdout.take().expect("stdout"));
    let err = read_to_string_thread(child.stderr.take().expect("stderr"));
    let code = wait_bounded(&mut child, timeout);
    (
        code,
        out.join().expect("stdout"),
        err.join().expect("stderr"),
    )
}

/// Starts `cmd` with piped stdin, stdout and stderr.
fn spawn_piped(mut cmd: Command) -> Child {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

fn run_child(child: Child, stdin: Vec<u8>) -> RunOutput {
    let (code, out, err) = fed_within(child, stdin, RUN_TIMEOUT);
    RunOutput::new(code, out, err)
}

/// Runs `cmd` with `stdin` written from its own thread while its stdout and stderr are read; its
/// exit code, stdout and stderr. Past `timeout` it is killed and the test fails.
pub fn output_fed(
    cmd: Command,
    stdin: Vec<u8>,
    timeout: Duration,
) -> (Option<i32>, String, String) {
    fed_within(spawn_piped(cmd), stdin, timeout)
}

/// Waits for a child spawned with piped stdout and stderr, writing `stdin` to its piped stdin
/// (then closing it) from its own thread, unless the caller took its stdin to feed it itself.
pub fn fed_within(
    mut child: Child,
    stdin: Vec<u8>,
    timeout: Duration,
) -> (Option<i32>, String, String) {
    let input = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(mut input) = input {
            let _ = input.write_all(&stdin);
        }
    });
    let out = read_to_string_thread(child.stdout.take().expect("stdout"));
    let err = read_to_string_thread(child.stderr.take().expect("stderr"));
    let code = wait_bounded(&mut child, timeout);
    let _ = writer.join();
    (
        code,
        out.join().expect("stdout"),
        err.join().expect("stderr"),
    )
}

/// Files for one run: config and catalog in a fresh temp dir.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(config: &Value, catalog: Option<&Value>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("config.json"), config.to_string()).expect("config");
        if let Some(c) = catalog {
            std::fs::write(dir.path().join("catalog.json"), c.to_string()).expect("catalog");
        }
        Files { dir }
    }
    fn config(&self) -> String {
        self.dir.path().join("config.json").display().to_string()
    }
    fn catalog(&self) -> String {
        self.dir.path().join("catalog.json").display().to_string()
    }
}

/// Runs `write` with this config, catalog and stdin.
pub fn write_sync(config: &Value, catalog: &Value, stdin: &str) -> RunOutput {
    run_bytes_write(config, catalog, stdin.as_bytes())
}

/// Runs `write` with arbitrary stdin bytes.
pub fn run_bytes_write(config: &Value, catalog: &Value, stdin: &[u8]) -> RunOutput {
    let f = Files::new(config, Some(catalog));
    run_bytes(
        &["write", "--config", &f.config(), "--catalog", &f.catalog()],
        stdin.to_vec(),
    )
}

/// Runs `check` with this config.
pub fn check(config: &Value) -> RunOutput {
    let f = Files::new(config, None);
    run(&["check", "--config", &f.config()], "")
}

/// Runs `spec`.
pub fn spec() -> RunOutput {
    run(&["spec"], "")
}

/// Writes ALL of stdin and closes it before reading any stdout: proves the binary never stops
/// reading stdin because nobody reads its stdout.
pub fn write_all_then_read(
    config: &Value,
    catalog: &Value,
    stdin: &str,
    timeout: Duration,
) -> RunOutput {
    let f = Files::new(config, Some(catalog));
    let mut child = spawn(&["write", "--config", &f.config(), "--catalog", &f.catalog()]);
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.as_bytes().to_vec();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = input.write_all(&data);
        drop(input);
        let _ = done_tx.send(r.is_ok());
    });
    match done_rx.recv_timeout(timeout) {
        Ok(true) => {}
        Ok(false) => panic!("stdin write failed (the binary exited early?)"),
        Err(_) => {
            let _ = child.kill();
            panic!("deadlock: stdin not consumed while stdout unread");
        }
    }
    let out = read_to_string_thread(child.stdout.take().expect("stdout"));
    let err = read_to_string_thread(child.stderr.take().expect("stderr"));
    let code = wait_bounded(&mut child, timeout);
    RunOutput::new(
        code,
        out.join().expect("stdout"),
        err.join().expect("stderr"),
    )
}

/// A running `write` fed line by line, whose stdout is read as it comes.
pub struct Interactive {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: std::thread::JoinHandle<String>,
    _files: Option<Files>,
}

impl Interactive {
    /// Starts `write` with this config and catalog.
    pub fn start(config: &Value, catalog: &Value) -> Self {
        let files = Files::new(config, Some(catalog));
        let child = spawn(&[
            "write",
            "--config",
            &files.config(),
            "--catalog",
            &files.catalog(),
        ]);
        Self::of_child(child, Some(files))
    }

    /// Starts any command that speaks the protocol (e.g. `docker run -i … IMAGE write …`).
    pub fn start_command(cmd: Command) -> Self {
        Self::of_child(spawn_piped(cmd), None)
    }

    fn of_child(mut child: Child, files: Option<Files>) -> Self {
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let stderr = read_to_string_thread(child.stderr.take().expect("stderr"));
        Interactive {
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
            stderr,
            _files: files,
        }
    }

    /// Writes lines to stdin (a write error means the process already exited; `finish` tells).
    pub fn send(&mut self, lines: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin
                .write_all(lines.as_bytes())
                .and_then(|()| stdin.flush());
        }
    }

    /// Waits until `n` STATE messages have been printed in total; returns them.
    pub fn wait_for_states(&mut self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let states: Vec<Value> = self
                .seen
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|m| m["type"] == "STATE")
                .collect();
            if states.len() >= n {
                return states;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!(
                    "{} of {n} states after {timeout:?}; stdout so far:\n{}",
                    states.len(),
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits until a stdout line containing `text` has been printed; returns it.
    pub fn wait_for_line(&mut self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.seen.iter().find(|l| l.contains(text)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!(
                    "no line with {text:?} after {timeout:?}; stdout so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Sends SIGTERM (how Airbyte cancels a sync).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Kills the process with SIGKILL and returns what it printed.
    pub fn kill(mut self) -> RunOutput {
        let _ = self.child.kill();
        let code = wait_bounded(&mut self.child, Duration::from_secs(10));
        drop(self.stdin.take());
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(l);
        }
        let stdout = self.seen.iter().map(|l| format!("{l}\n")).collect();
        RunOutput::new(code, stdout, self.stderr.join().expect("stderr"))
    }

    /// Waits (bounded) for the process to exit on its own, stdin still open (after a signal), and
    /// returns everything it printed.
    pub fn wait_exit(mut self, timeout: Duration) -> RunOutput {
        let code = wait_bounded(&mut self.child, timeout);
        drop(self.stdin.take());
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(l);
        }
        let mut stdout = self.seen.join("\n");
        if !stdout.is_empty() {
            stdout.push('\n');
        }
        RunOutput::new(code, stdout, self.stderr.join().expect("stderr"))
    }

    /// Closes stdin, waits for the exit (60 s at most) and returns everything printed.
    pub fn finish(mut self) -> RunOutput {
        drop(self.stdin.take());
        let code = wait_bounded(&mut self.child, Duration::from_secs(60));
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(l);
        }
        let mut stdout = self.seen.join("\n");
        if !stdout.is_empty() {
            stdout.push('\n');
        }
        RunOutput::new(code, stdout, self.stderr.join().expect("stderr"))
    }
}
