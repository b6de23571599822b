//! The key layout in Redis: the one place that names keys.
//!
//! Two layouts ([`Layout`]):
//!
//! * **java** (the default in standalone and sentinel mode), compatible with the Java connector: a
//!   stream's counter is `<namespace>:<stream>` (a null namespace is the empty string) and its
//!   record `N` is the hash `<namespace>:<stream>:<N>`. This layout is not injective, so
//!   [`check_catalog`] refuses catalogs whose streams would share keys.
//! * **tagged** (always in cluster mode): the counter is `{<tag>}` and record `N` is `{<tag>}:<N>`,
//!   where the tag is `<namespace>:<stream>` (or `<stream>` for a null namespace) with `%`, `{`, `}`
//!   and `:` inside the names percent-encoded. The braces make the whole tag Redis's hash tag, so
//!   every key of a stream (records, staging, tokens, marks) lands in one cluster slot, and the
//!   layout is injective for any names.
//!
//! Bookkeeping keys (batch tokens, staging, the `check` probe) live under [`RESERVED_PREFIX`], which
//! no namespace may use; they end with the stream's counter key, so they share its hash tag.

use std::collections::HashSet;

use crate::protocol::StreamDescriptor;

/// The first component of every bookkeeping key.
pub const RESERVED_PREFIX: &str = "_airbyte_redis";

/// Time to live of a batch token key: long enough for any sync, gone a week later.
pub const TOKEN_TTL_SECONDS: u64 = 7 * 24 * 3600;

/// Time to live of staged records and staging bookkeeping: a generation that is never resumed or
/// published is gone a week after its last use.
pub const STAGING_TTL_SECONDS: u64 = 7 * 24 * 3600;

/// How stream keys are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// `<namespace>:<stream>` and `<namespace>:<stream>:<id>`, as the Java connector.
    #[default]
    Java,
    /// `{<tag>}` and `{<tag>}:<id>`: one hash tag (one cluster slot) per stream, injective.
    Tagged,
}

impl Layout {
    /// The config's name of the layout.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Java => "java",
            Layout::Tagged => "tagged",
        }
    }
}

/// `name` with `%`, `{`, `}` and `:` percent-encoded (so it cannot end a hash tag or a component).
fn encode_component(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            ':' => out.push_str("%3A"),
            c => out.push(c),
        }
    }
    out
}

/// The keys of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamKeys {
    /// The counter: the id of the stream's last record.
    pub counter: String,
    /// What precedes a record's id in its key: `<counter>:`.
    pub record_prefix: String,
}

impl StreamKeys {
    /// The keys of `stream` in the Java layout.
    pub fn new(stream: &StreamDescriptor) -> Self {
        Self::with_layout(stream, Layout::Java)
    }

    /// The keys of `stream` in `layout`.
    pub fn with_layout(stream: &StreamDescriptor, layout: Layout) -> Self {
        let counter = match layout {
            Layout::Java => format!(
                "{}:{}",
                stream.namespace.as_deref().unwrap_or(""),
                stream.name
            ),
            Layout::Tagged => match &stream.namespace {
                // A null namespace has no `:` in its tag; any namespace (even "") has one.
                None => format!("{{{}}}", encode_component(&stream.name)),
                Some(ns) => format!(
                    "{{{}:{}}}",
                    encode_component(ns),
                    encode_component(&stream.name)
                ),
            },
        };
        let record_prefix = format!("{counter}:");
        StreamKeys {
            counter,
            record_prefix,
        }
    }

    /// The key of record `id`.
    pub fn record(&self, id: u64) -> String {
        format!("{}{id}", self.record_prefix)
    }

    /// The batch token key of this stream in run `run_id`. The scripts find the run in it (`:token:<run
    /// id>:`) to tell a load's own batches from another run's (see `load::record::LoadRecord`).
    pub fn token(&self, run_id: &str) -> String {
        format!("{RESERVED_PREFIX}:token:{run_id}:{}", self.counter)
    }

    /// The primary-key index of an `append_dedup` stream: a hash from each key's canonical text
    /// to `<id>:<cursor>` (id 0 once the key is deleted). It never expires.
    pub fn index(&self) -> String {
        format!("{RESERVED_PREFIX}:index:{}", self.counter)
    }

    /// The stream's value format, when it is not the default `hash`: written by the stream's
    /// batches, so a later sync in another format is refused before any data moves. It never
    /// expires.
    pub fn format_marker(&self) -> String {
        format!("{RESERVED_PREFIX}:format:{}", self.counter)
    }

    /// The tombstones of a stream keyed by primary key: a hash from a deleted key's suffix to the
    /// cursor of its delete. It never expires.
    pub fn tombstones(&self) -> String {
        format!("{RESERVED_PREFIX}:deleted:{}", self.counter)
    }

