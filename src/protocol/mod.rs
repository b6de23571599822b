//! The Airbyte protocol as this destination sees it.
//!
//! | module    | job |
//! |-----------|-----|
//! | `input`   | one stdin line → a [`input::Message`], leniently, with the raw text of `data` |
//! | `catalog` | the `--catalog` file → the configured streams |
//! | `state`   | a STATE's own text → its echo with `destinationStats.recordCount` |
//! | `output`  | the messages this destination prints, and the one thread that prints them |
//! | `cursor`  | a record's cursor, encoded so that one byte-wise rule orders versions |
//! | `upsert`  | an `append_dedup` record's primary key, cursor and delete mark, from its `data` |
//! | `expire_at` | the moment a record expires, from its `ttl_field` |
//! | `walk`    | the targeted walk of `data` those two use: a few named fields, the rest skipped |

pub mod catalog;
pub mod cursor;
pub mod expire_at;
pub mod input;
pub mod output;
pub mod state;
pub mod upsert;
pub mod walk;

/// A stream's identity: its namespace (absent and null are the same) and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
pub struct StreamDescriptor {
    /// The stream's name.
    pub name: String,
    /// The stream's namespace; `None` when absent or null.
    #[serde(default)]
    pub namespace: Option<String>,
}

impl std::fmt::Display for StreamDescriptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns:?}.{:?}", self.name),
            None => write!(f, "{:?} (no namespace)", self.name),
        }
    }
}
