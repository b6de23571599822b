//! A load's record in Redis (`keys::StreamKeys::load`): a hash in the stream's slot.
//!
//! | field      | written by | value |
//! |------------|------------|-------|
//! | `position` | each batch's script, with its records | `<input> <offset> <line> <records>` after the batch's last record |
//! | `run`      | each run, as it begins | the run id that owns the load: the scripts refuse the batches of any other run (`ABSUPERSEDED`) |
//! | `started`  | the load's first run | epoch ms (an overwrite's generation) |
//! | `inputs`   | the load's first run | the inputs' names, as a JSON list |
//! | `finished` | the run that loaded the last record | epoch ms |
//! | `records`  | the same | records loaded in all |
//!
//! The id of a load: given (`--load-id`), or derived from the stream and the inputs' names, sizes
//! and modification times, so running the same command on the same files resumes.

use std::collections::HashMap;

use redis::Connection;

use super::source::Input;
use crate::connect::{classify, Context};
use crate::error::Failure;
use crate::protocol::StreamDescriptor;
use crate::write::batch::InputPosition;

/// The longest load id accepted.
const MAX_ID: usize = 64;

/// What Redis knows of a load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadRecord {
    /// After the last committed record.
    pub position: Option<InputPosition>,
    /// When its first run started (epoch ms).
    pub started: Option<i64>,
    /// Its inputs' names (JSON list text).
    pub inputs: Option<String>,
    /// When it finished (epoch ms).
    pub finished: Option<i64>,
    /// Records loaded in all, once finished.
    pub records: Option<u64>,
}

impl LoadRecord {
    /// Reads the record at `key` (`None`: no such load).
    pub fn read(con: &mut Connection, key: &str, ctx: &Context) -> Result<Option<Self>, Failure> {
        let map: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(key)
            .query(con)
            .map_err(|e| classify(&e, ctx))?;
        Ok((!map.is_empty()).then(|| Self::from_fields(&map)))
    }

    fn from_fields(map: &HashMap<String, String>) -> Self {
        let get = |f: &str| map.get(f).cloned();
        LoadRecord {
            position: get("position").and_then(|p| InputPosition::parse(&p)),
            started: get("started").and_then(|v| v.parse().ok()),
            inputs: get("inputs"),
            finished: get("finished").and_then(|v| v.parse().ok()),
            records: get("records").and_then(|v| v.parse().ok()),
        }
    }

    /// Begins run `run_id` of a load: starts the record when this is the load's first run (kept
    /// as it is when a run began it before; deleted first with `again`), makes `run_id` its owner
    /// and reads it back, all in one MULTI/EXEC. Atomic, so the position read is final: a batch of
    /// an earlier run that the server runs after this (a killed run's last batches may still be in
    /// its input) is refused by the scripts, and one it ran before is in the position.
    pub fn begin(
        con: &mut Connection,
        key: &str,
        inputs: &[Input],
        run_id: &str,
        now: i64,
        again: bool,
        ctx: &Context,
    ) -> Result<LoadRecord, Failure> {
        let names = identity(inputs);
        let mut pipe = redis::pipe();
        pipe.atomic();
        if again {
            pipe.cmd("DEL").arg(key).ignore();
        }
        pipe.cmd("HSETNX")
            .arg(key)
            .arg("started")
            .arg(now)
            .ignore()
            .cmd("HSETNX")
            .arg(key)
            .arg("inputs")
            .arg(names)
            .ignore()
            .cmd("HSET")
            .arg(key)
            .arg("run")
            .arg(run_id)
            .ignore()
            .cmd("HGETALL")
            .arg(key);
        let (map,): (HashMap<String, String>,) = pipe.query(con).map_err(|e| classify(&e, ctx))?;
        Ok(Self::from_fields(&map))
    }

    /// Records that the load finished with `records` records in all.
    pub fn finish(
        con: &mut Connection,
        key: &str,
        records: u64,
        now: i64,
        ctx: &Context,
    ) -> Result<(), Failure> {
        redis::cmd("HSET")
            .arg(key)
            .arg("finished")
            .arg(now)
            .arg("records")
            .arg(records)
            .query::<()>(con)
            .map_err(|e| classify(&e, ctx))
    }

