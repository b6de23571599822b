//! `load`: files and stdin in every format, resumed exactly once after kills and cut connections,
//! bad input, status, dry runs, overwrite and dedup, progress. Against a single server, or a
//! cluster with `REDIS_TOPOLOGY=cluster`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{self, CommandCutter, Target};

const BIN: &str = env!("CARGO_BIN_EXE_destination-redis");
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// How a `load` run ended.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "load failed:\n{}", self.stderr);
        self
    }
}

/// `load` with `args`.
fn load_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("load").args(args);
    cmd
}

/// Runs `load` with `args` and `stdin`, bounded in time.
fn load(args: &[&str], stdin: Vec<u8>) -> Ran {
    let (code, stdout, stderr) = common::output_fed(load_command(args), stdin, RUN_TIMEOUT);
    Ran {
        code,
        stdout,
        stderr,
    }
}

/// A temp dir with the target's config in it.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(config: &Value) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("config.json"), config.to_string()).expect("config");
        Files { dir }
    }

    fn config(&self) -> String {
        self.path("config.json")
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn write(&self, name: &str, bytes: &[u8]) -> String {
        std::fs::write(self.dir.path().join(name), bytes).expect("write input");
        self.path(name)
    }
}

/// The `_airbyte_data` of records 1..=counter of a stream, in id order (pipelined in slices).
fn stored(target: &Target, ns: Option<&str>, stream: &str) -> Vec<String> {
    let counter = target.counter_key(ns, stream);
    let mut con = target.conn_for(&counter);
    let n: Option<u64> = redis::cmd("GET")
        .arg(&counter)
        .query(&mut con)
        .expect("GET");
    let n = n.unwrap_or(0);
    let mut out = Vec::with_capacity(n as usize);
    let mut from = 1;
    while from <= n {
        let to = (from + 9_999).min(n);
        let mut pipe = redis::pipe();
        for id in from..=to {
            pipe.cmd("HGET")
                .arg(target.record_key(ns, stream, id))
                .arg("_airbyte_data");
        }
        let slice: Vec<Option<String>> = pipe.query(&mut con).expect("HGET");
        out.extend(slice.into_iter().map(|d| d.unwrap_or_default()));
        from = to + 1;
    }
    out
}

/// `n` records of varied data (escapes, unicode, nesting), as minified JSON texts.
fn records(n: usize, tag: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            json!({"i": i, "tag": tag, "name": format!("n\"{i}\\é✓"), "nested": {"a": [i % 7, null]}})
                .to_string()
        })
        .collect()
}

fn jsonl(records: &[String]) -> Vec<u8> {
    records
        .iter()
        .flat_map(|r| format!("{r}\n").into_bytes())
        .collect()
}

fn json_array(records: &[String]) -> Vec<u8> {
    format!("[\n  {}\n]\n", records.join(",\n  ")).into_bytes()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 1).expect("zstd")
}

#[test]
fn every_format_from_files_and_stdin_loads_the_same_records_in_order() {
    let target = Target::start();
    let f = Files::new(&target.config());
    let data = records(3_000, "f");
    let lines = jsonl(&data);
    let array = json_array(&data);
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("a.jsonl", lines.clone()),
        ("b.ndjson.gz", gzip(&lines)),
        ("c.jsonl.zst", zstd(&lines)),
        ("d.json", array.clone()),
        ("e.json.gz", gzip(&array)),
        // Compression is recognised by its bytes, whatever the name says.
        ("f.json", zstd(&array)),
    ];
    for (i, (name, bytes)) in inputs.iter().enumerate() {
        let path = f.write(name, bytes);
        let stream = format!("s{i}");
        load(
            &[
                "--config",
                &f.config(),
                "--namespace",
                "ns",
                "--stream",
                &stream,
                &path,
            ],
            Vec::new(),
        )
        .ok();
        assert_eq!(stored(&target, Some("ns"), &stream), data, "{name}");
    }
    // Stdin, told its format (and two files in one load, in order).
    let ran = load(
        &[
            "--config",
            &f.config(),
            "--stream",
            "stdin",
            "--format",
            "json",
            "--load-id",
            "from-stdin",
        ],
        gzip(&array),
    );
    ran.ok();
    assert_eq!(stored(&target, None, "stdin"), data);
    let first = f.write("1.jsonl", &jsonl(&data[..1000]));
    let second = f.write("2.json", &json_array(&data[1000..]));
    load(
        &["--config", &f.config(), "--stream", "two", &first, &second],
        Vec::new(),
    )
    .ok();
    assert_eq!(stored(&target, None, "two"), data);
}

