//! CPU time by party, read from /proc: a process (BimRide's services, the load generator, the
//! simulated fleet), and the brokers, found as the processes listening on the bootstrap
//! servers' ports. An embedded cluster listens in the city's process, so its brokers cannot be
//! told apart from the services and are reported as such.

use std::collections::{BTreeMap, BTreeSet};

use procfs::net::TcpState;
use procfs::process::{FDTarget, Process};

/// User plus system CPU seconds of one process, if it can be read.
fn seconds_of(process: &Process) -> Option<f64> {
    Some(seconds_in(&process.stat().ok()?))
}

/// User plus system CPU seconds of a process's or a thread's stat.
fn seconds_in(stat: &procfs::process::Stat) -> f64 {
    (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64
}

/// CPU seconds process `pid` has used, if it can be read.
pub fn seconds_of_pid(pid: i32) -> Option<f64> {
    seconds_of(&Process::new(pid).ok()?)
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
    /// The processes that listen on the ports of `bootstrap` (`host:port,…`) on this machine,
    /// other than this one and `city` (where an embedded cluster listens).
    pub fn find(bootstrap: &str, city: Option<i32>) -> Self {
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
            if listens && process.pid != me && Some(process.pid) != city {
                pids.push(process.pid);
            }
        }
        Self { pids }
    }

    /// How many broker processes were found.
    pub fn processes(&self) -> usize {
        self.pids.len()
    }

    /// CPU the brokers have used, in all and by the role of their threads, or `None` where
    /// none run outside the city's process.
    pub fn usage(&self) -> Option<BrokerCpu> {
        if self.pids.is_empty() {
            return None;
        }
        let mut usage = BrokerCpu::default();
        for process in self.pids.iter().filter_map(|pid| Process::new(*pid).ok()) {
            usage.total += seconds_of(&process).unwrap_or(0.0);
            let Ok(tasks) = process.tasks() else { continue };
            for stat in tasks.flatten().filter_map(|t| t.stat().ok()) {
                *usage.by_role.entry(role_of(&stat.comm)).or_default() += seconds_in(&stat);
            }
        }
        Some(usage)
    }
}

/// CPU seconds of the broker processes, in all and by thread role.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BrokerCpu {
    pub total: f64,
    pub by_role: BTreeMap<&'static str, f64>,
}

impl BrokerCpu {
    /// What was used between `before` and this reading. A thread that ended in between took its
    /// time out of its role's sum; what no live thread accounts for counts as `other`.
    pub fn since(&self, before: &Self) -> Self {
        let mut by_role: BTreeMap<&'static str, f64> = self
            .by_role
            .iter()
            .map(|(role, s)| {
                (
                    *role,
                    (s - before.by_role.get(role).unwrap_or(&0.0)).max(0.0),
                )
            })
            .collect();
        let total = (self.total - before.total).max(0.0);
        let named: f64 = by_role
            .iter()
            .filter(|(r, _)| **r != OTHER)
            .map(|(_, s)| s)
            .sum();
        by_role.insert(OTHER, (total - named).max(0.0));
        Self { total, by_role }
    }
}

const OTHER: &str = "other";

/// What a broker thread does, from its name as the kernel keeps it (15 bytes): Kafka's request
/// path (network threads and request handlers), followers replicating, the JVM compiling hot
/// code (warm-up), and garbage collection.
pub fn role_of(thread: &str) -> &'static str {
    if thread.starts_with("data-plane-kafk") || thread.starts_with("kafka-request-h") {
        "requests"
    } else if thread.starts_with("ReplicaFetcher") {
        "replication"
    } else if thread.contains("CompilerThre") {
        "jit"
    } else if thread.starts_with("GC Thread") || thread.starts_with("G1 ") {
        "gc"
    } else {
        OTHER
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
        assert_eq!(
            Brokers::find(&format!("127.0.0.1:{port}"), None).processes(),
            0
        );
        assert_eq!(Brokers::default().usage(), None);

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
        let bootstrap = format!("localhost:9,127.0.0.1:{}", line.trim());
        // Unless it is the city's process, where an embedded cluster listens.
        assert_eq!(
            Brokers::find(&bootstrap, Some(child.id() as i32)).processes(),
            0
        );
        let brokers = Brokers::find(&bootstrap, None);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let busy = brokers.usage().expect("a broker apart");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(brokers.processes(), 1);
        assert!(busy.total > 0.0, "{busy:?}");
        // python3's one thread is none of a broker's roles.
        let since = busy.since(&BrokerCpu::default());
        assert_eq!(since.by_role.keys().copied().collect::<Vec<_>>(), [OTHER]);
        assert!(
            (since.by_role[OTHER] - busy.total).abs() < 0.02,
            "{since:?}"
        );
        assert!(own_seconds() > 0.0);
    }

    #[test]
    fn broker_threads_are_told_apart_by_their_names() {
        for (thread, role) in [
            ("data-plane-kafk", "requests"),
            ("ReplicaFetcherT", "replication"),
            ("C2 CompilerThre", "jit"),
            ("C1 CompilerThre", "jit"),
            ("GC Thread#0", "gc"),
            ("G1 Conc#0", "gc"),
            ("kafka-1-raft-io", OTHER),
        ] {
            assert_eq!(role_of(thread), role, "{thread}");
        }
    }

    #[test]
    fn a_reading_since_another_keeps_every_second_of_the_total() {
        let at = |total: f64, roles: &[(&'static str, f64)]| BrokerCpu {
            total,
            by_role: roles.iter().copied().collect(),
        };
        let before = at(10.0, &[("requests", 4.0), ("jit", 3.0), (OTHER, 3.0)]);
        // A JIT thread ended in between: its seconds left the role's sum.
        let after = at(16.0, &[("requests", 8.0), ("jit", 2.0), (OTHER, 4.0)]);
        let since = after.since(&before);
        assert_eq!(since.total, 6.0);
        assert_eq!(since.by_role["requests"], 4.0);
        assert_eq!(since.by_role["jit"], 0.0);
        assert_eq!(since.by_role[OTHER], 2.0);
    }
}
