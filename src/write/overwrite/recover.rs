//! Recovery: every publish an earlier run left under way is finished before anything else; one
//! that cannot finish blocks only its own stream.

use super::publish::{finish_publish, unregister};
use super::{OverwriteStream, RecordRule};
use crate::connect::nodes::Nodes;
use crate::connect::{classify, Context};
use crate::error::{Failure, FailureType};
use crate::keys::{self, StagingKeys, StreamKeys};

/// What [`recover`] found: publishes it finished, and publishes that cannot finish.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Counter keys of the streams whose interrupted publish is now finished.
    pub finished: Vec<String>,
    /// Counter keys of the streams whose publish cannot finish, with why (a key in the way, a
    /// staged record gone): each blocks only its own stream.
    pub stuck: Vec<(String, Failure)>,
}

impl Recovery {
    /// One line per publish it finished.
    pub fn finished_messages(&self) -> Vec<String> {
        self.finished
            .iter()
            .map(|counter| {
                format!("Finished the publish of stream key {counter:?} that an earlier sync left under way.")
            })
            .collect()
    }

    /// One warning per publish that cannot finish (each blocks only its own stream).
    pub fn stuck_messages(&self) -> Vec<String> {
        self.stuck
            .iter()
            .map(|(counter, f)| {
                format!("The publish of stream key {counter:?} that an earlier sync left under way cannot finish: {} Other streams are not affected; the next sync of that stream fails until it is fixed.", f.message)
            })
            .collect()
    }

    /// The failure of a stuck publish of one of `counters` (a stream this sync writes), if any.
    pub fn blocking(&self, counters: &[&str]) -> Option<Failure> {
        self.stuck
            .iter()
            .find(|(c, _)| counters.contains(&c.as_str()))
            .map(|(counter, f)| Failure {
                message: format!(
                    "Stream key {counter:?} cannot be written: the publish an earlier sync left under way cannot finish. {}",
                    f.message
                ),
                ..f.clone()
            })
    }
}

/// Finishes every publish a failed or killed run left under way. A publish that cannot finish (not
/// a transient failure) is reported in [`Recovery::stuck`] and stays registered: it must not block
/// the syncs of other streams, and its own stream's next sync reports it.
pub fn recover(nodes: &mut Nodes) -> Result<Recovery, Failure> {
    let during = "finishing a publish that an earlier run left under way";
    let registry = keys::publish_registry();
    let link = nodes.link_for(&registry)?;
    // Named for what it does: most runs find no publish under way at all.
    let ctx = Context {
        during: format!(
            "while reading {registry} (the publishes an earlier run may have left under way)"
        ),
        ..link.ctx.clone()
    };
    let counters: Vec<String> = redis::cmd("SMEMBERS")
        .arg(&registry)
        .query(&mut link.con)
        .map_err(|e| classify(&e, &ctx))?;
    let mut recovery = Recovery::default();
    for counter in &counters {
        let staging = StagingKeys::for_counter(counter);
        let link = nodes.link_for(counter)?;
        let ctx = Context {
            during: format!("{during} (stream key {counter:?})"),
            ..link.ctx.clone()
        };
        type Marker = (Option<u64>, Option<u64>, Option<String>, Option<String>);
        let (n, old, keyed, was): Marker = redis::cmd("HMGET")
            .arg(&staging.marker)
            .arg("n")
            .arg("old")
            .arg("keyed")
            .arg("was")
            .query(&mut link.con)
            .map_err(|e| classify(&e, &ctx))?;
        let live = StreamKeys {
            counter: counter.clone(),
            record_prefix: format!("{counter}:"),
        };
        if let (Some(n), Some(old)) = (n, old) {
            let finished = match keyed.as_deref() {
                // A stream keyed by primary key: its phases by SCAN (the prefixes are all it needs).
                Some("1") => {
                    let s = OverwriteStream::new(live.clone(), 0, true);
                    super::keyed::finish(&mut link.con, &s, &ctx)
                }
                _ => {
                    let was = RecordRule::new(was.as_deref(), old);
                    finish_publish(&mut link.con, &live, &staging, n, was, false, &ctx)
                }
            };
            match finished {
                Ok(_) => recovery.finished.push(counter.clone()),
                Err(f) if f.failure_type == FailureType::Transient => return Err(f),
                Err(f) => {
                    recovery.stuck.push((counter.clone(), f));
                    continue;
                }
            }
        }
        unregister(nodes, counter, &ctx)?;
    }
    Ok(recovery)
}
