//! The Lua scripts, embedded from `lua/`, with their SHA1 computed here.
//!
//! Scripts are values: the text and its hash never change at run time. They are loaded with
//! `SCRIPT LOAD` when a connection is made and called with `EVALSHA`; the writer handles NOSCRIPT
//! (after a restart, failover or `SCRIPT FLUSH`) by loading again and resending.

use std::sync::LazyLock;

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
}

/// `lua/append_batch.lua`: appends one batch of a stream's records.
pub static APPEND_BATCH: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("append_batch.lua", include_str!("../lua/append_batch.lua")));

/// `lua/check_rights.lua`: checks a stream's ACL rights without writing.
pub static CHECK_RIGHTS: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("check_rights.lua", include_str!("../lua/check_rights.lua")));

/// Every script the destination uses, for loading.
pub fn all() -> [&'static LuaScript; 2] {
    [&APPEND_BATCH, &CHECK_RIGHTS]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha_is_forty_hex_digits() {
        let sha = &APPEND_BATCH.sha;
        assert_eq!(sha.len(), 40);
        assert!(sha
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }
}
