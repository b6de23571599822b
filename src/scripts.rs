//! The Lua scripts, embedded from `lua/`, with their SHA1 computed here.
//!
//! Scripts are values: the text and its hash never change at run time. They are loaded with
//! `SCRIPT LOAD` ([`load_all`]) when a connection is made and called with `EVALSHA`; the writer
//! handles NOSCRIPT (after a restart, failover or `SCRIPT FLUSH`) by loading again and resending.

use std::sync::LazyLock;

use crate::classify::{classify, Context};
use crate::error::Failure;

/// A Lua script and its SHA1.
#[derive(Debug)]
pub struct LuaScript {
    /// The file name in `lua/`, for messages.
    pub name: &'static str,
    /// The script's text.
    pub body: &'static str,
    /// Lowercase hex SHA1 of `body`, as `SCRIPT LOAD` returns it.
    pub sha: String,
}

impl LuaScript {
    fn new(name: &'static str, body: &'static str) -> Self {
        let sha = sha1_smol::Sha1::from(body.as_bytes()).digest().to_string();
        LuaScript { name, body, sha }
    }

    /// Calls the script with `EVALSHA` (loading it first when the server answers NOSCRIPT, after a
    /// restart or `SCRIPT FLUSH`); a failure is classified in `ctx`.
    pub fn eval(
        &self,
        con: &mut redis::Connection,
        keys: &[&str],
        args: &[&str],
        ctx: &Context,
    ) -> Result<redis::Value, Failure> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(keys.len());
        for k in keys {
            cmd.arg(*k);
        }
        for a in args {
            cmd.arg(*a);
        }
        match cmd.query::<redis::Value>(con) {
            Err(e) if e.code() == Some("NOSCRIPT") => {
                redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(self.body)
                    .query::<String>(con)
                    .map_err(|e| classify(&e, ctx))?;
                cmd.query(con).map_err(|e| classify(&e, ctx))
            }
            other => other.map_err(|e| classify(&e, ctx)),
        }
    }

    /// The script's reply read as `N` whole numbers (an array of integers, or one integer when
    /// `N` is 1); anything else is a `system_error` naming the script, never a silent 0.
    pub fn whole_numbers<const N: usize>(&self, reply: &redis::Value) -> Result<[u64; N], Failure> {
        let items: &[redis::Value] = match reply {
            redis::Value::Array(items) => items,
            one @ redis::Value::Int(_) => std::slice::from_ref(one),
            _ => &[],
        };
        let mut out = [0u64; N];
        if items.len() == N {
            for (slot, item) in out.iter_mut().zip(items) {
                match item {
                    redis::Value::Int(n) if *n >= 0 => *slot = *n as u64,
                    _ => return Err(self.unexpected(reply)),
                }
            }
            return Ok(out);
        }
        Err(self.unexpected(reply))
    }

    /// A SCAN step's reply read as the next cursor, then `N` whole numbers.
    pub fn cursor_and_numbers<const N: usize>(
        &self,
        reply: &redis::Value,
    ) -> Result<(String, [u64; N]), Failure> {
        if let redis::Value::Array(items) = reply {
            if let Some(redis::Value::BulkString(cursor)) = items.first() {
                let rest = redis::Value::Array(items[1..].to_vec());
                let numbers = self
                    .whole_numbers::<N>(&rest)
                    .map_err(|_| self.unexpected(reply))?;
                return Ok((String::from_utf8_lossy(cursor).into_owned(), numbers));
            }
        }
        Err(self.unexpected(reply))
    }

    /// The failure for a reply this script does not give.
    pub fn unexpected(&self, reply: &redis::Value) -> Failure {
        Failure::system(
            format!("The script {} answered unexpectedly.", self.name),
            format!("{reply:?}"),
        )
    }
}

/// `lua/append_batch.lua`: appends one batch of a stream's records.
pub static APPEND_BATCH: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("append_batch.lua", include_str!("../lua/append_batch.lua")));

/// `lua/append_stream.lua`: appends one batch of a stream's records to its Redis stream.
pub static APPEND_STREAM: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "append_stream.lua",
        include_str!("../lua/append_stream.lua"),
    )
});

/// `lua/upsert_batch.lua`: applies one batch of an `append_dedup` stream.
pub static UPSERT_BATCH: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("upsert_batch.lua", include_str!("../lua/upsert_batch.lua")));

/// `lua/upsert_keyed.lua`: applies one batch of a stream keyed by primary key.
pub static UPSERT_KEYED: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("upsert_keyed.lua", include_str!("../lua/upsert_keyed.lua")));

/// `lua/keyed_scan.lua`: one SCAN step of an overwrite of a stream keyed by primary key.
pub static KEYED_SCAN: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("keyed_scan.lua", include_str!("../lua/keyed_scan.lua")));

/// `lua/delete_range.lua`: unlinks a bounded range of record keys, checking each.
pub static DELETE_RANGE: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("delete_range.lua", include_str!("../lua/delete_range.lua")));

