//! `ttl_seconds`: every record key a sync writes expires that long after its write, set in the same
//! script call; counters, indexes and tombstones never expire; an upsert gives a fresh expiry; the
//! top-level value and a `stream_options` entry's (which wins). Standalone and cluster.

use serde_json::json;

use crate::common::{self, catalog, record, Target};

/// The key's PTTL in milliseconds (-1: no expiry, -2: no key).
fn pttl(target: &Target, key: &str) -> i64 {
    target
        .cli_at(key, &["PTTL", key])
        .trim()
        .parse()
        .expect("PTTL")
}

/// Whether `ms` is an expiry of about `seconds` set moments ago (allowing a slow machine a minute).
fn fresh(ms: i64, seconds: i64) -> bool {
    ms <= seconds * 1000 && ms > (seconds - 60) * 1000
}

#[test]
fn records_expire_and_their_bookkeeping_does_not() {
    let target = Target::start();
    let ns = Some("x");
    let mut cat = catalog(&[(ns, "plain"), (ns, "dedup"), (ns, "keyed"), (ns, "forever")]);
    for i in [1, 2] {
        cat["streams"][i]["destination_sync_mode"] = json!("append_dedup");
        cat["streams"][i]["primary_key"] = json!([["id"]]);
    }
    let mut config = target.config();
    config["ttl_seconds"] = json!(3600);
    config["stream_options"] = json!([
        {"stream": "keyed", "record_key": "primary_key", "ttl_seconds": 600},
        {"stream": "forever", "ttl_seconds": null},
    ]);
    let input = ["plain", "dedup", "keyed", "forever"]
        .iter()
        .flat_map(|s| {
            [
                record(ns, s, r#"{"id":1}"#, 1),
                record(ns, s, r#"{"id":2,"_ab_cdc_deleted_at":"t"}"#, 1),
            ]
        })
        .collect::<Vec<_>>()
        .join("\n");
    let out = common::write_sync(&config, &cat, &input);
    assert_eq!(out.code, Some(0), "{}", out.dump());

    let plain = target.counter_key(ns, "plain");
    assert!(fresh(pttl(&target, &format!("{plain}:1")), 3600));
    assert!(
        fresh(pttl(&target, &format!("{plain}:2")), 3600),
        "append writes every record"
    );
    assert_eq!(pttl(&target, &plain), -1, "the counter never expires");

    let dedup = target.counter_key(ns, "dedup");
    assert!(fresh(pttl(&target, &format!("{dedup}:1")), 3600));
    assert_eq!(pttl(&target, &dedup), -1);
    assert_eq!(pttl(&target, &format!("_airbyte_redis:index:{dedup}")), -1);

    let keyed = target.counter_key(ns, "keyed");
    assert!(
        fresh(pttl(&target, &format!("{keyed}:id:1")), 600),
        "the entry wins"
    );
    assert_eq!(
        pttl(&target, &format!("_airbyte_redis:deleted:{keyed}")),
        -1
    );

    // An entry's null leaves the top-level value in force: absent means "not set here".
    let forever = target.counter_key(ns, "forever");
    assert!(fresh(pttl(&target, &format!("{forever}:1")), 3600));

    // An upsert of a key gives its record a fresh expiry.
    for key in [format!("{dedup}:1"), format!("{keyed}:id:1")] {
        target.cli_at(&key, &["PEXPIRE", &key, "5000"]);
    }
    let again = ["dedup", "keyed"]
        .iter()
        .map(|s| record(ns, s, r#"{"id":1,"v":2}"#, 1))
        .collect::<Vec<_>>()
        .join("\n");
    let out = common::write_sync(&config, &cat, &again);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert!(fresh(pttl(&target, &format!("{dedup}:1")), 3600));
    assert!(fresh(pttl(&target, &format!("{keyed}:id:1")), 600));
}

/// Overwrite and truncate refreshes, in both record-key layouts: the publish replaces the staging
/// expiry of each record it moves with `ttl_seconds`.
#[test]
fn published_records_expire_and_their_bookkeeping_does_not() {
    let target = Target::start();
    let ns = Some("o");
    let mut config = target.config();
    config["ttl_seconds"] = json!(900);
    config["stream_options"] = json!([{"stream": "keyed", "record_key": "primary_key"}]);
    let mut cat = common::catalog_with(
        &[(ns, "plain"), (ns, "dedup"), (ns, "keyed")],
        "overwrite",
        1,
        1,
    );
    cat["streams"][1]["destination_sync_mode"] = json!("append_dedup");
    for i in [1, 2] {
        cat["streams"][i]["primary_key"] = json!([["id"]]);
    }
    let input = ["plain", "dedup", "keyed"]
        .iter()
        .map(|s| record(ns, s, r#"{"id":1}"#, 1))
        .collect::<Vec<_>>()
        .join("\n");
    let out = common::write_sync(&config, &cat, &input);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    for s in ["plain", "dedup"] {
        let counter = target.counter_key(ns, s);
        assert!(fresh(pttl(&target, &format!("{counter}:1")), 900), "{s}");
        assert_eq!(pttl(&target, &counter), -1, "{s}");
    }
    let dedup = target.counter_key(ns, "dedup");
    assert_eq!(pttl(&target, &format!("_airbyte_redis:index:{dedup}")), -1);
    let keyed = target.counter_key(ns, "keyed");
    assert!(fresh(pttl(&target, &format!("{keyed}:id:1")), 900));
}

#[test]
fn bad_values_are_named() {
    let target = Target::start();
    let mut config = target.config();
    config["ttl_seconds"] = json!(0);
    let out = common::write_sync(&config, &catalog(&[(None, "s")]), "");
    out.assert_failed_with("config_error", "config.ttl_seconds");
    config["ttl_seconds"] = json!(60);
    config["stream_options"] = json!([{"stream": "s", "ttl_seconds": "an hour"}]);
    let out = common::write_sync(&config, &catalog(&[(None, "s")]), "");
    out.assert_failed_with("config_error", "config.stream_options[0].ttl_seconds");
}

/// Whether `ms` (a PTTL) ends at about `at` (epoch ms), allowing a slow machine a minute.
fn ends_at(ms: i64, at: i64) -> bool {
    let left = at - common::now_ms();
    ms > 0 && ms <= left + 1_000 && ms > left - 60_000
}

/// An RFC 3339 text of `ms` epoch milliseconds with a +02:00 offset.
fn rfc3339(ms: i64) -> String {
    use chrono::{FixedOffset, TimeZone};
    FixedOffset::east_opt(2 * 3600)
        .and_then(|tz| tz.timestamp_millis_opt(ms).single())
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

/// `ttl_field` on an appended stream: each accepted form sets its record's own moment, a
/// missing or null one falls back to `ttl_seconds`, and a record whose moment has passed is not
/// written and takes no id (a batch of only such records still counts in its state).
#[test]
fn ttl_field_moments_set_each_records_expiry_and_passed_records_are_not_written() {
    let target = Target::start();
    let ns = Some("m");
    let mut config = target.config();
    config["ttl_seconds"] = json!(3600);
    config["ttl_field"] = json!("exp");
    config["stream_options"] = json!([{"stream": "nested", "ttl_field": ["meta", "exp"]}]);
    let cat = catalog(&[(ns, "flat"), (ns, "nested"), (ns, "gone")]);
    let now = common::now_ms();
    let (s, ms, text) = (now + 1_000_000, now + 2_000_000, now + 3_000_000);
    let flat = [
        format!(r#"{{"id":1,"exp":{}}}"#, s / 1000),
        format!(r#"{{"id":2,"exp":{ms}}}"#),
        format!(r#"{{"id":3,"exp":"{}"}}"#, rfc3339(text)),
        r#"{"id":4,"exp":null}"#.to_string(),
        r#"{"id":5}"#.to_string(),
        format!(r#"{{"id":6,"exp":{}}}"#, (now - 1_000) / 1000),
        format!(r#"{{"id":7,"exp":{}}}"#, s / 1000),
    ];
    let mut input: Vec<String> = flat.iter().map(|d| record(ns, "flat", d, 1)).collect();
    input.push(record(
        ns,
        "nested",
        &format!(r#"{{"exp":1,"meta":{{"exp":"{}"}}}}"#, rfc3339(text)),
        1,
    ));
    input.push(record(ns, "gone", r#"{"exp":"2001-01-01T00:00:00Z"}"#, 1));
    input.push(common::stream_state(ns, "gone", r#"{"n":1}"#));
    let out = common::write_sync(&config, &cat, &input.join("\n"));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let states = out.states();
    assert_eq!(states.len(), 1, "{}", out.dump());
    assert_eq!(
        states[0]["state"]["destinationStats"]["recordCount"],
        json!(1.0),
        "the passed record counts in its state"
    );

    let key = |stream: &str, id: u64| target.record_key(ns, stream, id);
    let at = |k: &str| pttl(&target, k);
    assert!(
        ends_at(at(&key("flat", 1)), s / 1000 * 1000),
        "epoch seconds"
    );
    assert!(ends_at(at(&key("flat", 2)), ms), "epoch milliseconds");
    assert!(ends_at(at(&key("flat", 3)), text), "RFC 3339");
    assert!(fresh(at(&key("flat", 4)), 3600), "null: ttl_seconds");
    assert!(fresh(at(&key("flat", 5)), 3600), "missing: ttl_seconds");
    // Record 6 had expired: record 7 took id 6, and no id 7 was given.
    let data6: String = target.cli_at(&key("flat", 6), &["HGET", &key("flat", 6), "_airbyte_data"]);
    assert!(data6.contains(r#""id":7"#), "{data6}");
    assert_eq!(at(&key("flat", 7)), -2);
    let counter = target.counter_key(ns, "flat");
    assert_eq!(target.cli_at(&counter, &["GET", &counter]).trim(), "6");
    assert!(ends_at(at(&key("nested", 1)), text), "a nested field");
    let gone = target.counter_key(ns, "gone");
    assert_eq!(
        at(&format!("{gone}:1")),
        -2,
        "a passed record is not written"
    );
    assert_eq!(target.cli_at(&gone, &["EXISTS", &gone]).trim(), "0");
}

/// Upserts with `ttl_field`, in both record-key layouts: a version whose moment has passed
/// deletes its key (a later, older version does not bring it back), and a version without a
/// moment (no `ttl_seconds`) never expires, whatever the earlier version's moment was.
#[test]
fn ttl_field_upserts_delete_passed_versions_and_forget_earlier_moments() {
    let target = Target::start();
    let ns = Some("u");
    let mut cat = catalog(&[(ns, "seq"), (ns, "keyed")]);
    for i in [0, 1] {
        cat["streams"][i]["destination_sync_mode"] = json!("append_dedup");
        cat["streams"][i]["primary_key"] = json!([["id"]]);
        cat["streams"][i]["cursor_field"] = json!(["v"]);
    }
    let mut config = target.config();
    config["ttl_field"] = json!("exp");
    config["stream_options"] = json!([{"stream": "keyed", "record_key": "primary_key"}]);
    let later = common::now_ms() + 5_000_000;
    let sync = |rows: &[String]| {
        let input = ["seq", "keyed"]
            .iter()
            .flat_map(|s| rows.iter().map(move |d| record(ns, s, d, 1)))
            .collect::<Vec<_>>()
            .join("\n");
        let out = common::write_sync(&config, &cat, &input);
        assert_eq!(out.code, Some(0), "{}", out.dump());
    };
    sync(&[
        format!(r#"{{"id":1,"v":1,"exp":{later}}}"#),
        format!(r#"{{"id":2,"v":1,"exp":{later}}}"#),
    ]);
    let seq1 = target.record_key(ns, "seq", 1);
    let seq2 = target.record_key(ns, "seq", 2);
    let keyed = target.counter_key(ns, "keyed");
    let (keyed1, keyed2) = (format!("{keyed}:id:1"), format!("{keyed}:id:2"));
    for k in [&seq1, &seq2, &keyed1, &keyed2] {
        assert!(ends_at(pttl(&target, k), later), "{k}");
    }
    sync(&[
        r#"{"id":1,"v":2,"exp":1000}"#.to_string(),
        r#"{"id":2,"v":2}"#.to_string(),
    ]);
    for k in [&seq1, &keyed1] {
        assert_eq!(pttl(&target, k), -2, "a passed version deletes {k}");
    }
    for k in [&seq2, &keyed2] {
        assert_eq!(pttl(&target, k), -1, "{k} keeps no earlier moment");
    }
    sync(&[format!(r#"{{"id":1,"v":1,"exp":{later}}}"#)]);
    for k in [&seq1, &keyed1] {
        assert_eq!(
            pttl(&target, k),
            -2,
            "an older version does not bring {k} back"
        );
    }
}

/// `ttl_field` with overwrite and truncate refreshes, in both record-key layouts: staged records
/// keep the staging's expiry (a week, whatever their moment), the publish gives each record its
/// own moment (or `ttl_seconds` without one), and a record whose moment passed while it was
/// staged is gone once published.
#[test]
fn ttl_field_moments_are_kept_through_staging_and_set_by_the_publish() {
    let target = Target::start();
    let ns = Some("w");
    let mut config = target.config();
    config["ttl_seconds"] = json!(3600);
    config["ttl_field"] = json!("exp");
    config["stream_options"] = json!([{"stream": "keyed", "record_key": "primary_key"},
        {"stream": "fields", "value_format": "fields"}]);
    let streams = [(ns, "plain"), (ns, "dedup"), (ns, "keyed"), (ns, "fields")];
    let mut cat = common::catalog_with(&streams, "overwrite", 3, 3);
    cat["streams"][1]["destination_sync_mode"] = json!("append_dedup");
    for i in [1, 2] {
        cat["streams"][i]["primary_key"] = json!([["id"]]);
    }
    let now = common::now_ms();
    let (later, soon) = (now + 5_000_000, now + 3_000);
    let datas = [
        format!(r#"{{"id":1,"exp":{later}}}"#),
        r#"{"id":2,"exp":null}"#.to_string(),
        format!(r#"{{"id":3,"exp":{soon}}}"#),
        format!(r#"{{"id":4,"exp":{}}}"#, now - 1_000),
    ];
    let lines = |stream: &str| -> String {
        datas
            .iter()
            .map(|d| record(ns, stream, d, 1) + "\n")
            .collect::<String>()
            + &common::stream_state(ns, stream, r#"{"n":4}"#)
            + "\n"
    };
    let names = ["plain", "dedup", "keyed", "fields"];
    // Attempt 1 stages everything and ends without COMPLETE.
    let input: String = names
        .iter()
        .map(|s| common::status(ns, s, "STARTED") + "\n" + &lines(s))
        .collect();
    let out = common::write_sync(&config, &cat, &(input + "garbage\n"));
    assert_eq!(out.code, Some(1), "{}", out.dump());
    for stream in names {
        let counter = target.counter_key(ns, stream);
        let first = if stream == "keyed" { "id:1" } else { "1" };
        let key = format!("_airbyte_redis:staging:{counter}:{first}");
        let ms = pttl(&target, &key);
        assert!(
            ms > 6 * 86_400_000,
            "{key} keeps the staging's expiry: {ms}"
        );
    }
    // Record 3's moment passes while it is staged; the retry resumes and publishes.
    std::thread::sleep(std::time::Duration::from_millis(
        (soon - common::now_ms() + 500).max(0) as u64,
    ));
    let input: String = names
        .iter()
        .map(|s| common::status(ns, s, "COMPLETE") + "\n")
        .collect();
    let out = common::write_sync(&config, &cat, &input);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    for stream in names {
        let counter = target.counter_key(ns, stream);
        let key = |id: u64| match stream {
            "keyed" => format!("{counter}:id:{id}"),
            _ => format!("{counter}:{id}"),
        };
        assert!(
            ends_at(pttl(&target, &key(1)), later),
            "{stream}: its moment"
        );
        assert!(
            fresh(pttl(&target, &key(2)), 3600),
            "{stream}: null, ttl_seconds"
        );
        assert_eq!(pttl(&target, &key(3)), -2, "{stream}: passed while staged");
        // Record 4 had passed when it was read: not written (no id), or a delete.
        let present = target.keys(&format!("{counter}:*")).len();
        assert_eq!(
            present,
            2,
            "{stream}: {:?}",
            target.keys(&format!("{counter}:*"))
        );
    }
    let left: Vec<String> = target
        .leftover_bookkeeping()
        .into_iter()
        .filter(|k| k.contains("moments") || k.contains(":staging:"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn ttl_field_values_that_name_no_moment_are_refused() {
    let target = Target::start();
    let mut config = target.config();
    config["ttl_field"] = json!(["meta", "exp"]);
    let cat = catalog(&[(None, "s")]);
    let input = [
        record(None, "s", r#"{"meta":{"exp":1}}"#, 1),
        record(None, "s", r#"{"meta":{"exp":"next tuesday"}}"#, 1),
    ]
    .join("\n");
    let out = common::write_sync(&config, &cat, &input);
    out.assert_failed_with("config_error", "Line 2");
    out.assert_failed_with("config_error", "\"next tuesday\"");
    out.assert_failed_with("config_error", "ttl_field meta.exp");
    let counter = target.counter_key(None, "s");
    assert_eq!(target.cli_at(&counter, &["EXISTS", &counter]).trim(), "0");

    config["ttl_field"] = json!(["meta", 5]);
    let out = common::write_sync(&config, &cat, "");
    out.assert_failed_with("config_error", "config.ttl_field");
}
