//! The simulated fleet in a process of its own, so that its CPU is measured apart from
//! BimRide's services. The benchmark starts it as a child and talks to it over a pipe: a line
//! `produced` asks for the records it has produced, by topic, answered as one JSON line;
//! closing the pipe stops it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_util::sync::CancellationToken;

/// The request for the fleet's produced records.
const PRODUCED: &str = "produced";
/// How long the fleet may take to stop once its pipe closes.
const STOP_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("starting the fleet's process: {0}")]
    Spawn(std::io::Error),
    #[error("talking to the fleet's process: {0}")]
    Pipe(#[from] std::io::Error),
    #[error("the fleet's process ended")]
    Ended,
    #[error("the fleet's process answered {0:?}")]
    Answer(String),
}

/// The fleet's process, as its parent sees it.
#[derive(Debug)]
pub struct FleetProcess {
    child: Child,
    stdin: ChildStdin,
    answers: Lines<BufReader<ChildStdout>>,
}

impl FleetProcess {
    /// Starts `program` with `args`; it must serve [`serve`] on its standard input and output.
    pub fn spawn(program: &std::path::Path, args: Vec<OsString>) -> Result<Self, FleetError> {
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(FleetError::Spawn)?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(FleetError::Ended);
        };
        Ok(Self {
            child,
            stdin,
            answers: BufReader::new(stdout).lines(),
        })
    }

    /// The records the fleet has produced so far, by topic.
    pub async fn produced(&mut self) -> Result<BTreeMap<String, f64>, FleetError> {
        self.stdin
            .write_all(format!("{PRODUCED}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        let line = self.answers.next_line().await?.ok_or(FleetError::Ended)?;
        serde_json::from_str(&line).map_err(|_| FleetError::Answer(line))
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

/// The fleet's side of the pipe: answers each `produced` with the records this process has
/// produced, by topic, and cancels `shutdown` when the pipe closes (its parent is done, or
/// gone).
pub async fn serve(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut requests = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let result = loop {
        let line = tokio::select! {
            line = requests.next_line() => line,
            () = shutdown.cancelled() => break Ok(()),
        };
        match line {
            Ok(Some(request)) if request.trim() == PRODUCED => {
                let mut answer = serde_json::to_string(&crate::produced_by_topic())
                    .map_err(std::io::Error::other)?;
                answer.push('\n');
                if let Err(e) = stdout.write_all(answer.as_bytes()).await {
                    break Err(e);
                }
                stdout.flush().await?;
            }
            Ok(Some(other)) => tracing::warn!(request = other, "unknown request to the fleet"),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    shutdown.cancel();
    result
}
