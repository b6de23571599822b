//! The Airbyte image, run as Airbyte runs it: `docker run --rm -i IMAGE spec | check | write`, with
//! the job's files mounted at an arbitrary path and another working directory, against a real
//! redis-server on loopback (host networking). The image is built by `scripts/docker.sh` and named
//! by `DESTINATION_IMAGE`; these tests run in the Docker phase of `scripts/test.sh`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// Where a job's files appear inside the container: a path with a space, as nothing assumes.
const JOB_DIR: &str = "/jobs/sync 42/files";

fn image() -> String {
    std::env::var("DESTINATION_IMAGE")
        .expect("DESTINATION_IMAGE names the image under test (scripts/docker.sh builds it)")
}

fn docker() -> Command {
    Command::new(std::env::var("DOCKER").unwrap_or_else(|_| "docker".into()))
}

/// Runs docker with these arguments and returns its stdout (panics on failure).
fn docker_out(args: &[&str]) -> String {
    let out = docker().args(args).output().expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A job directory on the host holding config.json (and catalog.json), readable by the image's
/// non-root user, as Airbyte's job volumes are.
struct Job {
    dir: tempfile::TempDir,
}

impl Job {
    fn new(config: &Value, catalog: Option<&Value>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, v: &Value| {
            let path = dir.path().join(name);
            std::fs::write(&path, v.to_string()).expect("write job file");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        };
        write("config.json", config);
        if let Some(c) = catalog {
            write("catalog.json", c);
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        Job { dir }
    }

    /// `docker run --rm -i` of the image with this job mounted read-only at [`JOB_DIR`], the
    /// working directory elsewhere, and `args` (paths relative to the job dir are made absolute).
    fn run(&self, name: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = docker();
        cmd.args([
            "run",
            "--rm",
            "-i",
            "--network",
            "host",
            "--workdir",
            "/tmp",
        ]);
        cmd.arg("--volume")
            .arg(format!("{}:{JOB_DIR}:ro", self.dir.path().display()));
        if let Some(n) = name {
            cmd.args(["--name", n]);
        }
        cmd.arg(image());
        for a in args {
            if a.ends_with(".json") {
                cmd.arg(format!("{JOB_DIR}/{a}"));
            } else {
                cmd.arg(a);
            }
        }
        cmd
    }

    fn write(&self, input: &str) -> RunOutput {
        let cmd = self.run(
            None,
            &[
                "write",
                "--config",
                "config.json",
                "--catalog",
                "catalog.json",
            ],
        );
        run_command(cmd, input.as_bytes().to_vec())
    }
}

/// `key: value` of metadata.yaml (top-level keys of its `data:` block are unique).
fn metadata(key: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("metadata.yaml"))
        .expect("metadata.yaml");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("metadata.yaml has no {key}"))
        .trim()
        .to_string()
}

#[test]
fn the_image_follows_airbyte_conventions() {
    let inspect: Value =
        serde_json::from_str(&docker_out(&["image", "inspect", &image()])).expect("inspect JSON");
    let config = &inspect[0]["Config"];
    let entrypoint = config["Entrypoint"].as_array().expect("an ENTRYPOINT");
    assert_eq!(entrypoint.len(), 1, "{entrypoint:?}");
    let entry = entrypoint[0].as_str().expect("entrypoint string");
    assert!(entry.starts_with('/'), "entrypoint not absolute: {entry}");
    let env: Vec<&str> = config["Env"]
        .as_array()
        .expect("Env")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        env.contains(&format!("AIRBYTE_ENTRYPOINT={entry}").as_str()),
        "AIRBYTE_ENTRYPOINT must equal the ENTRYPOINT {entry}: {env:?}"
    );
    assert_eq!(config["User"], "airbyte");
    let labels = &config["Labels"];
    assert_eq!(labels["io.airbyte.name"], metadata("dockerRepository"));
    assert_eq!(labels["io.airbyte.version"], metadata("dockerImageTag"));
    assert_eq!(metadata("dockerImageTag"), env!("CARGO_PKG_VERSION"));
    assert_eq!(metadata("connectorType"), "destination");

    // printenv exists (Airbyte's entrypoint check runs it), /airbyte is writable by the user that
    // runs the connector, and CA certificates are there for TLS against public roots.
    let out = docker_out(&[
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        &image(),
        "-c",
        "printenv AIRBYTE_ENTRYPOINT && id -un && touch /airbyte/probe && echo writable \
         && test -s /etc/ssl/certs/ca-certificates.crt && echo certificates",
    ]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [entry, "airbyte", "writable", "certificates"]
    );
}

