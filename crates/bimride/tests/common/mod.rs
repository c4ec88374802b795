//! `bimride up` as a child process, for tests that use it as a user would.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The token secret and admin credential the tests' cities run with.
pub const SECRET: &str = "up-test-secret-up-test-secret-up-test";
pub const ADMIN: &str = "up-test-admin-credential";

/// A running `bimride up` on free ports, with the addresses it announced.
#[derive(Debug)]
pub struct Up {
    child: Option<Child>,
    pub started: Instant,
    pub lines: Vec<String>,
    pub http: String,
    /// Where its debug-level log goes.
    pub log: std::path::PathBuf,
}

/// A rider's bearer token, from `bimride token` as an operator would get one.
pub fn rider_token(rider: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_bimride"))
        .args(["token", "--rider", rider])
        .env("BIMRIDE_AUTH_SECRET", SECRET)
        .output()
        .expect("bimride token runs");
    assert!(out.status.success(), "bimride token: {out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// An HTTP client that sends `rider`'s token with every request.
pub fn rider_client(rider: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", rider_token(rider))
            .parse()
            .expect("header"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

impl Up {
    /// Starts `bimride up` on the embedded cluster and waits for its announcement.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts `bimride up` with extra flags, such as `--brokers`, and waits for its
    /// announcement.
    pub async fn start_with(args: &[&str]) -> Self {
        let log = std::env::temp_dir().join(format!(
            "bimride-up-{}-{}.log",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_bimride"))
            .args([
                "up",
                "--http",
                "127.0.0.1:0",
                "--registry-listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .env_remove("BIMRIDE_BROKERS")
            .env_remove("BIMRIDE_SCHEMA_REGISTRY_URL")
            .env_remove("BIMRIDE_DATABASE_URL")
            // Each run's ride store in a folder of its own, outside the clone.
            .env(
                "BIMRIDE_DATA_DIR",
                std::env::temp_dir().join(format!("bimride-data-{}", uuid::Uuid::new_v4())),
            )
            .env("BIMRIDE_AUTH_SECRET", SECRET)
            .env("BIMRIDE_ADMIN_TOKEN", ADMIN)
            .env("BIMRIDE_LOG", "debug,h2=info,hyper_util=info")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("bimride starts");
        let started = Instant::now();
        let stdout = child.stdout.take().expect("stdout");
        let lines = tokio::task::spawn_blocking(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .take_while(|l| !l.starts_with("press Ctrl-C"))
                .collect::<Vec<_>>()
        });
        let lines = tokio::time::timeout(Duration::from_secs(60), lines)
            .await
            .expect("bimride announces itself within 60s")
            .expect("stdout read");
        let mut up = Self {
            child: Some(child),
            started,
            lines,
            http: String::new(),
            log,
        };
        up.http = up.field("http:");
        up
    }

    /// A value announced on stdout, as in `  http:   http://127.0.0.1:1234`.
    pub fn field(&self, name: &str) -> String {
        self.lines
            .iter()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {name} line in {:?}", self.lines))
    }

    /// Ctrl-C, then asserts a clean exit.
    pub async fn interrupt(mut self) {
        let mut child = self.child.take().expect("running");
        let interrupted = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(interrupted.success());
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("wait");
        assert!(status.success(), "bimride exited with {status}");
    }

    pub async fn scrape(&self) -> String {
        reqwest::get(format!("{}/metrics", self.http))
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("text")
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        // A failed test must not leave the city running.
        if let Some(child) = &mut self.child {
            let _ = child.kill();
        }
    }
}

/// The value of one sample in a Prometheus text exposition, 0 when absent.
pub fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(sample))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A rider's bearer token signed in process, for load that books many times a second.
pub fn rider_token_fast(rider: &str) -> String {
    bimride_auth::Authority::new(&bimride_auth::Secret::new(SECRET), None)
        .expect("authority")
        .rider_token(rider, Duration::from_secs(3600))
        .expect("token")
        .expose()
        .to_owned()
}
