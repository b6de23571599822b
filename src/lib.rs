//! destination-redis: an Airbyte destination that loads records into Redis through preloaded Lua
//! scripts, in whole atomic batches.
//!
//! # Layout
//!
//! | module     | job |
//! |------------|-----|
//! | `cli`      | the command line |
//! | `config`   | the connector config → validated [`config::Settings`] |
//! | `topology` | the config's `topology`: standalone, or a master found through Sentinel |
//! | `spec`     | the SPEC document |
//! | `protocol` | Airbyte messages: input lines, catalog, state echo, stdout |
//! | `keys`     | the key layout in Redis |
//! | `scripts`  | the Lua scripts of `lua/` and their SHA1 |
//! | `connect`  | connecting, AUTH, SELECT; Redis errors → user-facing failures |
//! | `check`    | the `check` command |
//! | `write`    | the `write` command: reader, batcher, checkpoint, pipelined writer |
//! | `error`    | [`error::Failure`] and Airbyte's failure types |

pub mod check;
pub mod classify;
pub mod cli;
pub mod config;
pub mod connect;
pub mod error;
pub mod java_staging;
pub mod keys;
pub mod protocol;
pub mod scripts;
pub mod spec;
pub mod write;
