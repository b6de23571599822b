//! Sentinel mode against a real setup (1 master, 1 replica, 3 sentinels on loopback): the writer
//! finds the master through the sentinels, follows a failover mid-sync (`SENTINEL FAILOVER`, and a
//! killed master), and with durable checkpoints finishes with every record exactly once.

use std::time::Duration;

use serde_json::json;

use crate::common::{
    self, catalog, read_stream, record, stream_state, Interactive, RedisServer, SentinelSet,
};

fn chunk(from: usize, to: usize) -> String {
    let mut s = String::new();
    for i in from..to {
        s += &record(None, "s", &format!(r#"{{"i":{i}}}"#), 1);
        s.push('\n');
        if (i + 1) % 500 == 0 {
            s += &stream_state(None, "s", &format!(r#"{{"at":{}}}"#, i + 1));
            s.push('\n');
        }
    }
    s
}

/// Every record exactly once, ids 1..n in order, on the server the sentinels name now.
fn assert_all_on_the_master(set: &SentinelSet, n: usize) {
    let (counter, records) = read_stream(&mut set.master().conn(), None, "s");
    assert_eq!(counter, Some(n as i64));
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["_airbyte_ab_id"], (i + 1).to_string());
        assert_eq!(
            r["_airbyte_data"],
            format!(r#"{{"i":{i}}}"#),
            "record {}",
            i + 1
        );
    }
}

#[test]
fn sentinel_mode_writes_to_the_master_the_sentinels_name() {
    let set = SentinelSet::start();
    let config = set.config();
    let out = common::check(&config);
    let status = &out.statuses()[0]["connectionStatus"];
    assert_eq!(status["status"], "SUCCEEDED", "{}", out.dump());
    let out = common::write_sync(&config, &catalog(&[(None, "s")]), &chunk(0, 3_000));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(out.states().len(), 6);
    assert_all_on_the_master(&set, 3_000);
}

#[test]
fn check_names_what_is_wrong_with_the_sentinels() {
    let set = SentinelSet::start();
    let mut wrong_name = set.config();
    wrong_name["topology"]["master_name"] = json!("no-such-master");
    let out = common::check(&wrong_name);
    let status = &out.statuses()[0]["connectionStatus"];
    assert_eq!(status["status"], "FAILED", "{}", out.dump());
    let msg = status["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("no-such-master") && msg.contains("topology.master_name"),
        "{msg}"
    );

    let nobody = format!(
        "127.0.0.1:{},127.0.0.1:{}",
        common::free_port(),
        common::free_port()
    );
    let mut unreachable = set.config();
    unreachable["topology"]["sentinels"] = json!(nobody);
    unreachable["retry_budget_ms"] = json!(500);
    let out = common::check(&unreachable);
    let status = &out.statuses()[0]["connectionStatus"];
    assert_eq!(status["status"], "FAILED", "{}", out.dump());
    let msg = status["message"].as_str().unwrap_or("");
    assert!(msg.contains("None of the sentinels"), "{msg}");

    let out = common::write_sync(&unreachable, &catalog(&[(None, "s")]), "");
    assert_eq!(out.code, Some(1), "{}", out.dump());
    let err = &out.traces()[0]["trace"]["error"];
    assert_eq!(err["failure_type"], "transient_error", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or("")
            .contains("None of the sentinels"),
        "{err}"
    );
}

/// A sentinel that missed the latest failover (here: one that monitors an empty server under
/// the same name, at config epoch 0) is asked first; it names a server that answers as a master.
/// The writer asks every sentinel and follows the highest epoch: the records go to the real
/// master, none to the stray server.
#[test]
fn a_sentinel_that_missed_the_latest_failover_is_outvoted() {
    let mut set = SentinelSet::start();
    let old = set.master_port();
    set.sentinel_cli(0, &["SENTINEL", "FAILOVER", common::MASTER_NAME]);
    let new = set.wait_for_new_master(old, Duration::from_secs(30));
    let stray_server = RedisServer::start();
    let stray = set.start_stray_sentinel(stray_server.port());
    let named = common::sentinel_named_port(stray);
    assert_eq!(
        named,
        stray_server.port(),
        "the stray sentinel names the stray server"
    );
    let mut config = set.config();
    config["topology"]["sentinels"] = json!(format!("127.0.0.1:{stray},{}", set.addresses()));
    let out = common::write_sync(&config, &catalog(&[(None, "s")]), &chunk(0, 1_000));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(out.states().len(), 2, "{}", out.dump());
    assert_eq!(set.master_port(), new);
    assert_all_on_the_master(&set, 1_000);
    assert_eq!(
        stray_server.cli(&["DBSIZE"]).trim(),
        "0",
        "nothing on the stray server"
    );
    let checked = common::check(&config);
    checked.assert_check_succeeded();
}

/// A coordinated failover while records keep coming: the old master's clients are cut, the
/// writer asks the sentinels again, resends what the new master may lack, and finishes.
#[test]
fn a_sentinel_failover_mid_sync_loses_and_doubles_nothing() {
    let set = SentinelSet::start();
    let mut config = set.config();
    config["wait_replicas"] = json!(1);
    config["wait_timeout_ms"] = json!(1000);
    let mut sync = Interactive::start(&config, &catalog(&[(None, "s")]));
    sync.send(&chunk(0, 2_000));
    sync.wait_for_states(4, Duration::from_secs(30));
    let old = set.master_port();
    set.sentinel_cli(0, &["SENTINEL", "FAILOVER", common::MASTER_NAME]);
    for k in 0..8 {
        sync.send(&chunk(2_000 + k * 1_000, 3_000 + k * 1_000));
    }
    let new = set.wait_for_new_master(old, Duration::from_secs(30));
    sync.send(&chunk(10_000, 12_000));
    let out = sync.finish();
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(out.states().len(), 24, "{}", out.dump());
    assert!(out.stdout.contains("Reconnected"), "{}", out.dump());
    assert_ne!(new, old);
    assert_all_on_the_master(&set, 12_000);
}

/// Durable checkpoints: the master is killed mid-sync, the sentinels promote the replica, the old
/// master comes back empty and is made a replica of the new one; the sync finishes, and nothing
/// behind any echoed state (nor anything else) is lost or doubled.
#[test]
fn a_killed_master_is_replaced_and_the_sync_finishes_with_every_record() {
    let mut set = SentinelSet::start();
    let mut config = set.config();
    config["wait_replicas"] = json!(1);
    config["wait_timeout_ms"] = json!(1000);
    let mut sync = Interactive::start(&config, &catalog(&[(None, "s")]));
    sync.send(&chunk(0, 3_000));
    sync.wait_for_states(6, Duration::from_secs(30));
    let old = set.master_port();
    set.server_mut(old).kill();
    sync.send(&chunk(3_000, 5_000));
    let new = set.wait_for_new_master(old, Duration::from_secs(60));
    // Every record behind every state echoed so far is on the new master already.
    let echoed = sync.wait_for_states(6, Duration::from_secs(1)).len();
    let (counter, _) = read_stream(&mut set.master().conn(), None, "s");
    assert!(
        counter.unwrap_or(0) >= (echoed * 500) as i64,
        "{counter:?} < {echoed} states"
    );
    // The old master returns (empty: no persistence) and the sentinels make it a replica.
    set.server_mut(old).restart();
    sync.send(&chunk(5_000, 8_000));
    let out = sync.finish();
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(out.states().len(), 16, "{}", out.dump());
    assert!(out.stdout.contains("Reconnected"), "{}", out.dump());
    assert_ne!(new, old);
    assert_all_on_the_master(&set, 8_000);
}

/// Too few replicas for `wait_replicas` on a master that stays the same is not a failover: the
/// sync fails after one `wait_timeout_ms` (and one look at the sentinels), not after the whole
/// retry budget.
#[test]
fn too_few_replicas_on_an_unchanged_master_fail_after_one_wait() {
    let set = SentinelSet::start();
    let mut config = set.config();
    config["wait_replicas"] = json!(2);
    // Long enough for the one replica to acknowledge on a loaded machine.
    config["wait_timeout_ms"] = json!(3_000);
    config["retry_budget_ms"] = json!(60_000);
    let started = std::time::Instant::now();
    let out = common::write_sync(&config, &catalog(&[(None, "s")]), &chunk(0, 500));
    let took = started.elapsed();
    out.assert_failed_with("transient_error", "Only 1 of 2 replicas");
    assert_eq!(out.states().len(), 0, "{}", out.dump());
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

/// A sentinel user allowed nothing but `SENTINEL GET-MASTER-ADDR-BY-NAME` (no `SENTINEL MASTER`,
/// so no epoch and no flags): the writer finds the master by address when the sentinels agree,
/// and writes nowhere when they name different servers.
#[test]
fn a_sentinel_user_limited_to_get_master_addr_by_name_still_finds_the_master() {
    let mut set = SentinelSet::start();
    let limit = |port: u16| {
        let reply = common::cli_at(
            port,
            &[
                "ACL",
                "SETUSER",
                "lim",
                "on",
                ">lim-pw-5151",
                "-@all",
                "+sentinel|get-master-addr-by-name",
            ],
        );
        assert_eq!(reply.trim(), "OK", "{reply}");
    };
    for address in set.addresses().split(',') {
        limit(address.rsplit(':').next().unwrap().parse().unwrap());
    }
    let mut config = set.config();
    config["topology"]["sentinel_username"] = json!("lim");
    config["topology"]["sentinel_password"] = json!("lim-pw-5151");
    common::check(&config).assert_check_succeeded();
    let out = common::write_sync(&config, &catalog(&[(None, "s")]), &chunk(0, 1_000));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_all_on_the_master(&set, 1_000);

    let stray_server = RedisServer::start();
    let stray = set.start_stray_sentinel(stray_server.port());
    limit(stray);
    config["topology"]["sentinels"] = json!(format!("127.0.0.1:{stray},{}", set.addresses()));
    config["retry_budget_ms"] = json!(1_500);
    let out = common::write_sync(&config, &catalog(&[(None, "s")]), &chunk(1_000, 1_500));
    out.assert_failed_with("transient_error", "disagree");
    assert_eq!(
        stray_server.cli(&["DBSIZE"]).trim(),
        "0",
        "nothing on the stray server"
    );
    assert_all_on_the_master(&set, 1_000);
}
