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

/// The old generation, then attempt A of generation 2, which stages and fails without COMPLETE.
fn set_up(server: &Target) {
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
    let out = common::write_sync(&server.config(), &generation_2(), &a);
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

/// `Some("old")` or `Some("new")` when the stream holds exactly that generation, ids 1..N and
/// nothing above; `None` for anything else.
fn generation_held(server: &Target) -> Option<&'static str> {
    let (counter, records) = server.read_stream(NS, "s");
    let datas: Vec<String> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let id_ok = r.get("_airbyte_ab_id") == Some(&(i + 1).to_string());
            if id_ok {
                r.get("_airbyte_data").cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .collect();
    let held = |tag: &str, n: usize| {
        counter == Some(n as i64)
            && datas
                == (0..n)
                    .map(|i| format!(r#"{{"{tag}":{i}}}"#))
                    .collect::<Vec<_>>()
            && server.count_record_keys(NS, "s") == n
    };
    if held("old", OLD) {
        Some("old")
    } else if held("new", NEW) {
        Some("new")
    } else {
        None
    }
}

/// Bookkeeping left that is neither a killed run's batch token (it expires) nor the published
/// generation's metadata (kept a week on purpose).
fn stray_bookkeeping(server: &Target) -> Vec<String> {
    server
        .leftover_bookkeeping()
        .into_iter()
        .filter(|k| !k.starts_with("_airbyte_redis:token:"))
        .collect()
}

#[test]
fn an_overwrite_stopped_at_any_command_ends_with_the_old_or_the_new_records() {
    // Standalone: the cutter stands between the destination and one server.
    let server = Target::standalone();
    let port = server.server().port();
    // First, one uncut attempt through the cutter: how many commands it sends.
    set_up(&server);
    let counting = CommandCutter::start(port, u64::MAX);
    let mut config = server.config();
    config["port"] = counting.port().into();
    config["retry_budget_ms"] = 200.into();
    let out = common::write_sync(&config, &generation_2(), &attempt_b());
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(generation_held(&server), Some("new"));
    let total = counting.forwarded();
    drop(counting);
    assert!(total > 10, "the attempt sends {total} commands");

    let mut outcomes = std::collections::BTreeMap::new();
    for k in 1..=total {
        set_up(&server);
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
                generation_held(&server),
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
        let held = generation_held(&server)
            .unwrap_or_else(|| panic!("k={k}: after recovery the stream holds a mix"));
        *outcomes.entry(held).or_insert(0) += 1;

        // The platform's retry: from the last echoed state (A's, or B's final one).
        let retry = if final_state_echoed {
            complete()
        } else {
            attempt_b()
        };
        let out = common::write_sync(&server.config(), &generation_2(), &retry);
        assert_eq!(out.code, Some(0), "k={k}: {}", out.dump());
        assert_eq!(
            generation_held(&server),
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
