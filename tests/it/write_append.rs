//! `write` in append mode against a real server, or a real cluster with `REDIS_TOPOLOGY=cluster`
//! ([`Target`]): keys, fields, data text, ids, states, errors.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{
    self, catalog, global_state, legacy_state, record, stream_state, RedisServer, Target,
};

fn state_counts(out: &common::RunOutput) -> Vec<f64> {
    out.states()
        .iter()
        .map(|s| {
            s["state"]["destinationStats"]["recordCount"]
                .as_f64()
                .expect("recordCount")
        })
        .collect()
}

#[test]
fn writes_exact_keys_fields_and_data_text() {
    let target = Target::start();
    let datas = [
        r#"{"b":1.10,"a":12345678901234567890123,"c":1e400}"#,
        r#"{ "spaced" : [ 1 , 2 ],  "s": "keep  inner  spaces\n", "u":"\u00e9\u2028" }"#,
        r#"{"z":null,"y":{"nested":{"deep":[true,false,-0.0]}},"dup":1,"dup":2}"#,
    ];
    let input: String = datas
        .iter()
        .enumerate()
        .map(|(i, d)| record(Some("ns"), "users", d, 1_700_000_000_000 + i as i64) + "\n")
        .collect();
    let out = common::write_sync(&target.config(), &catalog(&[(Some("ns"), "users")]), &input);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let (counter, records) = target.read_stream(Some("ns"), "users");
    assert_eq!(counter, Some(3));
    let expected_data = [
        r#"{"b":1.10,"a":12345678901234567890123,"c":1e400}"#,
        r#"{"spaced":[1,2],"s":"keep  inner  spaces\n","u":"\u00e9\u2028"}"#,
        r#"{"z":null,"y":{"nested":{"deep":[true,false,-0.0]}},"dup":1,"dup":2}"#,
    ];
    for (i, r) in records.iter().enumerate() {
        let expected: HashMap<String, String> = [
            ("_airbyte_ab_id".to_string(), (i + 1).to_string()),
            (
                "_airbyte_emitted_at".to_string(),
                (1_700_000_000_000 + i as i64).to_string(),
            ),
            ("_airbyte_data".to_string(), expected_data[i].to_string()),
        ]
        .into();
        assert_eq!(r, &expected, "record {}", i + 1);
    }
    let counter_key = target.counter_key(Some("ns"), "users");
    let mut want: Vec<String> = (1..=3).map(|id| format!("{counter_key}:{id}")).collect();
    want.push(counter_key);
    want.sort();
    assert_eq!(target.keys("*"), want, "tokens are removed at the end");
}

#[test]
fn two_syncs_continue_the_ids() {
    let target = Target::start();
    let cat = catalog(&[(Some("ns"), "s")]);
    for round in 0..2 {
        let input: String = (0..5)
            .map(|i| {
                record(
                    Some("ns"),
                    "s",
                    &format!(r#"{{"round":{round},"i":{i}}}"#),
                    1,
                ) + "\n"
            })
            .collect();
        let out = common::write_sync(&target.config(), &cat, &input);
        assert_eq!(out.code, Some(0), "{}", out.dump());
    }
    let (counter, records) = target.read_stream(Some("ns"), "s");
    assert_eq!(counter, Some(10));
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["_airbyte_ab_id"], (i + 1).to_string());
        assert_eq!(
            r["_airbyte_data"],
            format!(r#"{{"round":{},"i":{}}}"#, i / 5, i % 5)
        );
    }
}

