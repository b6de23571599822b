//! Integration tests: one binary (link time), a module per capability, real servers only.

mod cluster;
mod common;
mod dedup;
mod dedup_stops;
mod durable;
mod expiry;
mod faults;
mod formats;
#[cfg(feature = "docker-tests")]
mod image;
mod load;
mod operating;
mod overwrite;
mod overwrite_stops;
mod properties;
mod secrets;
mod sentinel;
mod spec_check;
mod tls;
#[cfg(feature = "ssh-tunnel")]
mod tunnel;
mod write_append;
