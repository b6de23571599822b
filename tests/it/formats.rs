//! `value_format`: records as the Java layout's hash, as one hash field per data field, as JSON
//! strings, or as entries of a Redis stream; read back with plain commands, never mixed in one
//! stream, and exactly-once in every format.
//!
//! With `REDIS_TOPOLOGY=cluster` the same is proved against a 3-master cluster.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use serde_json::{json, Value};

use crate::common::{self, catalog, record, status, stream_state, Target};

const FORMATS: [&str; 4] = ["hash", "fields", "string", "stream"];

/// A config writing stream `s<i>` in `FORMATS[i]`.
fn formats_config(target: &Target) -> Value {
    let mut config = target.config();
    config["stream_options"] = json!(FORMATS
        .iter()
        .enumerate()
        .map(|(i, f)| json!({"stream": format!("s{i}"), "value_format": f}))
        .collect::<Vec<_>>());
    config
}

/// The data texts a stream holds, in id (or entry) order, read as its format asks.
fn read_back(target: &Target, ns: Option<&str>, stream: &str, format: &str) -> Vec<String> {
    let key = target.counter_key(ns, stream);
    let mut con = target.conn_for(&key);
    if format == "stream" {
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(&key)
            .arg("-")
            .arg("+")
            .query(&mut con)
            .expect("XRANGE");
        return entries
            .into_iter()
            .map(|(_, fields)| fields.get("_airbyte_data").cloned().unwrap_or_default())
            .collect();
    }
    let counter: Option<u64> = redis::cmd("GET").arg(&key).query(&mut con).expect("GET");
    (1..=counter.unwrap_or(0))
        .map(|id| {
            let rk = format!("{key}:{id}");
            match format {
                "string" => redis::cmd("GET").arg(&rk).query(&mut con).expect("GET"),
                "hash" => redis::cmd("HGET")
                    .arg(&rk)
                    .arg("_airbyte_data")
                    .query(&mut con)
                    .expect("HGET"),
                _ => {
                    // The data fields as `name=value` pairs in name order.
                    let mut all: HashMap<String, String> = redis::cmd("HGETALL")
                        .arg(&rk)
                        .query(&mut con)
                        .expect("HGETALL");
                    assert_eq!(all.remove("_airbyte_ab_id"), Some(id.to_string()));
                    assert!(all.remove("_airbyte_emitted_at").is_some());
                    let mut pairs: Vec<String> =
                        all.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
                    pairs.sort();
                    pairs.join(",")
                }
            }
        })
        .collect()
}