#[test]
fn spec_in_the_image_is_the_binarys_spec() {
    let job = Job::new(&json!({}), None);
    let out = run_command(job.run(None, &["spec"]), Vec::new());
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(out.messages, spec().messages, "{}", out.dump());
}

#[test]
fn check_in_the_image_succeeds_and_fails_with_a_status() {
    let server = RedisServer::start_with(&["--requirepass", "image-check-pw"]);
    let good = Job::new(&server.config(), None);
    let out = run_command(
        good.run(None, &["check", "--config", "config.json"]),
        Vec::new(),
    );
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(out.statuses().len(), 1, "{}", out.dump());
    out.assert_check_succeeded();

    let mut wrong = server.config();
    wrong["password"] = json!("not-the-password-0xC0FFEE");
    let bad = Job::new(&wrong, None);
    let out = run_command(
        bad.run(None, &["check", "--config", "config.json"]),
        Vec::new(),
    );
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let status = &out.statuses()[0]["connectionStatus"];
    assert_eq!(status["status"], "FAILED", "{}", out.dump());
    assert!(
        status["message"]
            .as_str()
            .unwrap_or("")
            .contains("password"),
        "{}",
        out.dump()
    );
    assert!(!out.stdout.contains("0xC0FFEE") && !out.stderr.contains("0xC0FFEE"));
}

