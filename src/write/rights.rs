//! The rights probe that runs before any data moves: every command a batch of a stream runs, on
//! that stream's own keys, queued inside `MULTI` and thrown away with `DISCARD`.
//!
//! Redis checks ACL rights when a command is queued, so a refusal shows here and nothing executes,
//! on every server with ACLs (6.0+; older servers have none to refuse). This matters most before
//! Redis 7, where a script cannot ask about its rights first (`redis.acl_check_cmd`): a user allowed
//! the counter but not the records would otherwise advance the counter and then fail mid-batch.

use redis::{RedisError, Value};

use crate::classify::{classify, error_code, Context};
use crate::config::ValueFormat;
use crate::connect::nodes::Nodes;
use crate::error::Failure;

use super::batch::StreamCall;
use super::overwrite::OverwriteStream;
use crate::keys;

/// One command to queue: its name, its key (or first argument) and the rest of its arguments.
type Probe = (&'static str, String, Vec<String>);

/// Fails with a `config_error` naming the first command and key the user may not use. Each stream
/// is probed on the node that holds it.
pub fn check_rights(nodes: &mut Nodes, calls: &[StreamCall]) -> Result<(), Failure> {
    let probes = calls.iter().map(|call| {
        let counter = call.keys.counter.clone();
        let record = format!("{}1", call.keys.record_prefix);
        let token = call.token.clone();
        let marker = call.keys.format_marker();
        let one = || vec!["1".to_string()];
        let mut probes: Vec<Probe> = match call.format {
            ValueFormat::Stream => vec![
                ("TYPE", counter.clone(), vec![]),
                (
                    "XADD",
                    counter.clone(),
                    vec!["*".into(), "f".into(), "v".into()],
                ),
            ],
            format => vec![
                ("GET", counter.clone(), vec![]),
                ("INCRBY", counter.clone(), vec!["0".into()]),
                ("EXPIRE", counter.clone(), one()),
                ("EXISTS", record.clone(), vec![]),
                match format {
                    ValueFormat::String => ("SET", record.clone(), vec!["v".into()]),
                    _ => ("HSET", record.clone(), vec!["f".into(), "v".into()]),
                },
                ("EXPIRE", record.clone(), one()),
            ],
        };
        if call.format == ValueFormat::String {
            probes.push(("MSET", record.clone(), vec!["v".into()]));
        }
        if call.moments {
            probes.extend([
                ("PEXPIREAT", record.clone(), one()),
                ("PERSIST", record.clone(), vec![]),
            ]);
        }
        probes.extend([
            ("GET", token.clone(), vec![]),
            ("SET", token, vec!["1".into(), "EX".into(), "1".into()]),
            ("GET", marker.clone(), vec![]),
        ]);
        if call.format != ValueFormat::Hash {
            probes.push(("SET", marker, vec![call.format.name().into()]));
        }
        if let Some(index) = &call.index {
            probes.extend([
                ("DEL", record, vec![]),
                ("HMGET", index.clone(), vec!["f".into()]),
                ("HSET", index.clone(), vec!["f".into(), "v".into()]),
            ]);
        }
        (counter, probes)
    });
    probe_by_node(
        nodes,
        probes.collect(),
        "which every batch of its stream needs",
    )
}

/// The same for what preparing and publishing an overwrite stream needs (RENAME, UNLINK, SCAN, the
/// staging bookkeeping and the registry of publishes), so a user without them fails before any
/// data moves, not after the whole stream is staged.
pub fn check_publish_rights(
    nodes: &mut Nodes,
    streams: &[&OverwriteStream],
) -> Result<(), Failure> {
    if streams.is_empty() {
        return Ok(());
    }
    let probes = streams.iter().map(|s| {
        let live = s.live.record(1);
        let staged = format!("{}1", s.staging.record_prefix);
        let (marker, meta, marks) = (&s.staging.marker, &s.staging.meta, &s.staging.marks);
        let one = || vec!["1".to_string()];
        let probes: Vec<Probe> = vec![
            ("TYPE", live.clone(), vec![]),
            ("HEXISTS", live.clone(), vec!["_airbyte_data".into()]),
            ("RENAME", staged.clone(), vec![live.clone()]),
            ("PERSIST", live.clone(), vec![]),
            ("UNLINK", live, vec![]),
            ("UNLINK", staged, vec![]),
            ("HSET", marker.clone(), vec!["n".into(), "0".into()]),
            ("DEL", marker.clone(), vec![]),
            ("DEL", s.live.index(), vec![]),
            ("RENAME", s.staging.index(), vec![s.live.index()]),
            ("HGET", s.live.record(1), vec!["_airbyte_ab_id".into()]),
            (
                "EXPIRE",
                format!("{}1", s.staging.record_prefix),
                vec!["1".into()],
            ),
            ("RENAME", s.staging.tombstones(), vec![s.live.tombstones()]),
            ("DEL", s.live.tombstones(), vec![]),
            ("HSET", meta.clone(), vec!["high".into(), "0".into()]),
            ("EXPIRE", meta.clone(), one()),
            ("LRANGE", marks.clone(), vec!["0".into(), "-1".into()]),
            ("RPUSH", marks.clone(), one()),
            ("SET", s.live.counter.clone(), one()),
            ("SCAN", "0".into(), vec!["COUNT".into(), "1".into()]),
            ("GET", s.live.format_marker(), vec![]),
            ("SET", s.live.format_marker(), vec!["hash".into()]),
            ("DEL", s.live.format_marker(), vec![]),
            ("DEL", s.staging.format_marker(), vec![]),
            ("EXPIRE", s.staging.format_marker(), one()),
        ];
        let mut probes = probes;
        if s.moments {
            let moments = s.staging.moments();
            probes.extend([
                ("HSET", moments.clone(), vec!["f".into(), "v".into()]),
                ("HMGET", moments.clone(), vec!["f".into()]),
                ("EXPIRE", moments.clone(), one()),
                ("DEL", moments, vec![]),
                ("PEXPIREAT", s.live.record(1), one()),
            ]);
        }
        if s.format == ValueFormat::Stream {
            let staged = s.staging.counter.clone();
            probes.extend([
                ("XREVRANGE", staged.clone(), vec!["+".into(), "-".into()]),
                (
                    "XRANGE",
                    s.live.counter.clone(),
                    vec!["-".into(), "+".into()],
                ),
                ("XDEL", staged.clone(), vec!["0-1".into()]),
                ("XSETID", staged.clone(), vec!["0-1".into()]),
                ("EXPIRE", staged.clone(), one()),
                ("RENAME", staged, vec![s.live.counter.clone()]),
            ]);
        }
        (s.live.counter.clone(), probes)
    });
    probe_by_node(
        nodes,
        probes.collect(),
        "which publishing an overwrite stream needs",
    )?;
    let registry = keys::publish_registry();
    let probes: Vec<Probe> = vec![
        ("SADD", registry.clone(), vec!["probe".into()]),
        ("SREM", registry.clone(), vec!["probe".into()]),
        ("SMEMBERS", registry.clone(), vec![]),
    ];
    probe_by_node(
        nodes,
        vec![(registry, probes)],
        "which publishing an overwrite stream needs",
    )
}

/// Queues each stream's probes on the node that holds the stream (by the key given with them).
fn probe_by_node(
    nodes: &mut Nodes,
    streams: Vec<(String, Vec<Probe>)>,
    why: &str,
) -> Result<(), Failure> {
    let mut by_node: Vec<(String, Vec<Probe>)> = Vec::new();
    for (key, probes) in streams {
        let addr = nodes.addr_for(&key);
        match by_node.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, part)) => part.extend(probes),
            None => by_node.push((addr, probes)),
        }
    }
    for (addr, probes) in by_node {
        let link = nodes.link(&addr)?;
        let ctx = Context {
            during: "while checking the user's rights".into(),
            ..link.ctx.clone()
        };
        check_on(&mut link.con, &probes, why, &ctx)?;
    }
    Ok(())
}

fn check_on(
    con: &mut redis::Connection,
    probes: &[Probe],
    why: &str,
    ctx: &Context,
) -> Result<(), Failure> {
    // MULTI alone first: were the transaction refused, the commands below would run for real.
    match redis::cmd("MULTI").query::<()>(con) {
        Ok(()) => {}
        // A user without @transaction cannot be probed this way; the batch script still refuses
        // before writing on Redis 7+.
        Err(e) if error_code(&e) == "NOPERM" => return Ok(()),
        Err(e) => return Err(classify(&e, ctx)),
    }
    let mut pipe = redis::pipe();
    for (name, key, args) in probes {
        pipe.cmd(name).arg(key).arg(args);
    }
    pipe.cmd("DISCARD");
    let replies: Vec<Value> = pipe
        .ignore_errors()
        .query(con)
        .map_err(|e| classify(&e, ctx))?;
    for ((name, key, _), reply) in probes.iter().zip(replies) {
        if let Value::ServerError(e) = reply {
            let ctx = Context {
                during: format!("to run {name} on key {key:?}, {why}"),
                ..ctx.clone()
            };
            return Err(classify(&RedisError::from(e), &ctx));
        }
    }
    Ok(())
}
