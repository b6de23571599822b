//! `load`: files or stdin into one stream, through the same pipeline as `write`, resumable exactly
//! once.
//!
//! | part       | job |
//! |------------|-----|
//! | `source`   | the inputs: files or stdin, their formats, opened at an offset, gzip/zstd undone |
//! | `parse`    | JSON Lines, one JSON array (streamed), CSV → one JSON object text per record |
//! | `front`    | the inputs → the pipeline's chunks, each record with its input position |
//! | `record`   | the load's record in Redis: its position (written by each batch), start, end |
//! | `progress` | the progress bar or lines on stderr |
//!
//! Exactly once: each batch's script writes the input position after its last record into the
//! load's record in the same call as the records ([`crate::write::batch::InputPosition`]), so a
//! run that was killed, cut off or crashed is continued by the next run of the same load right
//! after the last committed record.

pub mod front;
pub mod parse;
pub mod progress;
pub mod record;
pub mod source;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::cli::{LoadArgs, LoadMode};
use crate::config::{RecordKey, Settings};
use crate::connect::{self, nodes::Nodes};
use crate::error::{Failure, FailureType};
use crate::keys::StreamKeys;
use crate::protocol::catalog;
use crate::protocol::output::{now_ms, Output};
use crate::protocol::StreamDescriptor;
use crate::write::{self, LoadRun};
use front::{Counters, Front, Rejects};
use progress::{mib, thousands, Progress};
use record::LoadRecord;

/// What `load` ended with, besides a failure.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Records were loaded (or counted, in a dry run), or the load had finished before.
    Done,
    /// `--status` of a load id Redis does not know.
    UnknownLoad,
}

/// Runs `load` with `args`: progress, summary and warnings go to `log` (stderr); only `--status`
/// prints to stdout.
pub fn run(args: &LoadArgs, log: &Output) -> Result<Outcome, Failure> {
    run_load(args, log).map_err(|mut f| {
        // Whatever stopped it, a load goes on from its last committed record when run again.
        if !args.dry_run && args.status.is_none() && f.failure_type != FailureType::Config {
            f.message.push_str(
                " Run the same command again to continue after the last committed record.",
            );
        }
        f
    })
}

