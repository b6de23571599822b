//! destination-redis: an Airbyte destination that loads records into Redis through preloaded Lua
//! scripts, in whole atomic batches.
//!
//! # Layout
//!
//! From the bottom layer up; a module imports only from the rows above it (ARCHITECTURE.md has
//! the picture and the life of a record and of a STATE).
//!
//! | module         | job |
//! |----------------|-----|
//! | `error`, `cli` | [`error::Failure`] and Airbyte's failure types; the command line |
//! | `protocol`     | Airbyte messages: input lines, catalog, state echo, stdout |
//! | `metrics`      | a run's counters: progress lines, the summary, the Prometheus text file |
//! | `keys`         | the key layout in Redis |
//! | `config`       | the connector config → validated [`config::Settings`]: fields, TLS, tunnel, topology |
//! | `spec`         | the SPEC document (tested against the config's field list) |
//! | `classify`     | Redis and connection errors → one sentence and a failure type |
//! | `scripts`      | the Lua scripts of `lua/`, their SHA1, loading and calling them |
//! | `connect`      | connecting (TLS, SSH tunnel, sentinels, cluster nodes), AUTH, SELECT |
//! | `java_staging` | the Java connector's leftover staging (`tmp:…`) |
//! | `write`        | the `write` command: reader, batcher, checkpoint, pipelined writer |
//! | `check`        | the `check` command |
//! | `load`         | the `load` command: files or stdin through the `write` pipeline, resumable |

pub mod check;
pub mod classify;
pub mod cli;
pub mod config;
pub mod connect;
pub mod error;
pub mod java_staging;
pub mod keys;
pub mod load;
pub mod metrics;
pub mod protocol;
pub mod scripts;
pub mod spec;
pub mod write;