    /// Where the load stands, in one line for `--status`.
    pub fn describe(&self, id: &str, inputs: Option<&[Input]>) -> String {
        if let (Some(records), Some(at)) = (self.records, self.finished) {
            return format!(
                "load {id}: finished, {records} records (at {} ms since the epoch)",
                at
            );
        }
        match self.position {
            None => format!("load {id}: in progress, no record committed yet"),
            Some(p) => {
                let name = inputs
                    .and_then(|i| i.get(p.input as usize))
                    .map(|i| format!(" ({})", i.name))
                    .unwrap_or_default();
                format!(
                    "load {id}: in progress, {} records committed; input {}{name} up to byte {} (line {})",
                    p.records,
                    p.input + 1,
                    p.offset,
                    p.line
                )
            }
        }
    }
}

/// The inputs as the load's record keeps them: their absolute paths (`stdin` for stdin), as a
/// JSON list; a resumed load must be given the same.
pub fn identity(inputs: &[Input]) -> String {
    let names: Vec<String> = inputs
        .iter()
        .map(|i| match &i.path {
            Some(path) => std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.clone())
                .display()
                .to_string(),
            None => i.name.clone(),
        })
        .collect();
    serde_json::to_string(&names).unwrap_or_default()
}

/// Checks a load id given on the command line.
pub fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    match ok {
        true => Ok(()),
        false => Err(format!(
            "the load id {id:?} must be 1 to {MAX_ID} letters, digits, '.', '_' or '-'"
        )),
    }
}

/// The id of a load of `inputs` into `stream`, when none is given: the same for the same stream
/// and the same files (names, sizes, modification times); `None` when an input is stdin, which
/// has no such identity.
pub fn derive_id(stream: &StreamDescriptor, inputs: &[Input]) -> Option<String> {
    let mut hash = sha1_smol::Sha1::new();
    hash.update(stream.namespace.as_deref().unwrap_or("").as_bytes());
    hash.update(b"\0");
    hash.update(stream.name.as_bytes());
    for input in inputs {
        let path = input.path.as_ref()?;
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        hash.update(b"\0");
        hash.update(path.display().to_string().as_bytes());
        hash.update(format!("\0{:?}\0{:?}", input.size, input.modified).as_bytes());
    }
    Some(hash.digest().to_string()[..16].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::InputFormat;

    fn file(name: &str, size: u64, modified: u128) -> Input {
        Input {
            path: Some(name.into()),
            name: name.into(),
            size: Some(size),
            modified: Some(modified),
            format: InputFormat::Jsonl,
        }
    }

    #[test]
    fn ids_follow_the_stream_and_the_files() {
        let users = StreamDescriptor {
            name: "users".into(),
            namespace: Some("app".into()),
        };
        let a = derive_id(&users, &[file("/nonexistent/a.jsonl", 10, 1)]).unwrap();
        assert_eq!(a.len(), 16);
        assert_eq!(check_id(&a), Ok(()));
        assert_eq!(
            derive_id(&users, &[file("/nonexistent/a.jsonl", 10, 1)]),
            Some(a.clone())
        );
        assert_ne!(
            derive_id(&users, &[file("/nonexistent/a.jsonl", 11, 1)]),
            Some(a.clone())
        );
        assert_ne!(
            derive_id(&users, &[file("/nonexistent/a.jsonl", 10, 2)]),
            Some(a.clone())
        );
        let other = StreamDescriptor {
            name: "users".into(),
            namespace: None,
        };
        assert_ne!(
            derive_id(&other, &[file("/nonexistent/a.jsonl", 10, 1)]),
            Some(a)
        );
        let mut stdin = file("stdin", 0, 0);
        stdin.path = None;
        assert_eq!(derive_id(&users, &[stdin]), None);
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id("users-2026.12_04").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("a:b").is_err());
        assert!(check_id("a{b}").is_err());
        assert!(check_id(&"x".repeat(65)).is_err());
    }
}