#[test]
fn unusual_names_and_null_namespace() {
    let target = Target::start();
    let streams: Vec<(Option<&str>, &str)> = vec![
        (None, "plain"),
        (Some("a:b"), "c d"),
        (Some("accént"), "stréam 😀"),
        (Some(""), "empty-ns"),
        (Some("x"), "with*glob?[chars]\\"),
    ];
    let cat = catalog(&streams);
    let input: String = streams
        .iter()
        .flat_map(|(ns, s)| {
            (0..3).map(move |i| record(*ns, s, &format!(r#"{{"i":{i}}}"#), 5) + "\n")
        })
        .collect();
    let out = common::write_sync(&target.config(), &cat, &input);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    for (ns, s) in &streams {
        let (counter, records) = target.read_stream(*ns, s);
        assert_eq!(counter, Some(3), "{ns:?} {s:?}");
        assert_eq!(records.len(), 3);
        assert_eq!(records[2]["_airbyte_data"], r#"{"i":2}"#);
    }
    let plain = target.record_key(None, "plain", 1);
    if !target.is_cluster() {
        assert_eq!(
            plain, ":plain:1",
            "null namespace is the empty string, as the Java connector did"
        );
    }
    assert_eq!(
        target.cli_at(&plain, &["EXISTS", &plain]).trim(),
        "1",
        "{plain}"
    );
}

#[test]
fn states_are_echoed_in_order_with_counts() {
    let target = Target::start();
    let cat = catalog(&[(None, "a"), (None, "b")]);
    let mut input = String::new();
    input += &(record(None, "a", "{}", 1) + "\n");
    input += &(record(None, "b", "{}", 1) + "\n");
    input += &(record(None, "a", "{}", 1) + "\n");
    input += &(stream_state(None, "a", r#"{"cursor":1.10}"#) + "\n");
    input += &(global_state(r#"{"lsn":12345678901234567890}"#) + "\n");
    input += "\n";
    input +=
        r#"{"type":"LOG","log":{"level":"INFO","message":"forwarded"},"record":null,"state":null}"#;
    input += "\n";
    input += r#"{"type":"TRACE","trace":{"type":"STREAM_STATUS","emitted_at":1.5,"stream_status":{"stream_descriptor":{"name":"a"},"status":"COMPLETE"}}}"#;
    input += "\n";
    input += &(record(None, "b", "{}", 1) + "\n");
    input += &(stream_state(None, "b", "null") + "\n");
    input += &(legacy_state(r#"{"x":1}"#) + "\n");
    input += &(stream_state(None, "not-in-catalog", "{}") + "\n");
    let out = common::write_sync(&target.config(), &cat, &input);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(state_counts(&out), vec![2.0, 3.0, 2.0, 1.0, 0.0]);
    let states = out.states();
    assert_eq!(
        states[0]["state"]["stream"]["stream_state"],
        json!({"cursor": 1.10})
    );
    assert!(
        out.stdout.contains(r#""stream_state":{"cursor":1.10}"#),
        "state text kept: {}",
        out.stdout
    );
    assert!(
        out.stdout.contains(r#"{"lsn":12345678901234567890}"#),
        "big number kept"
    );
    assert!(
        states[3]["state"].get("type").is_none(),
        "no type added to a LEGACY state"
    );
    assert!(out
        .stdout
        .contains(r#""destinationStats":{"recordCount":2.0}"#));
}

#[test]
fn unknown_stream_fails_after_committing_everything_before_it() {
    let target = Target::start();
    let cat = catalog(&[(Some("ns"), "s")]);
    let mut input = String::new();
    for i in 0..10 {
        input += &(record(Some("ns"), "s", &format!(r#"{{"i":{i}}}"#), 1) + "\n");
    }
    input += &(stream_state(Some("ns"), "s", "1") + "\n");
    input += &(record(Some("ns"), "s", "{}", 1) + "\n");
    input += &(record(Some("other"), "s", "{}", 1) + "\n");
    input += &(record(Some("ns"), "s", "{}", 1) + "\n");
    let out = common::write_sync(&target.config(), &cat, &input);
    assert_eq!(out.code, Some(1), "{}", out.dump());
    assert_eq!(state_counts(&out), vec![10.0]);
    let traces = out.traces();
    assert_eq!(traces.len(), 1, "{}", out.dump());
    let err = &traces[0]["trace"]["error"];
    assert_eq!(err["failure_type"], "system_error");
    assert!(
        err["message"].as_str().unwrap().contains("line 13"),
        "{err}"
    );
    let (counter, _) = target.read_stream(Some("ns"), "s");
    assert_eq!(
        counter,
        Some(11),
        "the record before the bad line is committed, the one after is not"
    );
}

#[test]
fn bad_lines_end_the_sync_naming_the_line() {
    let target = Target::start();
    let cat = catalog(&[(None, "s")]);
    for (bad, needle) in [
        ("this is not json", "not valid JSON"),
        (
            r#"{"type":"RECORD","record":{"stream":"s","emitted_at":1,"data":[1,2]}}"#,
            "not a JSON object",
        ),
        (
            r#"{"type":"RECORD","record":{"stream":"s","emitted_at":1,"data":"text"}}"#,
            "not a JSON object",
        ),
        (
            r#"{"type":"RECORD","record":{"stream":"s","emitted_at":"soon","data":{}}}"#,
            "not a valid Airbyte message",
        ),
        (
            r#"{"type":"RECORD","record":{"stream":"s","emitted_at":1,"data":{"a":1}"#,
            "not valid JSON",
        ),
    ] {
        target.flush_all();
        let input = format!(
            "{}\n{}\n{bad}\n{}\n",
            record(None, "s", "{}", 1),
            legacy_state("1"),
            record(None, "s", "{}", 1)
        );
        let out = common::write_sync(&target.config(), &cat, &input);
        assert_eq!(out.code, Some(1), "{bad}\n{}", out.dump());
        assert_eq!(state_counts(&out), vec![1.0], "{bad}");
        let msg = out.traces()[0]["trace"]["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            msg.contains("line 3") && msg.contains(needle),
            "{bad}: {msg}"
        );
        assert_eq!(
            out.traces()[0]["trace"]["error"]["failure_type"],
            "system_error"
        );
        let (counter, _) = target.read_stream(None, "s");
        assert_eq!(counter, Some(1));
    }
}

#[test]
fn invalid_utf8_line_is_named() {
    let target = Target::start();
    let cat = catalog(&[(None, "s")]);
    let mut input = (record(None, "s", "{}", 1) + "\n").into_bytes();
    input.extend_from_slice(b"{\"type\":\"LOG\",\"x\":\"\xff\xfe\"}\n");
    let out = common::run_bytes_write(&target.config(), &cat, &input);
    assert_eq!(out.code, Some(1), "{}", out.dump());
    let msg = out.traces()[0]["trace"]["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("line 2") && msg.contains("UTF-8"), "{msg}");
}

#[test]
fn stdin_is_read_to_the_end_while_stdout_is_not_read() {
    let target = Target::start();
    let cat = catalog(&[(None, "s")]);
    // 20,000 states make about 2 MB of echoes: far more than a pipe holds.
    let mut input = String::new();
    for i in 0..20_000 {
        input += &record(None, "s", &format!(r#"{{"i":{i}}}"#), 1);
        input += "\n";
        input += &legacy_state(&format!(r#"{{"padding":"{}","i":{i}}}"#, "x".repeat(40)));
        input += "\n";
    }
    let out = common::write_all_then_read(&target.config(), &cat, &input, Duration::from_secs(120));
    assert_eq!(
        out.code,
        Some(0),
        "{}",
        &out.dump()[..2000.min(out.dump().len())]
    );
    assert_eq!(out.states().len(), 20_000);
    assert_eq!(target.read_stream(None, "s").0, Some(20_000));
}

#[test]
fn ids_count_from_an_existing_counter_and_never_overwrite() {
    let target = Target::start();
    let cat = catalog(&[(Some("n"), "s")]);
    let counter_key = target.counter_key(Some("n"), "s");
    let first = target.record_key(Some("n"), "s", 1);
    // Every key of the stream is on one node (one hash tag in a cluster).
    let cli = |args: &[&str]| target.cli_at(&counter_key, args);
    cli(&["SET", &counter_key, "7"]);
    let out = common::write_sync(
        &target.config(),
        &cat,
        &(record(Some("n"), "s", "{}", 1) + "\n"),
    );
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let eighth = target.record_key(Some("n"), "s", 8);
    assert_eq!(cli(&["HGET", &eighth, "_airbyte_ab_id"]).trim(), "8");
    // The counter is lost while the records remain: refuse instead of overwriting record 1.
    cli(&["HSET", &first, "_airbyte_data", "{\"old\":true}"]);
    cli(&["DEL", &counter_key]);
    let out = common::write_sync(
        &target.config(),
        &cat,
        &(record(Some("n"), "s", "{}", 1) + "\n"),
    );
    assert_eq!(out.code, Some(1), "{}", out.dump());
    let err = &out.traces()[0]["trace"]["error"];
    assert_eq!(err["failure_type"], "config_error");
    assert!(err["message"].as_str().unwrap().contains(&first), "{err}");
    assert_eq!(
        cli(&["HGET", &first, "_airbyte_data"]).trim(),
        "{\"old\":true}"
    );
}

/// `n` records of stream `n.s`, one per line, `{"i":<k>}` for k in `range`.
fn numbered(range: std::ops::Range<usize>) -> String {
    range
        .map(|i| record(Some("n"), "s", &format!(r#"{{"i":{i}}}"#), 1) + "\n")
        .collect()
}

/// Asserts that the sync failed with a `config_error` naming `key`.
fn assert_refused_naming(out: &common::RunOutput, key: &str) {
    out.assert_failed_with("config_error", key);
}

#[test]
fn a_foreign_string_inside_the_first_batch_is_refused_before_any_write() {
    let target = Target::start();
    let counter = target.counter_key(Some("n"), "s");
    let fifth = target.record_key(Some("n"), "s", 5);
    let cli = |args: &[&str]| target.cli_at(&counter, args);
    // In the Java layout this is stream `n.s:5`'s counter; here it is only somebody's string.
    cli(&["SET", &fifth, "not a record"]);
    let out = common::write_sync(
        &target.config(),
        &catalog(&[(Some("n"), "s")]),
        &numbered(0..10),
    );
    assert_refused_naming(&out, &fifth);
    assert_eq!(cli(&["GET", &fifth]).trim(), "not a record");
    assert_eq!(
        cli(&["EXISTS", &counter]).trim(),
        "0",
        "the counter did not move"
    );
    for id in (1..=10).filter(|id| *id != 5) {
        let key = target.record_key(Some("n"), "s", id);
        assert_eq!(cli(&["EXISTS", &key]).trim(), "0", "{key} was not written");
    }
}

#[test]
fn a_foreign_hash_inside_a_later_batch_is_neither_overwritten_nor_split() {
    let target = Target::start();
    let counter = target.counter_key(Some("n"), "s");
    let tenth = target.record_key(Some("n"), "s", 10);
    let cli = |args: &[&str]| target.cli_at(&counter, args);
    cli(&["HSET", &tenth, "email", "user@example.com"]);
    let mut config = target.config();
    config["batch_size"] = json!(4);
    let out = common::write_sync(&config, &catalog(&[(Some("n"), "s")]), &numbered(0..12));
    assert_refused_naming(&out, &tenth);
    // Batches 1..4 and 5..8 are committed; batch 9..12 is refused whole.
    assert_eq!(cli(&["GET", &counter]).trim(), "8");
    assert_eq!(cli(&["HGETALL", &tenth]).trim(), "email\nuser@example.com");
    for id in [9, 11, 12] {
        let key = target.record_key(Some("n"), "s", id);
        assert_eq!(cli(&["EXISTS", &key]).trim(), "0", "{key} was not written");
    }
}

#[test]
fn records_that_outlived_their_counter_are_never_overwritten() {
    let target = Target::start();
    let counter = target.counter_key(Some("n"), "s");
    let cli = |args: &[&str]| target.cli_at(&counter, args);
    // Records 2..9 survive (the counter was deleted or evicted); record 1 does not.
    for id in 2..=9 {
        let key = target.record_key(Some("n"), "s", id);
        cli(&[
            "HSET",
            &key,
            "_airbyte_ab_id",
            &id.to_string(),
            "_airbyte_data",
            "{\"old\":true}",
        ]);
    }
    let out = common::write_sync(
        &target.config(),
        &catalog(&[(Some("n"), "s")]),
        &numbered(0..10),
    );
    assert_refused_naming(&out, &target.record_key(Some("n"), "s", 2));
    for id in 2..=9 {
        let key = target.record_key(Some("n"), "s", id);
        assert_eq!(
            cli(&["HGET", &key, "_airbyte_data"]).trim(),
            "{\"old\":true}"
        );
    }
    assert_eq!(cli(&["EXISTS", &counter]).trim(), "0");
    assert_eq!(
        cli(&["EXISTS", &target.record_key(Some("n"), "s", 1)]).trim(),
        "0"
    );
}

#[test]
fn wrongtype_at_the_counter_is_a_config_error_naming_the_key() {
    let target = Target::start();
    let counter_key = target.counter_key(Some("n"), "s");
    target.cli_at(&counter_key, &["LPUSH", &counter_key, "x"]);
    let out = common::write_sync(
        &target.config(),
        &catalog(&[(Some("n"), "s")]),
        &(record(Some("n"), "s", "{}", 1) + "\n"),
    );
    assert_eq!(out.code, Some(1));
    let err = &out.traces()[0]["trace"]["error"];
    assert_eq!(err["failure_type"], "config_error", "{err}");
    assert!(
        err["message"].as_str().unwrap().contains(&counter_key),
        "{err}"
    );
}

#[test]
fn a_record_larger_than_the_batch_byte_cap_travels_alone() {
    let target = Target::start();
    let mut config = target.config();
    config["batch_bytes"] = json!(100_000);
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(3_000_000));
    let input = record(None, "s", "{}", 1)
        + "\n"
        + &record(None, "s", &big, 2)
        + "\n"
        + &record(None, "s", "{}", 3)
        + "\n";
    let out = common::write_sync(&config, &catalog(&[(None, "s")]), &input);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let (counter, records) = target.read_stream(None, "s");
    assert_eq!(counter, Some(3));
    assert_eq!(records[1]["_airbyte_data"], big);
    assert_eq!(records[2]["_airbyte_emitted_at"], "3");
}

#[test]
fn debug_flag_is_accepted() {
    let target = Target::start();
    let out = common::run(&["spec", "--debug"], "");
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(out.messages.len(), 1);
    let f = tempfile::tempdir().unwrap();
    let path = f.path().join("c.json");
    std::fs::write(&path, target.config().to_string()).unwrap();
    let out = common::run(
        &["--debug", "check", "--config", path.to_str().unwrap()],
        "",
    );
    out.assert_check_succeeded();
}

/// Tests of one server's own features (databases, ACL users, a proxy, a restart, requirepass) and
/// of the Java layout's collisions. The rest of this file also runs against a cluster
/// (`REDIS_TOPOLOGY=cluster`, which skips `::standalone::`).
mod standalone {
    use super::*;

    #[test]
    fn a_user_without_the_bookkeeping_keys_is_told_what_was_being_read() {
        let server = RedisServer::start();
        server.cli(&[
            "ACL", "SETUSER", "loader", "on", ">pw-3434", "~n:*", "+@all",
        ]);
        let mut config = server.config();
        config["username"] = json!("loader");
        config["password"] = json!("pw-3434");
        let out = common::write_sync(
            &config,
            &catalog(&[(Some("n"), "s")]),
            &(record(Some("n"), "s", "{}", 1) + "\n"),
        );
        assert_eq!(out.code, Some(1), "{}", out.dump());
        let err = &out.traces()[0]["trace"]["error"];
        assert_eq!(err["failure_type"], "config_error", "{err}");
        let message = err["message"].as_str().unwrap();
        assert!(message.contains("_airbyte_redis:publishing"), "{message}");
        assert!(!message.contains("interrupted"), "{message}");
    }

    #[test]
    fn another_catalogs_stream_counter_inside_the_range_is_refused_whole() {
        let server = RedisServer::start();
        // Another connection's catalog has stream `pub.users:3`: its counter `pub:users:3` is
        // record 3 of stream `pub.users` in the Java layout.
        let other = common::write_sync(
            &server.config(),
            &catalog(&[(Some("pub"), "users:3")]),
            &(record(Some("pub"), "users:3", "{}", 1) + "\n"),
        );
        assert_eq!(other.code, Some(0), "{}", other.dump());
        let out = common::write_sync(
            &server.config(),
            &catalog(&[(Some("pub"), "users")]),
            &(0..5)
                .map(|i| record(Some("pub"), "users", &format!(r#"{{"i":{i}}}"#), 1) + "\n")
                .collect::<String>(),
        );
        assert_refused_naming(&out, "pub:users:3");
        assert_eq!(server.cli(&["GET", "pub:users:3"]).trim(), "1");
        assert_eq!(server.cli(&["EXISTS", "pub:users"]).trim(), "0");
        assert_eq!(
            server.cli(&["EXISTS", "pub:users:1", "pub:users:2"]).trim(),
            "0"
        );
    }

    #[test]
    fn bad_config_and_catalog_are_config_errors() {
        let server = RedisServer::start();
        let mut config = server.config();
        config["batch_size"] = json!("many");
        let out = common::write_sync(&config, &catalog(&[(None, "s")]), "");
        assert_eq!(out.code, Some(1));
        assert_eq!(
            out.traces()[0]["trace"]["error"]["failure_type"],
            "config_error"
        );
        assert!(out.traces()[0]["trace"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("config.batch_size"));

        let colliding = catalog(&[(Some("a:b"), "c"), (Some("a"), "b:c")]);
        let out = common::write_sync(&server.config(), &colliding, "");
        assert_eq!(out.code, Some(1));
        let err = &out.traces()[0]["trace"]["error"];
        assert_eq!(err["failure_type"], "config_error");
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("would share the Redis key"),
            "{err}"
        );

        let mut dedup = catalog(&[(None, "s")]);
        dedup["streams"][0]["destination_sync_mode"] = json!("append_dedup");
        let out = common::write_sync(&server.config(), &dedup, "");
        assert_eq!(out.code, Some(1));
        assert_eq!(
            out.traces()[0]["trace"]["error"]["failure_type"],
            "config_error"
        );
        assert_eq!(server.cli(&["DBSIZE"]).trim(), "0");
    }

    #[test]
    fn state_is_not_echoed_when_redis_dies_before_its_records_commit() {
        let mut server = RedisServer::start();
        let cat = catalog(&[(None, "s")]);
        let mut config = server.config();
        config["batch_linger_ms"] = json!(20);
        config["retry_budget_ms"] = json!(300);
        let mut proc = common::Interactive::start(&config, &cat);
        let first: String = (0..50)
            .map(|i| record(None, "s", &format!(r#"{{"i":{i}}}"#), 1) + "\n")
            .collect::<String>()
            + &legacy_state(r#"{"n":1}"#)
            + "\n";
        proc.send(&first);
        let states = proc.wait_for_states(1, Duration::from_secs(20));
        assert_eq!(
            states[0]["state"]["destinationStats"]["recordCount"],
            json!(50.0)
        );
        server.kill();
        let second: String = (0..50)
            .map(|i| record(None, "s", &format!(r#"{{"j":{i}}}"#), 1) + "\n")
            .collect::<String>()
            + &legacy_state(r#"{"n":2}"#)
            + "\n";
        proc.send(&second);
        let out = proc.finish();
        assert_eq!(out.code, Some(1), "{}", out.dump());
        assert_eq!(
            out.states().len(),
            1,
            "the second state must not be echoed\n{}",
            out.dump()
        );
        let err = &out.traces()[0]["trace"]["error"];
        assert_eq!(err["failure_type"], "transient_error", "{err}");
    }

    #[test]
    fn script_flush_mid_sync_loses_and_repeats_nothing() {
        let server = RedisServer::start();
        let cat = catalog(&[(None, "s")]);
        let mut config = server.config();
        config["batch_size"] = json!(10);
        config["batch_linger_ms"] = json!(20);
        let mut proc = common::Interactive::start(&config, &cat);
        let mut n = 0;
        for round in 0..5 {
            let chunk: String = (0..25)
                .map(|_| {
                    n += 1;
                    record(None, "s", &format!(r#"{{"n":{n}}}"#), 1) + "\n"
                })
                .collect::<String>()
                + &legacy_state(&round.to_string())
                + "\n";
            proc.send(&chunk);
            proc.wait_for_states(round + 1, Duration::from_secs(20));
            server.cli(&["SCRIPT", "FLUSH"]);
        }
        let out = proc.finish();
        assert_eq!(out.code, Some(0), "{}", out.dump());
        assert_eq!(state_counts(&out), vec![25.0; 5]);
        let (counter, records) = common::read_stream(&mut server.conn(), None, "s");
        assert_eq!(counter, Some(125));
        for (i, r) in records.iter().enumerate() {
            assert_eq!(
                r["_airbyte_data"],
                format!(r#"{{"n":{}}}"#, i + 1),
                "id {}",
                i + 1
            );
        }
    }

    #[test]
    fn several_batches_are_in_flight_at_once() {
        let server = RedisServer::start();
        let proxy = common::CountingProxy::start(server.port());
        let mut config = server.config();
        config["port"] = json!(proxy.port());
        config["batch_size"] = json!(50);
        let input: String = (0..20_000)
            .map(|i| record(None, "s", &format!(r#"{{"i":{i}}}"#), 1) + "\n")
            .collect();
        let out = common::write_sync(&config, &catalog(&[(None, "s")]), &input);
        assert_eq!(out.code, Some(0), "{}", out.dump());
        assert!(
            proxy.evalsha_count() >= 400,
            "{} EVALSHA",
            proxy.evalsha_count()
        );
        assert!(
            proxy.max_in_flight() >= 2,
            "batches were sent one at a time (max in flight {})",
            proxy.max_in_flight()
        );
        assert_eq!(
            common::read_stream(&mut server.conn(), None, "s").0,
            Some(20_000)
        );
    }

    #[test]
    fn writes_to_the_configured_db() {
        let server = RedisServer::start();
        let mut config: Value = server.config();
        config["db"] = json!(5);
        let out = common::write_sync(
            &config,
            &catalog(&[(None, "s")]),
            &(record(None, "s", "{}", 1) + "\n"),
        );
        assert_eq!(out.code, Some(0), "{}", out.dump());
        assert_eq!(server.cli(&["-n", "5", "GET", ":s"]).trim(), "1");
        assert_eq!(server.cli(&["-n", "0", "DBSIZE"]).trim(), "0");
    }

    /// Creates ACL user `loader` with `password`, every command, and the keys of `pattern` plus the
    /// bookkeeping keys; returns a config that logs in as it.
    fn loader(server: &RedisServer, password: &str, pattern: &str) -> serde_json::Value {
        server.cli(&[
            "ACL",
            "SETUSER",
            "loader",
            "on",
            &format!(">{password}"),
            pattern,
            "~_airbyte_redis:*",
            "+@all",
        ]);
        let mut config = server.config();
        config["username"] = json!("loader");
        config["password"] = json!(password);
        config
    }

    #[test]
    fn a_stream_outside_the_users_acl_fails_before_any_data_moves() {
        let server = RedisServer::start();
        let config = loader(&server, "loader-pw-77", "~allowed:*");
        let cat = catalog(&[(Some("allowed"), "s"), (Some("denied"), "s")]);
        let input = record(Some("allowed"), "s", "{}", 1)
            + "\n"
            + &record(Some("denied"), "s", "{}", 1)
            + "\n";
        let out = common::write_sync(&config, &cat, &input);
        assert_eq!(out.code, Some(1), "{}", out.dump());
        let err = &out.traces()[0]["trace"]["error"];
        assert_eq!(err["failure_type"], "config_error", "{err}");
        let message = err["message"].as_str().unwrap();
        assert!(
            message.contains("denied:s") && message.contains("permission"),
            "{message}"
        );
        assert_eq!(
            server.cli(&["DBSIZE"]).trim(),
            "0",
            "nothing may be written, not even the allowed stream"
        );
        assert!(!out.stdout.contains("loader-pw-77") && !out.stderr.contains("loader-pw-77"));
    }

    /// A user allowed the counter key but not the record keys: before Redis 7 a script cannot ask
    /// about its rights, so the probe (commands queued in MULTI, then DISCARD) must catch it before
    /// the first batch would advance the counter and then fail.
    #[test]
    fn rights_on_the_counter_but_not_the_records_fail_before_any_data_moves() {
        let server = RedisServer::start();
        let config = loader(&server, "loader-pw-78", "~part:s");
        let cat = catalog(&[(Some("part"), "s")]);
        let out = common::write_sync(&config, &cat, &(record(Some("part"), "s", "{}", 1) + "\n"));
        assert_eq!(out.code, Some(1), "{}", out.dump());
        let err = &out.traces()[0]["trace"]["error"];
        assert_eq!(err["failure_type"], "config_error", "{err}");
        let message = err["message"].as_str().unwrap();
        assert!(
            message.contains("part:s:1") && message.contains("permission"),
            "{message}"
        );
        assert_eq!(
            server.cli(&["DBSIZE"]).trim(),
            "0",
            "nothing may be written"
        );
    }

    #[test]
    fn secrets_never_appear_in_output() {
        let server = RedisServer::start_with(&["--requirepass", "the-real-pw-4242"]);
        let cat = catalog(&[(None, "s")]);
        let input = record(None, "s", "{}", 1) + "\n" + &legacy_state("1") + "\n";
        let ok = common::write_sync(&server.config(), &cat, &input);
        assert_eq!(ok.code, Some(0), "{}", ok.dump());
        let mut wrong = server.config();
        wrong["password"] = json!("a-wrong-pw-1717");
        let failed = common::write_sync(&wrong, &cat, &input);
        assert_eq!(failed.code, Some(1));
        assert_eq!(
            failed.traces()[0]["trace"]["error"]["failure_type"],
            "config_error"
        );
        for out in [&ok, &failed] {
            for secret in ["the-real-pw-4242", "a-wrong-pw-1717"] {
                assert!(
                    !out.stdout.contains(secret) && !out.stderr.contains(secret),
                    "{secret} leaked:\n{}",
                    out.dump()
                );
            }
        }
    }
}

/// The Java connector's leftover staging (`tmp:<namespace>:<stream>:<m>` after a failed Java sync):
/// `check` reports it, a sync leaves it alone unless `delete_java_staging` is on, and then only
/// the staged records go (hashes with `_airbyte_data`), never a counter or another tool's key.
#[test]
fn the_java_connectors_leftover_staging_is_reported_and_deleted_on_request() {
    let target = Target::start();
    for m in 1..=30 {
        let key = format!("tmp:public:users:{m}");
        let data = format!(r#"{{"m":{m}}}"#);
        target.cli_at(
            &key,
            &[
                "HSET",
                &key,
                "_airbyte_ab_id",
                "1",
                "_airbyte_emitted_at",
                "1",
                "_airbyte_data",
                &data,
            ],
        );
    }
    let kept = [
        ("tmp:public:users", vec!["SET", "tmp:public:users", "30"]),
        ("tmp:cache:7", vec!["SET", "tmp:cache:7", "a user's string"]),
        ("tmp:x:9", vec!["HSET", "tmp:x:9", "other", "1"]),
        (
            "tmp:public:users:abc",
            vec!["HSET", "tmp:public:users:abc", "_airbyte_data", "{}"],
        ),
    ];
    for (key, args) in &kept {
        target.cli_at(key, args);
    }
    let staged = |target: &Target| target.keys("tmp:public:users:*").len();
    assert_eq!(staged(&target), 31);

    let checked = common::check(&target.config());
    checked.assert_check_succeeded();
    let warning = checked
        .logs()
        .into_iter()
        .find(|l| l.contains("Java Redis connector"))
        .unwrap_or_else(|| panic!("no report: {}", checked.dump()));
    assert!(
        warning.contains("Found 30 record(s)") && warning.contains("delete_java_staging"),
        "{warning}"
    );

    let input = record(Some("public"), "users", "{}", 1) + "\n";
    let cat = catalog(&[(Some("public"), "users")]);
    let out = common::write_sync(&target.config(), &cat, &input);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(staged(&target), 31, "nothing deleted without the option");

    let mut config = target.config();
    config["delete_java_staging"] = json!(true);
    let out = common::write_sync(&config, &cat, &input);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert!(
        out.logs()
            .iter()
            .any(|l| l.contains("deleted 30 record(s)")),
        "{}",
        out.dump()
    );
    assert_eq!(
        staged(&target),
        1,
        "only tmp:public:users:abc (not digits) is left"
    );
    for (key, _) in &kept {
        assert_eq!(
            target.cli_at(key, &["EXISTS", key]).trim(),
            "1",
            "{key} is kept"
        );
    }
    assert_eq!(target.read_stream(Some("public"), "users").0, Some(2));
    let checked = common::check(&target.config());
    checked.assert_check_succeeded();
    assert!(
        !checked
            .logs()
            .iter()
            .any(|l| l.contains("Java Redis connector")),
        "{}",
        checked.dump()
    );
}
