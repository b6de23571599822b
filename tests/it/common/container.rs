//! The version matrix: a redis-server run in a container of a locally built image (see
//! `scripts/docker.sh`) instead of a local process, through testcontainers.
//!
//! Only host networking exists on our machines (no registry, no bridge), so the container listens
//! on the loopback port the harness chose, and its data directory is the harness's temp dir,
//! bind-mounted at the same path (logs, AOF files and restarts work as with a local process).

use std::path::Path;

use testcontainers::core::{Mount, WaitFor};
use testcontainers::runners::SyncRunner;
use testcontainers::{Container, GenericImage, ImageExt};

/// A running server container; removed (killed) on drop.
pub struct RedisContainer {
    container: Container<GenericImage>,
}

impl RedisContainer {
    /// Starts `redis-server <args>` in `image` (`name:tag`) with `dir` mounted at the same path.
    /// Readiness is the caller's PING loop.
    pub fn start(image: &str, args: &[String], dir: &Path) -> Self {
        let (name, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
        let dir = dir.display().to_string();
        let mut cmd = vec![server_binary(image).to_string()];
        cmd.extend(args.iter().cloned());
        let container = GenericImage::new(name, tag)
            .with_wait_for(WaitFor::Nothing)
            .with_network("host")
            .with_mount(Mount::bind_mount(dir.clone(), dir))
            .with_cmd(cmd)
            .start()
            .unwrap_or_else(|e| {
                panic!("start a container of {image} (is the Docker engine up?): {e}")
            });
        RedisContainer { container }
    }

    /// Whether the server process in the container has exited.
    pub fn exited(&self) -> bool {
        !self.container.is_running().unwrap_or(false)
    }
}

/// `valkey-server` for Valkey images (their tag names Valkey), `redis-server` otherwise.
fn server_binary(image: &str) -> &'static str {
    if image.contains("valkey") {
        "valkey-server"
    } else {
        "redis-server"
    }
}
