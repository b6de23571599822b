//! The rights probe that runs before any data moves: every command a batch of a stream runs, on
//! that stream's own keys, queued inside `MULTI` and thrown away with `DISCARD`.
//!
//! Redis checks ACL rights when a command is queued, so a refusal shows here and nothing executes,
//! on every server with ACLs (6.0+; older servers have none to refuse). This matters most before
//! Redis 7, where a script cannot ask about its rights first (`redis.acl_check_cmd`): a user allowed
//! the counter but not the records would otherwise advance the counter and then fail mid-batch.

use redis::{RedisError, Value};

use crate::connect::nodes::Nodes;
use crate::connect::{classify, classify::error_code, Context};
use crate::error::Failure;

use super::batch::StreamCall;

/// Fails with a `config_error` naming the first command and key the user may not use. Each stream
/// is probed on the node that holds it.
pub fn check_rights(nodes: &mut Nodes, calls: &[StreamCall]) -> Result<(), Failure> {
    let mut by_node: Vec<(String, Vec<&StreamCall>)> = Vec::new();
    for call in calls {
        let addr = nodes.addr_for(&call.keys.counter);
        match by_node.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, part)) => part.push(call),
            None => by_node.push((addr, vec![call])),
        }
    }
    for (addr, part) in by_node {
        let link = nodes.link(&addr)?;
        let ctx = Context {
            during: "while checking the user's rights".into(),
            ..link.ctx.clone()
        };
        check_on(&mut link.con, &part, &ctx)?;
    }
    Ok(())
}

fn check_on(
    con: &mut redis::Connection,
    calls: &[&StreamCall],
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
    let mut probes: Vec<(&str, String)> = Vec::new();
    for call in calls {
        let counter = &call.keys.counter;
        let record = format!("{}1", call.keys.record_prefix);
        let token = &call.token;
        let commands: [(&str, &str, &[&str]); 6] = [
            ("GET", counter, &[]),
            ("INCRBY", counter, &["0"]),
            ("EXISTS", &record, &[]),
            ("HSET", &record, &["f", "v"]),
            ("GET", token, &[]),
            ("SET", token, &["1", "EX", "1"]),
        ];
        for (name, key, args) in commands {
            pipe.cmd(name).arg(key).arg(args);
            probes.push((name, key.to_string()));
        }
    }
    pipe.cmd("DISCARD");
    let replies: Vec<Value> = pipe
        .ignore_errors()
        .query(con)
        .map_err(|e| classify(&e, ctx))?;
    for ((name, key), reply) in probes.into_iter().zip(replies) {
        if let Value::ServerError(e) = reply {
            let ctx = Context {
                during: format!(
                    "to run {name} on key {key:?}, which every batch of its stream needs"
                ),
                ..ctx.clone()
            };
            return Err(classify(&RedisError::from(e), &ctx));
        }
    }
    Ok(())
}
