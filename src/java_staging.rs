//! The Java connector's leftover staging: records a failed Java sync left at
//! `tmp:<namespace>:<stream>:<m>` (see `lua/java_staging.lua`). `check` counts them (a bounded
//! number of SCAN steps) and says how to delete them; with `delete_java_staging` a sync deletes
//! them before it writes, in short SCAN steps on every node.

use redis::Value;

use crate::connect::nodes::Nodes;
use crate::connect::Context;
use crate::error::Failure;
use crate::scripts::JAVA_STAGING;

/// Keys one SCAN step looks at (one short call).
const SCAN_COUNT: u64 = 1000;

/// SCAN steps `check` takes per node at most (a million keys), so it stays quick on any database.
pub const CHECK_STEPS: u64 = 1000;

/// SCAN steps a deletion takes per node at most: enough for any database (a billion keys).
pub const DELETE_STEPS: u64 = 1_000_000;

/// What a look through the keyspace found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    /// Staged records found (and deleted, when deleting).
    pub records: u64,
    /// One of their keys, for the message.
    pub example: Option<String>,
    /// Whether the whole keyspace was looked at (false when `check` stopped at its bound).
    pub complete: bool,
    /// Script calls made.
    pub calls: u64,
}

/// Counts (or, with `delete`, unlinks) the staged records on every node, in at most `steps` SCAN
/// steps per node.
pub fn sweep(nodes: &mut Nodes, delete: bool, steps: u64) -> Result<Found, Failure> {
    let mut found = Found {
        complete: true,
        ..Found::default()
    };
    let mode = if delete { "delete" } else { "count" };
    for addr in nodes.open_addrs() {
        let link = nodes.link(&addr)?;
        let ctx = Context {
            during: "looking for the Java connector's leftover staging (tmp:*)".into(),
            ..link.ctx.clone()
        }
        .with_keys("tmp:*");
        let mut cursor = "0".to_string();
        let mut taken = 0;
        loop {
            let reply = JAVA_STAGING.eval(
                &mut link.con,
                &[],
                &[&cursor, &SCAN_COUNT.to_string(), mode],
                &ctx,
            )?;
            found.calls += 1;
            taken += 1;
            let (next, n, example) = step_reply(&reply)?;
            found.records += n;
            if found.example.is_none() && !example.is_empty() {
                found.example = Some(example);
            }
            cursor = next;
            if cursor == "0" {
                break;
            }
            if taken >= steps {
                found.complete = false;
                break;
            }
        }
    }
    Ok(found)
}

/// `{cursor, found, example}` out of a step's reply.
fn step_reply(reply: &Value) -> Result<(String, u64, String), Failure> {
    let text = |v: Option<&Value>| match v {
        Some(Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        Some(Value::SimpleString(s)) => Some(s.clone()),
        _ => None,
    };
    if let Value::Array(items) = reply {
        if let (Some(cursor), Some(Value::Int(n)), Some(example)) =
            (text(items.first()), items.get(1), text(items.get(2)))
        {
            return Ok((cursor, (*n).max(0) as u64, example));
        }
    }
    Err(Failure::system(
        "java_staging.lua answered unexpectedly.",
        format!("{reply:?}"),
    ))
}
