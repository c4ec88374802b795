//! Apache Kafka for tests, run by `scripts/kafka.sh`: the run's shared cluster, or a cluster
//! of a test's own that it may break. A missing cluster fails the test, never skips it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The shared cluster's bootstrap servers, exported by `scripts/test.sh`.
pub const BROKERS_ENV: &str = "BIMRIDE_KAFKA_BROKERS";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka.sh")
}

/// The bootstrap servers of the run's shared cluster. Panics, failing the test, without one.
pub fn shared_brokers() -> String {
    match std::env::var(BROKERS_ENV) {
        Ok(b) if !b.trim().is_empty() => b,
        _ => panic!(
            "{BROKERS_ENV} is not set: this test needs a real Apache Kafka cluster. Run \
             `scripts/kafka.sh install && export {BROKERS_ENV}=$(scripts/kafka.sh start | tail -1)` \
             (scripts/test.sh does both)"
        ),
    }
}

/// Runs `scripts/kafka.sh ARGS --dir DIR` and returns its standard output.
fn kafka_sh(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(script())
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .with_context(|| format!("running {}", script().display()))?;
    if !out.status.success() {
        bail!(
            "scripts/kafka.sh {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A cluster of a test's own, in a folder of its own; stopped on drop. Its folder (with the
/// nodes' logs) is kept when the test fails.
#[derive(Debug)]
pub struct KafkaCluster {
    dir: PathBuf,
    bootstrap: String,
    nodes: u32,
}

impl KafkaCluster {
    /// Formats and starts `nodes` combined broker+controller nodes.
    pub fn start(nodes: u32) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("bimride-kafka-{}", uuid::Uuid::new_v4()));
        let out = kafka_sh(&dir, &["start", "--nodes", &nodes.to_string()])?;
        let bootstrap = out
            .lines()
            .last()
            .context("kafka.sh start printed nothing")?
            .to_owned();
        Ok(Self {
            dir,
            bootstrap,
            nodes,
        })
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    pub fn nodes(&self) -> u32 {
        self.nodes
    }

    /// Where the nodes' logs are.
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// The process id of `node` (1-based), while it runs.
    pub fn pid(&self, node: u32) -> anyhow::Result<u32> {
        Ok(kafka_sh(&self.dir, &["pid", &node.to_string()])?
            .trim()
            .parse()?)
    }

    /// Sends `signal` (such as `KILL`, `STOP` or `CONT`) to `node`.
    pub fn signal(&self, node: u32, signal: &str) -> anyhow::Result<()> {
        let pid = self.pid(node)?;
        let status = Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -s {signal} {pid} failed");
        }
        Ok(())
    }

    /// Stops `node` cleanly (SIGTERM, a controlled shutdown).
    pub fn stop_node(&self, node: u32) -> anyhow::Result<()> {
        kafka_sh(&self.dir, &["node-stop", &node.to_string()]).map(drop)
    }

    /// Starts `node` again on its data and ports, and waits until it has started.
    pub fn start_node(&self, node: u32) -> anyhow::Result<()> {
        kafka_sh(&self.dir, &["node-start", &node.to_string()]).map(drop)
    }

    /// The node id of the active KRaft controller.
    pub fn active_controller(&self) -> anyhow::Result<u32> {
        let out = kafka_sh(&self.dir, &["controller"])?;
        out.trim()
            .parse()
            .with_context(|| format!("no controller id in {out:?}"))
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        if let Err(e) = kafka_sh(&self.dir, &["stop"]) {
            eprintln!("stopping the cluster in {}: {e:#}", self.dir.display());
        }
        if std::thread::panicking() {
            eprintln!(
                "kafka cluster kept for inspection in {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