fn run_load(args: &LoadArgs, log: &Output) -> Result<Outcome, Failure> {
    let started = Instant::now();
    let stream = StreamDescriptor {
        name: args.stream.clone(),
        namespace: args.namespace.clone(),
    };
    let inputs = source::inputs(&args.inputs, args.format)
        .map_err(|e| Failure::config(format!("{}.", capitalized(&e.to_string())), &e))?;
    let settings = settings_for(args)?;
    if args.mode == LoadMode::Overwrite
        && settings.stream_options.record_key(&stream) == RecordKey::PrimaryKey
    {
        // Its staging is resumed by key, which a load's position does not describe yet.
        return Err(Failure::config(
            "load --mode overwrite with record_key primary_key is not supported yet: load with --mode append and record_key primary_key (the last write of a key wins), or overwrite with record_key sequence.",
            "load overwrite keyed",
        ));
    }
    let given = args.status.clone().or_else(|| args.load_id.clone());
    let id = match given {
        Some(id) => {
            record::check_id(&id)
                .map_err(|m| Failure::config(format!("{}.", capitalized(&m)), &m))?;
            id
        }
        None => match record::derive_id(&stream, &inputs) {
            Some(id) => id,
            None => {
                log.log(
                    crate::protocol::output::Level::Warn,
                    "stdin has no name, size or time to tell this load by: it cannot be resumed. Give --load-id to make it resumable.",
                );
                random_id()?
            }
        },
    };
    let keys = StreamKeys::with_layout(&stream, settings.layout);
    let key = keys.load(&id);
    let route = connect::route(&settings)?;
    let mut nodes = Nodes::open(&settings, &route.entry, settings.reply_timeout)?;
    let link = nodes.link_for(&key)?;
    let known = LoadRecord::read(&mut link.con, &key, &link.ctx)?;
    if args.status.is_some() {
        return Ok(match known {
            Some(r) => {
                println!("{}", r.describe(&id, Some(&inputs)));
                Outcome::Done
            }
            None => {
                println!("load {id}: unknown load id for stream {stream}");
                Outcome::UnknownLoad
            }
        });
    }
    if let Some(LoadRecord {
        finished: Some(_),
        records: Some(records),
        ..
    }) = known
    {
        if !args.again {
            log.log(
                crate::protocol::output::Level::Info,
                format!("load {id} finished before ({} records): nothing to do. Give --again to load the inputs again.", thousands(records)),
            );
            return Ok(Outcome::Done);
        }
    }
    let now = now_ms();
    let run_id = write::new_run_id()?;
    let begun = match args.dry_run {
        true => LoadRecord::default(),
        false => LoadRecord::begin(
            &mut link.con,
            &key,
            &inputs,
            &run_id,
            now,
            args.again && known.is_some(),
            &link.ctx,
        )?,
    };
    drop(nodes);
    let names = record::identity(&inputs);
    if let (Some(_), Some(before)) = (begun.position, &begun.inputs) {
        if *before != names {
            return Err(Failure::config(
                format!("Load {id} was started with the inputs {before}, and these are {names}: it resumes at a byte offset of its own inputs only. Give the same inputs in the same order, or another --load-id (or --again) to load these anew."),
                "load inputs differ",
            ));
        }
    }
    let from = begun.position.unwrap_or_default();
    if from.input as usize >= inputs.len() {
        return Err(Failure::config(
            format!("Load {id} stopped in input {} of its inputs, and only {} are given: give the same inputs, or another --load-id.", from.input + 1, inputs.len()),
            "position beyond the inputs",
        ));
    }
    log.log(
        crate::protocol::output::Level::Info,
        match begun.position {
            Some(p) => format!(
                "load {id}: resuming after record {} ({} of input {}).",
                thousands(p.records),
                inputs[p.input as usize].name,
                p.input + 1
            ),
            None => format!(
                "load {id}: loading {} input(s) into {stream}.",
                inputs.len()
            ),
        },
    );
    let streams = catalog::parse(
        &catalog_text(args, &stream, begun.started.unwrap_or(now))?,
        settings.truncate_refreshes,
    )?;
    let counters = Arc::new(Counters::default());
    let rejects = match &args.skip_bad {
        Some(path) => Some(Rejects::open(path).map_err(|e| {
            Failure::config(
                format!("Cannot open the --skip-bad file {}: {e}.", path.display()),
                &e,
            )
        })?),
        None => None,
    };
    let front = Front {
        inputs: inputs.clone(),
        from,
        csv_infer: args.csv_infer,
        rejects,
        counters: counters.clone(),
    };
    let total = inputs.iter().map(|i| i.size).sum::<Option<u64>>();
    let progress = (!args.quiet).then(|| {
        Progress::start(
            counters.clone(),
            total,
            Duration::from_millis(args.progress_every_ms.max(100)),
        )
    });
    let run = LoadRun {
        run_id,
        position_key: key.clone(),
        continuing: begun.position.is_some(),
        dry_run: args.dry_run,
    };
    let result = write::run_streams(
        &settings,
        streams,
        move |streams, tx| front.run(streams, tx),
        Some(run),
        log,
    );
    if let Some(p) = progress {
        p.finish();
    }
    let summary = result.map_err(|mut f| {
        if !args.dry_run && f.failure_type == FailureType::Config {
            f.message.push_str(" Everything before it is committed: run the same command again to continue after the last committed record.");
        }
        f
    })?;
    let read = counters.records.load(Ordering::Relaxed);
    let rejected = counters.rejected.load(Ordering::Relaxed);
    let total_records = from.records + read;
    if !args.dry_run {
        let mut nodes = Nodes::open(&settings, &route.entry, settings.reply_timeout)?;
        let link = nodes.link_for(&key)?;
        LoadRecord::finish(&mut link.con, &key, total_records, now_ms(), &link.ctx)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let rejected = match (rejected, &args.skip_bad) {
        (0, _) | (_, None) => String::new(),
        (n, Some(path)) => format!("; {} rejected (in {})", thousands(n), path.display()),
    };
    let resumed = match from.records {
        0 => String::new(),
        n => format!("; resumed after {} records of an earlier run", thousands(n)),
    };
    let verb = if args.dry_run {
        "Read (dry run, nothing written)"
    } else {
        "Loaded"
    };
    log.log(
        crate::protocol::output::Level::Info,
        format!(
            "{verb} {} records ({}) into {stream} in {} batches, {secs:.2} s, {} records/s{rejected}{resumed}. Load id: {id}.",
            thousands(read),
            mib(counters.data_bytes.load(Ordering::Relaxed)),
            thousands(summary.batches),
            thousands((read as f64 / secs.max(1e-3)) as u64),
        ),
    );
    Ok(Outcome::Done)
}

/// The connection settings and record options: the config file or the URL (`--url`, else
/// `REDIS_URL`), the password from `REDIS_PASSWORD` when neither gives one, then the flags.
fn settings_for(args: &LoadArgs) -> Result<Settings, Failure> {
    let mut map = match (&args.config, &args.url) {
        (Some(path), _) => Settings::read_map(path).map_err(Failure::from)?,
        (None, Some(url)) => url_config(url)?,
        (None, None) => match std::env::var("REDIS_URL") {
            Ok(url) if !url.is_empty() => url_config(&url)?,
            _ => {
                return Err(Failure::config(
                    "Say where Redis is: --url redis://host:port, REDIS_URL, or --config FILE.",
                    "no connection given",
                ))
            }
        },
    };
    if !map.contains_key("password") {
        if let Ok(password) = std::env::var("REDIS_PASSWORD") {
            map.insert("password".into(), Value::String(password));
        }
    }
    let mut set = |name: &str, value: Option<Value>| {
        if let Some(v) = value {
            map.insert(name.into(), v);
        }
    };
    set("ttl_seconds", args.ttl_seconds.map(Value::from));
    set("ttl_field", args.ttl_field.as_deref().map(path_value));
    set("value_format", args.value_format.clone().map(Value::from));
    set("record_key", args.record_key.clone().map(Value::from));
    set("stream_maxlen", args.stream_maxlen.map(Value::from));
    set("batch_size", args.batch_size.map(Value::from));
    set(
        "metrics_file",
        args.metrics_file
            .as_ref()
            .map(|p| Value::from(p.display().to_string())),
    );
    Settings::from_map(&map).map_err(Failure::from)
}

/// A field path flag (`a.b`) as the config writes it (`["a", "b"]`).
fn path_value(text: &str) -> Value {
    Value::from(text.split('.').map(str::to_string).collect::<Vec<_>>())
}

/// The config of a `redis://` or `rediss://` URL.
fn url_config(text: &str) -> Result<Map<String, Value>, Failure> {
    let bad = |why: &str| {
        Failure::config(
            format!("The Redis URL {why}: write it as redis://[user[:password]@]host[:port][/db], or rediss:// for TLS."),
            why,
        )
    };
    let url = url::Url::parse(text).map_err(|_| bad("cannot be read"))?;
    let tls = match url.scheme() {
        "redis" => false,
        "rediss" => true,
        _ => return Err(bad("has another scheme than redis or rediss")),
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let decode = |s: &str| {
        percent_decode(s)
            .ok_or_else(|| bad("has a user or password that is not valid percent-encoded UTF-8"))
    };
    let mut map = Map::new();
    map.insert("host".into(), json!(host));
    map.insert("port".into(), json!(url.port().unwrap_or(6379)));
    if !url.username().is_empty() {
        map.insert("username".into(), json!(decode(url.username())?));
    }
    if let Some(password) = url.password() {
        map.insert("password".into(), json!(decode(password)?));
    }
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() {
        let db: u32 = db
            .parse()
            .map_err(|_| bad("names a database that is not a number"))?;
        map.insert("db".into(), json!(db));
    }
    if tls {
        map.insert("ssl".into(), json!(true));
    }
    Ok(map)
}

/// `%xx` escapes undone (a URL's user and password).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The one-stream catalog of a load: its sync mode, primary key and cursor from the flags; an
/// overwrite's generation is the load's start (the same for every run of the load).
fn catalog_text(
    args: &LoadArgs,
    stream: &StreamDescriptor,
    started: i64,
) -> Result<String, Failure> {
    let path = |f: &str| f.split('.').map(str::to_string).collect::<Vec<_>>();
    let primary_key: Vec<Vec<String>> = args.primary_key.iter().map(|f| path(f)).collect();
    if args.mode == LoadMode::Dedup && primary_key.is_empty() {
        return Err(Failure::config(
            "--mode dedup needs --primary-key (the field or fields that identify a record).",
            "dedup without primary key",
        ));
    }
    let (mode, generation) = match args.mode {
        LoadMode::Append => ("append", 0),
        LoadMode::Dedup => ("append_dedup", 0),
        LoadMode::Overwrite => ("overwrite", started.max(1)),
    };
    let mut configured = json!({
        "stream": {"name": stream.name, "json_schema": {}, "is_resumable": true},
        "destination_sync_mode": mode,
        "generation_id": generation,
        "minimum_generation_id": generation,
    });
    if let Some(ns) = &stream.namespace {
        configured["stream"]["namespace"] = json!(ns);
    }
    if !primary_key.is_empty() {
        configured["primary_key"] = json!(primary_key);
    }
    if let Some(cursor) = &args.cursor {
        configured["cursor_field"] = json!(path(cursor));
    }
    Ok(json!({"streams": [configured]}).to_string())
}

/// A random load id, for a load that cannot be resumed (stdin without `--load-id`).
fn random_id() -> Result<String, Failure> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|e| Failure::system("No randomness for the load id.", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_config_fields() {
        let m = url_config("rediss://us%40r:p%3Ass@example.com:6380/2").unwrap();
        assert_eq!(m["host"], "example.com");
        assert_eq!(m["port"], 6380);
        assert_eq!(m["username"], "us@r");
        assert_eq!(m["password"], "p:ss");
        assert_eq!(m["db"], 2);
        assert_eq!(m["ssl"], true);
        let m = url_config("redis://127.0.0.1").unwrap();
        assert_eq!(m["port"], 6379);
        assert!(!m.contains_key("ssl") && !m.contains_key("password"));
        let m = url_config("redis://[::1]:7000").unwrap();
        assert_eq!(m["host"], "::1");
        for bad in ["http://x", "redis://", "redis://h/x", "not a url"] {
            let f = url_config(bad).unwrap_err();
            assert!(
                f.message.contains("redis://[user[:password]@]host"),
                "{bad}: {}",
                f.message
            );
            assert!(!f.message.contains("p:ss"));
        }
    }
}
