//! What the reply to a batch call calls for: a pure judgement of one reply, tested without a
//! server. The writer sends a group, turns each reply into a [`Verdict`] and acts on them.

use redis::{RedisError, Value};

use crate::classify::ScriptCode;

/// What to do about one batch after its reply.
#[derive(Debug)]
pub enum Verdict {
    /// The script ran, or found the batch applied already (its token): acknowledge it.
    Committed,
    /// The node has no copy of the script (a restart, a failover, `SCRIPT FLUSH`): load the
    /// scripts there and send the batch again.
    ReloadScripts(RedisError),
    /// Refused before any write because an earlier batch of its stream is missing (`ABSEQ`): it
    /// goes again after that batch; when no earlier batch goes again, the server lost batches it
    /// had acknowledged.
    OutOfOrder(RedisError),
    /// The stream's slot is being migrated (`ASK`): send this one call to `target` after `ASKING`.
    Ask {
        /// The importing node, `host:port`.
        target: String,
        /// The reply, for messages.
        err: RedisError,
    },
    /// The slot moved (`MOVED`, to `target`), or the master became a replica (`READONLY`,
    /// `failover`): find the owner and send the batch there. Standalone `READONLY` is refused by
    /// the classification of `err`.
    Moved {
        /// The node named by `MOVED`.
        target: Option<String>,
        /// Whether it was `READONLY` (reconnect, rather than re-read the slot map).
        failover: bool,
        /// The reply, to classify.
        err: RedisError,
    },
    /// Any other refusal, to classify: a transient one (LOADING, BUSY, TRYAGAIN…) is waited for
    /// and the batch sent again; any other ends the sync.
    Refused(RedisError),
    /// Not a reply a batch call gives (its text, for the message).
    Unexpected(String),
}

/// The verdict on one batch call's reply.
pub fn judge(reply: Value) -> Verdict {
    let e = match reply {
        Value::Int(_) => return Verdict::Committed,
        Value::ServerError(e) => e,
        other => return Verdict::Unexpected(format!("{other:?}")),
    };
    // "MOVED <slot> <host:port>", "ASK <slot> <host:port>".
    let node = || {
        e.details()
            .and_then(|d| d.split(' ').nth(1))
            .map(String::from)
    };
    if ScriptCode::parse(e.code()) == Some(ScriptCode::OutOfOrder) {
        return Verdict::OutOfOrder(RedisError::from(e));
    }
    match e.code() {
        "NOSCRIPT" => Verdict::ReloadScripts(RedisError::from(e)),
        "ASK" => Verdict::Ask {
            target: node().unwrap_or_default(),
            err: RedisError::from(e),
        },
        "MOVED" => Verdict::Moved {
            target: node(),
            failover: false,
            err: RedisError::from(e),
        },
        "READONLY" => Verdict::Moved {
            target: None,
            failover: true,
            err: RedisError::from(e),
        },
        _ => Verdict::Refused(RedisError::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server error as the redis crate parses it from the wire.
    fn error(line: &str) -> Value {
        let wire = format!("-{line}\r\n");
        redis::parse_redis_value(wire.as_bytes()).expect("an error reply")
    }

    #[test]
    fn an_integer_is_a_commit() {
        assert!(matches!(judge(Value::Int(1)), Verdict::Committed));
        assert!(matches!(judge(Value::Int(0)), Verdict::Committed));
    }

    #[test]
    fn redirections_name_their_node() {
        match judge(error("MOVED 3999 127.0.0.1:6381")) {
            Verdict::Moved {
                target, failover, ..
            } => {
                assert_eq!(target.as_deref(), Some("127.0.0.1:6381"));
                assert!(!failover);
            }
            other => panic!("{other:?}"),
        }
        match judge(error("ASK 3999 127.0.0.1:6382")) {
            Verdict::Ask { target, .. } => assert_eq!(target, "127.0.0.1:6382"),
            other => panic!("{other:?}"),
        }
        match judge(error(
            "READONLY You can't write against a read only replica.",
        )) {
            Verdict::Moved {
                target, failover, ..
            } => {
                assert!(failover);
                assert_eq!(target, None, "no node is named");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn script_and_sequence_refusals() {
        assert!(matches!(
            judge(error("NOSCRIPT No matching script. Please use EVAL.")),
            Verdict::ReloadScripts(_)
        ));
        assert!(matches!(
            judge(error("ABSEQ batch 7 arrived before batch 1")),
            Verdict::OutOfOrder(_)
        ));
    }

    #[test]
    fn other_errors_are_refusals_and_other_replies_unexpected() {
        for line in [
            "BUSY Redis is busy running a script.",
            "OOM command not allowed when used memory > 'maxmemory'.",
            "ABEXISTS n:s:7",
            "ERR Error running script",
        ] {
            assert!(matches!(judge(error(line)), Verdict::Refused(_)), "{line}");
        }
        assert!(matches!(judge(Value::Okay), Verdict::Unexpected(_)));
        assert!(matches!(judge(Value::Nil), Verdict::Unexpected(_)));
    }
}
