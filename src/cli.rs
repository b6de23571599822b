//! The command line: `spec`, `check --config F`, `write --config F --catalog F`, and `load`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// An Airbyte destination that loads records into Redis in atomic, pipelined Lua batches.
#[derive(Debug, Parser)]
#[command(name = "destination-redis", version, about)]
pub struct Cli {
    /// Accepted for compatibility with Airbyte's CDKs; has no effect.
    #[arg(long, global = true)]
    pub debug: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The Airbyte destination commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the connector specification (one SPEC message).
    Spec,
    /// Check that the configuration can connect and write (one CONNECTION_STATUS message).
    Check {
        /// Path of the connector configuration (JSON).
        #[arg(long)]
        config: PathBuf,
    },
    /// Read Airbyte messages on stdin and write their records to Redis.
    Write {
        /// Path of the connector configuration (JSON).
        #[arg(long)]
        config: PathBuf,
        /// Path of the configured catalog (JSON).
        #[arg(long)]
        catalog: PathBuf,
    },
    /// Load files or stdin into one stream, in atomic batches, resumable exactly once.
    #[command(after_help = LOAD_EXAMPLES)]
    Load(Box<LoadArgs>),
}

const LOAD_EXAMPLES: &str = "\
Examples:
  destination-redis load --url redis://localhost:6379 --stream users users.jsonl
  destination-redis load --config config.json --stream events --namespace app events-*.csv.gz
  zcat dump.json.gz | destination-redis load --url rediss://user@host:6380 --stream items \\
      --format json --load-id items-2026-12-04 -
  destination-redis load --url redis://localhost:6379 --stream users --mode dedup \\
      --primary-key id --cursor updated_at users.jsonl
  destination-redis load --url redis://localhost:6379 --stream users --status LOAD_ID

A load killed at any point and run again with the same inputs (or the same --load-id) continues
right after the last committed record: nothing lost, nothing twice. The password may also come
from REDIS_PASSWORD, the URL from REDIS_URL; neither is ever printed.";

/// Where a load's input records are parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// One JSON object per line (JSON Lines, NDJSON).
    Jsonl,
    /// One JSON array of objects, read as a stream.
    Json,
    /// Comma-separated values with a header row.
    Csv,
}

/// How a load writes its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LoadMode {
    /// After the stream's existing records.
    #[default]
    Append,
    /// Replace the stream's records once every input is loaded (until then the old ones stay).
    Overwrite,
    /// One record per primary key (`--primary-key`), the newest by `--cursor`.
    Dedup,
}

/// `load`'s arguments.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Input files (`-` for stdin; none: stdin). Formats by extension (.jsonl, .ndjson, .json,
    /// .csv, after any .gz or .zst); gzip and zstd are recognised by their first bytes.
    pub inputs: Vec<PathBuf>,
    /// The stream to load into.
    #[arg(long)]
    pub stream: String,
    /// The stream's namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// The connector configuration (JSON): the connection and the record options.
    #[arg(long, conflicts_with = "url")]
    pub config: Option<PathBuf>,
    /// The server: redis://[user[:password]@]host[:port][/db], or rediss:// for TLS (default:
    /// REDIS_URL). The password may come from REDIS_PASSWORD instead.
    #[arg(long)]
    pub url: Option<String>,
    /// The inputs' format, when their names do not say it.
    #[arg(long, value_enum)]
    pub format: Option<InputFormat>,
    /// CSV values that look like numbers or booleans (`true`, `false`) become JSON numbers and
    /// booleans, and empty values null (without it, every value is a string).
    #[arg(long)]
    pub csv_infer: bool,
    /// How records are written.
    #[arg(long, value_enum, default_value_t)]
    pub mode: LoadMode,
    /// The primary key's fields (`--mode dedup`), separated by commas; a nested field as a.b.
    #[arg(long, value_delimiter = ',')]
    pub primary_key: Vec<String>,
    /// The cursor field (`--mode dedup`): the newest version of a key wins; a nested field as a.b.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Records expire this many seconds after they are written.
    #[arg(long)]
    pub ttl_seconds: Option<u64>,
    /// Records expire at the moment this field holds (epoch seconds, milliseconds or RFC 3339).
    #[arg(long)]
    pub ttl_field: Option<String>,
    /// How records are stored: hash, fields, string or stream.
    #[arg(long)]
    pub value_format: Option<String>,
    /// Record keys: sequence (`ns:stream:<id>`) or primary_key (`ns:stream:<key>`).
    #[arg(long)]
    pub record_key: Option<String>,
    /// With `--value-format stream`: trim the Redis stream to about this many entries.
    #[arg(long)]
    pub stream_maxlen: Option<u64>,
    /// Records per batch (default: the config's batch_size, else 500).
    #[arg(long)]
    pub batch_size: Option<u64>,
    /// The load's id (letters, digits, `.`, `_`, `-`); default: derived from the stream and the
    /// inputs' names, sizes and modification times. Stdin needs one to be resumable.
    #[arg(long)]
    pub load_id: Option<String>,
    /// Load even when this load has finished before (it starts over).
    #[arg(long)]
    pub again: bool,
    /// Print where load ID stands (stdout) and exit.
    #[arg(long, value_name = "ID")]
    pub status: Option<String>,
    /// Write records that cannot be loaded to this file (one line each) and go on.
    #[arg(long, value_name = "FILE")]
    pub skip_bad: Option<PathBuf>,
    /// Parse and count everything, connect and check rights, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// No progress and no summary (errors are still printed).
    #[arg(long, short)]
    pub quiet: bool,
    /// Write metrics in the Prometheus text format to this file, every few seconds and at the end.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Milliseconds between plain progress lines (when stderr is not a terminal).
    #[arg(long, default_value_t = 5000, hide = true)]
    pub progress_every_ms: u64,
}
