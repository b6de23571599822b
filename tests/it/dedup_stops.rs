//! A truncate refresh of an `append_dedup` stream stopped at every one of its Redis commands, in
//! turn, ends with exactly the old or exactly the new generation (deduplicated) once the next run
//! has recovered, and the platform's retry then ends with exactly the new one: every key's newest
//! version, deleted keys without a record, no stray key, no staging left. As
//! `overwrite_stops.rs`, for the deduplicated publish (gaps for deleted keys, the index renamed
//! into place) and its prepare (staging of the generation kept whole).

use std::collections::BTreeMap;

use serde_json::json;

use crate::common::{self, catalog, record, status, stream_state, CommandCutter, Target};

const NS: Option<&str> = Some("n");
/// Keys of the old generation (more than the new: the publish deletes a tail).
const OLD: u32 = 700;
/// Attempt A stages keys 0..RESUME, echoes a state, then RESUME..A_END, then fails.
const RESUME: u32 = 250;
const A_END: u32 = 400;
/// Keys of the new generation (two publish steps), less the one deleted.
const NEW: u32 = 480;
const DELETED: u32 = 7;
const UPDATED: u32 = 3;
/// The records' `ttl_seconds`.
const TTL: i64 = 3_600;

/// Every record key of the stream expires within `TTL` (a moved record kept no staging expiry and
/// lost none).
fn assert_all_expire(server: &Target, k: u64) {
    let counter = server.counter_key(NS, "s");
    let keys = server.keys(&format!("{counter}:*"));
    let mut pipe = redis::pipe();
    for key in &keys {
        pipe.cmd("PTTL").arg(key);
    }
    let ttls: Vec<i64> = pipe.query(&mut server.conn_for(&counter)).expect("PTTL");
    for (key, ms) in keys.iter().zip(ttls) {
        assert!(ms > 0 && ms <= TTL * 1000, "k={k}: {key} has PTTL {ms}");
    }
}