/// Every format, read back with plain commands: exact field texts, ids that go on across syncs,
/// a Redis stream's entries in order, and a state after each.
#[test]
fn each_format_is_read_back_exactly_with_plain_commands() {
    let target = Target::start();
    let ns = Some("f");
    let config = formats_config(&target);
    let cat = catalog(&[(ns, "s0"), (ns, "s1"), (ns, "s2"), (ns, "s3")]);
    let data = r#"{"name":"Zo\u00eb \"Z\"","price":1.50,"big":12345678901234567890123,"ok":true,"gone":null,"tags":["a", "b"],"meta":{"x": 1}}"#;
    let minified = r#"{"name":"Zo\u00eb \"Z\"","price":1.50,"big":12345678901234567890123,"ok":true,"gone":null,"tags":["a","b"],"meta":{"x":1}}"#;
    let sync = |emitted_at: i64| {
        let mut lines: Vec<String> = (0..4)
            .map(|i| record(ns, &format!("s{i}"), data, emitted_at))
            .collect();
        lines.push(stream_state(ns, "s3", r#"{"n":1}"#));
        let out = common::write_sync(&config, &cat, &lines.join("\n"));
        assert_eq!(out.code, Some(0), "{}", out.dump());
        assert_eq!(out.states().len(), 1, "{}", out.dump());
    };
    sync(1_700_000_000_000);
    sync(1_700_000_000_001);

    let key = |i: usize| target.counter_key(ns, &format!("s{i}"));
    let mut con = target.conn_for(&key(1));
    // fields: one hash field per data field, exact texts, null left out; ids go on.
    let fields: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{}:2", key(1)))
        .query(&mut con)
        .expect("HGETALL");
    let want: HashMap<String, String> = [
        ("_airbyte_ab_id", "2"),
        ("_airbyte_emitted_at", "1700000000001"),
        ("name", "Zoë \"Z\""),
        ("price", "1.50"),
        ("big", "12345678901234567890123"),
        ("ok", "true"),
        ("tags", r#"["a","b"]"#),
        ("meta", r#"{"x":1}"#),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(fields, want);
    // string: the data's JSON text, and nothing else.
    let mut con = target.conn_for(&key(2));
    let text: String = redis::cmd("GET")
        .arg(format!("{}:2", key(2)))
        .query(&mut con)
        .expect("GET");
    assert_eq!(text, minified);
    let counter: u64 = redis::cmd("GET").arg(key(2)).query(&mut con).expect("GET");
    assert_eq!(counter, 2);
    // stream: two entries at the stream's key, in order.
    let mut con = target.conn_for(&key(3));
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(key(3))
        .arg("-")
        .arg("+")
        .query(&mut con)
        .expect("XRANGE");
    let emitted: Vec<&str> = entries
        .iter()
        .map(|(_, f)| f["_airbyte_emitted_at"].as_str())
        .collect();
    assert_eq!(emitted, ["1700000000000", "1700000000001"]);
    assert!(entries.iter().all(|(_, f)| f["_airbyte_data"] == minified));
    // hash: the Java layout, unchanged.
    assert_eq!(read_back(&target, ns, "s0", "hash"), [minified, minified]);
}

/// A stream stays in the format it was first written in: any other is refused before any data
/// moves, naming both, whichever way round; a data field named like the metadata is refused.
#[test]
fn formats_are_never_mixed_in_one_stream() {
    let target = Target::start();
    let ns = Some("m");
    let cat = catalog(&[(ns, "s")]);
    let one = record(ns, "s", r#"{"a":1}"#, 1);
    let with = |format: &str| {
        let mut config = target.config();
        config["value_format"] = json!(format);
        config
    };
    for (first, then) in [
        ("hash", "fields"),
        ("fields", "string"),
        ("string", "hash"),
        ("stream", "hash"),
        ("hash", "stream"),
        ("fields", "stream"),
    ] {
        let ns_name = format!("m{first}{then}");
        let ns = Some(ns_name.as_str());
        let cat = catalog(&[(ns, "s")]);
        let line = record(ns, "s", r#"{"a":1}"#, 1);
        let out = common::write_sync(&with(first), &cat, &line);
        assert_eq!(out.code, Some(0), "{first}: {}", out.dump());
        let before = read_back(&target, ns, "s", first);
        let out = common::write_sync(&with(then), &cat, &line);
        out.assert_failed_with("config_error", &format!("value_format \"{first}\""));
        out.assert_failed_with("config_error", &format!("would write \"{then}\""));
        assert_eq!(
            read_back(&target, ns, "s", first),
            before,
            "{first} then {then}"
        );
    }
    let out = common::write_sync(&with("fields"), &cat, &one);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    // The stream format neither upserts nor keeps expiry; a string record has no room to say whose
    // it is, so it is not keyed by primary key.
    let dedup = {
        let mut c = catalog(&[(ns, "d")]);
        c["streams"][0]["destination_sync_mode"] = json!("append_dedup");
        c["streams"][0]["primary_key"] = json!([["a"]]);
        c
    };
    let out = common::write_sync(&with("stream"), &dedup, "");
    out.assert_failed_with("config_error", "does not work with append_dedup");
    let mut keyed = with("string");
    keyed["record_key"] = json!("primary_key");
    let out = common::write_sync(&keyed, &dedup, "");
    out.assert_failed_with("config_error", "no room for _airbyte_ab_id");
    let mut config = with("stream");
    config["ttl_seconds"] = json!(60);
    let out = common::write_sync(&config, &cat, "");
    out.assert_failed_with("config_error", "cannot expire one by one");
    // The scripts refuse too (for a writer that races the check before the first batch): the
    // fields format over records in hash, the stream format over a counter.
    let ns2 = Some("race");
    let out = common::write_sync(
        &target.config(),
        &catalog(&[(ns2, "s")]),
        &record(ns2, "s", "{}", 1),
    );
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let counter = target.counter_key(ns2, "s");
    let token = format!("_airbyte_redis:token:race:{counter}");
    let marker = format!("_airbyte_redis:format:{counter}");
    let mut con = target.conn_for(&counter);
    let fields: redis::RedisResult<i64> = redis::cmd("EVAL")
        .arg(include_str!("../../lua/append_batch.lua"))
        .arg(2)
        .arg(&counter)
        .arg(&token)
        .arg(&[
            "1",
            &format!("{counter}:"),
            "60",
            "0",
            "0",
            "0",
            "fields",
            &marker,
            "",
            "5",
            "1",
            "a",
            "1",
        ])
        .query(&mut con);
    let err = format!("{:?}", fields.unwrap_err());
    assert!(
        err.contains("ABFORMAT") && err.contains("hash fields"),
        "{err}"
    );
    let stream: redis::RedisResult<i64> = redis::cmd("EVAL")
        .arg(include_str!("../../lua/append_stream.lua"))
        .arg(3)
        .arg(&counter)
        .arg(&token)
        .arg(&marker)
        .arg(&["1", "60", "0", "0", "0", "", "5", "{}"])
        .query(&mut con);
    let err = format!("{:?}", stream.unwrap_err());
    assert!(
        err.contains("ABFORMAT") && err.contains("hash stream"),
        "{err}"
    );
    let n: u64 = redis::cmd("GET")
        .arg(&counter)
        .query(&mut con)
        .expect("GET");
    assert_eq!(n, 1, "nothing written");
    let reserved = record(ns, "s", r#"{"_airbyte_ab_id":7}"#, 1);
    let out = common::write_sync(&with("fields"), &cat, &reserved);
    out.assert_failed_with("config_error", "Line 1");
    out.assert_failed_with("config_error", "\"_airbyte_ab_id\"");
}

/// `n` records of stream `s` tagged `tag`, with a state after every ten.
fn tagged(ns: Option<&str>, tag: &str, range: std::ops::Range<usize>) -> String {
    range
        .map(|i| {
            let mut line = record(ns, "s", &format!(r#"{{"{tag}":{i},"x":"v{i}"}}"#), 1) + "\n";
            if i % 10 == 9 {
                line += &(stream_state(ns, "s", &format!(r#"{{"after":{i}}}"#)) + "\n");
            }
            line
        })
        .collect()
}

/// What [`read_back`] gives for records `tag` `range` of [`tagged`] in `format`.
fn tagged_back(format: &str, tag: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| match format {
            "fields" => format!("{tag}={i},x=v{i}"),
            _ => format!(r#"{{"{tag}":{i},"x":"v{i}"}}"#),
        })
        .collect()
}

/// An overwrite replaces a stream's records in any format but `stream`, and may change its format
/// (it replaces every record): the stream then holds exactly the new records, in the new format,
/// with its marker, and nothing of the old format or of the publish is left.
#[test]
fn overwrite_replaces_records_in_each_format_and_may_change_it() {
    let target = Target::start();
    let ns = Some("ow");
    let key = target.counter_key(ns, "s");
    let marker = format!("_airbyte_redis:format:{key}");
    let with = |format: &str| {
        let mut config = target.config();
        config["value_format"] = json!(format);
        config
    };
    let out = common::write_sync(
        &with("hash"),
        &catalog(&[(ns, "s")]),
        &tagged(ns, "old", 0..7),
    );
    assert_eq!(out.code, Some(0), "{}", out.dump());
    // Every format after every other, each with fewer or more records.
    let steps = [
        ("fields", 5),
        ("string", 3),
        ("string", 12),
        ("stream", 15),
        ("stream", 4),
        ("hash", 4),
        ("stream", 3),
        ("fields", 0),
    ];
    for (generation, (format, n)) in steps.into_iter().enumerate() {
        let generation = generation as i64 + 1;
        let tag = format!("g{generation}");
        let cat = common::catalog_with(&[(ns, "s")], "overwrite", generation, generation);
        let out = common::write_sync(&with(format), &cat, &tagged(ns, &tag, 0..n));
        assert_eq!(out.code, Some(0), "{format}: {}", out.dump());
        assert_eq!(out.states().len(), n / 10, "{format}");
        assert_eq!(
            read_back(&target, ns, "s", format),
            tagged_back(format, &tag, 0..n),
            "generation {generation} in {format}"
        );
        let mut records = target.keys(&format!("{key}:*"));
        records.sort();
        let mut want: Vec<String> = (1..=n).map(|i| format!("{key}:{i}")).collect();
        if format == "stream" {
            // One Redis stream, its entries numbered by position like the other formats' ids.
            want.clear();
            let ids: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
                .arg(&key)
                .arg("-")
                .arg("+")
                .query(&mut target.conn_for(&key))
                .expect("XRANGE");
            let ids: Vec<String> = ids.into_iter().map(|(id, _)| id).collect();
            let positions: Vec<String> = (1..=n).map(|i| format!("0-{i}")).collect();
            assert_eq!(ids, positions);
        }
        want.sort();
        assert_eq!(records, want, "generation {generation}: no old record left");
        let stored = target.cli_at(&marker, &["GET", &marker]);
        let want = if format == "hash" || n == 0 {
            ""
        } else {
            format
        };
        assert_eq!(stored.trim(), want, "generation {generation}'s marker");
        assert_eq!(
            target.leftover_bookkeeping(),
            vec![marker.clone()]
                .into_iter()
                .filter(|_| !want.is_empty())
                .collect::<Vec<_>>()
        );
    }
    // After the overwrites, appends go on in the format the last one left (none: any).
    let out = common::write_sync(
        &with("string"),
        &catalog(&[(ns, "s")]),
        &tagged(ns, "a", 0..2),
    );
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(
        read_back(&target, ns, "s", "string"),
        tagged_back("string", "a", 0..2)
    );
}

/// A retried overwrite resumes where its source restarted, in the `fields` and `string` formats
/// too: the new attempt's first record is found among the staged ones (for `fields`, field by
/// field), so a source that restarts from an earlier state than the last adds nothing twice.
#[test]
fn a_retried_overwrite_resumes_in_each_format() {
    let target = Target::start();
    for format in ["fields", "string", "stream"] {
        let ns_name = format!("r{format}");
        let ns = Some(ns_name.as_str());
        let mut config = target.config();
        config["value_format"] = json!(format);
        let cat = common::catalog_with(&[(ns, "s")], "overwrite", 3, 3);
        let out = common::write_sync(&config, &catalog(&[(ns, "s")]), &tagged(ns, "old", 0..4));
        assert_eq!(out.code, Some(0), "{}", out.dump());
        // Attempt 1: 45 records with a state after every ten, then a bad line.
        let input = status(ns, "s", "STARTED") + "\n" + &tagged(ns, "new", 0..45) + "garbage\n";
        let out = common::write_sync(&config, &cat, &input);
        assert_eq!(out.code, Some(1), "{}", out.dump());
        assert_eq!(out.states().len(), 4);
        assert_eq!(
            read_back(&target, ns, "s", format),
            tagged_back(format, "old", 0..4)
        );
        // Attempt 2 restarts from an earlier state than the last (after record 19).
        let input = tagged(ns, "new", 20..50) + &status(ns, "s", "COMPLETE") + "\n";
        let out = common::write_sync(&config, &cat, &input);
        assert_eq!(out.code, Some(0), "{}", out.dump());
        assert_eq!(
            read_back(&target, ns, "s", format),
            tagged_back(format, "new", 0..50),
            "{format}: no record lost or doubled"
        );
    }
}

/// A generation that an earlier attempt published is resumed by a retry from an earlier state, in
/// every format: the records before the restart point stay (in the `stream` format, they are
/// staged again from the published Redis stream, which the publish replaces whole), and every
/// record is there exactly once.
#[test]
fn a_published_generation_is_resumed_not_restarted_in_each_format() {
    let target = Target::start();
    for format in ["fields", "string", "stream"] {
        let ns_name = format!("p{format}");
        let ns = Some(ns_name.as_str());
        let mut config = target.config();
        config["value_format"] = json!(format);
        let cat = common::catalog_with(&[(ns, "s")], "overwrite", 5, 5);
        // Attempt 1 publishes the whole generation, then fails on a bad line.
        let input = tagged(ns, "new", 0..25) + &status(ns, "s", "COMPLETE") + "\n" + "garbage\n";
        let out = common::write_sync(&config, &cat, &input);
        assert_eq!(out.code, Some(1), "{}", out.dump());
        let published = tagged_back(format, "new", 0..25);
        assert_eq!(read_back(&target, ns, "s", format), published);
        // The retry restarts after the state at record 9: records 10..30.
        let input = tagged(ns, "new", 10..30) + &status(ns, "s", "COMPLETE") + "\n";
        let out = common::write_sync(&config, &cat, &input);
        assert_eq!(out.code, Some(0), "{}", out.dump());
        let all = tagged_back(format, "new", 0..30);
        assert_eq!(read_back(&target, ns, "s", format), all, "{format}");
        let marker = format!("_airbyte_redis:format:{}", target.counter_key(ns, "s"));
        let left: Vec<String> = target
            .leftover_bookkeeping()
            .into_iter()
            .filter(|k| k.contains(&format!("{ns_name}:")))
            .collect();
        assert_eq!(left, [marker], "{format}");
    }
}

/// A string key in the way of an overwrite's new records is another tool's when its id is above
/// the stream's counter: the publish is refused before it writes anything, naming the key; the old
/// records stay.
#[test]
fn a_foreign_string_key_stops_a_string_overwrite() {
    let target = Target::start();
    let ns = Some("fs");
    let mut config = target.config();
    config["value_format"] = json!("string");
    let out = common::write_sync(&config, &catalog(&[(ns, "s")]), &tagged(ns, "old", 0..2));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let key = target.counter_key(ns, "s");
    let foreign = format!("{key}:3");
    target.cli_at(&foreign, &["SET", &foreign, "not ours"]);
    let cat = common::catalog_with(&[(ns, "s")], "overwrite", 1, 1);
    let out = common::write_sync(&config, &cat, &tagged(ns, "new", 0..4));
    out.assert_failed_with("config_error", &format!("{foreign:?} is in the way"));
    assert_eq!(
        read_back(&target, ns, "s", "string"),
        tagged_back("string", "old", 0..2)
    );
    assert_eq!(
        target.cli_at(&foreign, &["GET", &foreign]).trim(),
        "not ours"
    );
    // Once it is gone, the retry publishes.
    target.cli_at(&foreign, &["DEL", &foreign]);
    let out = common::write_sync(&config, &cat, &tagged(ns, "new", 0..4));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(
        read_back(&target, ns, "s", "string"),
        tagged_back("string", "new", 0..4)
    );
}

/// The record hash or string at `key`, as `name=value` pairs in name order (a string: `=text`).
fn record_at(target: &Target, key: &str) -> String {
    let mut con = target.conn_for(key);
    let kind: String = redis::cmd("TYPE").arg(key).query(&mut con).expect("TYPE");
    if kind == "string" {
        let text: String = redis::cmd("GET").arg(key).query(&mut con).expect("GET");
        return format!("={text}");
    }
    let mut all: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(key)
        .query(&mut con)
        .expect("HGETALL");
    all.remove("_airbyte_emitted_at");
    let mut pairs: Vec<String> = all.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs.join(",")
}

/// Upserts in the `fields` and `string` formats (by sequence id, and `fields` keyed by primary
/// key): a newer version replaces the whole record (a field it lacks is gone), an older one is
/// ignored, a delete removes the key; a truncate refresh publishes exactly the new generation,
/// in its format.
#[test]
fn upserts_replace_whole_records_in_fields_and_string() {
    let target = Target::start();
    let ns = Some("up");
    let streams = [
        ("f", "fields", "sequence"),
        ("s", "string", "sequence"),
        ("k", "fields", "primary_key"),
    ];
    let mut config = target.config();
    config["stream_options"] = json!(streams
        .iter()
        .map(|(s, f, k)| json!({"stream": s, "value_format": f, "record_key": k}))
        .collect::<Vec<_>>());
    let mut cat = catalog(&[(ns, "f"), (ns, "s"), (ns, "k")]);
    for s in cat["streams"].as_array_mut().expect("streams") {
        s["destination_sync_mode"] = json!("append_dedup");
        s["primary_key"] = json!([["id"]]);
        s["cursor_field"] = json!(["at"]);
    }
    let lines = |stream: &str, datas: &[&str]| -> String {
        datas
            .iter()
            .map(|d| record(ns, stream, d, 5) + "\n")
            .collect()
    };
    let first = [
        r#"{"id":1,"at":1,"a":"x","b":2}"#,
        r#"{"id":2,"at":1,"a":"y"}"#,
        r#"{"id":3,"at":1,"a":"z"}"#,
    ];
    let second = [
        r#"{"id":1,"at":2,"a":"x2"}"#,
        r#"{"id":2,"at":0,"a":"older"}"#,
        r#"{"id":3,"at":2,"_ab_cdc_deleted_at":"2024-01-01"}"#,
        r#"{"id":4,"at":1,"b":null}"#,
    ];
    for batch in [&first[..], &second[..]] {
        let input: String = ["f", "s", "k"].iter().map(|s| lines(s, batch)).collect();
        let out = common::write_sync(&config, &cat, &input);
        assert_eq!(out.code, Some(0), "{}", out.dump());
    }
    let key = |stream: &str| target.counter_key(ns, stream);
    let at = |stream: &str, suffix: &str| record_at(&target, &format!("{}:{suffix}", key(stream)));
    // fields by sequence id: id 1 replaced whole (no `b`), id 2 kept, id 3 deleted, id 4 new.
    assert_eq!(at("f", "1"), "_airbyte_ab_id=1,a=x2,at=2,id=1");
    assert_eq!(at("f", "2"), "_airbyte_ab_id=2,a=y,at=1,id=2");
    assert_eq!(at("f", "3"), "");
    assert_eq!(at("f", "4"), "_airbyte_ab_id=4,at=1,id=4");
    // string by sequence id: the data text.
    assert_eq!(at("s", "1"), r#"={"id":1,"at":2,"a":"x2"}"#);
    assert_eq!(at("s", "2"), r#"={"id":2,"at":1,"a":"y"}"#);
    assert_eq!(at("s", "3"), "");
    assert_eq!(at("s", "4"), r#"={"id":4,"at":1,"b":null}"#);
    // fields keyed by primary key: the cursor beside the fields, the key's suffix as its id.
    assert_eq!(
        at("k", "id:1"),
        "_airbyte_ab_id=id:1,_airbyte_cursor=n2,a=x2,at=2,id=1"
    );
    assert_eq!(
        at("k", "id:2"),
        "_airbyte_ab_id=id:2,_airbyte_cursor=n1,a=y,at=1,id=2"
    );
    assert_eq!(at("k", "id:3"), "");
    for (stream, format, _) in streams {
        let marker = format!("_airbyte_redis:format:{}", key(stream));
        assert_eq!(target.cli_at(&marker, &["GET", &marker]).trim(), format);
    }
    // A truncate refresh of each: exactly the new generation, in its format.
    for s in cat["streams"].as_array_mut().expect("streams") {
        s["generation_id"] = json!(7);
        s["minimum_generation_id"] = json!(7);
    }
    let refresh = [
        r#"{"id":9,"at":1,"a":"new"}"#,
        r#"{"id":9,"at":3,"c":true}"#,
    ];
    let input: String = ["f", "s", "k"].iter().map(|s| lines(s, &refresh)).collect();
    let out = common::write_sync(&config, &cat, &input);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(at("f", "1"), "_airbyte_ab_id=1,at=3,c=true,id=9");
    assert_eq!(at("s", "1"), r#"={"id":9,"at":3,"c":true}"#);
    assert_eq!(
        at("k", "id:9"),
        "_airbyte_ab_id=id:9,_airbyte_cursor=n3,at=3,c=true,id=9"
    );
    for stream in ["f", "s"] {
        assert_eq!(
            target.keys(&format!("{}:*", key(stream))),
            [format!("{}:1", key(stream))]
        );
    }
    assert_eq!(
        target.keys(&format!("{}:*", key("k"))),
        [format!("{}:id:9", key("k"))]
    );
}

/// Expiry in the hash-like formats: `ttl_seconds` on string and fields keys, a `ttl_field` moment;
/// a Redis stream is trimmed by `stream_maxlen` (approximately: never below it).
#[test]
fn string_and_fields_keys_expire_and_streams_are_trimmed() {
    let target = Target::start();
    let ns = Some("e");
    let mut config = formats_config(&target);
    // ttl_seconds on the three key formats (the stream format keeps no expiry), ttl_field on s0.
    for i in 0..3 {
        config["stream_options"][i]["ttl_seconds"] = json!(600);
    }
    config["stream_options"][0]["ttl_field"] = json!("exp");
    config["stream_options"][3]["stream_maxlen"] = json!(100);
    let cat = catalog(&[(ns, "s0"), (ns, "s1"), (ns, "s2"), (ns, "s3")]);
    let lines: Vec<String> = (0..3)
        .map(|i| record(ns, &format!("s{i}"), r#"{"i":1,"exp":4102444800}"#, 1))
        .chain((0..1000).map(|i| record(ns, "s3", &format!(r#"{{"i":{i}}}"#), 1)))
        .collect();
    let mut config_batches = config.clone();
    config_batches["batch_size"] = json!(50);
    let out = common::write_sync(&config_batches, &cat, &lines.join("\n"));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let pttl = |key: &str| -> i64 {
        let mut con = target.conn_for(key);
        redis::cmd("PTTL").arg(key).query(&mut con).expect("PTTL")
    };
    let at = |i: usize| target.record_key(ns, &format!("s{i}"), 1);
    let deadline = 4_102_444_800_000 - common::now_ms();
    let ms = pttl(&at(0));
    assert!(
        ms <= deadline && ms > deadline - 60_000,
        "ttl_field on s0: {ms}"
    );
    for i in [1, 2] {
        let ms = pttl(&at(i));
        assert!(ms <= 600_000 && ms > 540_000, "ttl_seconds on s{i}: {ms}");
    }
    let stream = target.counter_key(ns, "s3");
    let mut con = target.conn_for(&stream);
    let len: u64 = redis::cmd("XLEN")
        .arg(&stream)
        .query(&mut con)
        .expect("XLEN");
    assert!((100..1000).contains(&len), "trimmed to about 100: {len}");
    assert_eq!(pttl(&stream), -1);

    // Where the server has MSETEX (Valkey 9.1+), string keys with an expiry are written with it,
    // a batch at a time; elsewhere with SET … EX, one per key.
    let string_key = at(2);
    let mut con = target.conn_for(&string_key);
    let has_msetex = !matches!(
        redis::cmd("COMMAND")
            .arg("INFO")
            .arg("MSETEX")
            .query::<redis::Value>(&mut con),
        Ok(redis::Value::Array(ref v)) if v.first() == Some(&redis::Value::Nil)
    );
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut con)
        .expect("INFO");
    let calls = |name: &str| {
        stats
            .lines()
            .find(|l| l.starts_with(&format!("cmdstat_{name}:")))
            .and_then(|l| l.split("calls=").nth(1))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(calls("msetex") > 0, has_msetex, "{stats}");
}

/// A `string` stream with `ttl_field`: each key takes its record's moment, or `ttl_seconds` when it
/// has none; a passed record is not written and takes no id.
#[test]
fn string_records_take_their_ttl_field_moment() {
    let target = Target::start();
    let ns = Some("sm");
    let mut config = target.config();
    config["value_format"] = json!("string");
    config["ttl_seconds"] = json!(600);
    config["ttl_field"] = json!("exp");
    let lines = [
        record(ns, "s", r#"{"exp":4102444800}"#, 1),
        record(ns, "s", r#"{"exp":null}"#, 1),
        record(ns, "s", r#"{"exp":1000}"#, 1),
        record(ns, "s", r#"{"exp":"2100-01-01T00:00:00Z"}"#, 1),
    ];
    let out = common::write_sync(&config, &catalog(&[(ns, "s")]), &lines.join("\n"));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let key = |id: u64| target.record_key(ns, "s", id);
    let mut con = target.conn_for(&key(1));
    let pttl = |con: &mut redis::Connection, k: &str| -> i64 {
        redis::cmd("PTTL").arg(k).query(con).expect("PTTL")
    };
    let deadline = 4_102_444_800_000 - common::now_ms();
    for id in [1, 3] {
        let ms = pttl(&mut con, &key(id));
        assert!(
            ms <= deadline && ms > deadline - 60_000,
            "record {id}: {ms}"
        );
    }
    let ms = pttl(&mut con, &key(2));
    assert!(ms <= 600_000 && ms > 540_000, "null: ttl_seconds, {ms}");
    assert_eq!(pttl(&mut con, &key(4)), -2, "three records written");
    let text: String = redis::cmd("GET").arg(key(3)).query(&mut con).expect("GET");
    assert_eq!(text, r#"{"exp":"2100-01-01T00:00:00Z"}"#);
}

/// One record of the property tests: its stream (0..4, each in its own format) and its number.
fn lines_of(ns: &str, records: &[(usize, u32)]) -> Vec<String> {
    records
        .iter()
        .map(|(s, n)| {
            record(
                Some(ns),
                &format!("s{s}"),
                &format!(r#"{{"i":{n},"s":"v{n}"}}"#),
                1,
            )
        })
        .collect()
}

/// What each stream must hold after these syncs: its records, in input order, as [`read_back`]
/// gives them in the stream's format; a stream overwritten by every sync (`overwrite[s]`) holds
/// only the last sync's.
fn model(syncs: &[Vec<(usize, u32)>], overwrite: [bool; 4]) -> Vec<Vec<String>> {
    let mut want = vec![Vec::new(); 4];
    for sync in syncs {
        for (s, o) in overwrite.iter().enumerate() {
            if *o {
                want[s].clear();
            }
        }
        for (s, n) in sync {
            want[*s].push(match FORMATS[*s] {
                "fields" => format!("i={n},s=v{n}"),
                _ => format!(r#"{{"i":{n},"s":"v{n}"}}"#),
            });
        }
    }
    want
}

fn assert_model(
    target: &Target,
    ns: &str,
    syncs: &[Vec<(usize, u32)>],
    overwrite: [bool; 4],
) -> Result<(), TestCaseError> {
    let want = model(syncs, overwrite);
    for (i, format) in FORMATS.iter().enumerate() {
        let got = read_back(target, Some(ns), &format!("s{i}"), format);
        prop_assert_eq!(&got, &want[i], "stream s{} ({})", i, format);
    }
    Ok(())
}

/// Cases of the property tests: `FORMATS_PROPTEST_CASES`, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("FORMATS_PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default)
}

fn records() -> impl Strategy<Value = Vec<(usize, u32)>> {
    proptest::collection::vec((0usize..4, 0u32..1000), 0..60)
}

/// Any records of four streams in four formats, each appended or overwritten by every sync, with
/// or without `ttl_seconds`, any batch size, one to three syncs: every stream reads back as its
/// records in order, whatever its format and mode, and its record keys expire when it says so.
#[test]
fn any_mix_of_formats_reads_back_as_the_model() {
    let target = Target::start();
    let case = AtomicUsize::new(0);
    let mut config = Config::with_cases(cases(16));
    config.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(
        "proptest-regressions/it-formats.txt",
    )));
    let strategy = (
        proptest::collection::vec(records(), 1..4),
        1usize..8,
        proptest::array::uniform4(any::<bool>()),
        proptest::array::uniform3(any::<bool>()),
    );
    TestRunner::new(config)
        .run(&strategy, |(syncs, batch_size, overwrite, ttl)| {
            let ns = format!("p{}", case.fetch_add(1, Ordering::SeqCst));
            let mut config = formats_config(&target);
            config["batch_size"] = json!(batch_size);
            // `ttl_seconds` on any of the streams but the Redis stream's (which takes none).
            for (i, t) in ttl.iter().enumerate() {
                if *t {
                    config["stream_options"][i]["ttl_seconds"] = json!(3600);
                }
            }
            for (k, sync) in syncs.iter().enumerate() {
                let mut cat = catalog(&[
                    (Some(&ns), "s0"),
                    (Some(&ns), "s1"),
                    (Some(&ns), "s2"),
                    (Some(&ns), "s3"),
                ]);
                for (i, o) in overwrite.iter().enumerate() {
                    if *o {
                        let s = &mut cat["streams"][i];
                        s["destination_sync_mode"] = json!("overwrite");
                        s["generation_id"] = json!(k + 1);
                        s["minimum_generation_id"] = json!(k + 1);
                    }
                }
                let out = common::write_sync(&config, &cat, &lines_of(&ns, sync).join("\n"));
                prop_assert_eq!(out.code, Some(0), "{}", out.dump());
            }
            assert_model(&target, &ns, &syncs, overwrite)?;
            for (i, t) in ttl.iter().enumerate() {
                let key = target.counter_key(Some(&ns), &format!("s{i}"));
                for record in target.keys(&format!("{key}:*")) {
                    let ms: i64 = target
                        .cli_at(&record, &["PTTL", &record])
                        .trim()
                        .parse()
                        .unwrap();
                    prop_assert_eq!(ms > 0, *t, "{} PTTL {}", record, ms);
                }
            }
            Ok(())
        })
        .unwrap();
}

mod standalone {
    use super::*;
    use crate::common::{drops_at, FaultProxy};

    /// A user who may not run a command the string format's batches use (MSET here) is refused
    /// before any record is written: by the rights probe, and on Redis 7+ (where a script can ask
    /// about its rights) by the script itself when the probe cannot run (no MULTI).
    #[test]
    fn a_user_without_mset_is_refused_before_anything_is_written() {
        let target = Target::standalone();
        let server = target.server();
        let version = server.cli(&["INFO", "server"]);
        let major: u32 = version
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .and_then(|v| v.trim().split('.').next()?.parse().ok())
            .unwrap_or(0);
        let ns = Some("acl");
        let cat = catalog(&[(ns, "s")]);
        let line = record(ns, "s", r#"{"a":1}"#, 1);
        let mut cases = vec![("probe", "-mset")];
        if major >= 7 {
            cases.push(("script", "-mset -multi"));
        }
        for (who, denied) in cases {
            let mut acl = vec!["ACL", "SETUSER", who, "on", ">pw-1", "~*", "+@all"];
            if major >= 7 {
                acl.push("&*"); // channels: an ACL rule Redis 6.0 does not know
            }
            acl.extend(denied.split(' '));
            assert_eq!(server.cli(&acl).trim(), "OK");
            let mut config = target.config();
            config["username"] = json!(who);
            config["password"] = json!("pw-1");
            config["value_format"] = json!("string");
            let out = common::write_sync(&config, &cat, &line);
            out.assert_failed_with("config_error", "permission");
            assert_eq!(
                server.cli(&["DBSIZE"]).trim(),
                "0",
                "{who}: nothing written"
            );
        }
    }

    /// Connections dropped at random points of the traffic, in every format: nothing lost,
    /// nothing doubled (a resent batch is recognised by its token).
    #[test]
    fn every_format_is_exactly_once_through_dropped_connections() {
        let target = Target::standalone();
        let server = target.server();
        let case = AtomicUsize::new(0);
        let cuts_made = AtomicUsize::new(0);
        let mut config = Config::with_cases(cases(12));
        config.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/it-formats-dropped.txt",
        )));
        let strategy = (
            proptest::collection::vec((0usize..4, 0u32..1000), 50..400),
            1usize..20,
            proptest::collection::vec((any::<bool>(), 0.0f64..1.0), 1..4),
        );
        TestRunner::new(config)
            .run(&strategy, |(records, batch_size, cuts)| {
                let ns = format!("d{}", case.fetch_add(1, Ordering::SeqCst));
                let input = lines_of(&ns, &records).join("\n");
                let replies = 8 * (records.len() / batch_size + 10) + 200;
                let cuts = drops_at(&cuts, input.len() + 12_000, replies);
                let proxy = FaultProxy::start(server.port(), cuts);
                let mut config = formats_config(&target);
                config["port"] = json!(proxy.port());
                config["batch_size"] = json!(batch_size);
                config["retry_budget_ms"] = json!(20_000);
                let cat = catalog(&[
                    (Some(&ns), "s0"),
                    (Some(&ns), "s1"),
                    (Some(&ns), "s2"),
                    (Some(&ns), "s3"),
                ]);
                let out = common::write_sync(&config, &cat, &input);
                cuts_made.fetch_add(proxy.cuts() as usize, Ordering::SeqCst);
                prop_assert_eq!(out.code, Some(0), "{}", out.dump());
                assert_model(&target, &ns, &[records], [false; 4])
            })
            .unwrap();
        let (cases, cuts) = (
            case.load(Ordering::SeqCst),
            cuts_made.load(Ordering::SeqCst),
        );
        assert!(cuts * 2 >= cases, "only {cuts} cuts in {cases} cases");
    }
}
