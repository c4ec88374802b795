//! The simulated fleet in a process of its own, so that its CPU is measured apart from
//! BimRide's services. The benchmark starts it as a child and talks to it over a pipe, a line
//! each way:
//!
//! - `drivers N` grows the fleet to N drivers (it never shrinks);
//! - `reading` asks for the records it has produced, by topic, and the fewest drivers that
//!   were idle since the last reading, answered as one JSON line;
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
}
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("starting the fleet's process: {0}")]
    Spawn(std::io::Error),
    #[error("talking to the fleet's process: {0}")]
    Pipe(#[from] std::io::Error),
    #[error("the fleet's process ended ({0:?})")]
    Ended(Option<std::process::ExitStatus>),
    #[error("the fleet's process did not answer within {0:?}")]
    Silent(Duration),
    #[error("the fleet's process answered {line:?}")]
    Answer {
        line: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The fleet's process, as its parent sees it.
#[derive(Debug)]
pub struct FleetProcess {
    /// Drivers the fleet was last told to have.
    drivers: usize,
    child: Child,
    stdin: ChildStdin,
    answers: Lines<BufReader<ChildStdout>>,
}

impl FleetProcess {
    /// Starts `program` with `args`, a fleet of `drivers`; it must [`serve`] on its standard
    /// input and output.
    pub fn spawn(
        program: &std::path::Path,
        args: Vec<OsString>,
        drivers: usize,
    ) -> Result<Self, FleetError> {
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group: a Ctrl-C reaches the benchmark, which reports what it
            // measured and then closes the pipe.
            .process_group(0)
            .spawn()
            .map_err(FleetError::Spawn)?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(FleetError::Ended(None));
        };
        Ok(Self {
            drivers,
            child,
            stdin,
            answers: BufReader::new(stdout).lines(),
        })
    }

    /// The fleet's records so far, and the fewest drivers idle since the previous reading.
    pub async fn reading(&mut self) -> Result<Reading, FleetError> {
        self.send(READING).await?;
        let line = tokio::time::timeout(ANSWER_WITHIN, self.answers.next_line())
            .await
            .map_err(|_| FleetError::Silent(ANSWER_WITHIN))??;
        let Some(line) = line else {
            return Err(FleetError::Ended(self.child.try_wait()?));
        };
        serde_json::from_str(&line).map_err(|source| FleetError::Answer { line, source })
    }

    /// Fails if the fleet's process has ended.
    pub fn alive(&mut self) -> Result<(), FleetError> {
        match self.child.try_wait()? {
            Some(status) => Err(FleetError::Ended(Some(status))),
            None => Ok(()),
        }
    }

    /// Grows the fleet to `drivers`, if it is smaller; the new ones come online within a tick.
    pub async fn grow(&mut self, drivers: usize) -> Result<(), FleetError> {
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

    async fn send(&mut self, request: &str) -> Result<(), FleetError> {
        self.alive()?;
        self.stdin
            .write_all(format!("{request}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// CPU seconds the fleet's process has used.
    pub fn seconds(&self) -> Option<f64> {
        crate::cpu::seconds_of_pid(self.child.id()? as i32)
    }

    /// Closes the pipe and waits for the fleet to stop; one that does not is killed.
    pub async fn stop(mut self) {
        drop(self.stdin);
        if tokio::time::timeout(STOP_GRACE, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!("the fleet did not stop in time; killing it");
            let _ = self.child.kill().await;
        }
    }
}

/// The fleet's side of the pipe: grows the fleet through `size`, answers each reading, and
/// cancels `shutdown` when the pipe closes (its parent is done, or gone).
pub async fn serve(size: Arc<AtomicUsize>, shutdown: CancellationToken) -> std::io::Result<()> {
    let mut requests = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let mut looks = tokio::time::interval(IDLE_EVERY);
    let mut fewest_idle: Option<u64> = None;
    let result = loop {
        let line = tokio::select! {
            line = requests.next_line() => line,
            _ = looks.tick() => {
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
                };
                let mut answer = serde_json::to_string(&reading).map_err(std::io::Error::other)?;
                answer.push('\n');
                stdout.write_all(answer.as_bytes()).await?;
                stdout.flush().await?;
            }
            (Some(DRIVERS), Some(Ok(drivers))) => {
                size.fetch_max(drivers, Ordering::Relaxed);
            }
            _ => tracing::warn!(request, "unknown request to the fleet"),
        }
    };
    shutdown.cancel();
    result
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
