//! The value-format check that runs before any data moves: the records a stream already has in
//! Redis must be in the value format this sync writes, since formats are never mixed in one
//! stream. A stream in a format other than `hash` has a marker (`keys::StreamKeys::format_marker`,
//! set by its batches); without one, a counter means records in `hash`, the Java layout, and a
//! Redis stream at the stream's key means `stream`. The batch scripts check the same again, for
//! writers that race this one.

use redis::Value;

use super::batch::StreamCall;
use crate::classify::{classify, format_mismatch, Context};
use crate::config::ValueFormat;
use crate::connect::nodes::Nodes;
use crate::error::Failure;

/// Fails with a `config_error` naming the first stream whose records are in another format than
/// its call writes. One round trip per node: every stream's marker and counter type in one
/// pipeline.
pub fn check_formats(nodes: &mut Nodes, calls: &[StreamCall]) -> Result<(), Failure> {
    let split = crate::write::writer::split_by_node(
        nodes,
        calls,
        &(0..calls.len()).collect::<Vec<_>>(),
        |i| i,
    );
    for (addr, streams) in split {
        let link = nodes.link(&addr)?;
        let ctx = Context {
            during: "while checking the streams' value formats".into(),
            ..link.ctx.clone()
        };
        let mut pipe = redis::pipe();
        for &i in &streams {
            pipe.cmd("GET")
                .arg(calls[i].keys.format_marker())
                .cmd("TYPE")
                .arg(&calls[i].keys.counter);
        }
        let replies: Vec<(Option<String>, Value)> = pipe
            .query::<Vec<Value>>(&mut link.con)
            .map_err(|e| classify(&e, &ctx))?
            .chunks(2)
            .map(|pair| {
                let marked = match &pair[0] {
                    Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                };
                (marked, pair.get(1).cloned().unwrap_or(Value::Nil))
            })
            .collect();
        for (&i, (marked, kind)) in streams.iter().zip(replies) {
            let counter = &calls[i].keys.counter;
            let stored = match (marked, type_name(&kind)) {
                (Some(name), _) => Some(name),
                (None, "string") => Some(ValueFormat::Hash.name().to_string()),
                (None, "stream") => Some(ValueFormat::Stream.name().to_string()),
                _ => None,
            };
            if let Some(stored) = stored {
                let wanted = calls[i].format.name();
                if stored != wanted {
                    let message = format_mismatch(counter, &stored, wanted, &ctx.during);
                    return Err(Failure::config(message.clone(), message));
                }
            }
        }
    }
    Ok(())
}

/// The type name a `TYPE` reply gives (`none` for anything unexpected).
fn type_name(reply: &Value) -> &str {
    match reply {
        Value::SimpleString(s) => s,
        Value::BulkString(b) => std::str::from_utf8(b).unwrap_or("none"),
        _ => "none",
    }
}