#[test]
fn csv_rows_become_objects_of_the_header_and_infer_types_when_asked() {
    let target = Target::start();
    let f = Files::new(&target.config());
    let csv = "id,name,score,ok\n1,\"Ann, \"\"B\"\"\",2.5,true\n2,\"two\nlines\",,false\n";
    let plain = f.write("p.csv", csv.as_bytes());
    let packed = f.write("p.csv.zst", &zstd(csv.as_bytes()));
    load(
        &["--config", &f.config(), "--stream", "text", &plain],
        Vec::new(),
    )
    .ok();
    assert_eq!(
        stored(&target, None, "text"),
        vec![
            r#"{"id":"1","name":"Ann, \"B\"","score":"2.5","ok":"true"}"#,
            r#"{"id":"2","name":"two\nlines","score":"","ok":"false"}"#,
        ]
    );
    load(
        &[
            "--config",
            &f.config(),
            "--stream",
            "typed",
            "--csv-infer",
            &packed,
        ],
        Vec::new(),
    )
    .ok();
    assert_eq!(
        stored(&target, None, "typed"),
        vec![
            r#"{"id":1,"name":"Ann, \"B\"","score":2.5,"ok":true}"#,
            r#"{"id":2,"name":"two\nlines","score":null,"ok":false}"#,
        ]
    );
}

/// A small deterministic random source (xorshift), seeded from the clock and printed.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        eprintln!("seed {seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Runs the same load, killing it with SIGKILL after a random time, until a run finishes on its
/// own (at most `kills` kills, then one run to the end); returns how many runs were killed.
fn load_with_kills(args: &[&str], kills: usize, max_ms: u64, rng: &mut Rng) -> usize {
    let mut killed = 0;
    let log = tempfile::NamedTempFile::new().expect("stderr file");
    while killed < kills {
        let mut child = load_command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("stderr file"))
            .spawn()
            .expect("spawn load");
        let at = Instant::now() + Duration::from_millis(100 + rng.below(max_ms));
        let mut ended = false;
        while Instant::now() < at && !ended {
            ended = matches!(child.try_wait(), Ok(Some(_)));
            std::thread::sleep(Duration::from_millis(2));
        }
        if !ended {
            let _ = child.kill();
        }
        let status = child.wait().expect("wait");
        if ended {
            let err = std::fs::read_to_string(log.path()).unwrap_or_default();
            assert!(status.success(), "a load run failed: {err}");
            return killed;
        }
        killed += 1;
    }
    load(args, Vec::new()).ok();
    killed
}