fn data(id: u32, at: u32, tag: &str) -> String {
    format!(r#"{{"id":{id},"at":{at},"v":"{tag}"}}"#)
}

fn lines(ids: std::ops::Range<u32>, at: u32, tag: &str) -> String {
    ids.map(|i| record(NS, "s", &data(i, at, tag), 1) + "\n")
        .collect()
}

fn dedup_catalog(generation: i64) -> serde_json::Value {
    let mut c = catalog(&[(NS, "s")]);
    c["streams"][0]["destination_sync_mode"] = json!("append_dedup");
    c["streams"][0]["primary_key"] = json!([["id"]]);
    c["streams"][0]["cursor_field"] = json!(["at"]);
    c["streams"][0]["generation_id"] = json!(generation);
    c["streams"][0]["minimum_generation_id"] = json!(generation);
    c
}

/// The attempt that is cut: it resumes after attempt A's state, updates one key, deletes one,
/// and completes the stream.
fn attempt_b() -> String {
    lines(RESUME..NEW, 2, "new")
        + &record(NS, "s", &data(UPDATED, 5, "updated"), 1)
        + "\n"
        + &record(
            NS,
            "s",
            &format!(r#"{{"id":{DELETED},"at":5,"_ab_cdc_deleted_at":"t"}}"#),
            1,
        )
        + "\n"
        + &stream_state(NS, "s", &format!(r#"{{"after":{NEW}}}"#))
        + "\n"
        + &status(NS, "s", "COMPLETE")
        + "\n"
}

/// The old generation, then attempt A of generation 2, which stages and fails without COMPLETE.
fn set_up(server: &Target, config: &serde_json::Value) {
    server.flush_all();
    let out = common::write_sync(config, &dedup_catalog(0), &lines(0..OLD, 1, "old"));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let a = status(NS, "s", "STARTED")
        + "\n"
        + &lines(0..RESUME, 2, "new")
        + &stream_state(NS, "s", &format!(r#"{{"after":{RESUME}}}"#))
        + "\n"
        + &lines(RESUME..A_END, 2, "new")
        + &status(NS, "s", "INCOMPLETE")
        + "\n";
    let out = common::write_sync(config, &dedup_catalog(2), &a);
    assert_eq!(
        out.code,
        Some(1),
        "attempt A ends without COMPLETE: {}",
        out.dump()
    );
}

/// Each key's record data, through the index (the record's id checked), and the number of record
/// keys of the stream; with `keyed`, from the keys `<counter>:id:<id>` (named `[<id>]` here too).
fn held_data(server: &Target, keyed: bool) -> (BTreeMap<String, String>, usize) {
    let counter = server.counter_key(NS, "s");
    if keyed {
        let mut con = server.conn_for(&counter);
        let keys = server.keys(&format!("{counter}:*"));
        let mut out = BTreeMap::new();
        for key in &keys {
            let (ab_id, d): (Option<String>, Option<String>) = redis::cmd("HMGET")
                .arg(key)
                .arg("_airbyte_ab_id")
                .arg("_airbyte_data")
                .query(&mut con)
                .expect("HMGET");
            let suffix = &key[counter.len() + 1..];
            if ab_id.as_deref() == Some(suffix) {
                if let Some(id) = suffix.strip_prefix("id:") {
                    out.insert(format!("[{id}]"), d.unwrap_or_default());
                }
            }
        }
        return (out, keys.len());
    }
    let mut con = server.conn_for(&counter);
    let index: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("_airbyte_redis:index:{counter}"))
        .query(&mut con)
        .expect("HGETALL");
    let mut out = BTreeMap::new();
    for (key, entry) in index {
        let id = entry.split(':').next().unwrap_or("0").to_string();
        if id == "0" {
            continue;
        }
        let (ab_id, d): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(format!("{counter}:{id}"))
            .arg("_airbyte_ab_id")
            .arg("_airbyte_data")
            .query(&mut con)
            .expect("HMGET");
        if ab_id.as_deref() == Some(id.as_str()) {
            out.insert(key, d.unwrap_or_default());
        }
    }
    (out, server.count_record_keys(NS, "s"))
}

fn expected(which: &str) -> BTreeMap<String, String> {
    match which {
        "old" => (0..OLD)
            .map(|i| (format!("[{i}]"), data(i, 1, "old")))
            .collect(),
        _ => (0..NEW)
            .filter(|i| *i != DELETED)
            .map(|i| {
                let d = if i == UPDATED {
                    data(i, 5, "updated")
                } else {
                    data(i, 2, "new")
                };
                (format!("[{i}]"), d)
            })
            .collect(),
    }
}

/// `Some("old")` or `Some("new")` when the stream holds exactly that generation and no other
/// record; `None` for anything else.
fn generation_held(server: &Target, keyed: bool) -> Option<&'static str> {
    let (held, record_keys) = held_data(server, keyed);
    ["old", "new"]
        .into_iter()
        .find(|w| held == expected(w) && record_keys == held.len())
}

#[test]
fn a_dedup_refresh_stopped_at_any_command_ends_with_the_old_or_the_new_generation() {
    stopped_at_any_command(false);
}

/// The same with `record_key: primary_key`: staged by key, published by SCAN in phases.
#[test]
fn a_keyed_refresh_stopped_at_any_command_ends_with_the_old_or_the_new_generation() {
    stopped_at_any_command(true);
}

fn stopped_at_any_command(keyed: bool) {
    let server = Target::standalone();
    let port = server.server().port();
    let mut base = server.config();
    if keyed {
        base["record_key"] = json!("primary_key");
    }
    // Every record expires: whichever run moves a staged record gives it the marker's expiry.
    base["ttl_seconds"] = json!(TTL);
    set_up(&server, &base);
    assert_eq!(generation_held(&server, keyed), Some("old"));
    let counting = CommandCutter::start(port, u64::MAX);
    let mut config = base.clone();
    config["port"] = counting.port().into();
    config["retry_budget_ms"] = 200.into();
    config["batch_size"] = 100.into();
    let out = common::write_sync(&config, &dedup_catalog(2), &attempt_b());
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(generation_held(&server, keyed), Some("new"));
    let total = counting.forwarded();
    drop(counting);
    assert!(total > 10, "the attempt sends {total} commands");

    let mut outcomes = BTreeMap::new();
    for k in 1..=total {
        set_up(&server, &base);
        let cutter = CommandCutter::start(port, k);
        config["port"] = cutter.port().into();
        let out = common::write_sync(&config, &dedup_catalog(2), &attempt_b());
        assert!(
            cutter.tripped(),
            "k={k}: the cut must happen: {}",
            out.dump()
        );
        drop(cutter);
        if out.code == Some(0) {
            assert_eq!(
                generation_held(&server, keyed),
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
        common::check(&base).assert_check_succeeded();
        let held = generation_held(&server, keyed)
            .unwrap_or_else(|| panic!("k={k}: after recovery the stream holds a mix"));
        *outcomes.entry(held).or_insert(0) += 1;
        let retry = if final_state_echoed {
            status(NS, "s", "COMPLETE") + "\n"
        } else {
            attempt_b()
        };
        let out = common::write_sync(&base, &dedup_catalog(2), &retry);
        assert_eq!(out.code, Some(0), "k={k}: {}", out.dump());
        assert_eq!(
            generation_held(&server, keyed),
            Some("new"),
            "k={k}: after the retry"
        );
        assert_all_expire(&server, k);
        let stray: Vec<String> = server
            .leftover_bookkeeping()
            .into_iter()
            .filter(|k| {
                !k.starts_with("_airbyte_redis:token:")
                    && !k.starts_with("_airbyte_redis:index:n:s")
                    && !k.starts_with("_airbyte_redis:deleted:n:s")
            })
            .collect();
        assert_eq!(stray, Vec::<String>::new(), "k={k}");
    }
    assert!(
        outcomes.contains_key("old") && outcomes.contains_key("new"),
        "{outcomes:?}"
    );
}
