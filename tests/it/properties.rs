//! Property tests against a real server: for any interleaving of records over several streams, any
//! batch limits and any placement of states, every stream ends with ids 1..N in arrival order, every
//! record's data round-trips, and the states come back in order with the right counts. And two
//! writers appending to one stream at once end with ids 1..N1+N2, no gap, no duplicate.
//!
//! With `REDIS_TOPOLOGY=cluster` the same properties are proved against a 3-master cluster.

use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use serde_json::{json, Value};

use crate::common::{self, catalog, global_state, legacy_state, record, stream_state, Target};

const STREAMS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Record(usize),
    StreamState(usize),
    GlobalState,
    LegacyState,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..STREAMS).prop_map(Op::Record),
        1 => (0..STREAMS).prop_map(Op::StreamState),
        1 => Just(Op::GlobalState),
        1 => Just(Op::LegacyState),
    ]
}

fn runner(cases: u32, file: &'static str) -> TestRunner {
    let mut config = Config::with_cases(cases);
    config.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(file)));
    TestRunner::new(config)
}

#[test]
fn any_interleaving_gives_ids_in_order_and_exact_states() {
    let server = Target::start();
    let case = AtomicUsize::new(0);
    let strategy = (
        proptest::collection::vec(op(), 0..150),
        1usize..12,
        1usize..4,
        20usize..2000,
    );
    runner(24, "proptest-regressions/it-properties-interleaving.txt")
        .run(&strategy, |(ops, batch_size, in_flight, batch_bytes)| {
            let ns = format!("p{}", case.fetch_add(1, Ordering::SeqCst));
            let names: Vec<String> = (0..STREAMS).map(|i| format!("s{i}")).collect();
            let cat = catalog(
                &names
                    .iter()
                    .map(|n| (Some(ns.as_str()), n.as_str()))
                    .collect::<Vec<_>>(),
            );
            let mut config = server.config();
            config["batch_size"] = json!(batch_size);
            config["max_batches_in_flight"] = json!(in_flight);
            config["batch_bytes"] = json!(batch_bytes);

            let mut input = String::new();
            let mut sent: Vec<Vec<String>> = vec![Vec::new(); STREAMS];
            let mut expected_states: Vec<(Value, f64)> = Vec::new();
            let mut since_stream = [0u64; STREAMS];
            let mut since_global = 0u64;
            for (i, op) in ops.iter().enumerate() {
                let line = match op {
                    Op::Record(s) => {
                        let data =
                            format!(r#"{{"i":{i},"amount":{i}.10,"s":"{}"}}"#, "é".repeat(i % 4));
                        sent[*s].push(data.clone());
                        since_stream[*s] += 1;
                        since_global += 1;
                        record(Some(&ns), &names[*s], &data, 1_000 + i as i64)
                    }
                    Op::StreamState(s) => {
                        let l = stream_state(Some(&ns), &names[*s], &format!(r#"{{"at":{i}}}"#));
                        expected_states
                            .push((state_of(&l), std::mem::take(&mut since_stream[*s]) as f64));
                        l
                    }
                    Op::GlobalState => {
                        let l = global_state(&format!(r#"{{"at":{i}}}"#));
                        expected_states
                            .push((state_of(&l), std::mem::take(&mut since_global) as f64));
                        l
                    }
                    Op::LegacyState => {
                        let l = legacy_state(&format!(r#"{{"at":{i}}}"#));
                        expected_states
                            .push((state_of(&l), std::mem::take(&mut since_global) as f64));
                        l
                    }
                };
                input.push_str(&line);
                input.push('\n');
            }
            let out = common::write_sync(&config, &cat, &input);
            prop_assert_eq!(out.code, Some(0), "{}", out.dump());

            for s in 0..STREAMS {
                let (counter, records) = server.read_stream(Some(&ns), &names[s]);
                let expected_counter = if sent[s].is_empty() {
                    None
                } else {
                    Some(sent[s].len() as i64)
                };
                prop_assert_eq!(counter, expected_counter, "stream {}", s);
                prop_assert_eq!(records.len(), sent[s].len());
                for (i, (r, data)) in records.iter().zip(&sent[s]).enumerate() {
                    prop_assert_eq!(r.get("_airbyte_ab_id").cloned(), Some((i + 1).to_string()));
                    prop_assert_eq!(r.get("_airbyte_data"), Some(data));
                }
                prop_assert_eq!(
                    server.count_record_keys(Some(&ns), &names[s]),
                    sent[s].len()
                );
            }
            let echoed = out.states();
            prop_assert_eq!(echoed.len(), expected_states.len(), "{}", out.dump());
            for (got, (want, count)) in echoed.iter().zip(&expected_states) {
                let mut got = got["state"].clone();
                let stats = got
                    .as_object_mut()
                    .and_then(|o| o.remove("destinationStats"));
                prop_assert_eq!(stats, Some(json!({"recordCount": count})));
                prop_assert_eq!(&got, want);
            }
            Ok(())
        })
        .unwrap();
}

fn state_of(line: &str) -> Value {
    let v: Value = serde_json::from_str(line).expect("state line");
    v["state"].clone()
}

#[test]
fn two_concurrent_writers_share_one_gapless_sequence() {
    let server = Target::start();
    let case = AtomicUsize::new(0);
    let strategy = (1usize..400, 1usize..400, 1usize..50, 1usize..50);
    runner(8, "proptest-regressions/it-properties-concurrent.txt")
        .run(&strategy, |(n1, n2, b1, b2)| {
            let ns = format!("c{}", case.fetch_add(1, Ordering::SeqCst));
            let cat = catalog(&[(Some(ns.as_str()), "shared")]);
            let input = |writer: usize, n: usize| -> String {
                (0..n)
                    .map(|i| {
                        record(
                            Some(&ns),
                            "shared",
                            &format!(r#"{{"w":{writer},"i":{i}}}"#),
                            1,
                        ) + "\n"
                    })
                    .collect()
            };
            let (in1, in2) = (input(1, n1), input(2, n2));
            let mut c1 = server.config();
            c1["batch_size"] = json!(b1);
            let mut c2 = server.config();
            c2["batch_size"] = json!(b2);
            let (o1, o2) = std::thread::scope(|s| {
                let h1 = s.spawn(|| common::write_sync(&c1, &cat, &in1));
                let h2 = s.spawn(|| common::write_sync(&c2, &cat, &in2));
                (h1.join().expect("writer 1"), h2.join().expect("writer 2"))
            });
            prop_assert_eq!(o1.code, Some(0), "{}", o1.dump());
            prop_assert_eq!(o2.code, Some(0), "{}", o2.dump());
            let (counter, records) = server.read_stream(Some(&ns), "shared");
            prop_assert_eq!(counter, Some((n1 + n2) as i64));
            let mut next = [0i64; 3];
            for (id, r) in records.iter().enumerate() {
                prop_assert_eq!(
                    r.get("_airbyte_ab_id").cloned(),
                    Some((id + 1).to_string()),
                    "gap at {}",
                    id + 1
                );
                let data: Value = serde_json::from_str(&r["_airbyte_data"]).expect("data");
                let w = data["w"].as_u64().expect("w") as usize;
                prop_assert_eq!(
                    data["i"].as_i64(),
                    Some(next[w]),
                    "writer {}'s records out of order",
                    w
                );
                next[w] += 1;
            }
            prop_assert_eq!((next[1] as usize, next[2] as usize), (n1, n2));
            Ok(())
        })
        .unwrap();
}

#[derive(Debug, Clone)]
enum Ending {
    /// COMPLETE arrives and the input ends cleanly.
    Complete,
    /// A bad line after this many new records (the sync fails before COMPLETE).
    BadLineAfter(usize),
    /// The input ends with an INCOMPLETE status instead of COMPLETE.
    Incomplete,
}

#[test]
fn overwrite_ends_with_exactly_the_old_or_exactly_the_new_records() {
    let server = Target::start();
    let case = AtomicUsize::new(0);
    let ending = prop_oneof![
        2 => Just(Ending::Complete),
        1 => (0usize..60).prop_map(Ending::BadLineAfter),
        1 => Just(Ending::Incomplete),
    ];
    let strategy = (0usize..60, 0usize..60, 1usize..9, ending, 0usize..15);
    runner(24, "proptest-regressions/it-properties-overwrite.txt")
        .run(
            &strategy,
            |(n_old, n_new, batch_size, ending, state_every)| {
                let ns = format!("o{}", case.fetch_add(1, Ordering::SeqCst));
                let streams = [(Some(ns.as_str()), "s")];
                let old: Vec<String> = (0..n_old).map(|i| format!(r#"{{"old":{i}}}"#)).collect();
                let new: Vec<String> = (0..n_new).map(|i| format!(r#"{{"new":{i}}}"#)).collect();
                let lines = |data: &[String]| -> String {
                    data.iter()
                        .enumerate()
                        .map(|(i, d)| {
                            let mut l = record(Some(&ns), "s", d, 1) + "\n";
                            if state_every > 0 && i % state_every == state_every - 1 {
                                l += &(legacy_state(&i.to_string()) + "\n");
                            }
                            l
                        })
                        .collect()
                };
                let out = common::write_sync(&server.config(), &catalog(&streams), &lines(&old));
                prop_assert_eq!(out.code, Some(0), "{}", out.dump());

                let mut config = server.config();
                config["batch_size"] = json!(batch_size);
                let cat = common::catalog_with(&streams, "overwrite", 3, 3);
                let complete = common::status(Some(&ns), "s", "COMPLETE") + "\n";
                let input = match &ending {
                    Ending::Complete => lines(&new) + &complete,
                    Ending::BadLineAfter(k) => {
                        lines(&new[..(*k).min(n_new)]) + "{broken\n" + &complete
                    }
                    Ending::Incomplete => {
                        lines(&new) + &common::status(Some(&ns), "s", "INCOMPLETE") + "\n"
                    }
                };
                let out = common::write_sync(&config, &cat, &input);
                let (counter, records) = server.read_stream(Some(&ns), "s");
                let stored: Vec<String> = records
                    .iter()
                    .map(|r| r.get("_airbyte_data").cloned().unwrap_or_default())
                    .collect();
                let ids_ok = records
                    .iter()
                    .enumerate()
                    .all(|(i, r)| r.get("_airbyte_ab_id") == Some(&(i + 1).to_string()));
                prop_assert!(ids_ok, "ids are not 1..N");
                let (want, code) = match ending {
                    Ending::Complete => (&new, 0),
                    Ending::BadLineAfter(_) => (&old, 1),
                    Ending::Incomplete => (&old, 1),
                };
                prop_assert_eq!(out.code, Some(code), "{}", out.dump());
                prop_assert_eq!(&stored, want);
                prop_assert_eq!(counter.unwrap_or(0) as usize, want.len());
                prop_assert_eq!(server.count_record_keys(Some(&ns), "s"), want.len());

                // A rerun of the same generation from the start always ends with exactly the new records.
                let out = common::write_sync(&config, &cat, &(lines(&new) + &complete));
                prop_assert_eq!(out.code, Some(0), "{}", out.dump());
                let (counter, records) = server.read_stream(Some(&ns), "s");
                let stored: Vec<String> = records
                    .iter()
                    .map(|r| r.get("_airbyte_data").cloned().unwrap_or_default())
                    .collect();
                prop_assert_eq!(&stored, &new);
                prop_assert_eq!(counter.unwrap_or(0) as usize, n_new);
                let staging: Vec<String> = server
                    .leftover_bookkeeping()
                    .into_iter()
                    .filter(|k| k.contains(&ns))
                    .collect();
                prop_assert_eq!(
                    staging,
                    Vec::<String>::new(),
                    "bookkeeping left after success"
                );
                Ok(())
            },
        )
        .unwrap();
}
