//! Integration tests: one binary (link time), a module per capability, real servers only.

mod common;
mod overwrite;
mod properties;
mod spec_check;
mod write_append;
