//! The API's OpenAPI document tells the truth: schemathesis (from PyPI, installed by
//! `scripts/deps.sh`) generates requests from it against a live `bimride up`, with every
//! check it has, as a rider and as an operator, and finds nothing.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::Up;

fn python_tools() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/python")
}

/// Runs schemathesis over the operations tagged `tag`, authenticated with `bearer`.
async fn schemathesis(up: &Up, tag: &str, bearer: &str) {
    let tools = python_tools();
    let binary = tools.join(".venv/bin/schemathesis");
    assert!(
        binary.exists(),
        "{} is missing: scripts/deps.sh installs schemathesis",
        binary.display()
    );
    // Its example cache stays out of the source tree.
    let scratch = std::env::temp_dir().join(format!("bimride-schemathesis-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let run = tokio::process::Command::new(binary)
        .current_dir(&scratch)
        .arg("--config-file")
        .arg(tools.join("schemathesis.toml"))
        .args(["run", &format!("{}/openapi.json", up.http)])
        .args(["--checks", "all", "--include-tag", tag])
        .args(["--max-examples", "40", "--seed", "7", "--no-color"])
        .arg("--header")
        .arg(format!("Authorization: Bearer {bearer}"))
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("schemathesis ends within 10 minutes")
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems with the {tag} operations:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("passed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_the_document_does_not_promise() {
    // Forged and missing tokens are part of what schemathesis sends: a high burst keeps the
    // limit on failed authentication out of its way.
    let up = Up::start_with(&["--auth-failure-burst", "100000"]).await;
    let rider = common::rider_token("rider-schemathesis");
    for tag in ["rides", "surge"] {
        schemathesis(&up, tag, &rider).await;
    }
    schemathesis(&up, "admin", common::ADMIN).await;
    up.interrupt().await;
}