    /// The record of load `load_id` into this stream: a hash whose `position` each batch's script
    /// writes with its records, beside what the load is (see `load::record`). In the stream's
    /// slot. It never expires.
    pub fn load(&self, load_id: &str) -> String {
        format!("{RESERVED_PREFIX}:load:{load_id}:{}", self.counter)
    }
}

/// The set of stream counter keys whose publish is under way (its members have a publish marker).
pub fn publish_registry() -> String {
    format!("{RESERVED_PREFIX}:publishing")
}

/// The keys of a stream's staged generation (overwrite and truncate refreshes) and its publish.
///
/// All live under [`RESERVED_PREFIX`], so no reader of `<counter>:<id>` can mistake a staged record
/// for a record, and no stream's keys can match them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagingKeys {
    /// The staging counter: how many records are staged.
    pub counter: String,
    /// What precedes a staged record's id.
    pub record_prefix: String,
    /// Hash with the staged generation.
    pub meta: String,
    /// List of staged positions at which states were echoed (ascending).
    pub marks: String,
    /// Hash recording a publish under way.
    pub marker: String,
}

impl StagingKeys {
    /// The primary-key index of the staged generation of a deduplicated stream (the index key of
    /// the staging counter, as [`StreamKeys::index`] names it).
    pub fn index(&self) -> String {
        format!("{RESERVED_PREFIX}:index:{}", self.counter)
    }

    /// The tombstones of the staged generation of a stream keyed by primary key (as
    /// [`StreamKeys::tombstones`] names them for the staging counter).
    pub fn tombstones(&self) -> String {
        format!("{RESERVED_PREFIX}:deleted:{}", self.counter)
    }

    /// The value-format marker of the staged generation (as [`StreamKeys::format_marker`] names
    /// it for the staging counter): set by its first batch in a format other than `hash`.
    pub fn format_marker(&self) -> String {
        format!("{RESERVED_PREFIX}:format:{}", self.counter)
    }

    /// The moments of the staged generation's records (`ttl_field`: a hash id, or key suffix,
    /// -> epoch ms, 0 for none), which the publish gives them. The batch scripts name it
    /// themselves, from the staging counter they are given: `_airbyte_redis:moments:<counter>`.
    pub fn moments(&self) -> String {
        format!("{RESERVED_PREFIX}:moments:{}", self.counter)
    }

    /// Where a staged generation in the `stream` format is rebuilt from its kept entries, on a
    /// server that will not move a stream's last id back (the same hash tag as the staging).
    pub fn rebuild(&self) -> String {
        format!("{RESERVED_PREFIX}:rebuild:{}", self.counter)
    }

    /// The staging keys of the stream whose counter key is `counter`.
    pub fn for_counter(counter: &str) -> Self {
        let base = format!("{RESERVED_PREFIX}:staging:{counter}");
        StagingKeys {
            record_prefix: format!("{base}:"),
            counter: base,
            meta: format!("{RESERVED_PREFIX}:staging-meta:{counter}"),
            marks: format!("{RESERVED_PREFIX}:staging-marks:{counter}"),
            marker: format!("{RESERVED_PREFIX}:publish:{counter}"),
        }
    }
}

/// `text` with every glob character of Redis's MATCH (`* ? [ ] \`) escaped.
pub fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The key `check` writes and removes to prove write rights (hash-tagged: its token shares its
/// cluster slot).
pub fn probe_counter(run_id: &str) -> String {
    format!("{RESERVED_PREFIX}:check:{{{run_id}}}")
}

/// Refuses streams whose keys would collide with each other or with the bookkeeping keys.
///
/// Two streams collide when their counter keys are equal, or when one counter key is the other's
/// followed by `:` and digits (then it is one of the other stream's record keys).
pub fn check_catalog(streams: &[StreamDescriptor], layout: Layout) -> Result<(), String> {
    for s in streams {
        if let Some(ns) = &s.namespace {
            if ns == RESERVED_PREFIX || ns.starts_with(&format!("{RESERVED_PREFIX}:")) {
                return Err(format!(
                    "stream {s}: the namespace {ns:?} is reserved for the destination's bookkeeping keys; choose another namespace"
                ));
            }
        }
    }
    let counters: Vec<String> = streams
        .iter()
        .map(|s| StreamKeys::with_layout(s, layout).counter)
        .collect();
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, c) in counters.iter().enumerate() {
        if let Some(&j) = seen.get(c.as_str()) {
            return Err(collision(&streams[j], &streams[i], c));
        }
        seen.insert(c, i);
    }
    let all: HashSet<&str> = counters.iter().map(String::as_str).collect();
    for (i, c) in counters.iter().enumerate() {
        for (pos, _) in c.match_indices(':') {
            let (head, tail) = (&c[..pos], &c[pos + 1..]);
            if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) && all.contains(head) {
                let j = seen[head];
                return Err(collision(&streams[j], &streams[i], c));
            }
        }
    }
    Ok(())
}