#[test]
fn a_million_records_killed_at_random_points_are_loaded_exactly_once_in_order() {
    let target = Target::start();
    let f = Files::new(&target.config());
    let n = 1_000_000;
    let lines: Vec<u8> = (0..n)
        .flat_map(|i| format!("{{\"i\":{i}}}\n").into_bytes())
        .collect();
    let path = f.write("big.jsonl", &lines);
    let mut rng = Rng::new();
    let args = ["--config", &f.config(), "--stream", "big", &path, "-q"];
    // Killed when the stream's counter passes each of several random points, whatever the
    // machine's speed; then run to the end.
    let mut points: Vec<u64> = (0..6).map(|_| 1 + rng.below(n as u64 - 1)).collect();
    points.sort_unstable();
    let counter = target.counter_key(None, "big");
    let mut con = target.conn_for(&counter);
    let mut killed = 0;
    for point in points {
        let mut child = load_command(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn load");
        let deadline = Instant::now() + RUN_TIMEOUT;
        loop {
            let at: Option<u64> = redis::cmd("GET")
                .arg(&counter)
                .query(&mut con)
                .expect("GET");
            if at.unwrap_or(0) >= point || Instant::now() > deadline {
                break;
            }
            if matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = child.kill();
        let status = child.wait().expect("wait");
        if std::os::unix::process::ExitStatusExt::signal(&status) == Some(9) {
            killed += 1;
        }
    }
    load(&args, Vec::new()).ok();
    eprintln!("survived {killed} kills");
    assert!(
        killed >= 3,
        "the load must have been killed several times ({killed})"
    );
    let got = stored(&target, None, "big");
    assert_eq!(got.len(), n, "every record once");
    for (i, d) in got.iter().enumerate() {
        assert_eq!(
            d,
            &format!("{{\"i\":{i}}}"),
            "record {} holds input record {i}",
            i + 1
        );
    }
    // The finished load says so, and a run again writes nothing.
    let again = load(&args[..5], Vec::new());
    again.ok();
    assert!(again.stderr.contains("finished before"), "{}", again.stderr);
    assert_eq!(stored(&target, None, "big").len(), n);
}

#[test]
fn compressed_arrays_and_csv_killed_at_random_points_resume_exactly_once() {
    let target = Target::start();
    let f = Files::new(&target.config());
    let n = 200_000;
    let data: Vec<String> = (0..n)
        .map(|i| format!("{{\"i\":{i},\"s\":\"x,y\"}}"))
        .collect();
    let array = f.write("a.json.gz", &gzip(&json_array(&data)));
    let csv: String = std::iter::once("i,s\n".to_string())
        .chain((0..n).map(|i| format!("{i},\"x,y\"\n")))
        .collect();
    let csv = f.write("c.csv.zst", &zstd(csv.as_bytes()));
    let mut rng = Rng::new();
    let config = f.config();
    for (stream, path, infer) in [("arr", &array, false), ("csv", &csv, true)] {
        let mut args = vec!["--config", &config, "--stream", stream, "-q", path.as_str()];
        if infer {
            args.push("--csv-infer");
        }
        let killed = load_with_kills(&args, 3, 900, &mut rng);
        eprintln!("{stream}: survived {killed} kills");
        assert_eq!(stored(&target, None, stream), data, "{stream}");
    }
}

#[test]
fn a_load_stopped_at_any_command_resumes_exactly_once() {
    // A proxy that stops every connection after the k-th command, as a crash of the link would,
    // at several points of the load; each next run resumes from what the server committed.
    let server = common::RedisServer::start();
    let f = Files::new(&server.config());
    let data = records(5_000, "cut");
    let path = f.write("in.jsonl", &jsonl(&data));
    let mut rng = Rng::new();
    let mut cuts = 0;
    for _ in 0..5 {
        let cutter = CommandCutter::start(server.port(), 3 + rng.below(40));
        let mut config = server.config();
        config["port"] = json!(cutter.port());
        config["retry_budget_ms"] = json!(0);
        let cf = Files::new(&config);
        let ran = load(
            &[
                "--config",
                &cf.config(),
                "--stream",
                "cut",
                "--batch-size",
                "100",
                &path,
            ],
            Vec::new(),
        );
        if cutter.tripped() {
            cuts += 1;
            assert_ne!(ran.code, Some(0), "a cut run cannot finish");
            assert!(
                ran.stderr
                    .to_lowercase()
                    .contains("run the same command again"),
                "{}",
                ran.stderr
            );
        }
    }
    load(
        &["--config", &f.config(), "--stream", "cut", &path],
        Vec::new(),
    )
    .ok();
    assert!(cuts >= 3, "{cuts} runs were cut");
    let mut con = server.conn();
    assert_eq!(
        common::read_stream(&mut con, None, "cut").1.len(),
        data.len()
    );
    assert_eq!(stored(&Target::Server(server), None, "cut"), data);
}

#[test]
fn a_bad_record_stops_the_load_after_everything_before_it_or_is_set_aside() {
    let target = Target::start();
    let f = Files::new(&target.config());
    let data = records(2_000, "bad");
    let mut lines: Vec<String> = data.to_vec();
    lines.insert(1_234, "{\"broken\": ".into());
    lines.insert(1_500, "[1, 2]".into());
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let path = f.write("in.jsonl", text.as_bytes());
    let ran = load(
        &["--config", &f.config(), "--stream", "s", &path],
        Vec::new(),
    );
    assert_eq!(ran.code, Some(1));
    assert!(
        ran.stderr.contains("in.jsonl line 1235 is not JSON") && ran.stderr.contains("--skip-bad"),
        "{}",
        ran.stderr
    );
    assert_eq!(
        stored(&target, None, "s"),
        data[..1_234].to_vec(),
        "everything before it, once"
    );
    // The same load with --skip-bad goes on from there, and sets both aside.
    let rejects = f.path("rejects.jsonl");
    let ran = load(
        &[
            "--config",
            &f.config(),
            "--stream",
            "s",
            "--skip-bad",
            &rejects,
            &path,
        ],
        Vec::new(),
    );
    ran.ok();
    assert!(ran.stderr.contains("2 rejected"), "{}", ran.stderr);
    assert_eq!(stored(&target, None, "s"), data);
    let set_aside: Vec<Value> = std::fs::read_to_string(&rejects)
        .expect("rejects")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(set_aside.len(), 2);
    assert_eq!(set_aside[0]["line"], 1235);
    assert_eq!(set_aside[0]["text"], "{\"broken\":");
    assert_eq!(set_aside[1]["line"], 1501);
    assert!(set_aside[1]["reason"]
        .as_str()
        .unwrap_or("")
        .contains("not an object"));
    // A CSV row with the wrong number of fields is named by its line.
    let csv = f.write("rows.csv", b"a,b\n1,2\n3\n4,5\n");
    let ran = load(
        &["--config", &f.config(), "--stream", "rows", &csv],
        Vec::new(),
    );
    assert_eq!(ran.code, Some(1));
    assert!(
        ran.stderr
            .contains("rows.csv line 3 is a CSV row of 1 fields, and the header has 2"),
        "{}",
        ran.stderr
    );
    assert_eq!(stored(&target, None, "rows"), vec![r#"{"a":"1","b":"2"}"#]);
}

#[test]
fn status_says_where_a_load_stands_and_again_loads_anew() {
    let target = Target::start();
    let f = Files::new(&target.config());
    let data = records(1_000, "st");
    let mut text = jsonl(&data);
    text.extend_from_slice(b"oops\n");
    let path = f.write("in.jsonl", &text);
    let base = [
        "--config",
        &f.config(),
        "--stream",
        "st",
        "--load-id",
        "st-1",
    ];
    let status = |base: &[&str]| {
        let mut args = base.to_vec();
        args.retain(|a| *a != "--load-id" && *a != "st-1");
        args.extend(["--status", "st-1"]);
        load(&args, Vec::new())
    };
    let unknown = status(&base);
    assert_eq!(unknown.code, Some(2));
    assert_eq!(
        unknown.stdout.trim(),
        "load st-1: unknown load id for stream \"st\" (no namespace)"
    );
    let failed = load(&[&base[..], &[path.as_str()]].concat(), Vec::new());
    assert_eq!(failed.code, Some(1));
    let st = status(&base);
    assert_eq!(st.code, Some(0));
    assert!(
        st.stdout
            .starts_with("load st-1: in progress, 1000 records committed; input 1 ("),
        "{}",
        st.stdout
    );
    let fixed = f.write("in.jsonl", &jsonl(&data));
    let done = load(&[&base[..], &[fixed.as_str()]].concat(), Vec::new());
    done.ok();
    assert!(done.stderr.contains("Loaded 0 records"), "{}", done.stderr);
    let st = status(&base);
    assert!(
        st.stdout.starts_with("load st-1: finished, 1000 records"),
        "{}",
        st.stdout
    );
    let twice = load(
        &[&base[..], &["--again", fixed.as_str()]].concat(),
        Vec::new(),
    );
    twice.ok();
    let mut both = data.clone();
    both.extend(data.iter().cloned());
    assert_eq!(stored(&target, None, "st"), both);
}

#[test]
fn a_dry_run_reads_everything_and_writes_nothing() {
    let target = Target::start();
    let f = Files::new(&target.config());
    let path = f.write("in.jsonl", &jsonl(&records(500, "dry")));
    let ran = load(
        &[
            "--config",
            &f.config(),
            "--stream",
            "dry",
            "--dry-run",
            &path,
        ],
        Vec::new(),
    );
    ran.ok();
    assert!(
        ran.stderr
            .contains("Read (dry run, nothing written) 500 records"),
        "{}",
        ran.stderr
    );
    assert!(target.keys("*").is_empty(), "{:?}", target.keys("*"));
    let bad = f.write("bad.jsonl", b"{\"a\":1}\nnope\n");
    let ran = load(
        &[
            "--config",
            &f.config(),
            "--stream",
            "dry",
            "--dry-run",
            &bad,
        ],
        Vec::new(),
    );
    assert_eq!(ran.code, Some(1));
    assert!(
        ran.stderr.contains("bad.jsonl line 2 is not JSON"),
        "{}",
        ran.stderr
    );
    assert!(target.keys("*").is_empty());
}

#[test]
fn an_overwrite_load_replaces_the_stream_only_when_done_and_resumes_after_kills() {
    let target = Target::start();
    let f = Files::new(&target.config());
    let old = records(300, "old");
    let first = f.write("old.jsonl", &jsonl(&old));
    load(
        &["--config", &f.config(), "--stream", "ow", &first],
        Vec::new(),
    )
    .ok();
    let new = records(400_000, "new");
    let second = f.write("new.jsonl", &jsonl(&new));
    let args = [
        "--config",
        &f.config(),
        "--stream",
        "ow",
        "--mode",
        "overwrite",
        "-q",
        &second,
    ];
    let mut rng = Rng::new();
    // Killed before the end: the old records are still what readers see.
    let mut child = load_command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        stored(&target, None, "ow"),
        old,
        "untouched until published"
    );
    let killed = load_with_kills(&args, 2, 1_500, &mut rng);
    eprintln!("survived {} kills", killed + 1);
    assert_eq!(stored(&target, None, "ow"), new);
    // Killed runs leave their batch tokens (they expire); no staged record or staging key stays.
    let left = target.leftover_bookkeeping();
    assert!(
        left.iter().all(
            |k| k.starts_with("_airbyte_redis:token:") || k.starts_with("_airbyte_redis:load:")
        ),
        "{left:?}"
    );
}

#[test]
fn a_dedup_load_keeps_the_newest_version_of_each_key() {
    let target = Target::start();
    let f = Files::new(&target.config());
    let text = "{\"id\":1,\"v\":1}\n{\"id\":2,\"v\":1}\n{\"id\":1,\"v\":3}\n{\"id\":1,\"v\":2}\n";
    let path = f.write("u.jsonl", text.as_bytes());
    load(
        &[
            "--config",
            &f.config(),
            "--stream",
            "u",
            "--mode",
            "dedup",
            "--primary-key",
            "id",
            "--cursor",
            "v",
            &path,
        ],
        Vec::new(),
    )
    .ok();
    let mut got = stored(&target, None, "u");
    got.retain(|d| !d.is_empty());
    got.sort();
    assert_eq!(got, vec![r#"{"id":1,"v":3}"#, r#"{"id":2,"v":1}"#]);
    let ran = load(
        &[
            "--config",
            &f.config(),
            "--stream",
            "u2",
            "--mode",
            "dedup",
            &path,
        ],
        Vec::new(),
    );
    assert_eq!(ran.code, Some(1));
    assert!(ran.stderr.contains("--primary-key"), "{}", ran.stderr);
}

#[test]
fn progress_is_a_line_every_interval_when_stderr_is_not_a_terminal() {
    let target = Target::start();
    let f = Files::new(&target.config());
    // A slow pipe: 40 records, one every 50 ms.
    let mut child = load_command(&[
        "--config",
        &f.config(),
        "--stream",
        "slow",
        "--load-id",
        "slow",
        "--progress-every-ms",
        "300",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        for i in 0..40 {
            let _ = writeln!(input, "{{\"i\":{i}}}");
            let _ = input.flush();
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let (code, stdout, stderr) = common::fed_within(child, Vec::new(), RUN_TIMEOUT);
    let _ = writer.join();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "", "nothing on stdout");
    let counts: Vec<u64> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("read "))
        .map(|l| {
            l.split(' ')
                .next()
                .unwrap_or("")
                .replace(',', "")
                .parse()
                .expect("count")
        })
        .collect();
    assert!(counts.len() >= 4, "{stderr}");
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]) && counts.iter().all(|c| *c <= 40),
        "{counts:?}"
    );
    assert!(stderr.contains("Loaded 40 records"), "{stderr}");
}

#[test]
fn progress_is_a_bar_on_a_terminal() {
    // `script` gives the load a pseudo-terminal for its stderr.
    if Command::new("script").arg("--version").output().is_err() {
        panic!("`script` (util-linux) is needed for this test");
    }
    let target = Target::start();
    let f = Files::new(&target.config());
    let path = f.write("in.jsonl", &jsonl(&records(300_000, "bar")));
    let log = f.path("typescript");
    let command = format!("{BIN} load --config {} --stream bar {path}", f.config());
    let ran = Command::new("script")
        .args(["-qec", &command, &log])
        .stdin(Stdio::null())
        .output()
        .expect("script");
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stdout)
    );
    let shown = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        shown.contains("records/s") || shown.contains("/s"),
        "{shown}"
    );
    assert!(
        shown.contains("MiB") && shown.contains("ETA"),
        "a bar with bytes and ETA: {shown}"
    );
    assert!(shown.contains("Loaded 300,000 records"), "{shown}");
}

