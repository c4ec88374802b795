//! CPU time by party, read from /proc: this process (BimRide's services, the load generator and
//! the simulated fleet), and the brokers, found as the processes listening on the bootstrap
//! servers' ports. An embedded cluster listens in this process, so its brokers cannot be told
//! apart from the rest and are reported as such.

use std::collections::BTreeSet;

use procfs::net::TcpState;
use procfs::process::{FDTarget, Process};

/// User plus system CPU seconds of one process, if it can be read.
fn seconds_of(process: &Process) -> Option<f64> {
    let stat = process.stat().ok()?;
    Some((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// CPU seconds this process has used.
pub fn own_seconds() -> f64 {
    Process::myself()
        .ok()
        .and_then(|p| seconds_of(&p))
        .unwrap_or(0.0)
}

/// The processes of the brokers, if they run outside this one.
#[derive(Debug, Clone, Default)]
pub struct Brokers {
    pids: Vec<i32>,
}

impl Brokers {
    /// The processes that listen on the ports of `bootstrap` (`host:port,…`) on this machine.
    pub fn find(bootstrap: &str) -> Self {
        let ports: BTreeSet<u16> = bootstrap
            .split(',')
            .filter_map(|server| server.trim().rsplit(':').next()?.parse().ok())
            .collect();
        let tables = procfs::net::tcp()
            .into_iter()
            .chain(procfs::net::tcp6())
            .flatten();
        let sockets: BTreeSet<u64> = tables
            .filter(|e| e.state == TcpState::Listen && ports.contains(&e.local_address.port()))
            .map(|e| e.inode)
            .collect();
        let me = std::process::id() as i32;
        let mut pids = Vec::new();
        for process in procfs::process::all_processes()
            .into_iter()
            .flatten()
            .flatten()
        {
            let listens = process.fd().is_ok_and(|fds| {
                fds.flatten().any(
                    |fd| matches!(fd.target, FDTarget::Socket(inode) if sockets.contains(&inode)),
                )
            });
            if listens && process.pid != me {
                pids.push(process.pid);
            }
        }
        Self { pids }
    }

    /// How many broker processes were found.
    pub fn processes(&self) -> usize {
        self.pids.len()
    }

    /// CPU seconds the brokers have used, or `None` where none run outside this process.
    pub fn seconds(&self) -> Option<f64> {
        if self.pids.is_empty() {
            return None;
        }
        let total = self
            .pids
            .iter()
            .filter_map(|pid| Process::new(*pid).ok())
            .filter_map(|p| seconds_of(&p))
            .sum();
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_in_another_process_is_found_and_this_one_is_not() {
        // This process listens, and is not a broker of its own.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let port = listener.local_addr().expect("addr").port();
        assert_eq!(Brokers::find(&format!("127.0.0.1:{port}")).processes(), 0);
        assert_eq!(Brokers::default().seconds(), None);

        // A child process that listens is.
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket,sys,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen()\nprint(s.getsockname()[1],flush=True)\nwhile True: sum(range(100000))",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("port");
        let brokers = Brokers::find(&format!("localhost:9,127.0.0.1:{}", line.trim()));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let busy = brokers.seconds();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(brokers.processes(), 1);
        assert!(busy.is_some_and(|s| s > 0.0), "{busy:?}");
        assert!(own_seconds() > 0.0);
    }
}
