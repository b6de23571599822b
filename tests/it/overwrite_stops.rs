//! An overwrite stopped at every one of its Redis commands, in turn, ends with exactly the old or
//! exactly the new records once the next run has recovered, and the retry the platform would make
//! then ends with exactly the new records: ids 1..N, no stray record, no staging left.
//!
//! The stop is a [`CommandCutter`]: the k-th command runs on the server and the destination never
//! hears of it or of anything after it, as when a process is killed or its link dies. Every k of
//! the attempt is tried, so every step of prepare (compare, trim, delete, expiry), staging, the
//! marks, and publish (check, register, marker, moves, tail delete, finish, unregister) is cut.

use crate::common::{self, catalog_with, record, status, stream_state, CommandCutter, Target};

const NS: Option<&str> = Some("n");
/// Records of the old generation (more than the new: the publish deletes a tail).
const OLD: usize = 1_300;
/// Attempt A stages records 0..RESUME and echoes a state after them, then 0..A_END, then fails.
const RESUME: usize = 400;
const A_END: usize = 700;
/// The new generation's records (three publish steps of 500).
const NEW: usize = 1_200;

fn lines(tag: &str, range: std::ops::Range<usize>) -> String {
    range
        .map(|i| record(NS, "s", &format!(r#"{{"{tag}":{i}}}"#), 1) + "\n")
        .collect()
}

fn state(after: usize) -> String {
    stream_state(NS, "s", &format!(r#"{{"after":{after}}}"#)) + "\n"
}

fn complete() -> String {
    status(NS, "s", "COMPLETE") + "\n"
}

/// The attempt that is cut: it resumes after attempt A's state and completes the stream.
fn attempt_b() -> String {
    lines("new", RESUME..NEW) + &state(NEW) + &complete()
}

/// The config that writes the new generation in `format`.
fn in_format(server: &Target, format: &str) -> serde_json::Value {
    let mut config = server.config();
    config["value_format"] = format.into();
    config
}

/// The old generation (in `hash`), then attempt A of generation 2 (in `format`), which stages and
/// fails without COMPLETE.
fn set_up(server: &Target, format: &str) {
    server.flush_all();
    let out = common::write_sync(
        &server.config(),
        &catalog_with(&[(NS, "s")], "append", 0, 0),
        &lines("old", 0..OLD),
    );
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let a = status(NS, "s", "STARTED")
        + "\n"
        + &lines("new", 0..RESUME)
        + &state(RESUME)
        + &lines("new", RESUME..A_END)
        + &status(NS, "s", "INCOMPLETE")
        + "\n";
    let out = common::write_sync(&in_format(server, format), &generation_2(), &a);
    assert_eq!(
        out.code,
        Some(1),
        "attempt A ends without COMPLETE: {}",
        out.dump()
    );
}

fn generation_2() -> serde_json::Value {
    catalog_with(&[(NS, "s")], "overwrite", 2, 2)
}

/// `Some("old")` or `Some("new")` when the stream holds exactly that generation (the old one in
/// `hash`, the new one in `format`), ids 1..N (or entries `0-1`..) and nothing above, and its
/// format marker says so; `None` for anything else.
fn generation_held(server: &Target, format: &str) -> Option<&'static str> {
    let key = server.counter_key(NS, "s");
    let mut con = server.conn_for(&key);
    let kind: String = redis::cmd("TYPE").arg(&key).query(&mut con).expect("TYPE");
    let marker: Option<String> = redis::cmd("GET")
        .arg(format!("_airbyte_redis:format:{key}"))
        .query(&mut con)
        .expect("GET");
    // The stream's data texts in order, and the format they are in.
    let (held_format, datas): (&str, Vec<String>) = match kind.as_str() {
        "stream" => {
            let entries: Vec<(String, std::collections::HashMap<String, String>)> =
                redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .query(&mut con)
                    .expect("XRANGE");
            let datas = entries
                .into_iter()
                .enumerate()
                .map(|(i, (id, f))| match id == format!("0-{}", i + 1) {
                    true => f.get("_airbyte_data").cloned().unwrap_or_default(),
                    false => String::new(),
                })
                .collect();
            ("stream", datas)
        }
        "none" => (format, Vec::new()),
        _ => {
            let counter: i64 = redis::cmd("GET").arg(&key).query(&mut con).expect("GET");
            let first = format!("{key}:1");
            let kind: String = redis::cmd("TYPE")
                .arg(&first)
                .query(&mut con)
                .expect("TYPE");
            let datas = (1..=counter)
                .map(|id| {
                    let record = format!("{key}:{id}");
                    if kind == "string" {
                        let text: Option<String> = redis::cmd("GET")
                            .arg(&record)
                            .query(&mut con)
                            .unwrap_or(None);
                        return text.unwrap_or_default();
                    }
                    let (ab_id, data): (Option<String>, Option<String>) = redis::cmd("HMGET")
                        .arg(&record)
                        .arg("_airbyte_ab_id")
                        .arg("_airbyte_data")
                        .query(&mut con)
                        .unwrap_or((None, None));
                    match ab_id == Some(id.to_string()) {
                        true => data.unwrap_or_default(),
                        false => String::new(),
                    }
                })
                .collect();
            (if kind == "string" { "string" } else { "hash" }, datas)
        }
    };
    let marked = marker.as_deref().unwrap_or("hash");
    let records = server.count_record_keys(NS, "s");
    let held = |tag: &str, n: usize, in_format: &str| {
        held_format == in_format
            && marked == in_format
            && datas
                == (0..n)
                    .map(|i| format!(r#"{{"{tag}":{i}}}"#))
                    .collect::<Vec<_>>()
            && records == if in_format == "stream" { 0 } else { n }
    };
    if held("old", OLD, "hash") {
        Some("old")
    } else if held("new", NEW, format) {
        Some("new")
    } else {
        None
    }
}

/// Bookkeeping left that is neither a killed run's batch token (it expires), the published
/// generation's metadata (kept a week on purpose) nor the stream's format marker (which
/// [`generation_held`] checks).
fn stray_bookkeeping(server: &Target) -> Vec<String> {
    let marker = format!("_airbyte_redis:format:{}", server.counter_key(NS, "s"));
    server
        .leftover_bookkeeping()
        .into_iter()
        .filter(|k| !k.starts_with("_airbyte_redis:token:") && *k != marker)
        .collect()
}

#[test]
fn an_overwrite_stopped_at_any_command_ends_with_the_old_or_the_new_records() {
    stopped_at_any_command("hash");
}

/// The same for an overwrite that changes the stream's format: its records and its format marker
/// change together.
#[test]
fn an_overwrite_into_string_records_stopped_at_any_command_ends_with_either_generation() {
    stopped_at_any_command("string");
}

/// The same for an overwrite into the `stream` format, whose publish renames the staged Redis
/// stream over the stream's key, then deletes the old records.
#[test]
fn an_overwrite_into_a_redis_stream_stopped_at_any_command_ends_with_either_generation() {
    stopped_at_any_command("stream");
}

/// Cuts an overwrite of the old generation (in `hash`) by generation 2 (in `format`) at each of
/// its commands in turn.
fn stopped_at_any_command(format: &str) {
    // Standalone: the cutter stands between the destination and one server.
    let server = Target::standalone();
    let port = server.server().port();
    // First, one uncut attempt through the cutter: how many commands it sends.
    set_up(&server, format);
    let counting = CommandCutter::start(port, u64::MAX);
    let mut config = in_format(&server, format);
    config["port"] = counting.port().into();
    config["retry_budget_ms"] = 200.into();
    let out = common::write_sync(&config, &generation_2(), &attempt_b());
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(generation_held(&server, format), Some("new"));
    let total = counting.forwarded();
    drop(counting);
    assert!(total > 10, "the attempt sends {total} commands");

    let mut outcomes = std::collections::BTreeMap::new();
    for k in 1..=total {
        set_up(&server, format);
        let cutter = CommandCutter::start(port, k);
        config["port"] = cutter.port().into();
        let out = common::write_sync(&config, &generation_2(), &attempt_b());
        assert!(
            cutter.tripped(),
            "k={k}: the cut must happen: {}",
            out.dump()
        );
        drop(cutter);
        if out.code == Some(0) {
            // Only the best-effort removal of the run's tokens comes after the last state.
            assert_eq!(
                generation_held(&server, format),
                Some("new"),
                "k={k}: {}",
                out.dump()
            );
            *outcomes.entry("new, tokens left to expire").or_insert(0) += 1;
            continue;
        }
        let final_state_echoed = out
            .states()
            .iter()
            .any(|s| s["state"]["stream"]["stream_state"]["after"] == NEW);

        // The next run of the destination (here `check`) finishes a publish under way.
        common::check(&server.config()).assert_check_succeeded();
        let held = generation_held(&server, format)
            .unwrap_or_else(|| panic!("k={k}: after recovery the stream holds a mix"));
        *outcomes.entry(held).or_insert(0) += 1;

        // The platform's retry: from the last echoed state (A's, or B's final one).
        let retry = if final_state_echoed {
            complete()
        } else {
            attempt_b()
        };
        let out = common::write_sync(&in_format(&server, format), &generation_2(), &retry);
        assert_eq!(out.code, Some(0), "k={k}: {}", out.dump());
        assert_eq!(
            generation_held(&server, format),
            Some("new"),
            "k={k}: after the retry"
        );
        assert_eq!(stray_bookkeeping(&server), Vec::<String>::new(), "k={k}");
    }
    // Both outcomes occur: cuts before the publish keep the old records, cuts after its first move
    // are finished by the recovery.
    assert!(
        outcomes.contains_key("old") && outcomes.contains_key("new"),
        "{outcomes:?}"
    );
}
