//! `append_dedup`: one record per primary key, the newest by cursor, CDC deletes, across batches
//! and syncs; and a property test against a model (the winner of every key is the version with
//! the greatest cursor, ties to the later arrival, whatever the batches and syncs).
//!
//! With `REDIS_TOPOLOGY=cluster` the same is proved against a 3-master cluster.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use serde_json::{json, Value};

use crate::common::{self, catalog, legacy_state, record, Target};

/// A catalog of one `append_dedup` stream with this primary key and cursor.
fn dedup_catalog(ns: Option<&str>, stream: &str, key: Value, cursor: Value) -> Value {
    let mut c = catalog(&[(ns, stream)]);
    c["streams"][0]["destination_sync_mode"] = json!("append_dedup");
    c["streams"][0]["primary_key"] = key;
    c["streams"][0]["cursor_field"] = cursor;
    c
}

/// What Redis holds for a dedup stream: its counter, and each indexed key's record (`None` for a
/// deleted key), read through the index.
struct Stored {
    counter: i64,
    records: BTreeMap<String, Option<HashMap<String, String>>>,
    record_keys: usize,
}

fn stored(target: &Target, ns: Option<&str>, stream: &str) -> Stored {
    let counter_key = target.counter_key(ns, stream);
    let mut con = target.conn_for(&counter_key);
    let counter: Option<i64> = redis::cmd("GET")
        .arg(&counter_key)
        .query(&mut con)
        .expect("GET");
    let index: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("_airbyte_redis:index:{counter_key}"))
        .query(&mut con)
        .expect("HGETALL");
    let mut records = BTreeMap::new();
    for (key, entry) in index {
        let (id, _cursor) = entry.split_once(':').expect("id:cursor");
        let id: u64 = id.parse().expect("id");
        let record = match id {
            0 => None,
            id => {
                let hash = read_record(&mut con, &target.record_key(ns, stream, id), id);
                assert_eq!(hash["_airbyte_ab_id"], id.to_string());
                Some(hash)
            }
        };
        records.insert(key, record);
    }
    Stored {
        counter: counter.unwrap_or(0),
        records,
        record_keys: target.count_record_keys(ns, stream),
    }
}

/// The record at `key` (id `id`) as a hash in any value format: a `string` record is read as
/// `_airbyte_ab_id` (its id) and `_airbyte_data` (its text); a `fields` record as it is.
fn read_record(con: &mut redis::Connection, key: &str, id: u64) -> HashMap<String, String> {
    let kind: String = redis::cmd("TYPE").arg(key).query(con).expect("TYPE");
    if kind == "string" {
        let text: String = redis::cmd("GET").arg(key).query(con).expect("GET");
        return HashMap::from([
            ("_airbyte_ab_id".to_string(), id.to_string()),
            ("_airbyte_data".to_string(), text),
        ]);
    }
    redis::cmd("HGETALL").arg(key).query(con).expect("HGETALL")
}

/// Field `name` of a record's data: from its `_airbyte_data` text, or (`fields` format) from its
/// own hash field.
fn data_field(hash: &HashMap<String, String>, name: &str) -> Value {
    match hash.get("_airbyte_data") {
        Some(text) => serde_json::from_str::<Value>(text).expect("JSON")[name].clone(),
        None => hash
            .get(name)
            .map_or(Value::Null, |v| serde_json::from_str(v).unwrap_or(json!(v))),
    }
}

/// The same for a stream keyed by primary key (`record_key: primary_key`): its records found by
/// their key pattern, its deleted keys in its tombstones; `counter` is 0 (it has none).
fn stored_keyed(target: &Target, ns: Option<&str>, stream: &str) -> Stored {
    let counter_key = target.counter_key(ns, stream);
    let mut con = target.conn_for(&counter_key);
    let tombstones: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("_airbyte_redis:deleted:{counter_key}"))
        .query(&mut con)
        .expect("HGETALL");
    let mut records: BTreeMap<String, Option<HashMap<String, String>>> =
        tombstones.into_keys().map(|k| (k, None)).collect();
    let keys = target.keys(&format!(
        "{}:*",
        destination_redis::keys::escape_glob(&counter_key)
    ));
    for key in &keys {
        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(key)
            .query(&mut con)
            .expect("HGETALL");
        let suffix = &key[counter_key.len() + 1..];
        assert_eq!(hash["_airbyte_ab_id"], suffix);
        let before = records.insert(suffix.to_string(), Some(hash));
        assert!(
            before.is_none(),
            "{suffix} is both a record and a tombstone"
        );
    }
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&counter_key)
        .query(&mut con)
        .expect("EXISTS");
    assert_eq!(exists, 0, "no counter in the primary-key layout");
    Stored {
        counter: 0,
        records,
        record_keys: keys.len(),
    }
}