fn lines(stream: &str, tag: &str, n: usize, state_every: usize) -> (String, Vec<String>) {
    let mut input = String::new();
    let mut datas = Vec::new();
    for i in 0..n {
        let data = format!(r#"{{"id":{i},"tag":"{tag}","text":"line\nbreak \u2028 é"}}"#);
        input.push_str(&record(None, stream, &data, 1_700_000_000_000 + i as i64));
        input.push('\n');
        datas.push(data);
        if (i + 1) % state_every == 0 {
            input.push_str(&stream_state(None, stream, &format!(r#"{{"at":{i}}}"#)));
            input.push('\n');
        }
    }
    (input, datas)
}

/// A stream's counter and its records' data (parsed), checking that ids are 1..N in order.
fn data_of(con: &mut redis::Connection, stream: &str) -> (Option<i64>, Vec<Value>) {
    let (counter, records) = read_stream(con, None, stream);
    let datas = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            assert_eq!(r["_airbyte_ab_id"], (i + 1).to_string());
            serde_json::from_str(&r["_airbyte_data"]).expect("stored data is JSON")
        })
        .collect();
    (counter, datas)
}

fn parsed(datas: &[String]) -> Vec<Value> {
    datas
        .iter()
        .map(|d| serde_json::from_str(d).expect("json"))
        .collect()
}

#[test]
fn write_in_the_image_appends_and_overwrites() {
    let server = RedisServer::start();
    let mut con = server.conn();
    // An older generation of `products` that the overwrite below must replace.
    let (old, _) = lines("products", "old", 700, 700);
    let first = Job::new(
        &server.config(),
        Some(&catalog_with(&[(None, "products")], "append", 0, 0)),
    );
    let out = first.write(&old);
    assert_eq!(out.code, Some(0), "{}", out.dump());

    let mut catalog = catalog_with(&[(None, "users"), (None, "products")], "append", 0, 0);
    catalog["streams"][1]["destination_sync_mode"] = json!("overwrite");
    catalog["streams"][1]["generation_id"] = json!(3);
    let job = Job::new(&server.config(), Some(&catalog));
    let (users, user_datas) = lines("users", "new", 2_000, 500);
    let (products, product_datas) = lines("products", "new", 300, 100);
    let input = format!(
        "{users}{products}{}\n{}\n",
        status(None, "users", "COMPLETE"),
        status(None, "products", "COMPLETE")
    );
    let out = job.write(&input);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert!(out.traces().is_empty(), "{}", out.dump());
    let counts: Vec<(String, f64)> = out
        .states()
        .iter()
        .map(|s| {
            (
                s["state"]["stream"]["stream_descriptor"]["name"]
                    .as_str()
                    .expect("name")
                    .to_string(),
                s["state"]["destinationStats"]["recordCount"]
                    .as_f64()
                    .expect("recordCount"),
            )
        })
        .collect();
    let mut expected: Vec<(String, f64)> = vec![("users".into(), 500.0); 4];
    expected.extend(vec![("products".into(), 100.0); 3]);
    assert_eq!(counts, expected, "{}", out.dump());

    // (assert! rather than assert_eq!: a difference would print thousands of records)
    assert!(
        data_of(&mut con, "users") == (Some(2_000), parsed(&user_datas)),
        "users differ"
    );
    assert!(
        data_of(&mut con, "products") == (Some(300), parsed(&product_datas)),
        "products differ"
    );
    assert!(
        all_keys(&mut con)
            .iter()
            .all(|k| !k.starts_with(":products:")
                || k[":products:".len()..]
                    .parse::<i64>()
                    .is_ok_and(|id| id <= 300)),
        "old products remain"
    );
}

#[test]
fn a_failing_write_in_the_image_exits_non_zero_with_a_trace() {
    let server = RedisServer::start();
    let job = Job::new(
        &server.config(),
        Some(&catalog_with(&[(None, "users")], "append", 0, 0)),
    );
    let input = format!("{}\n", record(None, "not_in_catalog", "{}", 1));
    let out = job.write(&input);
    assert_eq!(out.code, Some(1), "{}", out.dump());
    let trace = &out.traces()[0]["trace"]["error"];
    assert!(
        trace["message"]
            .as_str()
            .unwrap_or("")
            .contains("not_in_catalog"),
        "{}",
        out.dump()
    );
    assert!(trace["failure_type"].is_string(), "{}", out.dump());
}

/// The connector is PID 1 of its container and runs as `airbyte`; Airbyte cancels a sync with
/// `docker stop` (SIGTERM to PID 1), which must end it cleanly well before the kill that follows.
#[test]
fn the_connector_runs_as_airbyte_and_docker_stop_ends_it_cleanly() {
    let server = RedisServer::start();
    let mut con = server.conn();
    let job = Job::new(
        &server.config(),
        Some(&catalog_with(&[(None, "users")], "append", 0, 0)),
    );
    let name = format!("destination-redis-test-{}", std::process::id());
    let mut sync = Interactive::start_command(job.run(
        Some(&name),
        &[
            "write",
            "--config",
            "config.json",
            "--catalog",
            "catalog.json",
        ],
    ));
    let (first, _) = lines("users", "a", 1_000, 1_000);
    sync.send(&first);
    sync.wait_for_states(1, Duration::from_secs(60));

    let status = docker_out(&["exec", &name, "cat", "/proc/1/status"]);
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .expect("Uid line")
        .to_string();
    let airbyte_uid = docker_out(&["exec", &name, "id", "-u", "airbyte"]);
    assert_eq!(uid, airbyte_uid.trim(), "PID 1 runs as uid {uid}");
    assert_ne!(uid, "0");
    let cmdline = docker_out(&["exec", &name, "cat", "/proc/1/cmdline"]).replace('\0', " ");
    assert!(cmdline.contains("destination-redis write"), "{cmdline}");

    let (more, _) = lines("users", "b", 10, 1_000_000);
    sync.send(&more);
    let started = Instant::now();
    docker_out(&["stop", "--time", "30", &name]);
    let stopped_in = started.elapsed();
    let out = sync.finish();
    assert!(
        stopped_in < Duration::from_secs(20),
        "docker stop took {stopped_in:?}: SIGTERM was not handled by PID 1"
    );
    assert_eq!(out.code, Some(1), "{}", out.dump());
    assert!(!out.traces().is_empty(), "{}", out.dump());
    let (counter, _) = read_stream(&mut con, None, "users");
    // Everything read before the SIGTERM is committed (the 10 records may or may not have been
    // read by then); nothing was written twice or lost behind the echoed state.
    let counter = counter.expect("counter");
    assert!((1_000..=1_010).contains(&counter), "counter {counter}");
    assert_eq!(out.states().len(), 1, "{}", out.dump());
}