/// `lua/publish_begin.lua`: records a publish marker.
pub static PUBLISH_BEGIN: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "publish_begin.lua",
        include_str!("../lua/publish_begin.lua"),
    )
});

/// `lua/staging_trim.lua`: shrinks a stream's staging to the records this run keeps.
pub static STAGING_TRIM: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("staging_trim.lua", include_str!("../lua/staging_trim.lua")));

/// `lua/expire_range.lua`: refreshes the expiry of a bounded range of staged records.
pub static EXPIRE_RANGE: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("expire_range.lua", include_str!("../lua/expire_range.lua")));

/// `lua/publish_check.lua`: finds a key in the way of a publish, before it begins.
pub static PUBLISH_CHECK: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "publish_check.lua",
        include_str!("../lua/publish_check.lua"),
    )
});

/// `lua/publish_step.lua`: moves a bounded range of staged records into place.
pub static PUBLISH_STEP: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("publish_step.lua", include_str!("../lua/publish_step.lua")));

/// `lua/publish_finish.lua`: sets the counter and removes the publish's bookkeeping.
pub static PUBLISH_FINISH: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "publish_finish.lua",
        include_str!("../lua/publish_finish.lua"),
    )
});

/// `lua/scan_delete.lua`: one SCAN step deleting a stream's leftover records.
pub static SCAN_DELETE: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("scan_delete.lua", include_str!("../lua/scan_delete.lua")));

/// `lua/java_staging.lua`: one SCAN step counting or deleting the Java connector's staged records.
pub static JAVA_STAGING: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("java_staging.lua", include_str!("../lua/java_staging.lua")));

/// `lua/stream_trim.lua`: shrinks a staged generation in the `stream` format to its first entries.
pub static STREAM_TRIM: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("stream_trim.lua", include_str!("../lua/stream_trim.lua")));

/// `lua/stream_rebuild.lua`: rebuilds a staged `stream` generation from its kept entries.
pub static STREAM_REBUILD: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "stream_rebuild.lua",
        include_str!("../lua/stream_rebuild.lua"),
    )
});

/// `lua/stream_copy.lua`: copies entries of a published `stream` generation back into its staging.
pub static STREAM_COPY: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("stream_copy.lua", include_str!("../lua/stream_copy.lua")));

/// Every script the destination uses, for loading.
pub fn all() -> [&'static LuaScript; 17] {
    [
        &APPEND_BATCH,
        &APPEND_STREAM,
        &UPSERT_BATCH,
        &UPSERT_KEYED,
        &KEYED_SCAN,
        &STAGING_TRIM,
        &EXPIRE_RANGE,
        &PUBLISH_CHECK,
        &DELETE_RANGE,
        &PUBLISH_BEGIN,
        &PUBLISH_STEP,
        &PUBLISH_FINISH,
        &SCAN_DELETE,
        &JAVA_STAGING,
        &STREAM_TRIM,
        &STREAM_COPY,
        &STREAM_REBUILD,
    ]
}

