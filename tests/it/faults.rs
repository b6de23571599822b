//! Faults against real servers: dropped connections at random points, a restarted server, BUSY,
//! OOM at a tiny maxmemory, a read-only replica. Exactly once: ids 1..N, every record once, states
//! only for committed data.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use serde_json::json;

use crate::common::{
    self, catalog, drops_at, legacy_state, record, Cut, Direction, FaultProxy, Kind, RedisServer,
};

/// Records `{"i":<k>}` of stream `s` for k in `range`, one line each.
fn numbered(range: std::ops::Range<usize>) -> String {
    range
        .map(|i| record(None, "s", &format!(r#"{{"i":{i}}}"#), 1) + "\n")
        .collect()
}

fn check_exact(
    con: &mut redis::Connection,
    ns: &str,
    stream: &str,
    want: &[String],
) -> Result<(), TestCaseError> {
    let (counter, records) = common::read_stream(con, Some(ns), stream);
    prop_assert_eq!(
        counter.unwrap_or(0) as usize,
        want.len(),
        "counter of {}",
        stream
    );
    for (i, (r, d)) in records.iter().zip(want).enumerate() {
        prop_assert_eq!(r.get("_airbyte_ab_id"), Some(&(i + 1).to_string()));
        prop_assert_eq!(
            r.get("_airbyte_data"),
            Some(d),
            "record {} of {}",
            i + 1,
            stream
        );
    }
    prop_assert_eq!(
        common::count_record_keys(con, Some(ns), stream),
        want.len(),
        "no record beyond the counter"
    );
    Ok(())
}

#[test]
fn dropped_connections_lose_and_double_nothing() {
    let server = RedisServer::start();
    let case = AtomicUsize::new(0);
    let cuts_made = AtomicUsize::new(0);
    let cut = (any::<bool>(), 0.0f64..1.0).prop_map(|(up, at)| (up, at));
    let strategy = (
        1usize..1200,
        1usize..60,
        1usize..40,
        proptest::collection::vec(cut, 1..4),
    );
    let mut config = Config::with_cases(16);
    config.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(
        "proptest-regressions/it-faults-dropped.txt",
    )));
    TestRunner::new(config)
        .run(&strategy, |(n, batch_size, state_every, cuts)| {
            let ns = format!("f{}", case.fetch_add(1, Ordering::SeqCst));
            let mut input = String::new();
            let mut want: [Vec<String>; 2] = [Vec::new(), Vec::new()];
            let mut states = 0;
            for i in 0..n {
                let s = i % 2;
                let data = format!(r#"{{"i":{i},"pad":"{}"}}"#, "p".repeat(i % 50));
                input += &(record(Some(&ns), &format!("s{s}"), &data, 1) + "\n");
                want[s].push(data);
                if i % state_every == state_every - 1 {
                    input += &(legacy_state(&i.to_string()) + "\n");
                    states += 1;
                }
            }
            // Up: anywhere in the request traffic (about the input's size, plus the setup's scripts).
            // Down: anywhere in the (small) reply traffic.
            let replies = 8 * (n / batch_size + 10) + 200;
            let cuts = drops_at(&cuts, input.len() + 12_000, replies);
            let proxy = FaultProxy::start(server.port(), cuts);
            let mut config = server.config();
            config["port"] = json!(proxy.port());
            config["batch_size"] = json!(batch_size);
            config["retry_budget_ms"] = json!(20_000);
            let cat = catalog(&[(Some(ns.as_str()), "s0"), (Some(ns.as_str()), "s1")]);
            let out = common::write_sync(&config, &cat, &input);
            cuts_made.fetch_add(proxy.cuts() as usize, Ordering::SeqCst);
            prop_assert_eq!(out.code, Some(0), "{}", out.dump());
            prop_assert_eq!(out.states().len(), states);
            let total: f64 = out
                .states()
                .iter()
                .map(|s| {
                    s["state"]["destinationStats"]["recordCount"]
                        .as_f64()
                        .unwrap_or(-1.0)
                })
                .sum();
            prop_assert_eq!(total as usize, (n / state_every) * state_every);
            let mut con = server.conn();
            check_exact(&mut con, &ns, "s0", &want[0])?;
            check_exact(&mut con, &ns, "s1", &want[1])?;
            Ok(())
        })
        .unwrap();
    let cases = case.load(Ordering::SeqCst);
    let cuts = cuts_made.load(Ordering::SeqCst);
    assert!(
        cuts * 2 >= cases,
        "only {cuts} cuts in {cases} cases: the faults did not happen"
    );
}

#[test]
fn stalls_and_resets_lose_and_double_nothing() {
    let server = RedisServer::start();
    for (i, (direction, kind)) in [
        (Direction::Up, Kind::Reset),
        (Direction::Down, Kind::Reset),
        (Direction::Up, Kind::Stall(1500)),
        (Direction::Down, Kind::Stall(1500)),
    ]
    .into_iter()
    .enumerate()
    {
        let ns = format!("sr{i}");
        let after = if matches!(direction, Direction::Up) {
            40_000
        } else {
            60
        };
        let proxy = FaultProxy::start(
            server.port(),
            vec![Cut {
                direction,
                after,
                kind,
            }],
        );
        let mut config = server.config();
        config["port"] = json!(proxy.port());
        config["batch_size"] = json!(20);
        config["reply_timeout_ms"] = json!(500);
        config["retry_budget_ms"] = json!(20_000);
        let want: Vec<String> = (0..2000).map(|i| format!(r#"{{"i":{i}}}"#)).collect();
        let input: String = want
            .iter()
            .map(|d| record(Some(&ns), "s", d, 1) + "\n")
            .collect::<String>()
            + &legacy_state("1")
            + "\n";
        let out = common::write_sync(&config, &catalog(&[(Some(ns.as_str()), "s")]), &input);
        assert_eq!(out.code, Some(0), "{direction:?} {kind:?}\n{}", out.dump());
        assert_eq!(
            proxy.cuts(),
            1,
            "{direction:?} {kind:?}: the fault happened"
        );
        assert!(
            proxy.connections() >= 2,
            "{direction:?} {kind:?}: the writer reconnected"
        );
        assert_eq!(out.states().len(), 1);
        check_exact(&mut server.conn(), &ns, "s", &want)
            .unwrap_or_else(|e| panic!("{direction:?} {kind:?}: {e}"));
    }
}

#[test]
fn a_redis_restart_mid_sync_loses_nothing() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let cat = catalog(&[(Some("r"), "s")]);
    let mut config = server.config();
    config["batch_linger_ms"] = json!(10);
    let mut proc = common::Interactive::start(&config, &cat);
    let chunk = |range: std::ops::Range<usize>| -> String {
        range
            .map(|i| record(Some("r"), "s", &format!(r#"{{"i":{i}}}"#), 1) + "\n")
            .collect()
    };
    proc.send(&(chunk(0..3000) + &legacy_state("1") + "\n"));
    proc.wait_for_states(1, Duration::from_secs(20));
    server.kill();
    proc.send(&(chunk(3000..4000) + &legacy_state("2") + "\n"));
    std::thread::sleep(Duration::from_millis(300));
    server.restart();
    proc.send(&(chunk(4000..5000) + &legacy_state("3") + "\n"));
    let out = proc.finish();
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let counts: Vec<f64> = out
        .states()
        .iter()
        .map(|s| {
            s["state"]["destinationStats"]["recordCount"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(counts, vec![3000.0, 1000.0, 1000.0]);
    assert!(out.stdout.contains("Reconnected"), "{}", out.dump());
    let (counter, records) = common::read_stream(&mut server.conn(), Some("r"), "s");
    assert_eq!(counter, Some(5000));
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["_airbyte_data"], format!(r#"{{"i":{i}}}"#));
    }
}

#[test]
fn a_server_still_loading_after_a_restart_is_waited_for() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    server.cli(&[
        "EVAL",
        "for i = 1, 30000 do redis.call('SET', 'filler:' .. i, 'x') end return 1",
        "0",
    ]);
    let mut config = server.config();
    config["batch_linger_ms"] = json!(10);
    let cat = catalog(&[(Some("l"), "s")]);
    let chunk = |range: std::ops::Range<usize>| -> String {
        range
            .map(|i| record(Some("l"), "s", &format!(r#"{{"i":{i}}}"#), 1) + "\n")
            .collect()
    };
    let mut proc = common::Interactive::start(&config, &cat);
    proc.send(&(chunk(0..1000) + &legacy_state("1") + "\n"));
    proc.wait_for_states(1, Duration::from_secs(20));
    // Restarted with a slow load (hidden Redis setting: microseconds per key): LOADING for a while.
    server.restart_loading(&["--key-load-delay", "60"]);
    assert!(
        server.is_loading(),
        "the server should be loading its dataset"
    );
    proc.send(&(chunk(1000..2000) + &legacy_state("2") + "\n"));
    let out = proc.finish();
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(out.states().len(), 2);
    let (counter, records) = common::read_stream(&mut server.conn(), Some("l"), "s");
    assert_eq!(counter, Some(2000));
    assert_eq!(records[1999]["_airbyte_data"], r#"{"i":1999}"#);
}

#[test]
fn a_busy_server_is_waited_for() {
    let server = RedisServer::start();
    server.cli(&["CONFIG", "SET", "busy-reply-threshold", "50"]);
    let busy = {
        let mut con = server.conn();
        std::thread::spawn(move || {
            // A read-only script that spins for 1.5 s: other clients get BUSY meanwhile.
            let spin = "local t = redis.call('TIME') local s = t[1] * 1000000 + t[2] \
                        while true do local n = redis.call('TIME') \
                        if n[1] * 1000000 + n[2] - s > 1500000 then break end end return 1";
            let _: i64 = redis::cmd("EVAL")
                .arg(spin)
                .arg(0)
                .query(&mut con)
                .expect("spin");
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let input: String = (0..2000)
        .map(|i| record(None, "s", &format!(r#"{{"i":{i}}}"#), 1) + "\n")
        .collect();
    let out = common::write_sync(&server.config(), &catalog(&[(None, "s")]), &input);
    busy.join().expect("spin thread");
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(
        common::read_stream(&mut server.conn(), None, "s").0,
        Some(2000)
    );
}

#[test]
fn oom_never_leaves_part_of_a_batch() {
    let server =
        RedisServer::start_with(&["--maxmemory", "3mb", "--maxmemory-policy", "noeviction"]);
    let mut config = server.config();
    config["batch_size"] = json!(50);
    // Back-pressure off: a full server is the OOM config_error (with it, the writer pauses).
    config["memory_pause_ratio"] = json!(0);
    let mut input = String::new();
    for i in 0..40_000 {
        input += &(record(
            None,
            "s",
            &format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(200)),
            1,
        ) + "\n");
        if i % 50 == 49 {
            input += &(legacy_state(&i.to_string()) + "\n");
        }
    }
    let out = common::write_sync(&config, &catalog(&[(None, "s")]), &input);
    assert_eq!(out.code, Some(1), "{}", out.dump());
    let err = &out.traces()[0]["trace"]["error"];
    assert_eq!(err["failure_type"], "config_error", "{err}");
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("out of memory") && message.contains("3145728"),
        "{message}"
    );
    let (counter, _) = common::read_stream(&mut server.conn(), None, "s");
    let counter = counter.unwrap_or(0) as usize;
    assert!(counter > 0 && counter < 40_000, "{counter}");
    assert_eq!(
        counter % 50,
        0,
        "a batch was applied in part: counter {counter}"
    );
    assert_eq!(
        common::count_record_keys(&mut server.conn(), None, "s"),
        counter
    );
    let echoed: f64 = out
        .states()
        .iter()
        .map(|s| {
            s["state"]["destinationStats"]["recordCount"]
                .as_f64()
                .unwrap()
        })
        .sum();
    assert!(
        echoed as usize <= counter,
        "a state was echoed for records that are not there"
    );
}

#[test]
fn a_read_only_replica_is_a_config_error() {
    let master = RedisServer::start();
    let replica =
        RedisServer::start_with(&["--replicaof", "127.0.0.1", &master.port().to_string()]);
    let out = common::write_sync(
        &replica.config(),
        &catalog(&[(None, "s")]),
        &(record(None, "s", "{}", 1) + "\n"),
    );
    assert_eq!(out.code, Some(1), "{}", out.dump());
    let err = &out.traces()[0]["trace"]["error"];
    assert_eq!(err["failure_type"], "config_error", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("read-only replica"),
        "{err}"
    );
}

#[test]
fn a_record_above_proto_max_bulk_len_is_named_and_large_records_below_it_are_written() {
    let server = RedisServer::start_with(&["--proto-max-bulk-len", "60mb"]);
    let big = format!(r#"{{"blob":"{}"}}"#, "b".repeat(50 * 1024 * 1024));
    let input = record(None, "s", "{}", 1)
        + "\n"
        + &record(None, "s", &big, 2)
        + "\n"
        + &legacy_state("1")
        + "\n";
    let out = common::write_sync(&server.config(), &catalog(&[(None, "s")]), &input);
    assert_eq!(out.code, Some(0), "{}", &out.dump()[..500]);
    let len: i64 = redis::cmd("HSTRLEN")
        .arg(":s:2")
        .arg("_airbyte_data")
        .query(&mut server.conn())
        .unwrap();
    assert_eq!(len as usize, big.len(), "a 50 MB record is written whole");

    let too_big = format!(r#"{{"blob":"{}"}}"#, "t".repeat(61 * 1024 * 1024));
    let input = record(None, "s", "{}", 1)
        + "\n"
        + &legacy_state("2")
        + "\n"
        + &record(None, "s", &too_big, 2)
        + "\n";
    let out = common::write_sync(&server.config(), &catalog(&[(None, "s")]), &input);
    assert_eq!(out.code, Some(1));
    let err = &out.traces()[0]["trace"]["error"];
    assert_eq!(err["failure_type"], "config_error");
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("line 3")
            && message.contains("record 2 of stream")
            && message.contains("proto-max-bulk-len"),
        "{message}"
    );
    assert_eq!(
        out.states().len(),
        1,
        "the state before the big record is echoed"
    );
    assert_eq!(
        common::read_stream(&mut server.conn(), None, "s").0,
        Some(3)
    );
}

/// A user that may not run CONFIG cannot read proto-max-bulk-len: a record above it must still be
/// a config_error naming it (not "Protocol error", nor a lost connection retried for a minute),
/// and records below it, even above 1 MiB, must still be written.
#[test]
fn a_record_above_an_unreadable_proto_max_bulk_len_is_named_at_once() {
    let server = RedisServer::start_with(&["--proto-max-bulk-len", "2mb"]);
    server.cli(&[
        "ACL", "SETUSER", "loader", "on", ">pw", "~*", "+@all", "-config",
    ]);
    let mut config = server.config();
    config["username"] = json!("loader");
    config["password"] = json!("pw");
    let blob = |mb: f64| {
        format!(
            r#"{{"blob":"{}"}}"#,
            "b".repeat((mb * 1024.0 * 1024.0) as usize)
        )
    };
    let below = blob(1.5);
    for size_mb in [2.5, 20.0] {
        let input = record(None, "s", &below, 1)
            + "\n"
            + &legacy_state("1")
            + "\n"
            + &record(None, "s", &blob(size_mb), 2)
            + "\n";
        let started = std::time::Instant::now();
        let out = common::write_sync(&config, &catalog(&[(None, "s")]), &input);
        let took = started.elapsed();
        out.assert_failed_with("config_error", "proto-max-bulk-len");
        let message = out.traces()[0]["trace"]["error"]["message"].to_string();
        assert!(
            message.contains("line 3") && message.contains("record 2 of stream"),
            "{message}"
        );
        assert!(!out.stdout.contains("Reconnected"), "{}", out.dump());
        assert!(took < Duration::from_secs(15), "{size_mb} MB took {took:?}");
        assert_eq!(
            out.states().len(),
            1,
            "the state before the big record is echoed"
        );
    }
    let (counter, records) = common::read_stream(&mut server.conn(), None, "s");
    assert_eq!(counter, Some(2), "the 1.5 MB record of each run is written");
    assert!(records.iter().all(|r| r["_airbyte_data"] == below.as_str()));
}

/// A server whose proto-max-bulk-len is above Redis's 512 MiB default takes records above 512 MiB.
#[test]
#[ignore = "serial: scripts/test.sh runs it alone (a 513 MiB record, about 4 GB of memory)"]
fn a_limit_above_512_mib_read_from_the_server_is_used() {
    let server = RedisServer::start_with(&["--proto-max-bulk-len", "1gb"]);
    let size = 513 * 1024 * 1024;
    let input = record(
        None,
        "s",
        &format!(r#"{{"blob":"{}"}}"#, "h".repeat(size)),
        1,
    ) + "\n";
    let out = common::write_sync(&server.config(), &catalog(&[(None, "s")]), &input);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let len: i64 = redis::cmd("HSTRLEN")
        .arg(":s:1")
        .arg("_airbyte_data")
        .query(&mut server.conn())
        .unwrap();
    assert_eq!(len as usize, size + r#"{"blob":""}"#.len());
}

#[test]
fn sigterm_while_redis_is_paused_ends_the_sync_within_ten_seconds() {
    let server = RedisServer::start();
    let mut config = server.config();
    config["batch_size"] = json!(100);
    let cat = catalog(&[(None, "s")]);
    let mut proc = common::Interactive::start(&config, &cat);
    proc.send(&(numbered(0..500) + &legacy_state("1") + "\n"));
    proc.wait_for_states(1, Duration::from_secs(20));
    // Redis stops answering: the next batches wait for replies that do not come.
    server.cli(&["CLIENT", "PAUSE", "60000", "ALL"]);
    proc.send(&(numbered(500..1000) + &legacy_state("2") + "\n"));
    std::thread::sleep(Duration::from_millis(500));
    let signalled = std::time::Instant::now();
    proc.terminate();
    let out = proc.wait_exit(Duration::from_secs(20));
    let took = signalled.elapsed();
    server.cli(&["CLIENT", "UNPAUSE"]);
    assert!(
        took < Duration::from_secs(10),
        "exit {took:?} after SIGTERM: {}",
        out.dump()
    );
    out.assert_failed_with("transient_error", "SIGTERM");
    // Only the state whose records were committed before the pause.
    assert_eq!(out.states().len(), 1, "{}", out.dump());
}

#[test]
fn sigterm_while_connecting_to_a_silent_server_gives_a_trace_within_ten_seconds() {
    // A port that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let held = std::thread::spawn(move || {
        let mut held = Vec::new();
        let _ = silent.set_nonblocking(true);
        let until = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < until {
            if let Ok((c, _)) = silent.accept() {
                held.push(c);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let config = json!({"host": "127.0.0.1", "port": port});
    let proc = common::Interactive::start(&config, &catalog(&[(None, "s")]));
    std::thread::sleep(Duration::from_millis(800));
    let signalled = std::time::Instant::now();
    proc.terminate();
    let out = proc.wait_exit(Duration::from_secs(20));
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "exit {took:?} after SIGTERM: {}",
        out.dump()
    );
    out.assert_failed_with("transient_error", "SIGTERM");
    drop(held);
}

#[test]
fn sigterm_commits_what_was_read_echoes_only_committed_states_and_fails() {
    let server = RedisServer::start();
    let mut config = server.config();
    config["batch_size"] = json!(100);
    config["batch_linger_ms"] = json!(60_000);
    let cat = catalog(&[(None, "s")]);
    let mut proc = common::Interactive::start(&config, &cat);
    proc.send(&(numbered(0..1000) + &legacy_state("1") + "\n"));
    proc.wait_for_states(1, Duration::from_secs(20));
    // 250 more records: with a 60 s linger, the last 50 sit in an open batch when SIGTERM comes.
    proc.send(&(numbered(1000..1250) + &legacy_state("2") + "\n"));
    // Two more full batches commit; the reader has then read the rest of that input too.
    let mut con = server.conn();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while redis::cmd("GET")
        .arg(":s")
        .query::<Option<i64>>(&mut con)
        .expect("GET")
        < Some(1200)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "batches 11 and 12 did not commit"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    proc.terminate();
    // Stdin stays open: SIGTERM alone must end the process (closing stdin first would race it
    // with a clean end of input).
    let out = proc.wait_exit(Duration::from_secs(15));
    assert!(
        out.code.is_some(),
        "SIGTERM did not end the process: {}",
        out.dump()
    );
    assert_ne!(out.code, Some(0), "{}", out.dump());
    let traces = out.traces();
    assert_eq!(traces.len(), 1, "{}", out.dump());
    assert!(traces[0]["trace"]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("SIGTERM"));
    let (counter, records) = common::read_stream(&mut server.conn(), None, "s");
    assert_eq!(
        counter,
        Some(1250),
        "the records read before SIGTERM are committed"
    );
    assert_eq!(records.len(), 1250);
    let echoed: Vec<f64> = out
        .states()
        .iter()
        .map(|s| {
            s["state"]["destinationStats"]["recordCount"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(echoed, vec![1000.0, 250.0]);
}

#[test]
fn sigkill_then_a_rerun_from_the_last_echoed_state_loses_nothing() {
    let server = RedisServer::start();
    let mut config = server.config();
    config["batch_size"] = json!(50);
    config["batch_linger_ms"] = json!(5);
    let cat = catalog(&[(None, "s")]);
    let line = |i: usize| record(None, "s", &format!(r#"{{"i":{i}}}"#), 1) + "\n";
    let mut proc = common::Interactive::start(&config, &cat);
    let mut input = String::new();
    for i in 0..3000 {
        input += &line(i);
        if i % 500 == 499 {
            input += &(legacy_state(&i.to_string()) + "\n");
        }
    }
    proc.send(&input);
    proc.wait_for_states(3, Duration::from_secs(20));
    let out = proc.kill();
    let last = out
        .states()
        .last()
        .map(|s| s["state"]["data"].as_u64().unwrap() as usize)
        .unwrap();
    let mut con = server.conn();
    let committed = common::read_stream(&mut con, None, "s").0.unwrap_or(0) as usize;
    assert!(
        committed > last,
        "records up to the last echoed state are committed"
    );
    // The source resumes after its last echoed state.
    let rerun: String = (last + 1..3000).map(line).collect();
    let out = common::write_sync(&config, &cat, &rerun);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let (counter, records) = common::read_stream(&mut con, None, "s");
    let seen: std::collections::BTreeSet<i64> = records
        .iter()
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(&r["_airbyte_data"]).unwrap()["i"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(seen.len(), 3000, "every record is there");
    let repeated = counter.unwrap() as usize - 3000;
    assert_eq!(
        repeated,
        committed - (last + 1),
        "repeated exactly the records committed after the last echoed state"
    );
}

/// Heavy (1,000,000 records through 8 processes): run alone by `scripts/test.sh`.
#[test]
#[ignore = "serial: scripts/test.sh runs it alone"]
fn eight_writers_one_million_records_every_invariant_holds() {
    let server = RedisServer::start();
    const PER_WRITER: usize = 125_000;
    let cat = catalog(&[
        (Some("load"), "shared"),
        (Some("load"), "own0"),
        (Some("load"), "own1"),
        (Some("load"), "own2"),
        (Some("load"), "own3"),
    ]);
    let outs: Vec<common::RunOutput> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|w| {
                let stream = if w < 4 {
                    "shared".to_string()
                } else {
                    format!("own{}", w - 4)
                };
                let cat = &cat;
                let config = server.config();
                scope.spawn(move || {
                    let mut input = String::with_capacity(PER_WRITER * 90);
                    for i in 0..PER_WRITER {
                        input +=
                            &record(Some("load"), &stream, &format!(r#"{{"w":{w},"i":{i}}}"#), 1);
                        input.push('\n');
                        if i % 1000 == 999 {
                            input += &legacy_state(&i.to_string());
                            input.push('\n');
                        }
                    }
                    common::write_sync(&config, cat, &input)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer"))
            .collect()
    });
    for out in &outs {
        assert_eq!(out.code, Some(0), "{}", out.dump());
        assert_eq!(out.states().len(), PER_WRITER / 1000);
        assert!(out
            .states()
            .iter()
            .all(|s| s["state"]["destinationStats"]["recordCount"] == json!(1000.0)));
    }
    let mut con = server.conn();
    let check = |con: &mut redis::Connection, stream: &str, writers: &[usize]| {
        let key = format!("load:{stream}");
        let counter: usize = redis::cmd("GET").arg(&key).query(con).unwrap();
        assert_eq!(counter, PER_WRITER * writers.len(), "{stream}");
        let mut next = [0usize; 8];
        for chunk in (1..=counter).collect::<Vec<_>>().chunks(10_000) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("HMGET")
                    .arg(format!("{key}:{id}"))
                    .arg("_airbyte_ab_id")
                    .arg("_airbyte_data");
            }
            let rows: Vec<(String, String)> = pipe.query(con).unwrap();
            for (id, (ab_id, data)) in chunk.iter().zip(rows) {
                assert_eq!(ab_id, id.to_string());
                let v: serde_json::Value = serde_json::from_str(&data).unwrap();
                let w = v["w"].as_u64().unwrap() as usize;
                assert!(writers.contains(&w));
                assert_eq!(
                    v["i"].as_u64().unwrap() as usize,
                    next[w],
                    "writer {w} out of order or doubled"
                );
                next[w] += 1;
            }
        }
        for w in writers {
            assert_eq!(next[*w], PER_WRITER, "writer {w} lost records");
        }
    };
    check(&mut con, "shared", &[0, 1, 2, 3]);
    for w in 4..8 {
        check(&mut con, &format!("own{}", w - 4), &[w]);
    }
}

/// A server can acknowledge batches and then lose them (a failover to a replica that had not
/// received them, a crash without fsync). Here: a snapshot is saved, more batches are acknowledged,
/// and the server is killed and restarted from the snapshot. The writer sends every batch
/// acknowledged since the last echoed state again after it reconnects; the tokens skip those the
/// server kept, and the lost ones are written again: ids 1..N, every record once.
#[test]
fn batches_acknowledged_and_then_lost_by_the_server_are_written_again() {
    let mut server = RedisServer::start();
    let mut config = server.config();
    config["batch_size"] = json!(100);
    let input = |from: usize, to: usize| -> String {
        (from..to)
            .map(|i| record(None, "s", &format!(r#"{{"i":{i}}}"#), 1) + "\n")
            .collect()
    };
    let counter = |server: &RedisServer| -> i64 {
        common::read_stream(&mut server.conn(), None, "s")
            .0
            .unwrap_or(0)
    };
    let wait_counter = |server: &RedisServer, n: i64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while counter(server) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer did not commit {n}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut sync = common::Interactive::start(&config, &catalog(&[(None, "s")]));
    sync.send(&input(0, 1_000));
    wait_counter(&server, 1_000);
    server.cli(&["SAVE"]);
    sync.send(&input(1_000, 2_000));
    wait_counter(&server, 2_000);
    server.kill();
    server.restart();
    assert_eq!(
        counter(&server),
        1_000,
        "the restart must lose the last 1,000 records"
    );
    sync.send(&(input(2_000, 3_000) + &legacy_state("3000") + "\n"));
    let out = sync.finish();
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert!(out.stdout.contains("Reconnected"), "{}", out.dump());
    assert_eq!(out.states().len(), 1, "{}", out.dump());
    let (n, records) = common::read_stream(&mut server.conn(), None, "s");
    assert_eq!(n, Some(3_000));
    for (i, r) in records.iter().enumerate() {
        assert_eq!(
            r["_airbyte_data"],
            format!(r#"{{"i":{i}}}"#),
            "record {}",
            i + 1
        );
    }
}
