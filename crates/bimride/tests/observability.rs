//! What an operator sees of a running `bimride up`: the metrics that the Grafana dashboards
//! and Prometheus alerts use are really exported, and the live dashboard moves in a real
//! browser (Debian's Chromium, driven by playwright-core from `tests/browser`).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Up;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `bimride_*` metric name that the dashboards and alert rules query.
fn queried_metrics() -> BTreeSet<String> {
    let root = workspace().join("deploy");
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("grafana/dashboards"))
        .expect("dashboards folder")
        .map(|e| e.expect("entry").path())
        .collect();
    files.push(root.join("prometheus/alerts.yml"));
    let mut names = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        let mut rest = text.as_str();
        while let Some(at) = rest.find("bimride_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    assert!(
        names.len() >= 15,
        "too few metrics found in {files:?}: {names:?}"
    );
    names
}

/// Metric names present in a text exposition.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_alerts_query_only_exported_metrics_and_the_live_page_moves() {
    let up = Up::start().await;

    // Every series the dashboards and alerts query exists from start-up, trouble or not.
    let wanted = queried_metrics();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let have = exported(&up.scrape().await);
        let missing: Vec<&String> = wanted.difference(&have).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "queried by deploy/ but not exported within 60s: {missing:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let poisoned = |text: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("bimride_records_dead_lettered_total{")
                    && l.contains("topic=\"bimride.ride-events\"")
                    && l.contains("reason=\"not_wire_format\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let before = poisoned(&up.scrape().await).expect("the dead-letter series exists at zero");

    // One undecodable record: the series counts it.
    let brokers = up.field("kafka bootstrap servers:");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to("bimride.ride-events")
                .key("poison")
                .payload(&b"not avro"[..]),
            Duration::from_secs(10),
        )
        .await
        .expect("delivered");
    drop(producer);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while poisoned(&up.scrape().await) <= Some(before) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the poison record was not counted as dead-lettered within 60s"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // The page, in a real browser: live counters that change, and a drawn map.
    let browser = workspace().join("tests/browser");
    assert!(
        browser.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed in {}: run scripts/test.sh, which runs `npm ci` there",
        browser.display()
    );
    let screenshot = workspace().join("target/dashboard.png");
    let run = tokio::process::Command::new("node")
        .arg(browser.join("dashboard.mjs"))
        .arg(format!("{}/", up.http))
        .arg(&screenshot)
        .kill_on_drop(true)
        .output();
    // Longer than the script's own waits together, which name what did not happen.
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the browser check ends within 5 minutes")
        .expect("node runs (install Node.js)");
    assert!(
        output.status.success(),
        "the dashboard did not come alive in Chromium: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        screenshot.is_file(),
        "no screenshot at {}",
        screenshot.display()
    );

    up.interrupt().await;
}