/// Loads every script with SCRIPT LOAD (one pipeline: one round trip) and checks that the
/// server's SHA1 of each matches ours.
pub fn load_all(con: &mut redis::Connection, ctx: &Context) -> Result<(), Failure> {
    let scripts = all();
    let mut pipe = redis::pipe();
    for script in scripts {
        pipe.cmd("SCRIPT").arg("LOAD").arg(script.body);
    }
    let loading = |name: &str| Context {
        during: format!("loading the script {name}"),
        ..ctx.clone()
    };
    let shas: Vec<redis::RedisResult<String>> = pipe
        .ignore_errors()
        .query(con)
        .map_err(|e| classify(&e, &loading("scripts")))?;
    if shas.len() != scripts.len() {
        return Err(Failure::system(
            format!(
                "Redis at {} answered {} of {} SCRIPT LOAD calls.",
                ctx.address,
                shas.len(),
                scripts.len()
            ),
            "short pipeline reply",
        ));
    }
    for (script, sha) in scripts.iter().zip(shas) {
        let sha = sha.map_err(|e| classify(&e, &loading(script.name)))?;
        if sha != script.sha {
            return Err(Failure::system(
                format!(
                    "Redis at {} computed another SHA1 for {} than the destination did.",
                    ctx.address, script.name
                ),
                format!("server {sha}, local {}", script.sha),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_of_the_scripts_is_known_and_every_known_code_is_raised() {
        use crate::classify::ScriptCode;
        let mut raised = std::collections::BTreeSet::new();
        for script in all() {
            for piece in script.body.split("error_reply('").skip(1) {
                let code: String = piece
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase())
                    .collect();
                assert!(
                    ScriptCode::parse(&code).is_some(),
                    "{} raises {code:?}, which classify::ScriptCode does not know",
                    script.name
                );
                raised.insert(code);
            }
        }
        for code in ScriptCode::ALL {
            assert!(
                raised.contains(code.as_str()),
                "no script raises {}",
                code.as_str()
            );
        }
    }

    #[test]
    fn replies_are_read_strictly() {
        use redis::Value::{Array, BulkString, Int, Nil};
        let s = &PUBLISH_BEGIN;
        assert_eq!(
            s.whole_numbers::<2>(&Array(vec![Int(3), Int(9)])),
            Ok([3, 9])
        );
        assert_eq!(s.whole_numbers::<1>(&Int(4)), Ok([4]));
        for bad in [
            Array(vec![Int(3)]),
            Array(vec![Int(3), Int(-1)]),
            Array(vec![Int(3), Nil]),
            Nil,
        ] {
            let err = s.whole_numbers::<2>(&bad).expect_err("refused");
            assert!(err.message.contains("publish_begin.lua"), "{}", err.message);
        }
        let step = Array(vec![BulkString(b"17".to_vec()), Int(5), Int(0)]);
        assert_eq!(
            SCAN_DELETE.cursor_and_numbers::<2>(&step),
            Ok(("17".to_string(), [5, 0]))
        );
        assert!(SCAN_DELETE
            .cursor_and_numbers::<2>(&Array(vec![Int(0), Int(5), Int(0)]))
            .is_err());
    }

    #[test]
    fn sha_is_forty_hex_digits() {
        let sha = &APPEND_BATCH.sha;
        assert_eq!(sha.len(), 40);
        assert!(sha
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    /// Lua scripts cannot share code: the cursor order of the two upsert scripts is one text,
    /// kept identical by this test.
    #[test]
    fn both_upsert_scripts_order_cursors_with_the_same_code() {
        let block = |script: &LuaScript| {
            let text = script.body;
            let start = text.find("-- BEGIN cursor order").expect("BEGIN marker");
            let end = text.find("-- END cursor order").expect("END marker");
            text[start..end].to_string()
        };
        assert_eq!(block(&UPSERT_BATCH), block(&UPSERT_KEYED));
        assert!(block(&UPSERT_BATCH).contains("local function newer(old, new)"));
    }

    /// The text between `-- BEGIN <name>` and `-- END <name>` in `script`.
    fn shared_block(script: &LuaScript, name: &str) -> String {
        let text = script.body;
        let start = text
            .find(&format!("-- BEGIN {name}"))
            .expect("BEGIN marker");
        let end = text.find(&format!("-- END {name}")).expect("END marker");
        text[start..end].to_string()
    }

    /// Both upsert scripts read a `fields` record's arguments and write it with the same code.
    #[test]
    fn both_upsert_scripts_read_and_write_fields_with_the_same_code() {
        let block = shared_block(&UPSERT_BATCH, "fields write");
        assert_eq!(block, shared_block(&UPSERT_KEYED, "fields write"));
        assert!(block.contains("local function hset_fields(key, head, from, nf)"));
        let block = shared_block(&UPSERT_BATCH, "record layout");
        assert_eq!(block, shared_block(&UPSERT_KEYED, "record layout"));
        assert!(block.contains("local function record_layout(first, last, step, fields)"));
    }

    /// Every batch script that writes a load's position checks that its run owns the load with
    /// the same code, and finds the run in its token key where `keys.rs` puts it.
    #[test]
    fn the_batch_scripts_check_the_loads_owner_alike_in_rust_and_lua() {
        let block = shared_block(&APPEND_BATCH, "load owner");
        for script in [&APPEND_STREAM, &UPSERT_BATCH, &UPSERT_KEYED] {
            assert_eq!(block, shared_block(script, "load owner"), "{}", script.name);
        }
        assert!(block.contains("string.find(token_key, ':token:' .. owner .. ':', 1, true)"));
        let keys = crate::keys::StreamKeys::new(&crate::protocol::StreamDescriptor {
            name: "s".into(),
            namespace: Some("n".into()),
        });
        assert!(keys.token("0123abcd").contains(":token:0123abcd:"));
    }

    /// The batch scripts name a staged generation's moments hash as `keys.rs` does.
    #[test]
    fn the_moments_hash_is_named_alike_in_rust_and_lua() {
        let staging = crate::keys::StagingKeys::for_counter("n:s");
        let name = staging.moments();
        let prefix = name
            .strip_suffix(&staging.counter)
            .expect("moments:<counter>");
        let lua = format!("'{prefix}' ..");
        for script in [&*APPEND_BATCH, &*UPSERT_BATCH, &*UPSERT_KEYED] {
            assert!(script.body.contains(&lua), "{}: {lua}", script.name);
        }
    }

    /// The scripts that check, move or delete records tell them from other keys with one rule.
    #[test]
    fn every_script_that_touches_records_tells_them_by_the_same_rule() {
        let block = shared_block(&PUBLISH_STEP, "record rule");
        for script in [&*PUBLISH_CHECK, &*DELETE_RANGE, &*SCAN_DELETE] {
            assert_eq!(
                shared_block(script, "record rule"),
                block,
                "{}",
                script.name
            );
        }
        assert!(block.contains("local function record_kind(key, id, format, limit)"));
    }
}
