//! Cluster mode against real clusters on loopback (`redis-server --cluster-enabled yes`, joined with
//! `redis-cli --cluster create`): streams spread over the masters, append and overwrite keep every
//! guarantee, `check` validates the topology, a live resharding of a stream's slot and a killed
//! master (its replica promoted) mid-sync lose and double nothing, and all of it works over TLS.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use destination_redis::connect::cluster::key_slot;
use serde_json::json;

use crate::common::{
    self, catalog, catalog_with, read_tagged, record, status, stream_state, tagged_counter,
    Cluster, Cut, Direction, FaultProxy, Interactive, Kind, Pki, RedisServer, TLS_CLUSTER_PASSWORD,
};

type Stream = (Option<&'static str>, &'static str);

/// Names that would collide in the Java layout or break a naive hash tag.
const STREAMS: [Stream; 6] = [
    (Some("public"), "users"),
    (Some("public"), "orders"),
    (None, "events"),
    (Some("a:b"), "c"),
    (Some("a"), "b:c"),
    (Some("x}"), "{y"),
];

/// `per` records of every stream, interleaved, a state of each stream after every 250 of its own.
fn records(streams: &[Stream], from: usize, to: usize, tag: &str) -> String {
    let mut s = String::new();
    for i in from..to {
        for (ns, name) in streams {
            s += &record(*ns, name, &format!(r#"{{"{tag}":{i}}}"#), 1_700_000_000_000);
            s.push('\n');
            if (i + 1) % 250 == 0 {
                s += &stream_state(*ns, name, &format!(r#"{{"at":{}}}"#, i + 1));
                s.push('\n');
            }
        }
    }
    s
}

/// The stream holds exactly `expected` (data in id order), ids 1..n.
fn assert_stream(cluster: &Cluster, (ns, name): Stream, expected: &[String]) {
    let (counter, recs) = read_tagged(cluster, ns, name);
    assert_eq!(counter, Some(expected.len() as i64), "{ns:?}.{name}");
    for (i, (r, data)) in recs.iter().zip(expected).enumerate() {
        assert_eq!(r["_airbyte_ab_id"], (i + 1).to_string(), "{ns:?}.{name}");
        assert_eq!(&r["_airbyte_data"], data, "{ns:?}.{name} record {}", i + 1);
        assert_eq!(r["_airbyte_emitted_at"], "1700000000000");
    }
    // Nothing above the counter.
    let key = format!("{}:{}", tagged_counter(ns, name), expected.len() + 1);
    let mut con = cluster.owner(&key).conn();
    let exists: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query(&mut con)
        .expect("EXISTS");
    assert!(!exists, "{key} exists");
}

fn data(tag: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!(r#"{{"{tag}":{i}}}"#)).collect()
}

/// Bookkeeping keys left on any master.
fn bookkeeping(cluster: &Cluster) -> Vec<String> {
    cluster
        .all_keys()
        .into_iter()
        .filter(|k| k.starts_with("_airbyte_redis"))
        .collect()
}

#[test]
fn streams_spread_over_the_masters_and_keep_every_guarantee() {
    let cluster = Cluster::start(3, 0);
    let config = cluster.config();
    let owners: BTreeSet<u16> = STREAMS
        .iter()
        .map(|(ns, name)| cluster.owner(&tagged_counter(*ns, name)).port())
        .collect();
    assert!(owners.len() >= 2, "the streams all hash to one master");

    // Append, twice: ids continue.
    let out = common::write_sync(
        &config,
        &catalog(&STREAMS),
        &records(&STREAMS, 0, 1_000, "a"),
    );
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(out.states().len(), 6 * 4);
    let out = common::write_sync(&config, &catalog(&STREAMS), &records(&STREAMS, 0, 500, "b"));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    for s in STREAMS {
        let mut expected = data("a", 0..1_000);
        expected.extend(data("b", 0..500));
        assert_stream(&cluster, s, &expected);
    }
    assert_eq!(bookkeeping(&cluster), Vec::<String>::new());

    // Overwrite: staged on each stream's master, published on COMPLETE; 300 replace 1,500.
    let mut input = records(&STREAMS, 0, 300, "o");
    for (ns, name) in STREAMS {
        input += &status(ns, name, "COMPLETE");
        input.push('\n');
    }
    let out = common::write_sync(&config, &catalog_with(&STREAMS, "overwrite", 0, 0), &input);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    for s in STREAMS {
        assert_stream(&cluster, s, &data("o", 0..300));
    }
    // What stays is each published generation's metadata and marks (kept a week, for a retry to
    // resume it).
    let left = bookkeeping(&cluster);
    assert_eq!(left.len(), 12, "{left:?}");
    assert!(
        left.iter()
            .all(|k| k.starts_with("_airbyte_redis:staging-meta:")
                || k.starts_with("_airbyte_redis:staging-marks:")),
        "{left:?}"
    );
    // Besides them, only the streams' own keys exist: counters and records 1..300.
    assert_eq!(cluster.all_keys().len(), 6 * 301 + 12);
}

#[test]
fn check_validates_the_cluster() {
    let mut cluster = Cluster::start(3, 0);
    let out = common::check(&cluster.config());
    let st = &out.statuses()[0]["connectionStatus"];
    assert_eq!(st["status"], "SUCCEEDED", "{}", out.dump());
    // The scripts are on every master (script caches are per node).
    let sha = destination_redis::scripts::APPEND_BATCH.sha.clone();
    for node in &cluster.nodes {
        assert_eq!(node.cli(&["SCRIPT", "EXISTS", &sha]).trim(), "1");
    }

    let mut db = cluster.config();
    db["db"] = json!(1);
    let out = common::check(&db);
    let st = &out.statuses()[0]["connectionStatus"];
    assert_eq!(st["status"], "FAILED");
    let msg = st["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("db") && msg.contains("only database 0"),
        "{st}"
    );

    let plain = RedisServer::start();
    let mut not_cluster = plain.config();
    not_cluster["topology"] = json!({"mode": "cluster"});
    let out = common::check(&not_cluster);
    let st = &out.statuses()[0]["connectionStatus"];
    assert_eq!(st["status"], "FAILED");
    assert!(
        st["message"]
            .as_str()
            .unwrap_or("")
            .contains("not a cluster node"),
        "{st}"
    );

    // A master down (no replica to take over): the cluster's state turns fail.
    cluster.nodes[2].kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cluster.nodes[0]
        .cli(&["CLUSTER", "INFO"])
        .contains("cluster_state:fail")
    {
        assert!(Instant::now() < deadline, "the cluster did not notice");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = common::check(&cluster.config());
    let st = &out.statuses()[0]["connectionStatus"];
    assert_eq!(st["status"], "FAILED", "{}", out.dump());
    let msg = st["message"].as_str().unwrap_or("");
    assert!(msg.contains("No node of the cluster"), "{msg}");
    assert!(msg.contains("state is \"fail\""), "{msg}");
}

/// A stream name whose slot is the first slot the master at `nodes[index]` owns (so that
/// `redis-cli --cluster reshard --cluster-slots 1` from that master moves exactly it).
fn stream_on_first_slot_of(cluster: &Cluster, index: usize) -> String {
    let port = cluster.nodes[index].port();
    let first = (0..16384u16)
        .find(|s| cluster.slot_map().owner(*s).map(|n| n.port) == Some(port))
        .expect("the master owns slots");
    (0..1_000_000)
        .map(|i| format!("s{i}"))
        .find(|name| key_slot(tagged_counter(Some("n"), name).as_bytes()) == first)
        .expect("a name for the slot")
}

/// `redis-cli --cluster reshard` moves the slot of a stream to another master while the sync
/// writes to it: MOVED, ASK and TRYAGAIN are followed, and every record lands exactly once.
#[test]
fn a_live_reshard_of_a_streams_slot_loses_and_doubles_nothing() {
    live_reshard(&Cluster::start(3, 0));
}

/// A cluster that talks TLS (clients and bus) and requires a password, as managed services with
/// in-transit encryption run it: `check` verifies every master's certificate, and a sync with a
/// live reshard follows MOVED to the new owner's TLS port (Redis names TLS ports to TLS clients).
#[test]
fn a_tls_cluster_is_checked_and_written_through_a_live_reshard() {
    let pki = Pki::new(&["127.0.0.1"]);
    let cluster = Cluster::start_tls(3, &pki);
    let checked = common::check(&cluster.config());
    checked.assert_check_succeeded();
    // The same cluster's plain ports do not speak TLS: the destination really uses the TLS ports.
    let mut plain = cluster.config();
    plain["port"] = json!(cluster.nodes[0].port());
    plain["topology"]["nodes"] = json!("");
    plain["connect_timeout_ms"] = json!(1_000);
    let out = common::check(&plain);
    let status = &out.statuses()[0]["connectionStatus"];
    assert_eq!(status["status"], "FAILED", "{}", out.dump());
    assert!(
        status["message"].as_str().unwrap_or("").contains("TLS"),
        "{}",
        out.dump()
    );
    // Every node requires the password: without it, `check` says so.
    let mut no_password = cluster.config();
    no_password["password"] = json!(null);
    let refused = common::check(&no_password);
    let status = &refused.statuses()[0]["connectionStatus"];
    assert_eq!(status["status"], "FAILED", "{}", refused.dump());
    assert!(
        status["message"]
            .as_str()
            .unwrap_or("")
            .contains("password"),
        "{}",
        refused.dump()
    );
    let written = live_reshard(&cluster);
    for run in [&checked, &out, &written] {
        assert!(
            !run.stdout.contains(TLS_CLUSTER_PASSWORD)
                && !run.stderr.contains(TLS_CLUSTER_PASSWORD),
            "the password leaked:\n{}",
            run.dump()
        );
    }
}

/// A sync of two streams while `redis-cli --cluster reshard` moves the first one's slot from
/// master 1 to master 2; asserts the MOVED note and that every record landed exactly once.
fn live_reshard(cluster: &Cluster) -> common::RunOutput {
    let name = stream_on_first_slot_of(cluster, 1);
    let name: &'static str = Box::leak(name.into_boxed_str());
    let streams: [Stream; 2] = [(Some("n"), name), (Some("n"), "other")];
    let key = tagged_counter(Some("n"), name);
    let from = Cluster::node_id(&cluster.nodes[1]);
    let to = Cluster::node_id(&cluster.nodes[2]);
    assert_eq!(cluster.owner_index(&key), 1);

    let mut config = cluster.config();
    config["retry_budget_ms"] = json!(30_000);
    let mut sync = Interactive::start(&config, &catalog(&streams));
    sync.send(&records(&streams, 0, 6_000, "r"));
    sync.wait_for_states(40, Duration::from_secs(30));
    let (mut cli, entry) = cluster.cli_command(0);
    let mut reshard = cli
        .args(["--cluster", "reshard", &entry])
        .args([
            "--cluster-from",
            &from,
            "--cluster-to",
            &to,
            "--cluster-slots",
            "1",
        ])
        .args(["--cluster-yes", "--cluster-pipeline", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-cli --cluster reshard");
    // Keep writing while the slot migrates (bounded).
    let mut next = 6_000;
    let deadline = Instant::now() + Duration::from_secs(60);
    let finished = loop {
        if let Some(st) = reshard.try_wait().expect("reshard") {
            break st;
        }
        assert!(Instant::now() < deadline, "the reshard did not finish");
        sync.send(&records(&streams, next, next + 250, "r"));
        next += 250;
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(finished.success(), "redis-cli --cluster reshard failed");
    sync.send(&records(&streams, next, next + 1_000, "r"));
    next += 1_000;
    let out = sync.finish();
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(out.states().len(), 2 * next / 250, "{}", out.dump());
    cluster.wait_until_ok(Duration::from_secs(10));
    assert_eq!(cluster.owner_index(&key), 2, "the slot moved");
    // The writer met the move (it had the old map): it followed a MOVED to the new owner.
    let moved = format!(
        "{key}\\\" has moved to cluster node 127.0.0.1:{}",
        cluster.client_port(2)
    );
    assert!(out.stdout.contains(&moved), "{}", out.dump());
    for s in streams {
        assert_stream(cluster, s, &data("r", 0..next));
    }
    out
}

/// A slot migrated by hand, step by step, under a running sync: while the stream's counter and
/// token are on the importing node the old owner answers ASK and the batch runs there after
/// ASKING; once the slot is assigned, MOVED. Every record lands exactly once, all on the new owner.
#[test]
fn ask_and_moved_during_a_manual_migration_are_followed() {
    manual_migration("hash");
}

/// The same in the `string` format, whose batches write with MSET: on the importing node (after
/// ASKING) a command over many keys of the slot answers TRYAGAIN, so the script writes key by key
/// there, and every record still lands exactly once. The stream's format marker is left behind
/// when the counter and the token move: the importing node waits for it (TRYAGAIN) rather than
/// take the stream for one without a marker.
#[test]
fn a_manual_migration_under_string_records_writes_each_once() {
    manual_migration("string");
}

fn manual_migration(format: &str) {
    let cluster = Cluster::start(3, 0);
    let streams: [Stream; 1] = [(Some("n"), "m")];
    let key = tagged_counter(Some("n"), "m");
    let slot = key_slot(key.as_bytes()).to_string();
    let src = cluster.owner_index(&key);
    let dst = (src + 1) % 3;
    let (src_id, dst_id) = (
        Cluster::node_id(&cluster.nodes[src]),
        Cluster::node_id(&cluster.nodes[dst]),
    );
    let (source, target) = (&cluster.nodes[src], &cluster.nodes[dst]);
    let dst_port = target.port().to_string();
    let keys_in_slot = |node: &RedisServer| -> Vec<String> {
        node.cli(&["CLUSTER", "GETKEYSINSLOT", &slot, "1000"])
            .lines()
            .map(str::to_string)
            .filter(|k| !k.is_empty())
            .collect()
    };
    let migrate = |keys: &[String]| {
        let mut args = vec!["MIGRATE", "127.0.0.1", &dst_port, "", "0", "5000", "KEYS"];
        args.extend(keys.iter().map(String::as_str));
        assert_eq!(source.cli(&args).trim(), "OK");
    };

    let mut config = cluster.config();
    config["value_format"] = json!(format);
    let mut sync = Interactive::start(&config, &catalog(&streams));
    sync.send(&records(&streams, 0, 1_000, "x"));
    sync.wait_for_states(4, Duration::from_secs(30));
    // The slot starts migrating; the counter and this run's token go first.
    target.cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src_id]);
    source.cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst_id]);
    let mut first: Vec<String> = source
        .cli(&["CLUSTER", "GETKEYSINSLOT", &slot, "100000"])
        .lines()
        .filter(|k| k.starts_with("_airbyte_redis:token:"))
        .map(str::to_string)
        .collect();
    first.push(key.clone());
    assert_eq!(first.len(), 2, "{first:?}");
    migrate(&first);
    sync.send(&records(&streams, 1_000, 2_000, "x"));
    if format == "hash" {
        sync.wait_for_states(8, Duration::from_secs(30));
    } else {
        // The batches wait for the marker, which moves with the rest of the slot.
        std::thread::sleep(Duration::from_millis(500));
    }
    // The rest of the slot moves, and the slot is assigned to the new owner everywhere.
    for _ in 0..100 {
        let keys = keys_in_slot(source);
        if keys.is_empty() {
            break;
        }
        migrate(&keys);
    }
    assert!(keys_in_slot(source).is_empty());
    for node in &cluster.nodes {
        node.cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id]);
    }
    sync.send(&records(&streams, 2_000, 3_000, "x"));
    let out = sync.finish();
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(out.states().len(), 12, "{}", out.dump());
    // (With the marker left behind, the old owner holds a part of the batch's keys: it answers
    // TRYAGAIN, not ASK, until the marker moves too.)
    let kinds: &[&str] = match format {
        "hash" => &["is migrating to", "has moved to"],
        _ => &["has moved to"],
    };
    for kind in kinds {
        let note = format!("{key}\\\" {kind} cluster node 127.0.0.1:{dst_port}");
        assert!(out.stdout.contains(&note), "{kind}: {}", out.dump());
    }
    cluster.wait_until_ok(Duration::from_secs(10));
    assert_eq!(cluster.owner_index(&key), dst);
    if format == "hash" {
        assert_stream(&cluster, streams[0], &data("x", 0..3_000));
        return;
    }
    let mut con = target.conn();
    let counter: u64 = redis::cmd("GET").arg(&key).query(&mut con).expect("GET");
    assert_eq!(counter, 3_000);
    let keys: Vec<String> = (1..=3_001).map(|id| format!("{key}:{id}")).collect();
    let values: Vec<Option<String>> = keys
        .iter()
        .map(|k| redis::cmd("GET").arg(k).query(&mut con).expect("GET"))
        .collect();
    let want: Vec<Option<String>> = data("x", 0..3_000)
        .into_iter()
        .map(Some)
        .chain([None])
        .collect();
    assert_eq!(
        values, want,
        "every record once, in order, nothing above the counter"
    );
}

/// Script caches are per node: after SCRIPT FLUSH on every master mid-sync, each master's NOSCRIPT
/// reloads the scripts there and the refused batches go again, exactly once.
#[test]
fn script_flush_on_every_master_mid_sync_loses_and_repeats_nothing() {
    let cluster = Cluster::start(3, 0);
    let mut sync = Interactive::start(&cluster.config(), &catalog(&STREAMS));
    sync.send(&records(&STREAMS, 0, 500, "f"));
    sync.wait_for_states(12, Duration::from_secs(30));
    for node in &cluster.nodes {
        assert_eq!(node.cli(&["SCRIPT", "FLUSH"]).trim(), "OK");
    }
    sync.send(&records(&STREAMS, 500, 1_000, "f"));
    let out = sync.finish();
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(out.states().len(), 6 * 4, "{}", out.dump());
    for s in STREAMS {
        assert_stream(&cluster, s, &data("f", 0..1_000));
    }
    // Reloaded on every master that holds a stream (and only there were batches refused).
    let sha = destination_redis::scripts::APPEND_BATCH.sha.clone();
    for (ns, name) in STREAMS {
        let owner = cluster.owner(&tagged_counter(ns, name));
        assert_eq!(
            owner.cli(&["SCRIPT", "EXISTS", &sha]).trim(),
            "1",
            "reloaded"
        );
    }
}

/// Makes every master announce `ports[i]` (a proxy in front of it) instead of its own port, and
/// waits until every node's slot map shows them (the cluster bus keeps its real port).
fn announce(cluster: &Cluster, ports: &[u16]) {
    for (node, port) in cluster.nodes.iter().zip(ports) {
        let bus = (node.port() + 10000).to_string();
        node.cli(&["CONFIG", "SET", "cluster-announce-bus-port", &bus]);
        node.cli(&["CONFIG", "SET", "cluster-announce-port", &port.to_string()]);
    }
    let want: BTreeSet<u16> = ports
        .iter()
        .zip(&cluster.nodes)
        .map(|(p, n)| if *p == 0 { n.port() } else { *p })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in &cluster.nodes {
        loop {
            let slots = node.cli(&["CLUSTER", "SLOTS"]);
            if want
                .iter()
                .all(|p| slots.lines().any(|l| l.trim() == p.to_string()))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the announced ports did not spread"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Connections to the masters are cut (FIN) at chosen byte offsets, requests and replies, on every
/// master in turn, while six streams are written across them: the writer reconnects, resends, and
/// every record lands exactly once, with every state echoed once.
#[test]
fn dropped_connections_to_any_master_lose_and_double_nothing() {
    let cluster = Cluster::start(3, 0);
    for (case, seed) in [(0usize, 7u64), (1, 1_234), (2, 99_991)].into_iter() {
        let ns: &'static str = Box::leak(format!("d{case}").into_boxed_str());
        let streams: Vec<Stream> = ["a", "b", "c", "d", "e", "f"]
            .into_iter()
            .map(|name| (Some(ns), name))
            .collect();
        let input = records(&streams, 0, 1_500, "d");
        // A deterministic spread of cut points over the first connections of each proxy.
        let mut x = seed;
        let mut next = |bound: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % bound.max(1)
        };
        let proxies: Vec<FaultProxy> = cluster
            .nodes
            .iter()
            .map(|node| {
                let cuts: Vec<Cut> = (0..3)
                    .map(|i| {
                        let up = i != 1;
                        Cut {
                            kind: Kind::Drop,
                            direction: if up { Direction::Up } else { Direction::Down },
                            after: if up {
                                next(input.len() as u64 / 8)
                            } else {
                                next(200)
                            },
                        }
                    })
                    .collect();
                FaultProxy::start(node.port(), cuts)
            })
            .collect();
        let ports: Vec<u16> = proxies.iter().map(FaultProxy::port).collect();
        announce(&cluster, &ports);
        let mut config = cluster.config();
        config["port"] = json!(ports[0]);
        config["topology"]["nodes"] = json!(ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(","));
        config["batch_size"] = json!(97);
        config["retry_budget_ms"] = json!(20_000);
        let out = common::write_sync(&config, &catalog(&streams), &input);
        let cuts: u64 = proxies.iter().map(FaultProxy::cuts).sum();
        announce(&cluster, &[0, 0, 0]);
        assert_eq!(out.code, Some(0), "case {case}: {}", out.dump());
        assert_eq!(out.states().len(), 6 * 6, "case {case}: {}", out.dump());
        assert!(cuts >= 2, "case {case}: only {cuts} cuts happened");
        for s in &streams {
            assert_stream(&cluster, *s, &data("d", 0..1_500));
        }
    }
}

/// Durable checkpoints on a 3 + 3 cluster: the master of a stream is killed mid-sync, its replica
/// is promoted, and the sync finishes with every record exactly once on the new master.
#[test]
fn a_killed_master_is_replaced_by_its_replica_and_the_sync_finishes() {
    let mut cluster = Cluster::start(3, 1);
    let streams: [Stream; 3] = [(Some("n"), "a"), (Some("n"), "b"), (Some("n"), "c")];
    let key = tagged_counter(Some("n"), "a");
    let mut config = cluster.config();
    config["wait_replicas"] = json!(1);
    config["wait_timeout_ms"] = json!(2_000);
    config["retry_budget_ms"] = json!(30_000);
    let mut sync = Interactive::start(&config, &catalog(&streams));
    sync.send(&records(&streams, 0, 1_000, "k"));
    sync.wait_for_states(6, Duration::from_secs(30));
    let victim = cluster.owner_index(&key);
    cluster.nodes[victim].kill();
    sync.send(&records(&streams, 1_000, 2_000, "k"));
    // The replica takes over after the node timeout.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let map = cluster.slot_map();
        let owner = map.owner(key_slot(key.as_bytes())).map(|n| n.port);
        if owner.is_some() && owner != Some(cluster.nodes[victim].port()) {
            break;
        }
        assert!(Instant::now() < deadline, "no replica was promoted");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every record behind every state echoed so far is on the new master already.
    let echoed = sync.wait_for_states(6, Duration::from_secs(1)).len();
    let (counter, _) = read_tagged(&cluster, Some("n"), "a");
    assert!(
        counter.unwrap_or(0) >= (echoed / 3 * 250) as i64,
        "{counter:?}, {echoed} states"
    );
    // The old master returns as a replica of the new one, so WAIT can be satisfied again.
    cluster.nodes[victim].restart();
    cluster.wait_until_ok(Duration::from_secs(30));
    cluster.wait_for_replicas(1, Duration::from_secs(30));
    sync.send(&records(&streams, 2_000, 3_000, "k"));
    let out = sync.finish();
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(out.states().len(), 3 * 12, "{}", out.dump());
    assert!(out.stdout.contains("Reconnected"), "{}", out.dump());
    assert_ne!(cluster.owner_index(&key), victim);
    for s in streams {
        assert_stream(&cluster, s, &data("k", 0..3_000));
    }
}

/// Too few replicas for `wait_replicas` on masters that stay the same fail the sync after one
/// `wait_timeout_ms`, not after the whole retry budget.
#[test]
fn too_few_replicas_on_unchanged_masters_fail_after_one_wait() {
    let cluster = Cluster::start(3, 0);
    let streams: [Stream; 2] = [(Some("n"), "a"), (Some("n"), "b")];
    let mut config = cluster.config();
    config["wait_replicas"] = json!(1);
    config["wait_timeout_ms"] = json!(1_000);
    config["retry_budget_ms"] = json!(60_000);
    let started = Instant::now();
    let out = common::write_sync(&config, &catalog(&streams), &records(&streams, 0, 300, "k"));
    let took = started.elapsed();
    out.assert_failed_with("transient_error", "Only 0 of 1 replicas");
    assert_eq!(out.states().len(), 0, "{}", out.dump());
    assert!(took < Duration::from_secs(15), "took {took:?}");
}
