//! The benchmark's children: BimRide's services (the city) and the simulated fleet, each in a
//! process of its own, so that the CPU of each party is read apart from the load generator's.
//! The benchmark starts each as a child and talks to it over a pipe, a line each way:
//!
//! - the city first announces where it listens, as one JSON line ([`Announced`]);
//! - `drivers N` grows the fleet to N drivers (it never shrinks);
//! - `reading` asks for the records the child has produced, by topic, the fewest drivers that
//!   were idle since the last reading, and the drivers dispatch knows, answered as one JSON
//!   line;
//! - closing the pipe stops it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_util::sync::CancellationToken;

/// The request for a [`Reading`].
const READING: &str = "reading";
/// The request that grows the fleet, followed by its size.
const DRIVERS: &str = "drivers";
/// How often the fleet's process looks at how many drivers are idle.
const IDLE_EVERY: Duration = Duration::from_millis(100);
/// How long the fleet may take to answer a reading.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);
/// How long the fleet may take to stop once its pipe closes.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// What the fleet reports when asked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Records produced since the fleet started, by topic.
    pub produced: BTreeMap<String, f64>,
    /// The fewest drivers idle at once since the previous reading; none before the first look.
    pub fewest_idle: Option<u64>,
    /// Drivers dispatch knows, in a process that runs dispatch.
    #[serde(default)]
    pub known_drivers: Option<u64>,
}