#[test]
fn a_json_array_far_larger_than_memory_allows_is_streamed() {
    // 400 MB of JSON array through stdin: the load's resident memory stays under 100 MiB.
    let target = Target::start();
    let f = Files::new(&target.config());
    let mut child = load_command(&[
        "--config",
        &f.config(),
        "--stream",
        "huge",
        "--format",
        "json",
        "--load-id",
        "huge",
        "-q",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");
    let pid = child.id();
    let mut input = child.stdin.take().expect("stdin");
    let n = 400_000;
    let writer = std::thread::spawn(move || {
        let pad = "p".repeat(1_000);
        let _ = input.write_all(b"[");
        for i in 0..n {
            let sep = if i == 0 { "" } else { "," };
            if input
                .write_all(format!("{sep}{{\"i\":{i},\"pad\":\"{pad}\"}}").as_bytes())
                .is_err()
            {
                return;
            }
        }
        let _ = input.write_all(b"]");
    });
    let mut peak_kib = 0u64;
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("VmHWM:") {
                    let kib: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                    peak_kib = peak_kib.max(kib);
                }
            }
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the load did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    assert!(status.success());
    eprintln!("peak resident memory: {} KiB", peak_kib);
    assert!(peak_kib > 0 && peak_kib < 100 * 1024, "peak {peak_kib} KiB");
    let counter = target.counter_key(None, "huge");
    let n_stored: u64 = redis::cmd("GET")
        .arg(&counter)
        .query(&mut target.conn_for(&counter))
        .expect("GET");
    assert_eq!(n_stored, n as u64);
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Lines,
    Array,
    Csv,
}

#[test]
fn any_input_batching_and_cuts_give_ids_in_input_order() {
    // The id-sequencing property of `write`, through `load`: for any records, input format and
    // compression, batch limits, and runs stopped at any command (a standalone server: a proxy
    // stops every connection after the k-th command), the stream ends with ids 1..N holding the
    // input records in order, each once.
    use proptest::prelude::*;
    use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
    let target = Target::start();
    let case = std::sync::atomic::AtomicUsize::new(0);
    let strategy = (
        0usize..300,
        prop_oneof![Just(Shape::Lines), Just(Shape::Array), Just(Shape::Csv)],
        0u8..3,
        1usize..40,
        1usize..5,
        30usize..3000,
        proptest::collection::vec(2u64..80, 0..3),
        any::<bool>(),
    );
    let mut config = Config::with_cases(16);
    config.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(
        "proptest-regressions/it-load-sequencing.txt",
    )));
    TestRunner::new(config)
        .run(
            &strategy,
            |(n, shape, packing, batch, in_flight, bytes, cuts, stdin)| {
                let stream = format!(
                    "p{}",
                    case.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                );
                let data: Vec<String> = (0..n)
                    .map(|i| format!("{{\"i\":\"{i}\",\"s\":\"{}\"}}", "é,".repeat(i % 3)))
                    .collect();
                let (name, text) = match shape {
                    Shape::Lines => ("in.jsonl", jsonl(&data)),
                    Shape::Array => ("in.json", json_array(&data)),
                    Shape::Csv => {
                        let rows: String = (0..n)
                            .map(|i| format!("{i},\"{}\"\n", "é,".repeat(i % 3)))
                            .collect();
                        ("in.csv", format!("i,s\n{rows}").into_bytes())
                    }
                };
                let bytes_in = match packing {
                    0 => text,
                    1 => gzip(&text),
                    _ => zstd(&text),
                };
                let mut config = target.config();
                config["batch_size"] = json!(batch);
                config["max_batches_in_flight"] = json!(in_flight);
                config["batch_bytes"] = json!(bytes);
                let f = Files::new(&config);
                let path = f.write(name, &bytes_in);
                // From the file, or from stdin (told its format, named by a load id) fed anew on
                // every run.
                let format = match shape {
                    Shape::Lines => "jsonl",
                    Shape::Array => "json",
                    Shape::Csv => "csv",
                };
                let source: Vec<&str> = match stdin {
                    false => vec![&path],
                    true => vec!["--format", format, "--load-id", &stream, "-"],
                };
                let feed = || if stdin { bytes_in.clone() } else { Vec::new() };
                let config_path = f.config();
                let args = [
                    &["--config", &config_path, "--stream", &stream, "-q"][..],
                    &source,
                ]
                .concat();
                if let Target::Server(server) = &target {
                    for k in &cuts {
                        let cutter = CommandCutter::start(server.port(), *k);
                        let mut cut = config.clone();
                        cut["port"] = json!(cutter.port());
                        cut["retry_budget_ms"] = json!(0);
                        let cf = Files::new(&cut);
                        let cut_config = cf.config();
                        let mut cut_args = args.clone();
                        cut_args[1] = &cut_config;
                        let ran = load(&cut_args, feed());
                        prop_assert!(ran.code == Some(0) || cutter.tripped(), "{}", ran.stderr);
                    }
                }
                load(&args, feed()).ok();
                prop_assert_eq!(stored(&target, None, &stream), data);
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn urls_and_passwords_from_the_environment_connect_and_are_never_printed() {
    let server = common::RedisServer::start_with(&["--requirepass", "s3cret-pw"]);
    let f = Files::new(&json!({}));
    let path = f.write("in.jsonl", &jsonl(&records(10, "env")));
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = load_command(args);
        cmd.env_remove("REDIS_URL").env_remove("REDIS_PASSWORD");
        for (k, v) in env {
            cmd.env(k, v);
        }
        common::output_fed(cmd, Vec::new(), RUN_TIMEOUT)
    };
    let port = server.port();
    let wrong = format!("redis://:wrong-pw-123@127.0.0.1:{port}/0");
    let (code, _, err) = run(&["--url", &wrong, "--stream", "e", &path], &[]);
    assert_eq!(code, Some(1));
    assert!(!err.contains("wrong-pw-123"), "{err}");
    assert!(err.to_lowercase().contains("password"), "{err}");
    let plain = format!("redis://127.0.0.1:{port}");
    let (code, _, err) = run(
        &["--url", &plain, "--stream", "e", &path],
        &[("REDIS_PASSWORD", "s3cret-pw")],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("s3cret-pw"), "{err}");
    let with = format!("redis://default:s3cret-pw@127.0.0.1:{port}/0");
    let (code, _, err) = run(&["--stream", "e2", &path], &[("REDIS_URL", &with)]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("s3cret-pw"), "{err}");
    let (code, _, err) = run(&["--stream", "e3", &path], &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--url"), "{err}");
    let mut con = server.conn();
    assert_eq!(common::read_stream(&mut con, None, "e").1.len(), 10);
    assert_eq!(common::read_stream(&mut con, None, "e2").1.len(), 10);
}

/// Runs `load` with `args` and kills it (SIGKILL) once the position of load `id` in Redis counts
/// at least `records` records (or it ends).
fn kill_after(args: &[&str], id: &str, con: &mut redis::Connection, records: u64) {
    let mut child = load_command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn load");
    let deadline = Instant::now() + RUN_TIMEOUT;
    while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
        if committed(con, id) >= records {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill();
    let _ = child.wait();
    until_disconnected(con);
}

/// How many records the position of load `id` counts (0: none yet), read on the server behind
/// `con` (the stream's node).
fn committed(con: &mut redis::Connection, id: &str) -> u64 {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("_airbyte_redis:load:{id}:*"))
        .query(con)
        .expect("KEYS");
    keys.iter()
        .filter_map(|k| {
            let position: Option<String> = redis::cmd("HGET")
                .arg(k)
                .arg("position")
                .query(con)
                .ok()
                .flatten();
            position?.rsplit(' ').next()?.parse::<u64>().ok()
        })
        .max()
        .unwrap_or(0)
}

/// Waits until the server behind `con` has closed every connection of a killed destination
/// process (named `destination-redis`): it runs what the process had sent before it died (a
/// window of batches) first, so only then does the database hold everything that process wrote.
fn until_disconnected(con: &mut redis::Connection) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(con)
            .expect("CLIENT LIST");
        if !clients.contains("name=destination-redis") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the killed process's connections are still open:\n{clients}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_load_resumes_only_with_its_own_inputs_and_its_own_staging() {
    // A load killed once its position counts 1,000 records; what it resumes from must still be
    // there.
    let server = common::RedisServer::start();
    let f = Files::new(&server.config());
    let data = records(20_000, "own");
    let first = f.write("a.jsonl", &jsonl(&data));
    let other = f.write("b.jsonl", &jsonl(&data[..10]));
    let config = f.config();
    let mut con = server.conn();
    let base = [
        "--config",
        config.as_str(),
        "--batch-size",
        "100",
        "--load-id",
    ];
    // Other inputs under the same id are refused.
    let args = [&base[..], &["own-1", "--stream", "own", &first]].concat();
    kill_after(&args, "own-1", &mut con, 1_000);
    let ran = load(
        &[&base[..], &["own-1", "--stream", "own", &other]].concat(),
        Vec::new(),
    );
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("was started with the inputs"),
        "{}",
        ran.stderr
    );
    // A plain file cut shorter than where the load stopped is refused.
    let keep = std::fs::read(&first).expect("read");
    std::fs::write(&first, &keep[..100]).expect("truncate");
    let ran = load(
        &[&base[..], &["own-1", "--stream", "own", &first]].concat(),
        Vec::new(),
    );
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("it changed since"), "{}", ran.stderr);
    std::fs::write(&first, &keep).expect("restore");
    load(
        &[&base[..], &["own-1", "--stream", "own", &first]].concat(),
        Vec::new(),
    )
    .ok();
    assert_eq!(
        common::read_stream(&mut con, None, "own").1.len(),
        data.len()
    );
    // An overwrite load whose staging vanished (expired) is refused, and --again loads anew.
    let args = [
        &base[..],
        &["ow-1", "--stream", "ow", "--mode", "overwrite", &first],
    ]
    .concat();
    kill_after(&args, "ow-1", &mut con, 1_000);
    let staged: Vec<String> = redis::cmd("KEYS")
        .arg("_airbyte_redis:staging*")
        .query(&mut con)
        .expect("KEYS");
    assert!(!staged.is_empty());
    let _: () = redis::cmd("DEL").arg(&staged).query(&mut con).expect("DEL");
    let ran = load(&args, Vec::new());
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("--again"), "{}", ran.stderr);
    load(&[&args[..], &["--again"]].concat(), Vec::new()).ok();
    let (_, ow) = common::read_stream(&mut con, None, "ow");
    assert_eq!(ow.len(), data.len());
}