fn data_of(s: &Stored, key: &str) -> Option<String> {
    s.records
        .get(key)
        .cloned()
        .flatten()
        .map(|h| h["_airbyte_data"].clone())
}

#[test]
fn the_newest_version_of_each_key_stays_and_deletes_remove() {
    let target = Target::start();
    let (ns, stream) = (Some("d"), "users");
    let cat = dedup_catalog(ns, stream, json!([["id"], ["org", "id"]]), json!(["at"]));
    let rec = |data: &str| record(ns, stream, data, 7) + "\n";
    let first = [
        rec(r#"{"id":1,"org":{"id":"a"},"at":5,"v":"1a@5"}"#),
        rec(r#"{"id":1,"org":{"id":"b"},"at":5,"v":"1b@5"}"#),
        rec(r#"{"id":1,"org":{"id":"a"},"at":4,"v":"1a@4 older, ignored"}"#),
        rec(r#"{"id":2,"org":{"id":"a"},"at":null,"v":"2a@null"}"#),
        rec(r#"{"id":2,"org":{"id":"a"},"at":1,"v":"2a@1 beats null"}"#),
        rec(r#"{"id":3,"org":{"id":"a"},"at":9,"v":"3a@9"}"#),
        rec(r#"{"id":3,"org":{"id":"a"},"at":9,"v":"3a@9 tie, later wins"}"#),
        // A delete of a key never seen: nothing written, but remembered.
        rec(r#"{"id":4,"org":{"id":"a"},"at":3,"_ab_cdc_deleted_at":"2024-01-01"}"#),
        // A delete followed by a re-insert in the same batch.
        rec(r#"{"id":5,"org":{"id":"a"},"at":1,"v":"5a@1"}"#),
        rec(r#"{"id":5,"org":{"id":"a"},"at":2,"_ab_cdc_deleted_at":"x"}"#),
        rec(r#"{"id":5,"org":{"id":"a"},"at":3,"v":"5a@3 back"}"#),
        legacy_state(r#"{"n":1}"#) + "\n",
    ]
    .concat();
    let out = common::write_sync(&target.config(), &cat, &first);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(out.states().len(), 1);
    let s = stored(&target, ns, stream);
    assert_eq!(
        data_of(&s, r#"[1,"a"]"#).unwrap(),
        r#"{"id":1,"org":{"id":"a"},"at":5,"v":"1a@5"}"#
    );
    assert!(data_of(&s, r#"[1,"b"]"#).unwrap().contains("1b@5"));
    assert!(data_of(&s, r#"[2,"a"]"#).unwrap().contains("beats null"));
    assert!(data_of(&s, r#"[3,"a"]"#).unwrap().contains("later wins"));
    assert_eq!(s.records.get(r#"[4,"a"]"#), Some(&None), "a tombstone");
    assert!(data_of(&s, r#"[5,"a"]"#).unwrap().contains("back"));
    assert_eq!(s.counter, 5, "five keys got an id");
    assert_eq!(s.record_keys, 5);

    // A second sync: older versions lose to what is stored, newer ones replace it in place, a
    // delete removes the record, and an older version of a deleted key does not bring it back.
    let second = [
        rec(r#"{"id":1,"org":{"id":"a"},"at":4,"v":"older than stored"}"#),
        rec(r#"{"id":1,"org":{"id":"b"},"at":6,"v":"1b@6"}"#),
        rec(r#"{"id":2,"org":{"id":"a"},"at":2,"_ab_cdc_deleted_at":"now"}"#),
        rec(r#"{"id":4,"org":{"id":"a"},"at":2,"v":"older than its delete"}"#),
        rec(r#"{"id":6,"org":{"id":"\u0061"},"at":"2024-05-01","v":"6a"}"#),
        legacy_state(r#"{"n":2}"#) + "\n",
    ]
    .concat();
    let ids_before: HashMap<String, String> = s
        .records
        .iter()
        .filter_map(|(k, r)| r.as_ref().map(|r| (k.clone(), r["_airbyte_ab_id"].clone())))
        .collect();
    let out = common::write_sync(&target.config(), &cat, &second);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let s = stored(&target, ns, stream);
    assert!(data_of(&s, r#"[1,"a"]"#).unwrap().contains("1a@5"));
    assert!(data_of(&s, r#"[1,"b"]"#).unwrap().contains("1b@6"));
    let kept = s.records[r#"[1,"b"]"#].as_ref().unwrap();
    assert_eq!(
        kept["_airbyte_ab_id"], ids_before[r#"[1,"b"]"#],
        "replaced in place"
    );
    assert_eq!(kept["_airbyte_emitted_at"], "7");
    assert_eq!(s.records.get(r#"[2,"a"]"#), Some(&None));
    assert_eq!(s.records.get(r#"[4,"a"]"#), Some(&None));
    assert!(
        data_of(&s, r#"[6,"a"]"#).unwrap().contains("6a"),
        "same key whatever the escapes"
    );
    assert_eq!(
        s.counter, 6,
        "ids are never reused: the counter is the highest id given"
    );
    assert_eq!(s.record_keys, 5, "1a, 1b, 3a, 5a and 6a; 2a was deleted");
}

#[test]
fn a_record_without_its_primary_key_is_named() {
    let target = Target::start();
    let cat = dedup_catalog(Some("d"), "k", json!([["id"], ["org", "id"]]), json!([]));
    let input = [
        record(Some("d"), "k", r#"{"id":1,"org":{"id":1}}"#, 1),
        record(Some("d"), "k", r#"{"id":2,"org":{"id":1}}"#, 1),
        record(Some("d"), "k", r#"{"id":3,"org":{"name":"x"}}"#, 1),
    ]
    .join("\n");
    let out = common::write_sync(&target.config(), &cat, &input);
    out.assert_failed_with("config_error", "Line 3 of the input");
    let message = out.traces()[0]["trace"]["error"]["message"].to_string();
    assert!(
        message.contains("org.id") && message.contains(r#"\"k\""#),
        "{message}"
    );
    let out = common::write_sync(
        &target.config(),
        &cat,
        &record(Some("d"), "k", r#"{"id":null,"org":{"id":1}}"#, 1),
    );
    out.assert_failed_with("config_error", "primary-key field id");
}

#[test]
fn a_stream_without_a_primary_key_is_refused_before_any_write() {
    let target = Target::start();
    let cat = dedup_catalog(None, "k", json!([]), json!([]));
    let out = common::write_sync(&target.config(), &cat, &record(None, "k", "{}", 1));
    out.assert_failed_with("config_error", "needs a primary key");
    assert!(target.keys("*").is_empty(), "{:?}", target.keys("*"));
}

/// One input event of the model: a version of key `key` with cursor `cursor` (None: null),
/// or its delete.
#[derive(Debug, Clone)]
struct Event {
    key: u8,
    cursor: Option<u8>,
    delete: bool,
}

fn event() -> impl Strategy<Value = Event> {
    (
        0u8..6,
        proptest::option::weighted(0.8, 0u8..4),
        proptest::bool::weighted(0.2),
    )
        .prop_map(|(key, cursor, delete)| Event {
            key,
            cursor,
            delete,
        })
}

/// The RECORD lines of `events[range]` (data `{"k":"k<key>","c":<cursor>,"i":<position>}`, with
/// `_ab_cdc_deleted_at` for a delete).
fn event_lines(ns: &str, events: &[Event], range: std::ops::Range<usize>) -> String {
    range
        .map(|i| {
            let e = &events[i];
            let cursor = e.cursor.map_or("null".to_string(), |c| c.to_string());
            let deleted = if e.delete {
                r#","_ab_cdc_deleted_at":"t""#
            } else {
                ""
            };
            let data = format!(r#"{{"k":"k{}","c":{cursor},"i":{i}{deleted}}}"#, e.key);
            record(Some(ns), "s", &data, 1) + "\n"
        })
        .collect()
}

/// Redis holds the model's answer for `events`: each key's winner is its version with the
/// greatest cursor (null lowest), ties to the later arrival; a winning delete leaves no record.
/// Ids are unique and within the counter, and no record outlives its key's index entry. With
/// `keyed`, the stream's records are keyed by primary key, `k:k<key>`.
fn assert_model(
    target: &Target,
    ns: &str,
    events: &[Event],
    keyed: bool,
) -> Result<(), TestCaseError> {
    let mut winner: BTreeMap<u8, usize> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        if winner
            .get(&e.key)
            .is_none_or(|w| e.cursor >= events[*w].cursor)
        {
            winner.insert(e.key, i);
        }
    }
    let s = match keyed {
        true => stored_keyed(target, Some(ns), "s"),
        false => stored(target, Some(ns), "s"),
    };
    let mut live = 0;
    let mut ids = HashSet::new();
    for (key, w) in &winner {
        let name = match keyed {
            true => format!("k:k{key}"),
            false => format!(r#"["k{key}"]"#),
        };
        let got = s.records.get(&name);
        prop_assert!(got.is_some(), "key {key} is indexed");
        match (events[*w].delete, got.cloned().flatten()) {
            (true, None) => {}
            (false, Some(hash)) => {
                live += 1;
                prop_assert_eq!(data_field(&hash, "i"), json!(w), "key {}", key);
                if !keyed {
                    let id: i64 = hash["_airbyte_ab_id"].parse().unwrap();
                    prop_assert!(id >= 1 && id <= s.counter);
                    prop_assert!(ids.insert(id), "id {} given twice", id);
                }
            }
            (deleted, got) => {
                prop_assert!(false, "key {}: deleted {}, stored {:?}", key, deleted, got)
            }
        }
    }
    prop_assert_eq!(s.records.len(), winner.len());
    prop_assert_eq!(
        s.record_keys,
        live,
        "no record outlives its key's index entry"
    );
    Ok(())
}

fn cases(default: u32) -> u32 {
    std::env::var("DEDUP_PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default)
}

/// Any upserts and deletes, in any batch sizes, syncs, layouts and value formats that upsert
/// (`hash`, `fields`, and `string` by sequence id), leave the model's winners.
#[test]
fn any_upserts_and_deletes_in_any_batches_and_syncs_leave_the_models_winners() {
    let target = Target::start();
    let mut config = Config::with_cases(cases(16));
    config.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(
        "proptest-regressions/it-dedup-model.txt",
    )));
    let case = AtomicUsize::new(0);
    let strategy = (
        proptest::collection::vec(event(), 1..80),
        proptest::collection::vec(0usize..80, 0..3),
        1usize..7,
        1usize..3,
        any::<bool>(),
        0usize..3,
    );
    TestRunner::new(config)
        .run(
            &strategy,
            |(events, cuts, batch_size, in_flight, keyed, format)| {
                let ns = format!("m{}", case.fetch_add(1, Ordering::SeqCst));
                let cat = dedup_catalog(Some(&ns), "s", json!([["k"]]), json!(["c"]));
                let mut config = target.config();
                if keyed {
                    config["record_key"] = json!("primary_key");
                }
                // Any value format that upserts (a string record is not keyed by primary key).
                let formats = ["hash", "fields", if keyed { "fields" } else { "string" }];
                config["value_format"] = json!(formats[format]);
                config["batch_size"] = json!(batch_size);
                config["max_batches_in_flight"] = json!(in_flight);
                // The events split into syncs at the cut points.
                let mut bounds: Vec<usize> = cuts.iter().map(|c| c % events.len()).collect();
                bounds.extend([0, events.len()]);
                bounds.sort_unstable();
                bounds.dedup();
                for w in bounds.windows(2) {
                    let out =
                        common::write_sync(&config, &cat, &event_lines(&ns, &events, w[0]..w[1]));
                    prop_assert_eq!(out.code, Some(0), "{}", out.dump());
                }
                assert_model(&target, &ns, &events, keyed)?;
                target.flush_all();
                Ok(())
            },
        )
        .unwrap();
}

mod standalone {
    use super::*;
    use crate::common::{drops_at, FaultProxy};

    /// Connections dropped at random points of the traffic: every resend is exactly-once (a
    /// resent batch never re-applies an older version over a later batch), so the model holds,
    /// in every value format that upserts.
    #[test]
    fn upserts_through_dropped_connections_leave_the_models_winners() {
        let target = Target::standalone();
        let server = target.server();
        let mut config = Config::with_cases(cases(12));
        config.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/it-dedup-dropped.txt",
        )));
        let case = AtomicUsize::new(0);
        let cuts_made = AtomicUsize::new(0);
        let strategy = (
            proptest::collection::vec(event(), 50..400),
            1usize..20,
            proptest::collection::vec((any::<bool>(), 0.0f64..1.0), 1..4),
            any::<bool>(),
            0usize..3,
        );
        TestRunner::new(config)
            .run(&strategy, |(events, batch_size, cuts, keyed, format)| {
                let ns = format!("x{}", case.fetch_add(1, Ordering::SeqCst));
                let input = event_lines(&ns, &events, 0..events.len());
                let replies = 8 * (events.len() / batch_size + 10) + 200;
                let cuts = drops_at(&cuts, input.len() + 12_000, replies);
                let proxy = FaultProxy::start(server.port(), cuts);
                let mut config = server.config();
                config["port"] = json!(proxy.port());
                config["batch_size"] = json!(batch_size);
                config["retry_budget_ms"] = json!(20_000);
                if keyed {
                    config["record_key"] = json!("primary_key");
                }
                let formats = ["hash", "fields", if keyed { "fields" } else { "string" }];
                config["value_format"] = json!(formats[format]);
                let cat = dedup_catalog(Some(&ns), "s", json!([["k"]]), json!(["c"]));
                let out = common::write_sync(&config, &cat, &input);
                cuts_made.fetch_add(proxy.cuts() as usize, Ordering::SeqCst);
                prop_assert_eq!(out.code, Some(0), "{}", out.dump());
                assert_model(&target, &ns, &events, keyed)
            })
            .unwrap();
        let (cases, cuts) = (
            case.load(Ordering::SeqCst),
            cuts_made.load(Ordering::SeqCst),
        );
        assert!(cuts * 2 >= cases, "only {cuts} cuts in {cases} cases");
    }
}

/// Records written by append (or published by overwrite) have no index entry: a dedup sync would
/// add a second record for each of their keys, so it is refused before writing anything; and an
/// overwrite of a dedup stream takes the index with the records it described.
#[test]
fn records_without_an_index_are_refused_and_overwrite_drops_the_index() {
    let target = Target::start();
    let (ns, stream) = (Some("d"), "mixed");
    let rec = |data: &str| record(ns, stream, data, 1) + "\n";
    let appended = rec(r#"{"id":1}"#) + &rec(r#"{"id":2}"#);
    let out = common::write_sync(&target.config(), &catalog(&[(ns, stream)]), &appended);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let dedup = dedup_catalog(ns, stream, json!([["id"]]), json!([]));
    let out = common::write_sync(&target.config(), &dedup, &rec(r#"{"id":1,"v":2}"#));
    out.assert_failed_with("config_error", "holds 2 records at");
    let (counter, records) = target.read_stream(ns, stream);
    assert_eq!(
        (counter, records.len()),
        (Some(2), 2),
        "nothing was written"
    );

    target.flush_all();
    let out = common::write_sync(&target.config(), &dedup, &appended);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let index = format!("_airbyte_redis:index:{}", target.counter_key(ns, stream));
    assert_eq!(target.cli_at(&index, &["HLEN", &index]).trim(), "2");
    let overwrite = common::catalog_with(&[(ns, stream)], "overwrite", 1, 1);
    let out = common::write_sync(&target.config(), &overwrite, &rec(r#"{"id":9}"#));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(target.cli_at(&index, &["EXISTS", &index]).trim(), "0");
    let (counter, records) = target.read_stream(ns, stream);
    assert_eq!((counter, records.len()), (Some(1), 1));
}

/// `record_key: primary_key`: one hash per primary key at `<counter>:<field>:<value>…` (escaped),
/// `_airbyte_ab_id` its suffix and `_airbyte_cursor` its cursor, no counter; set for one stream
/// in `stream_options` (an entry for a stream not in the catalog is a warning). In `append` mode
/// the last write of a key wins and `_ab_cdc_deleted_at` is data like any other field. A foreign
/// key where a record goes is refused whole; overwrite with this layout is a config error.
#[test]
fn primary_key_records_live_at_their_key() {
    let target = Target::start();
    let ns = Some("pk");
    let mut cat = dedup_catalog(ns, "users", json!([["id"], ["org", "id"]]), json!(["at"]));
    let mut appended = catalog(&[(ns, "events")]);
    appended["streams"][0]["primary_key"] = json!([["id"]]);
    cat["streams"]
        .as_array_mut()
        .unwrap()
        .push(appended["streams"][0].clone());
    let mut config = target.config();
    config["stream_options"] = json!([
        {"stream": "users", "record_key": "primary_key"},
        {"namespace": "pk", "stream": "events", "record_key": "primary_key"},
        {"stream": "ghost", "record_key": "primary_key"},
    ]);
    let input = [
        record(
            ns,
            "users",
            r#"{"id":"a:b","org":{"id":7},"at":2,"v":1}"#,
            5,
        ),
        record(
            ns,
            "users",
            r#"{"id":"a:b","org":{"id":7},"at":1,"v":"older"}"#,
            5,
        ),
        record(ns, "users", r#"{"id":"x","org":{"id":1},"at":1}"#, 5),
        record(
            ns,
            "users",
            r#"{"id":"x","org":{"id":1},"at":3,"_ab_cdc_deleted_at":"t"}"#,
            5,
        ),
        record(ns, "events", r#"{"id":1,"n":1}"#, 5),
        record(
            ns,
            "events",
            r#"{"id":1,"n":2,"_ab_cdc_deleted_at":"t"}"#,
            5,
        ),
    ]
    .join("\n");
    let out = common::write_sync(&config, &cat, &input);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert!(
        out.logs().iter().any(|l| l.contains("ghost")),
        "{}",
        out.dump()
    );
    let users = target.counter_key(ns, "users");
    let key = format!("{users}:id:a%3Ab:org.id:7");
    let hash: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&key)
        .query(&mut target.conn_for(&key))
        .unwrap();
    assert_eq!(hash["_airbyte_ab_id"], "id:a%3Ab:org.id:7");
    assert_eq!(
        hash["_airbyte_data"],
        r#"{"id":"a:b","org":{"id":7},"at":2,"v":1}"#
    );
    assert_eq!(hash["_airbyte_cursor"], "n2");
    assert_eq!(hash["_airbyte_emitted_at"], "5");
    let s = stored_keyed(&target, ns, "users");
    assert_eq!(s.record_keys, 1);
    assert_eq!(s.records.get("id:x:org.id:1"), Some(&None), "deleted");
    let events = stored_keyed(&target, ns, "events");
    assert_eq!(events.record_keys, 1);
    assert!(
        data_of(&events, "id:1").unwrap().contains(r#""n":2"#),
        "the last write wins"
    );

    // Another tool's string where a record goes: refused whole, nothing of the batch written.
    let foreign = format!("{users}:id:q:org.id:1");
    target.cli_at(&foreign, &["SET", &foreign, "theirs"]);
    let input = [
        record(ns, "users", r#"{"id":"new","org":{"id":1}}"#, 5),
        record(ns, "users", r#"{"id":"q","org":{"id":1}}"#, 5),
    ]
    .join("\n");
    let out = common::write_sync(&config, &cat, &input);
    out.assert_failed_with("config_error", &foreign);
    assert_eq!(
        stored_keyed_count(&target, ns, "users"),
        2,
        "the string and the first record"
    );

    // In the Java layout stream "users:id" has record 5 at the key of users' id 5: it is another
    // stream's record, never overwritten.
    if !target.is_cluster() {
        let other = catalog(&[(ns, "users:id")]);
        let out = common::write_sync(
            &config,
            &other,
            &(0..5)
                .map(|_| record(ns, "users:id", "{}", 1))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        assert_eq!(out.code, Some(0), "{}", out.dump());
        let mut single = dedup_catalog(ns, "users", json!([["id"]]), json!([]));
        single["streams"][0]["stream"]["name"] = json!("users");
        let out = common::write_sync(&config, &single, &record(ns, "users", r#"{"id":5}"#, 1));
        out.assert_failed_with("config_error", &format!("{users}:id:5"));
        let kept = target.cli_at(
            &format!("{users}:id:5"),
            &["HGET", &format!("{users}:id:5"), "_airbyte_ab_id"],
        );
        assert_eq!(kept.trim(), "5", "the other stream's record is unchanged");
    }
}

/// Keys under the stream's prefix (records and anything else), over every master.
fn stored_keyed_count(target: &Target, ns: Option<&str>, stream: &str) -> usize {
    let counter = target.counter_key(ns, stream);
    target
        .keys(&format!(
            "{}:*",
            destination_redis::keys::escape_glob(&counter)
        ))
        .len()
}

/// A cursor whose JSON schema says `format: date-time` compares as the instant it names: a later
/// instant written with an earlier-sorting text wins, across two syncs.
#[test]
fn date_time_cursors_compare_as_instants_across_time_zones() {
    let target = Target::start();
    let ns = Some("t");
    let mut cat = dedup_catalog(ns, "s", json!([["id"]]), json!(["at"]));
    cat["streams"][0]["stream"]["json_schema"] =
        json!({"properties": {"at": {"type": ["null", "string"], "format": "date-time"}}});
    let first = record(
        ns,
        "s",
        r#"{"id":1,"at":"2024-05-01T11:30:00+02:00","v":"09:30Z"}"#,
        1,
    );
    let out = common::write_sync(&target.config(), &cat, &first);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    // "2024-05-01T10:00:00Z" sorts before "…11:30:00+02:00" as text, but is the later instant.
    let second = record(
        ns,
        "s",
        r#"{"id":1,"at":"2024-05-01T10:00:00Z","v":"10:00Z"}"#,
        1,
    ) + "\n"
        + &record(
            ns,
            "s",
            r#"{"id":1,"at":"2024-05-01T11:59:00+02:00","v":"09:59Z"}"#,
            1,
        );
    let out = common::write_sync(&target.config(), &cat, &second);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let s = stored(&target, ns, "s");
    assert!(
        data_of(&s, "[1]").unwrap().contains("10:00Z"),
        "{:?}",
        s.records
    );
}

/// A catalog of one `append_dedup` stream refreshed as generation `generation` (a truncate
/// refresh: `minimum_generation_id == generation_id`).
fn refresh_catalog(ns: Option<&str>, stream: &str, generation: i64) -> Value {
    let mut c = dedup_catalog(ns, stream, json!([["id"]]), json!(["at"]));
    c["streams"][0]["generation_id"] = json!(generation);
    c["streams"][0]["minimum_generation_id"] = json!(generation);
    c
}

/// Each key's data in a dedup stream (sequence layout), through its index; deleted keys left out.
fn live_data(target: &Target, ns: Option<&str>, stream: &str) -> BTreeMap<String, String> {
    stored(target, ns, stream)
        .records
        .into_iter()
        .filter_map(|(k, r)| r.map(|r| (k, r["_airbyte_data"].clone())))
        .collect()
}

fn v(id: u32, at: u32, tag: &str) -> String {
    format!(r#"{{"id":{id},"at":{at},"v":"{tag}"}}"#)
}

/// A truncate refresh of an `append_dedup` stream stages the new generation deduplicated (updates
/// and deletes within it applied), leaves the old records readable until the stream completes,
/// then publishes exactly the new generation: its records, its index, no old key, no staging.
#[test]
fn a_truncate_refresh_of_a_dedup_stream_publishes_the_new_generation_deduplicated() {
    let target = Target::start();
    let (ns, s) = (Some("r"), "s");
    let rec = |data: String| record(ns, s, &data, 1) + "\n";
    let old: String = (1..=5).map(|i| rec(v(i, 1, "old"))).collect();
    let out = common::write_sync(&target.config(), &refresh_catalog(ns, s, 0), &old);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let before = live_data(&target, ns, s);
    assert_eq!(before.len(), 5);

    // Generation 1, attempt A: stages, echoes a state, then ends without COMPLETE.
    let a = common::status(ns, s, "STARTED")
        + "\n"
        + &rec(v(3, 2, "new"))
        + &rec(v(4, 2, "new"))
        + &rec(v(6, 2, "new"))
        + &common::stream_state(ns, s, r#"{"after":"a"}"#)
        + "\n"
        + &rec(v(6, 3, "newer"))
        + &common::status(ns, s, "INCOMPLETE")
        + "\n";
    let out = common::write_sync(&target.config(), &refresh_catalog(ns, s, 1), &a);
    assert_eq!(out.code, Some(1), "{}", out.dump());
    assert_eq!(
        live_data(&target, ns, s),
        before,
        "the old records stay until COMPLETE"
    );

    // Attempt B resumes after the state: the staging is kept and what is resent is upserted over it.
    let b = rec(v(6, 3, "newer"))
        + &rec(v(4, 3, "").replace(r#""v":"""#, r#""_ab_cdc_deleted_at":"t""#))
        + &rec(v(7, 2, "new"))
        + &rec(v(3, 1, "older, ignored"))
        + &common::status(ns, s, "COMPLETE")
        + "\n";
    let out = common::write_sync(&target.config(), &refresh_catalog(ns, s, 1), &b);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let after = live_data(&target, ns, s);
    let want: BTreeMap<String, String> = [
        ("[3]", v(3, 2, "new")),
        ("[6]", v(6, 3, "newer")),
        ("[7]", v(7, 2, "new")),
    ]
    .into_iter()
    .map(|(k, d)| (k.to_string(), d))
    .collect();
    assert_eq!(after, want);
    let st = stored(&target, ns, s);
    assert_eq!(
        st.records.get("[4]"),
        Some(&None),
        "the delete is remembered"
    );
    assert_eq!(
        st.record_keys, 3,
        "no old record and no deleted one is left"
    );
    assert!(
        target
            .leftover_bookkeeping()
            .iter()
            .all(|k| k.contains(":index:")),
        "{:?}",
        target.leftover_bookkeeping()
    );

    // A retry of generation 1 after its publish (the platform resumes from an echoed state):
    // its records go into the published generation, nothing is lost.
    let c = rec(v(8, 1, "retry")) + &common::status(ns, s, "COMPLETE") + "\n";
    let out = common::write_sync(&target.config(), &refresh_catalog(ns, s, 1), &c);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let mut want = want;
    want.insert("[8]".into(), v(8, 1, "retry"));
    assert_eq!(live_data(&target, ns, s), want);
    assert!(
        out.logs()
            .iter()
            .any(|l| l.contains("upserted into it directly")),
        "{}",
        out.dump()
    );

    // Generation 2 replaces everything again.
    let d = rec(v(1, 9, "gen2")) + &common::status(ns, s, "COMPLETE") + "\n";
    let out = common::write_sync(&target.config(), &refresh_catalog(ns, s, 2), &d);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let only: BTreeMap<String, String> = [("[1]".to_string(), v(1, 9, "gen2"))].into();
    assert_eq!(live_data(&target, ns, s), only);
    assert_eq!(stored(&target, ns, s).record_keys, 1);
}

/// `overwrite` and truncate refreshes with `record_key: primary_key`: the new generation is
/// staged by key and published by SCAN (the stream's records without a staged counterpart go,
/// the staged ones move into place, the staged tombstones replace the stream's); an attempt
/// without COMPLETE leaves the old records; a new sync of the same published generation replaces
/// (its first record is not the published one), a refresh of an `append_dedup` stream merges.
#[test]
fn primary_key_streams_are_replaced_by_overwrite_and_refreshes() {
    let target = Target::start();
    let (ns, st) = (Some("po"), "s");
    let mut config = target.config();
    config["record_key"] = json!("primary_key");
    let rec = |data: &str| record(ns, st, data, 1) + "\n";
    let cat = |mode: &str, generation: i64| {
        let mut c = common::catalog_with(&[(ns, st)], mode, generation, generation);
        c["streams"][0]["primary_key"] = json!([["id"]]);
        c["streams"][0]["cursor_field"] = json!(["at"]);
        c
    };
    let held = || -> BTreeMap<String, Option<String>> {
        stored_keyed(&target, ns, st)
            .records
            .into_iter()
            .map(|(k, r)| (k, r.map(|r| r["_airbyte_data"].clone())))
            .collect()
    };
    let first = rec(r#"{"id":"a","at":1}"#)
        + &rec(r#"{"id":"b","at":1}"#)
        + &rec(r#"{"id":"d","at":1,"_ab_cdc_deleted_at":"t"}"#);
    let out = common::write_sync(&config, &cat("append_dedup", 0), &first);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(held().len(), 3, "{:?}", held());

    // An overwrite that does not complete leaves the old records.
    let partial = rec(r#"{"id":"z","at":1}"#) + &common::status(ns, st, "INCOMPLETE") + "\n";
    let out = common::write_sync(&config, &cat("overwrite", 1), &partial);
    assert_eq!(out.code, Some(1), "{}", out.dump());
    assert_eq!(held().len(), 3);
    // Overwrite, generation 1 (a new attempt that does not resume): the last write of a key wins.
    let second = rec(r#"{"id":"b","at":1,"v":1}"#)
        + &rec(r#"{"id":"e","at":1}"#)
        + &rec(r#"{"id":"b","at":0,"v":2}"#);
    let out = common::write_sync(&config, &cat("overwrite", 1), &second);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let want: BTreeMap<String, Option<String>> = [
        ("id:b", Some(r#"{"id":"b","at":0,"v":2}"#)),
        ("id:e", Some(r#"{"id":"e","at":1}"#)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.map(String::from)))
    .collect();
    assert_eq!(held(), want, "a, d's tombstone and the staged z are gone");
    assert!(
        target.keys("_airbyte_redis:staging:*").is_empty(),
        "{:?}",
        target.keys("*")
    );

    // The same generation again with other records: a new sync (PyAirbyte's replace), it replaces.
    let out = common::write_sync(&config, &cat("overwrite", 1), &rec(r#"{"id":"q","at":1}"#));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(held().keys().cloned().collect::<Vec<_>>(), ["id:q"]);

    // A truncate refresh of the append_dedup stream: deduplicated, deletes remembered.
    let third = rec(r#"{"id":"f","at":2}"#)
        + &rec(r#"{"id":"g","at":1}"#)
        + &rec(r#"{"id":"f","at":3,"_ab_cdc_deleted_at":"t"}"#);
    let out = common::write_sync(&config, &cat("append_dedup", 2), &third);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let want: BTreeMap<String, Option<String>> =
        [("id:f", None), ("id:g", Some(r#"{"id":"g","at":1}"#))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.map(String::from)))
            .collect();
    assert_eq!(held(), want);
    // Its generation again (PyAirbyte's merge, or the platform's retry): merged into it.
    let out = common::write_sync(
        &config,
        &cat("append_dedup", 2),
        &rec(r#"{"id":"h","at":1}"#),
    );
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(held().len(), 3, "{:?}", held());
}
