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