/// Where the city's process listens, its first line on the pipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announced {
    /// The API's base URL.
    pub http: String,
    pub schema_registry: String,
    pub bootstrap_servers: String,
}
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("starting the {0}'s process: {1}")]
    Spawn(&'static str, std::io::Error),
    #[error("talking to a child process: {0}")]
    Pipe(#[from] std::io::Error),
    #[error("the {0}'s process ended ({1:?})")]
    Ended(&'static str, Option<std::process::ExitStatus>),
    #[error("the {0}'s process did not answer within {1:?}")]
    Silent(&'static str, Duration),
    #[error("a child process answered {line:?}")]
    Answer {
        line: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A child's process, as its parent sees it.
#[derive(Debug)]
pub struct ChildProcess {
    /// What it is, for errors: "city" or "fleet".
    role: &'static str,
    /// Drivers the fleet was last told to have.
    drivers: usize,
    child: Child,
    stdin: ChildStdin,
    answers: Lines<BufReader<ChildStdout>>,
}

impl ChildProcess {
    /// Starts `program` with `args` and `env` as the `role` party, with a fleet of `drivers`
    /// (0 for the city); it must [`serve`] on its standard input and output.
    pub fn spawn(
        role: &'static str,
        program: &std::path::Path,
        args: Vec<OsString>,
        env: Vec<(&'static str, String)>,
        drivers: usize,
    ) -> Result<Self, ChildError> {
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group: a Ctrl-C reaches the benchmark, which reports what it
            // measured and then closes the pipe.
            .process_group(0)
            .spawn()
            .map_err(|e| ChildError::Spawn(role, e))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(ChildError::Ended(role, None));
        };
        Ok(Self {
            role,
            drivers,
            child,
            stdin,
            answers: BufReader::new(stdout).lines(),
        })
    }

    /// The child's records so far, the fewest drivers idle since the previous reading, and
    /// the drivers its dispatch knows.
    pub async fn reading(&mut self) -> Result<Reading, ChildError> {
        self.send(READING).await?;
        self.answer(ANSWER_WITHIN).await
    }

    /// The city's first line: where it listens, once it has started (within `patience`).
    pub async fn announced(&mut self, patience: Duration) -> Result<Announced, ChildError> {
        self.answer(patience).await
    }

    async fn answer<T: serde::de::DeserializeOwned>(
        &mut self,
        within: Duration,
    ) -> Result<T, ChildError> {
        let line = tokio::time::timeout(within, self.answers.next_line())
            .await
            .map_err(|_| ChildError::Silent(self.role, within))??;
        let Some(line) = line else {
            return Err(ChildError::Ended(self.role, self.child.try_wait()?));
        };
        serde_json::from_str(&line).map_err(|source| ChildError::Answer { line, source })
    }

    /// Fails if the child's process has ended.
    pub fn alive(&mut self) -> Result<(), ChildError> {
        match self.child.try_wait()? {
            Some(status) => Err(ChildError::Ended(self.role, Some(status))),
            None => Ok(()),
        }
    }

    /// Grows the fleet to `drivers`, if it is smaller; the new ones come online within a tick.
    pub async fn grow(&mut self, drivers: usize) -> Result<(), ChildError> {
        if drivers > self.drivers {
            self.send(&format!("{DRIVERS} {drivers}")).await?;
            self.drivers = drivers;
        }
        Ok(())
    }

    /// Drivers in the fleet.
    pub fn drivers(&self) -> usize {
        self.drivers
    }

    async fn send(&mut self, request: &str) -> Result<(), ChildError> {
        self.alive()?;
        self.stdin
            .write_all(format!("{request}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// The child's process id, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.id().map(|id| id as i32)
    }

    /// CPU seconds the child's process has used.
    pub fn seconds(&self) -> Option<f64> {
        crate::cpu::seconds_of_pid(self.pid()?)
    }

    /// Closes the pipe and waits for the child to stop; one that does not is killed.
    pub async fn stop(mut self) {
        drop(self.stdin);
        if tokio::time::timeout(STOP_GRACE, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(role = self.role, "a child did not stop in time; killing it");
            let _ = self.child.kill().await;
        }
    }
}

/// The city's first line on the pipe, before it [`serve`]s.
pub async fn announce(at: &Announced) -> std::io::Result<()> {
    let mut line = serde_json::to_string(at).map_err(std::io::Error::other)?;
    line.push('\n');
    let mut stdout = tokio::io::stdout();
    stdout.write_all(line.as_bytes()).await?;
    stdout.flush().await
}

/// A child's side of the pipe: answers each reading, grows the fleet through its `fleet` size
/// (the fleet's process only: the city's has none, and does not watch idle drivers, whose
/// looks would be charged to BimRide's services), and cancels `shutdown` when the pipe closes
/// (its parent is done, or gone).
pub async fn serve(
    fleet: Option<Arc<AtomicUsize>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut requests = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let mut looks = tokio::time::interval(IDLE_EVERY);
    let mut fewest_idle: Option<u64> = None;
    let result = loop {
        let line = tokio::select! {
            line = requests.next_line() => line,
            _ = looks.tick(), if fleet.is_some() => {
                if let Some(idle) = idle_drivers() {
                    fewest_idle = Some(fewest_idle.map_or(idle, |f| f.min(idle)));
                }
                continue;
            }
            () = shutdown.cancelled() => break Ok(()),
        };
        let request = match line {
            Ok(Some(request)) => request,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        let mut words = request.split_whitespace();
        match (words.next(), words.next().map(str::parse::<usize>)) {
            (Some(READING), None) => {
                let reading = Reading {
                    produced: crate::produced_by_topic(),
                    fewest_idle: fewest_idle.take(),
                    known_drivers: known_drivers(),
                };
                let mut answer = serde_json::to_string(&reading).map_err(std::io::Error::other)?;
                answer.push('\n');
                stdout.write_all(answer.as_bytes()).await?;
                stdout.flush().await?;
            }
            (Some(DRIVERS), Some(Ok(drivers))) if let Some(size) = &fleet => {
                size.fetch_max(drivers, Ordering::Relaxed);
            }
            _ => tracing::warn!(request, "unknown request to a child"),
        }
    };
    shutdown.cancel();
    result
}

/// Drivers this process's dispatch knows, from its gauge; none where dispatch does not run.
fn known_drivers() -> Option<u64> {
    let known = prometheus::gather()
        .into_iter()
        .find(|f| f.name() == "bimride_dispatch_known_drivers")?;
    Some(
        known
            .get_metric()
            .iter()
            .map(|m| m.get_gauge().get_value().max(0.0) as u64)
            .sum(),
    )
}

/// Idle drivers of this process's fleet, from the simulator's gauge.
fn idle_drivers() -> Option<u64> {
    prometheus::gather()
        .iter()
        .filter(|f| f.name() == "bimride_sim_drivers")
        .flat_map(|f| f.get_metric())
        .find(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "state" && l.value() == "idle")
        })
        .map(|m| m.get_gauge().get_value().max(0.0) as u64)
}