fn collision(a: &StreamDescriptor, b: &StreamDescriptor, key: &str) -> String {
    format!(
        "streams {a} and {b} would share the Redis key {key:?} (keys are <namespace>:<stream>); rename one of them or give them different namespaces"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(ns: Option<&str>, name: &str) -> StreamDescriptor {
        StreamDescriptor {
            name: name.into(),
            namespace: ns.map(Into::into),
        }
    }

    #[test]
    fn java_layout() {
        let k = StreamKeys::new(&d(Some("public"), "users"));
        assert_eq!(k.counter, "public:users");
        assert_eq!(k.record(7), "public:users:7");
        assert_eq!(StreamKeys::new(&d(None, "users")).counter, ":users");
        assert_eq!(k.token("r1"), "_airbyte_redis:token:r1:public:users");
    }

    #[test]
    fn tagged_layout_is_injective_and_one_slot_per_stream() {
        let t =
            |ns: Option<&str>, name: &str| StreamKeys::with_layout(&d(ns, name), Layout::Tagged);
        assert_eq!(t(Some("public"), "users").counter, "{public:users}");
        assert_eq!(t(Some("public"), "users").record(7), "{public:users}:7");
        assert_eq!(t(None, "users").counter, "{users}");
        assert_eq!(t(Some(""), "users").counter, "{:users}");
        assert_eq!(t(Some("a:b"), "c").counter, "{a%3Ab:c}");
        assert_eq!(t(Some("a"), "b:c").counter, "{a:b%3Ac}");
        assert_eq!(t(None, "x}y{%").counter, "{x%7Dy%7B%25}");
        let tricky = [
            d(None, "users"),
            d(Some(""), "users"),
            d(Some("users"), ""),
            d(None, ":users"),
            d(Some("a:b"), "c"),
            d(Some("a"), "b:c"),
            d(Some("a}"), "{b"),
            d(Some("a%7D"), "%7Bb"),
            d(Some("n"), "users"),
            d(Some("n"), "users:2024"),
        ];
        assert!(check_catalog(&tricky, Layout::Tagged).is_ok());
        let counters: HashSet<String> = tricky
            .iter()
            .map(|s| StreamKeys::with_layout(s, Layout::Tagged).counter)
            .collect();
        assert_eq!(counters.len(), tricky.len());
        // Every key of a stream carries the same hash tag: the counter itself.
        let k = t(Some("a}"), "{b");
        let tag = &k.counter[1..k.counter.len() - 1];
        assert!(!tag.contains('}') && !tag.contains('{'));
        let staging = StagingKeys::for_counter(&k.counter);
        for key in [
            k.token("r"),
            staging.counter,
            staging.marker,
            staging.marks,
            k.record(3),
        ] {
            let open = key.find('{').unwrap();
            let close = open + key[open..].find('}').unwrap();
            assert_eq!(&key[open + 1..close], tag, "{key}");
        }
    }

    #[test]
    fn staging_keys_are_reserved_and_never_record_shaped() {
        let k = StagingKeys::for_counter("n:users");
        assert_eq!(k.counter, "_airbyte_redis:staging:n:users");
        assert_eq!(k.record_prefix, "_airbyte_redis:staging:n:users:");
        assert!(k.marker.starts_with(RESERVED_PREFIX));
        assert_eq!(escape_glob(r"a*b?[c]\d"), r"a\*b\?\[c\]\\d");
    }

    #[test]
    fn collisions_are_refused() {
        let j = Layout::Java;
        assert!(check_catalog(&[d(Some("a:b"), "c"), d(Some("a"), "b:c")], j).is_err());
        assert!(check_catalog(&[d(None, "s"), d(Some(""), "s")], j).is_err());
        let err =
            check_catalog(&[d(Some("n"), "users"), d(Some("n"), "users:2024")], j).unwrap_err();
        assert!(err.contains("n:users:2024"), "{err}");
        assert!(check_catalog(&[d(Some(RESERVED_PREFIX), "x")], j).is_err());
        assert!(check_catalog(&[d(Some(RESERVED_PREFIX), "x")], Layout::Tagged).is_err());
    }

    #[test]
    fn near_misses_are_fine() {
        assert!(check_catalog(
            &[
                d(Some("n"), "users"),
                d(Some("n"), "users:x"),
                d(Some("n"), "users2"),
                d(Some("m"), "users"),
                d(None, "users"),
            ],
            Layout::Java
        )
        .is_ok());
    }
}
