//! The command line: `spec`, `check --config F`, `write --config F --catalog F`.

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
}
