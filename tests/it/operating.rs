//! Running it for hours: progress LOG lines at their interval, the summary, and the metrics file
//! (parsed by a Prometheus text-format parser), against real servers.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{catalog, record, stream_state, Interactive, Target};

/// A sync fed slowly: `n` records of `stream`, one every `every`, a state after every 10.
fn slow_sync(config: &Value, stream: &str, n: usize, every: Duration) -> crate::common::RunOutput {
    let cat = catalog(&[(Some("op"), stream)]);
    let mut sync = Interactive::start(config, &cat);
    for i in 0..n {
        let data = format!("{{\"i\":{i}}}");
        let mut lines = record(Some("op"), stream, &data, 1) + "\n";
        if (i + 1) % 10 == 0 {
            let state = format!("{{\"at\":{i}}}");
            lines += &(stream_state(Some("op"), stream, &state) + "\n");
        }
        sync.send(&lines);
        std::thread::sleep(every);
    }
    sync.finish()
}

/// The number after `label` in `text` ("… 120 records …" with label " records").
fn number_before(text: &str, label: &str) -> u64 {
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("{label:?} in {text}"));
    text[..at]
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("a number before {label:?} in {text}"))
}

#[test]
fn progress_lines_come_once_per_interval_and_agree_with_the_end() {
    let target = Target::start();
    let mut config = target.config();
    config["progress_interval_ms"] = json!(500);
    let started = Instant::now();
    let out = slow_sync(&config, "slow", 80, Duration::from_millis(50));
    let took = started.elapsed().as_secs_f64();
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let progress: Vec<String> = out
        .logs()
        .into_iter()
        .filter(|l| l.starts_with("Progress: "))
        .collect();
    // One line per 0.5 s of the run, never more (the first after 0.5 s).
    let most = (took / 0.5).floor() as usize;
    assert!(
        progress.len() + 2 >= most && progress.len() <= most,
        "{} progress lines in {took:.1} s: {progress:#?}",
        progress.len()
    );
    let counts: Vec<u64> = progress
        .iter()
        .map(|l| number_before(l, " records ("))
        .collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    assert!(counts.iter().all(|c| *c <= 80), "{counts:?}");
    assert!(
        counts.last().is_some_and(|c| *c >= 40),
        "records keep coming: {counts:?}"
    );
    for l in &progress {
        assert!(
            l.contains("batches in flight") && l.contains("states echoed"),
            "{l}"
        );
        assert!(l.contains("retries") && l.contains("reconnects"), "{l}");
        assert!(l.contains("server used_memory"), "{l}");
    }
    let logs = out.logs();
    let stream = logs
        .iter()
        .find(|l| l.starts_with("Stream op.slow: "))
        .expect("a summary line for the stream");
    assert_eq!(number_before(stream, " records ("), 80, "{stream}");
    let run = logs
        .iter()
        .find(|l| l.starts_with("Run: "))
        .expect("a summary of the run");
    assert!(
        run.contains(", 80 records,") && run.contains("8 states echoed"),
        "{run}"
    );
    assert!(
        run.contains("largest batch") && run.contains("slowest script call"),
        "{run}"
    );
    assert_eq!(out.states().len(), 8);
}

/// The metrics file's samples: (name with labels, value).
fn samples(text: &str) -> Vec<(String, f64)> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the text exposition format");
    scrape
        .samples
        .into_iter()
        .filter_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            Some((format!("{}{{{}}}", s.metric, labels.join(",")), value))
        })
        .collect()
}

