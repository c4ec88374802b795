//! `bimride bench` end to end, with the flags scripts rely on. It checks that the load ran and
//! every stage and baseline was measured; how fast is for the README, not for a test.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[test]
fn bench_drives_the_city_and_reports_every_stage_and_baseline() {
    let report = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-smoke.json");
    let plot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-smoke.svg");
    let _ = std::fs::remove_file(&report);
    let output = Command::new(env!("CARGO_BIN_EXE_bimride"))
        .args([
            "bench",
            "--rate",
            "10",
            "--duration",
            "4",
            "--drivers",
            "60",
        ])
        .args(["--speedup", "300", "--settle", "60", "--report"])
        .arg(&report)
        .arg("--plot")
        .arg(&plot)
        .arg("--data-dir")
        .arg(Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-smoke-data"))
        .env_remove("BIMRIDE_BROKERS")
        .output()
        .expect("bimride runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The table on stdout, progress on stderr.
    assert!(stdout.contains("assign p99"), "{stdout}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("sent 40/40"));

    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report written"))
            .expect("report is JSON");
    let step = &json["steps"][0];
    assert_eq!(step["sent"], 40);
    assert_eq!(step["accepted"], 40, "{step}");
    assert!(step["assigned"].as_u64().is_some_and(|a| a >= 36), "{step}");
    // Every accepted booking has exactly one outcome.
    let o = &step["outcomes"];
    let outcomes: u64 = ["assigned", "cancelled", "undecided"]
        .iter()
        .map(|k| o[k].as_u64().expect("an outcome count"))
        .sum();
    assert_eq!(outcomes, 40, "{o}");
    assert!(
        stdout.contains("no target given: no rate is called held"),
        "{stdout}"
    );
    for stage in [
        "http_202",
        "offered",
        "assigned",
        "completed",
        "charged",
        "notified",
    ] {
        let l = &step["latency"][stage];
        assert!(l["count"].as_u64().is_some_and(|c| c > 0), "{stage}: {l}");
        assert!(
            l["p99_ms"].as_f64().is_some_and(|p| p > 0.0),
            "{stage}: {l}"
        );
    }
    // Each party's CPU is read from its own process (BimRide's services in the city's, the load
    // generator in the benchmark's, the simulated drivers in the fleet's), and its cores are
    // its CPU seconds over the window they were read in.
    let window = step["cpu_window_secs"].as_f64().expect("a window");
    assert!(window >= 1.0, "{step}");
    for party in ["", "load_", "fleet_"] {
        let seconds = step[format!("{party}cpu_seconds")].as_f64();
        let per_ride = step[format!("{party}cpu_ms_per_ride")].as_f64();
        let cores = step[format!("{party}cores")].as_f64();
        assert!(
            seconds.is_some_and(|c| c > 0.0)
                && per_ride.is_some_and(|ms| ms > 0.0)
                && seconds
                    .zip(cores)
                    .is_some_and(|(c, cores)| (c / window - cores).abs() < 1e-9),
            "{party}: {step}"
        );
    }
    // The fleet grew from its 60 drivers to what 10 bookings a second need at this speed-up
    // (10 × (1800 / 300 + 0.5) × 3), and some were idle throughout.
    assert_eq!(step["fleet"]["drivers"], 195, "{step}");
    assert!(
        step["fleet"]["fewest_idle"].as_u64().is_some_and(|n| n > 0),
        "{step}"
    );
    // Each ride writes its request, its lifecycle, its charge and its messages; the fleet's
    // process, the driver supply, counted over the pipe.
    let per_ride = step["records_per_ride"]
        .as_object()
        .expect("records per ride");
    for topic in [
        "ride-requests",
        "ride-events",
        "payments",
        "notifications",
        "driver-supply",
    ] {
        let n = per_ride
            .iter()
            .find(|(name, _)| name.ends_with(&format!(".{topic}")))
            .and_then(|(_, n)| n.as_f64());
        assert!(n.is_some_and(|n| n >= 0.9), "{topic}: {per_ride:?}");
    }
    let b = &json["baselines"];
    for ratio in ["pipeline_efficiency", "http_ratio"] {
        assert!(b[ratio].as_f64().is_some_and(|r| r > 0.0), "{ratio}: {b}");
    }
    // Three trials of each baseline, summarised by their median and range.
    for baseline in ["kafka_pass_through", "bare_http", "booking_http"] {
        let t = &b[baseline];
        assert_eq!(
            t["trials"].as_array().map(Vec::len),
            Some(3),
            "{baseline}: {t}"
        );
        let (min, median, max) = (t["min"].as_f64(), t["median"].as_f64(), t["max"].as_f64());
        assert!(
            min.is_some_and(|m| m > 0.0) && min <= median && median <= max,
            "{baseline}: {t}"
        );
    }
    assert_eq!(b["kafka_pass_through"]["trials"][0]["records"], 200_000);
    // The embedded cluster runs in the city's process: its CPU is not told apart.
    assert!(step["broker_cpu_ms_per_ride"].is_null(), "{step}");
    assert!(step["broker_cores"].is_null(), "{step}");
    assert!(json["machine"]["cpus"].as_u64().is_some_and(|c| c >= 1));
    let svg = std::fs::read_to_string(&plot).expect("plot written");
    assert!(
        svg.starts_with("<svg") && svg.contains("p99"),
        "not an SVG plot"
    );
}
