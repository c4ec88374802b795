//! The deployment files under `deploy/`, checked by the tools that will read them.

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Runs promtool, failing loudly when it is not installed.
fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(deploy().join("prometheus"))
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool not runnable ({e}): scripts/test.sh installs Debian's prometheus")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_prometheus_config_and_alert_rules_are_valid() {
    let config = promtool(&["check", "config", "prometheus.yml"]);
    assert!(config.contains("1 rule files found"), "{config}");
    let rules = promtool(&["check", "rules", "alerts.yml"]);
    assert!(rules.contains("5 rules found"), "{rules}");
}

#[test]
fn every_alert_fires_on_its_failure_in_promtools_rule_tests() {
    let report = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(report.contains("SUCCESS"), "{report}");
    let tests =
        std::fs::read_to_string(deploy().join("prometheus/alerts.test.yml")).expect("rule tests");
    for alert in [
        "BimRideServiceDown",
        "BimRideConsumerLagHigh",
        "BimRideDeadLettersGrowing",
        "BimRideNoAssignments",
        "BimRideHttp5xx",
    ] {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} has no rule test"
        );
    }
}

#[test]
fn grafana_provisions_the_datasource_and_both_dashboards() {
    let grafana = deploy().join("grafana");
    let datasource =
        std::fs::read_to_string(grafana.join("provisioning/datasources/prometheus.yml"))
            .expect("datasource");
    assert!(
        datasource.contains("uid: bimride-prometheus"),
        "{datasource}"
    );
    let store = std::fs::read_to_string(grafana.join("provisioning/datasources/postgres.yml"))
        .expect("the ride store's datasource");
    assert!(store.contains("uid: bimride-postgres"), "{store}");
    // Grafana reads with a login that can only read, never the store's own.
    assert!(store.contains("user: grafana_reader"), "{store}");
    let reader = std::fs::read_to_string(deploy().join("postgres/grafana-reader.sh"))
        .expect("the reader's set-up");
    assert!(reader.contains("GRANT SELECT"), "{reader}");
    let mut titles = Vec::new();
    for name in ["pipeline.json", "business.json"] {
        let text = std::fs::read_to_string(grafana.join("dashboards").join(name)).expect(name);
        let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
        let panels = dashboard["panels"].as_array().expect("panels");
        assert!(panels.len() >= 8, "{name}: {} panels", panels.len());
        for panel in panels {
            assert!(
                ["bimride-prometheus", "bimride-postgres"]
                    .contains(&panel["datasource"]["uid"].as_str().unwrap_or_default()),
                "{name}: {panel}"
            );
            assert!(
                panel["targets"].as_array().is_some_and(|t| !t.is_empty()),
                "{name}: a panel without queries: {}",
                panel["title"]
            );
        }
        titles.push(dashboard["title"].as_str().expect("title").to_owned());
    }
    assert_eq!(
        titles,
        ["BimRide · pipeline health", "BimRide · business"],
        "the two dashboards"
    );
}