#[test]
fn the_metrics_file_parses_never_goes_back_and_ends_equal_to_the_summary() {
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("destination.prom");
    let mut config = target.config();
    config["metrics_file"] = json!(path.display().to_string());
    config["batch_size"] = json!(7);
    // Read while the sync runs (it rewrites the file every 5 s), and after.
    let watcher_path = path.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_watching = stop.clone();
    let watcher = std::thread::spawn(move || {
        let mut seen: Vec<String> = Vec::new();
        while !stop_watching.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok(text) = std::fs::read_to_string(&watcher_path) {
                if seen.last() != Some(&text) {
                    seen.push(text);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        seen
    });
    let out = slow_sync(&config, "metered", 130, Duration::from_millis(50));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut seen = watcher.join().expect("watcher");
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let last = std::fs::read_to_string(&path).expect("the metrics file");
    if seen.last() != Some(&last) {
        seen.push(last.clone());
    }
    assert!(
        seen.len() >= 2,
        "written during the run and at the end: {}",
        seen.len()
    );
    // Counters never decrease from one version of the file to the next.
    let parsed: Vec<Vec<(String, f64)>> = seen.iter().map(|t| samples(t)).collect();
    for pair in parsed.windows(2) {
        for (name, before) in &pair[0] {
            if !name.contains("_total") {
                continue;
            }
            let after = pair[1]
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| *v)
                .unwrap_or_else(|| panic!("{name} vanished"));
            assert!(after >= *before, "{name}: {before} then {after}");
        }
    }
    let end = parsed.last().expect("a last version");
    let value = |name: &str| {
        end.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{name} in {last}"))
    };
    assert_eq!(
        value("destination_redis_records_written_total{stream=op.metered}"),
        130.0
    );
    assert!(value("destination_redis_batches_written_total{stream=op.metered}") >= 19.0);
    assert_eq!(value("destination_redis_states_echoed_total{}"), 13.0);
    assert_eq!(value("destination_redis_batches_in_flight{}"), 0.0);
    assert!(value("destination_redis_bytes_written_total{stream=op.metered}") > 130.0 * 7.0);
    assert!(
        last.contains("# TYPE destination_redis_script_call_seconds histogram"),
        "{last}"
    );
    assert!(
        last.contains("destination_redis_script_call_seconds_count"),
        "{last}"
    );
    // The summary says the same.
    let logs = out.logs();
    let stream = logs
        .iter()
        .find(|l| l.starts_with("Stream op.metered: "))
        .expect("summary");
    let batches = number_before(stream, " batches");
    assert_eq!(
        value("destination_redis_batches_written_total{stream=op.metered}"),
        batches as f64
    );
    let counter = target.counter_key(Some("op"), "metered");
    let stored: u64 = redis::cmd("GET")
        .arg(&counter)
        .query(&mut target.conn_for(&counter))
        .expect("GET");
    assert_eq!(stored, 130);
}

/// Back-pressure sets a single server's `maxmemory` (a cluster's nodes would each need theirs).
mod standalone {
    use super::*;

    /// `n` records of about 1 KB each, a state after every 100.
    pub(super) fn big_records(stream: &str, n: usize) -> String {
        let pad = "m".repeat(1_000);
        let mut input = String::new();
        for i in 0..n {
            input += &record(
                Some("op"),
                stream,
                &format!("{{\"i\":{i},\"pad\":\"{pad}\"}}"),
                1,
            );
            input.push('\n');
            if (i + 1) % 100 == 0 {
                input += &stream_state(Some("op"), stream, &format!("{{\"at\":{i}}}"));
                input.push('\n');
            }
        }
        input
    }

    /// The server's `used_memory`.
    fn used_memory(server: &crate::common::RedisServer) -> u64 {
        server
            .cli(&["INFO", "memory"])
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory")
    }

    #[test]
    fn a_full_server_pauses_the_sync_until_memory_is_freed_and_nothing_is_lost() {
        let target = Target::standalone();
        let server = target.server();
        let limit = used_memory(server) + 6 * 1024 * 1024;
        server.cli(&["CONFIG", "SET", "maxmemory", &limit.to_string()]);
        let mut config = target.config();
        config["batch_size"] = json!(50);
        config["memory_pause_ratio"] = json!(0.9);
        let n = 12_000;
        let cat = catalog(&[(Some("op"), "full")]);
        let mut sync = Interactive::start(&config, &cat);
        sync.send(&big_records("full", n));
        let paused = sync.wait_for_line("the writer pauses", Duration::from_secs(60));
        assert!(paused.contains("memory_pause_ratio 0.9"), "{paused}");
        // Paused: nothing more arrives while memory stays where it is.
        let counter = target.counter_key(Some("op"), "full");
        let at = |t: &Target| -> u64 {
            redis::cmd("GET")
                .arg(&counter)
                .query::<Option<u64>>(&mut t.conn_for(&counter))
                .expect("GET")
                .unwrap_or(0)
        };
        let before = at(&target);
        std::thread::sleep(Duration::from_millis(1_500));
        assert_eq!(at(&target), before, "no batch is sent while paused");
        assert!(before > 0 && before < n as u64, "{before}");
        // An operator raises maxmemory: the sync goes on and ends with every record once.
        server.cli(&["CONFIG", "SET", "maxmemory", "0"]);
        let out = sync.finish();
        assert_eq!(out.code, Some(0), "{}", out.dump());
        assert!(out.traces().is_empty(), "{}", out.dump());
        assert!(
            out.logs()
                .iter()
                .any(|l| l.contains("the writer goes on after a pause")),
            "{}",
            out.dump()
        );
        let (count, records) = target.read_stream(Some("op"), "full");
        assert_eq!(count, Some(n as i64));
        for (i, r) in records.iter().enumerate() {
            let data: Value = serde_json::from_str(&r["_airbyte_data"]).expect("data");
            assert_eq!(data["i"], i, "record {} once, in order", i + 1);
        }
        assert_eq!(out.states().len(), n / 100);
    }

    #[test]
    fn with_nobody_freeing_memory_the_sync_fails_transient_after_the_wait() {
        let target = Target::standalone();
        let server = target.server();
        let limit = used_memory(server) + 4 * 1024 * 1024;
        server.cli(&["CONFIG", "SET", "maxmemory", &limit.to_string()]);
        let mut config = target.config();
        config["batch_size"] = json!(50);
        config["memory_wait_ms"] = json!(2_000);
        let cat = catalog(&[(Some("op"), "stuck")]);
        let out = crate::common::write_sync(&config, &cat, &big_records("stuck", 10_000));
        out.assert_failed_with("transient_error", "memory_pause_ratio 0.9");
        assert!(
            !out.dump().contains("OOM"),
            "paused before the server refused: {}",
            out.dump()
        );
        // States were echoed for everything committed (up to the last state boundary).
        let echoed: f64 = out
            .states()
            .iter()
            .map(|s| {
                s["state"]["destinationStats"]["recordCount"]
                    .as_f64()
                    .unwrap_or(0.0)
            })
            .sum();
        let (count, _) = target.read_stream(Some("op"), "stuck");
        let count = count.unwrap_or(0) as f64;
        assert!(
            echoed <= count && count - echoed < 100.0,
            "echoed {echoed}, committed {count}"
        );
        assert!(count > 0.0);
    }

    #[test]
    fn without_info_rights_back_pressure_is_off_and_says_so_once() {
        let target = Target::standalone();
        let server = target.server();
        server.cli(&[
            "ACL", "SETUSER", "noinfo", "on", ">pw", "~*", "+@all", "-info",
        ]);
        let mut config = target.config();
        config["username"] = json!("noinfo");
        config["password"] = json!("pw");
        let cat = catalog(&[(Some("op"), "blind")]);
        let out = crate::common::write_sync(&config, &cat, &big_records("blind", 300));
        assert_eq!(out.code, Some(0), "{}", out.dump());
        let said: Vec<String> = out
            .logs()
            .into_iter()
            .filter(|l| l.contains("INFO memory cannot be read"))
            .collect();
        assert_eq!(said.len(), 1, "{}", out.dump());
        assert!(said[0].contains("back-pressure is off"), "{}", said[0]);
    }
}

#[test]
fn the_writers_connections_are_never_evicted_where_the_server_allows_it() {
    let target = Target::standalone();
    let server = target.server();
    let info = server.cli(&["INFO", "server"]);
    let major: u32 = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .and_then(|v| v.trim().split('.').next()?.parse().ok())
        .unwrap_or(0);
    let cat = catalog(&[(Some("op"), "kept")]);
    let mut sync = Interactive::start(&target.config(), &cat);
    let data = "{\"i\":1}";
    sync.send(&(record(Some("op"), "kept", data, 1) + "\n"));
    sync.send(&(stream_state(Some("op"), "kept", "{}") + "\n"));
    sync.wait_for_states(1, Duration::from_secs(30));
    let clients = server.cli(&["CLIENT", "LIST"]);
    let ours: Vec<&str> = clients
        .lines()
        .filter(|l| l.contains("name=destination-redis"))
        .collect();
    assert!(!ours.is_empty(), "{clients}");
    for line in &ours {
        let flags = line
            .split(' ')
            .find_map(|f| f.strip_prefix("flags="))
            .unwrap_or("");
        // Redis 7 added no-evict (flag `e`); older servers refuse the command, harmlessly.
        assert_eq!(flags.contains('e'), major >= 7, "{line}");
    }
    let out = sync.finish();
    assert_eq!(out.code, Some(0), "{}", out.dump());
}

#[test]
fn check_says_what_matters_before_a_long_sync() {
    let target = Target::standalone();
    let server = target.server();
    server.cli(&["CONFIG", "SET", "maxmemory", "100mb"]);
    let mut config = target.config();
    config["wait_aof"] = json!(true);
    let out = crate::common::check(&config);
    out.assert_check_succeeded();
    let logs = out.logs();
    let facts = logs
        .iter()
        .find(|l| l.contains(": version "))
        .unwrap_or_else(|| panic!("{}", out.dump()));
    assert!(facts.contains("maxmemory 104857600 bytes"), "{facts}");
    assert!(facts.contains("maxmemory-policy noeviction"), "{facts}");
    assert!(facts.contains("appendonly no"), "{facts}");
    assert!(
        logs.iter()
            .any(|l| l.contains("wait_aof is on, but") && l.contains("appendonly no")),
        "{}",
        out.dump()
    );
}

#[test]
fn a_cluster_node_that_fills_up_pauses_the_sync_until_memory_is_freed() {
    use crate::common::{tagged_counter, Cluster};
    let cluster = Cluster::start(3, 0);
    let owner = cluster.owner(&tagged_counter(Some("op"), "fullc"));
    let used: u64 = owner
        .cli(&["INFO", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory");
    let limit = (used + 6 * 1024 * 1024).to_string();
    owner.cli(&["CONFIG", "SET", "maxmemory", &limit]);
    let mut config = cluster.config();
    config["batch_size"] = json!(50);
    let cat = catalog(&[(Some("op"), "fullc")]);
    let mut sync = Interactive::start(&config, &cat);
    let n = 12_000;
    sync.send(&standalone::big_records("fullc", n));
    let paused = sync.wait_for_line("the writer pauses", Duration::from_secs(60));
    assert!(
        paused.contains(&owner.port().to_string()),
        "names the full node: {paused}"
    );
    owner.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    let out = sync.finish();
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let (count, records) = crate::common::read_tagged(&cluster, Some("op"), "fullc");
    assert_eq!(count, Some(n as i64));
    for (i, r) in records.iter().enumerate() {
        let data: Value = serde_json::from_str(&r["_airbyte_data"]).expect("data");
        assert_eq!(data["i"], i, "record {} once, in order", i + 1);
    }
}