#[test]
fn a_slow_pipes_records_are_loaded_while_it_is_still_open() {
    // Five records, then nothing for a while, stdin still open: they are committed without
    // waiting for more input or the end.
    let target = Target::start();
    let f = Files::new(&target.config());
    let mut child = load_command(&[
        "--config",
        &f.config(),
        "--stream",
        "pipe",
        "--load-id",
        "pipe",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    for i in 0..5 {
        writeln!(input, "{{\"i\":{i}}}").expect("write");
    }
    input.flush().expect("flush");
    let counter = target.counter_key(None, "pipe");
    let mut con = target.conn_for(&counter);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = 0;
    while Instant::now() < deadline && seen < 5 {
        seen = redis::cmd("GET")
            .arg(&counter)
            .query::<Option<u64>>(&mut con)
            .expect("GET")
            .unwrap_or(0);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(seen, 5, "committed while the pipe is open and quiet");
    writeln!(input, "{{\"i\":5}}").expect("write");
    drop(input);
    let (code, _, stderr) = common::fed_within(child, Vec::new(), RUN_TIMEOUT);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stored(&target, None, "pipe").len(), 6);
}

#[test]
fn a_killed_runs_late_batch_is_refused_once_another_run_took_the_load_over() {
    // A killed run's last batches may still be in the server's input when the load is run again:
    // once the new run has begun (and read the position), they must not write anything.
    let target = Target::start();
    let f = Files::new(&target.config());
    let data = records(20_000, "late");
    let path = f.write("late.jsonl", &jsonl(&data));
    let counter = target.counter_key(None, "late");
    let mut con = target.conn_for(&counter);
    let args = [
        "--config",
        &f.config(),
        "--batch-size",
        "100",
        "--load-id",
        "late-1",
        "--stream",
        "late",
        &path,
    ];
    kill_after(&args, "late-1", &mut con, 1_000);
    let key = target
        .keys("_airbyte_redis:load:late-1:*")
        .pop()
        .expect("load key");
    let hget = |con: &mut redis::Connection, field: &str| -> String {
        redis::cmd("HGET")
            .arg(&key)
            .arg(field)
            .query(con)
            .expect("HGET")
    };
    let killed_run = hget(&mut con, "run");
    let token = format!("_airbyte_redis:token:{killed_run}:{counter}");
    let applied: u64 = redis::cmd("GET")
        .arg(&token)
        .query(&mut con)
        .expect("GET token");
    let ran = load(&args, Vec::new());
    ran.ok();
    assert!(
        ran.stderr.contains("resuming after record"),
        "{}",
        ran.stderr
    );
    assert_ne!(
        hget(&mut con, "run"),
        killed_run,
        "the new run owns the load"
    );
    let position = hget(&mut con, "position");
    // The killed run's next batch, as the server would run it now.
    let late = |con: &mut redis::Connection| -> redis::RedisResult<i64> {
        redis::cmd("EVALSHA")
            .arg(&destination_redis::scripts::APPEND_BATCH.sha)
            .arg(2)
            .arg(&counter)
            .arg(&token)
            .arg((applied + 1).to_string())
            .arg(format!("{counter}:"))
            .arg("600")
            .arg("0")
            .arg("0")
            .arg("0")
            .arg("hash")
            .arg(format!("_airbyte_redis:format:{counter}"))
            .arg(&key)
            .arg("1700000000000")
            .arg(r#"{"late":true}"#)
            .arg("0 1 1 1")
            .query(con)
    };
    let err = late(&mut con).expect_err("refused");
    assert_eq!(err.code(), Some("ABSUPERSEDED"), "{err:?}");
    assert_eq!(
        stored(&target, None, "late"),
        data,
        "every record once, in order"
    );
    assert_eq!(hget(&mut con, "position"), position, "position untouched");
    // The same batch is applied when its run owns the load: the refusal above is the owner's.
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("run")
        .arg(&killed_run)
        .query(&mut con)
        .expect("HSET");
    assert_eq!(late(&mut con).expect("applied"), data.len() as i64 + 1);
}

#[test]
fn of_two_runs_of_one_load_the_later_takes_it_over_and_the_earlier_stops() {
    // In every shape whose script writes the position: hash records, a Redis stream, upserts by
    // id and records keyed by primary key.
    let target = Target::start();
    let f = Files::new(&target.config());
    let shapes: [(&str, &[&str]); 4] = [
        ("two", &[]),
        ("two-stream", &["--value-format", "stream"]),
        (
            "two-dedup",
            &["--mode", "dedup", "--primary-key", "i", "--cursor", "i"],
        ),
        (
            "two-keyed",
            &["--record-key", "primary_key", "--primary-key", "i"],
        ),
    ];
    for (stream, extra) in shapes {
        let config = f.config();
        let base = ["--config", &config, "--stream", stream, "--load-id", stream];
        let args = [&base[..], extra].concat();
        let lines: Vec<String> = (0..10).map(|i| format!("{{\"i\":{i}}}\n")).collect();
        let mut first = load_command(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut input = first.stdin.take().expect("stdin");
        input
            .write_all(lines[..5].concat().as_bytes())
            .expect("write");
        input.flush().expect("flush");
        let mut con = target.conn_for(&target.counter_key(None, stream));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && committed(&mut con, stream) < 5 {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            committed(&mut con, stream),
            5,
            "{stream}: the first run committed five"
        );
        // The second run (the same stdin so far, then five more) resumes after them, finishes.
        let second = load(&args, lines.concat().into_bytes());
        second.ok();
        assert!(
            second.stderr.contains("resuming after record 5"),
            "{stream}: {}",
            second.stderr
        );
        assert_eq!(committed(&mut con, stream), 10, "{stream}");
        // The first run's next batch is refused: it stops, with a sentence that says why.
        input.write_all(b"{\"i\":99}\n").expect("write");
        drop(input);
        let (code, _, stderr) = common::fed_within(first, Vec::new(), RUN_TIMEOUT);
        assert_eq!(code, Some(1), "{stream}: {stderr}");
        assert!(
            stderr.contains("Another run") && stderr.contains("took the load over"),
            "{stream}: {stderr}"
        );
        assert_eq!(committed(&mut con, stream), 10, "{stream}: nothing more");
    }
    let expected: Vec<String> = (0..10).map(|i| format!("{{\"i\":{i}}}")).collect();
    assert_eq!(stored(&target, None, "two"), expected);
}
