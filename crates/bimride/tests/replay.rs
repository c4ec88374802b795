//! Replays on Apache Kafka. A city runs its rides to the end; then `bimride replay` moves
//! billing's stopped group back to a time in the middle of the rides and the ETA tracker's to
//! the log's start, surge recomputes from there, and all three run again over the same log:
//! - billing charges no ride a second time;
//! - the ETA tracker observes every leg again, publishes none twice, and exports the same
//!   figures;
//! - surge publishes the same multipliers for the same windows;
//! - and `bimride audit`'s reconciliation finds nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::time::Duration;

use bimride_billing::{BillingSettings, Guarantee};
use bimride_dispatch::DispatchSettings;
use bimride_domain::City;
use bimride_eta::EtaSettings;
use bimride_events::{EtaObserved, FareCharged, SurgeUpdated, Topic, TopicValue};
use bimride_kafka::replay::{self, Point};
use bimride_notifications::NotificationSettings;
use bimride_simulator::SimSettings;
use bimride_surge::SurgeSettings;
use bimride_tests::{Broker, Pipeline, book, charges_by_ride, counter_total, join_all, read_back};
use tokio_util::sync::CancellationToken;

const SPEEDUP: f64 = 200.0;

/// `bimride replay` against the pipeline's cluster and namespace.
fn replay_command(p: &Pipeline, service: &str, group: &str, to: Point, more: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_bimride"))
        .args(["replay", service, "--group", group, "--to", &to.to_string()])
        .args(more)
        .env("BIMRIDE_BROKERS", p.config.bootstrap_servers())
        .env("BIMRIDE_TOPIC_NAMESPACE", &p.config.namespace)
        .env("BIMRIDE_LOG", "warn")
        .output()
        .expect("bimride runs")
}

/// `bimride audit` of the pipeline's topics from the beginning, its report in `dir`: how it
/// ended, what it printed, and its JSON report.
fn audit_command(p: &Pipeline, dir: &std::path::Path) -> (Output, String, serde_json::Value) {
    let report = dir.join("audit.json");
    let audit = std::process::Command::new(env!("CARGO_BIN_EXE_bimride"))
        .args(["audit", "--brokers", p.config.bootstrap_servers()])
        .args(["--schema-registry", &p.registry.url(), "--settle", "0s"])
        .arg("--data-dir")
        .arg(dir)
        .arg("--report")
        .arg(&report)
        .env("BIMRIDE_TOPIC_NAMESPACE", &p.config.namespace)
        .env("BIMRIDE_LOG", "warn")
        .output()
        .expect("bimride audit runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&audit.stdout),
        String::from_utf8_lossy(&audit.stderr)
    );
    let json = std::fs::read_to_string(&report)
        .map(|text| serde_json::from_str(&text).expect("the report is JSON"))
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {printed}"));
    (audit, printed, json)
}

/// Every record of `T`'s topic, by partition, in log order.
async fn records<T: TopicValue>(p: &Pipeline) -> BTreeMap<i32, Vec<T>> {
    let config = p.config.clone();
    let read = tokio::task::spawn_blocking(move || {
        read_back(&config, config.topics().name(T::TOPIC), "read_committed")
    })
    .await
    .expect("reader joins");
    let mut out: BTreeMap<i32, Vec<T>> = BTreeMap::new();
    for (partition, payload) in read {
        let value = p.codec.decode::<T>(&payload).await.expect("decodes");
        out.entry(partition).or_default().push(value);
    }
    out
}

fn count<T>(by_partition: &BTreeMap<i32, Vec<T>>) -> usize {
    by_partition.values().map(Vec::len).sum()
}

/// What each partition gained past `before`, in log order.
fn appended<T: Clone>(
    before: &BTreeMap<i32, Vec<T>>,
    after: &BTreeMap<i32, Vec<T>>,
) -> BTreeMap<i32, Vec<T>> {
    after
        .iter()
        .map(|(p, values)| {
            let from = before.get(p).map_or(0, Vec::len);
            (*p, values[from.min(values.len())..].to_vec())
        })
        .collect()
}

async fn wait_until<F, Fut>(what: &str, within: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn both_caught_up(p: &Pipeline, groups: [&String; 2]) {
    for group in groups {
        wait_until(
            &format!("{group} caught up"),
            Duration::from_secs(120),
            || p.committed_to_the_end(group, Topic::RideEvents),
        )
        .await;
    }
}

/// A counter of this process's, over all its labels.
fn counted(name: &str) -> f64 {
    counter_total(name, None)
}

/// Leg, region and hour: the labels of the tracker's figures.
type Labels = (String, String, String);

/// A gauge family of this process's, by leg, region and hour.
fn gauges(name: &str) -> BTreeMap<Labels, f64> {
    let label = |m: &prometheus::proto::Metric, name: &str| {
        m.get_label()
            .iter()
            .find(|l| l.name() == name)
            .map(|l| l.value().to_owned())
            .unwrap_or_default()
    };
    prometheus::gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric())
        .map(|m| {
            let labels = (label(m, "leg"), label(m, "region"), label(m, "hour"));
            (labels, m.get_gauge().get_value())
        })
        .collect()
}

/// The tracker's exported error and bias, against the figures of `observed`.
fn assert_exported(observed: &BTreeMap<i32, Vec<EtaObserved>>, run: &str) {
    let mut figures = bimride_eta::figures::Figures::default();
    observed.values().flatten().for_each(|o| {
        figures.add(o);
    });
    let want = |figure: fn(&bimride_eta::figures::Figure) -> f64| -> BTreeMap<Labels, f64> {
        figures
            .iter()
            .map(|((leg, region, hour), f)| {
                let leg = bimride_eta::tracker::leg_name(*leg).to_owned();
                ((leg, region.clone(), hour.to_string()), figure(f))
            })
            .collect()
    };
    assert!(figures.iter().next().is_some(), "no figures to export");
    assert_eq!(
        gauges("bimride_eta_mae_seconds"),
        want(bimride_eta::figures::Figure::mae_secs),
        "{run}: the exported mean absolute errors"
    );
    assert_eq!(
        gauges("bimride_eta_bias_seconds"),
        want(bimride_eta::figures::Figure::bias_secs),
        "{run}: the exported biases"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_billing_eta_and_surge_recompute_what_they_published_on_apache_kafka() {
    let broker = Broker::kafka();
    let p = Pipeline::start(&broker).await;
    let billing = BillingSettings {
        group: p.group("billing"),
        delivery: Guarantee::ExactlyOnce,
        transactional_id: p.group("billing-txn"),
        ..BillingSettings::default()
    };
    let eta = EtaSettings {
        group: p.group("eta"),
        eta_time_scale: SPEEDUP,
        ..EtaSettings::default()
    };
    // Short windows, so that a minute of rides closes many of them, each open for late
    // records as long as it lasts: the recompute reads every record in time, and matches the
    // first run only where that run found none late.
    let surge = SurgeSettings {
        surge_tumbling_secs: 5,
        surge_sliding_secs: 15,
        surge_lateness_ms: 5_000,
        ..SurgeSettings::default()
    };

    // The first run: a city books, drives, charges and observes 100 rides.
    let first = CancellationToken::new();
    let api = p.serve_api(City::amsterdam(), first.clone()).await;
    let mut tasks = api.tasks;
    tasks.push(p.spawn(
        DispatchSettings {
            group: p.group("dispatch"),
            offer_timeout_ms: 3_000,
            max_wait_ms: 240_000,
            replay_window_secs: 600,
            supply_replay_secs: 120,
            tick_ms: 100,
            ..DispatchSettings::default()
        },
        first.clone(),
    ));
    tasks.push(p.spawn(
        SimSettings {
            drivers: 150,
            booking_rate: 0.0,
            accept_ratio: 1.0,
            speedup: SPEEDUP,
            id: "replay".into(),
            ..SimSettings::default()
        },
        first.clone(),
    ));
    tasks.push(p.spawn(
        NotificationSettings {
            group: p.group("notifications"),
            ..NotificationSettings::default()
        },
        first.clone(),
    ));
    tasks.push(p.spawn(billing.clone(), first.clone()));
    tasks.push(p.spawn(eta.clone(), first.clone()));
    // Surge stops last, so that it reads every record the others wrote.
    let surge_stop = CancellationToken::new();
    let surging = p.spawn(surge.clone(), surge_stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut booked = BTreeSet::new();
    // Where billing is replayed from: once the first half's rides are being charged, before
    // the second half is booked. The log holds ride events before it, and completions after.
    let mut midway = Point::Earliest;
    for from in (0..100).step_by(25) {
        if from == 50 {
            wait_until(
                "the first rides charged",
                Duration::from_secs(240),
                || async { !charges_by_ride(&p.config, &p.codec).await.is_empty() },
            )
            .await;
            midway = Point::At(bimride_events::Millis::now());
        }
        booked.extend(book(&api.url, from, 25).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_until("every ride charged", Duration::from_secs(240), || async {
        let charged = charges_by_ride(&p.config, &p.codec).await;
        booked.iter().all(|r| charged.contains_key(r))
    })
    .await;
    let legs = 2 * booked.len();
    wait_until("every leg observed", Duration::from_secs(60), || async {
        count(&records::<EtaObserved>(&p).await) >= legs
    })
    .await;

    // A running service's group is not moved.
    let refused = replay_command(&p, "billing", &billing.group, midway, &["--execute"]);
    assert!(!refused.status.success(), "a live group was moved");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("live member"), "{said}");

    // Everything stops; the log is what it will be. Notifications does not run again, so
    // every ride's messages must be out first: the audit waits for them.
    both_caught_up(&p, [&billing.group, &eta.group]).await;
    p.audit(booked.len()).await;
    first.cancel();
    join_all(tasks).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    surge_stop.cancel();
    join_all(vec![surging]).await;
    let charged = charges_by_ride(&p.config, &p.codec).await;
    assert!(charged.values().all(|n| *n == 1), "{charged:?}");
    let observed = records::<EtaObserved>(&p).await;
    let published = records::<SurgeUpdated>(&p).await;
    assert_eq!(count(&observed), legs, "one observation per leg");
    assert!(count(&published) > 0, "the rush surged somewhere");
    assert_eq!(
        counted("bimride_surge_late_events_total"),
        0.0,
        "surge's first run found records late"
    );
    assert_exported(&observed, "the first run");

    // A dry run moves nothing; --execute does: billing to a time, the tracker to the start.
    let plans = [
        ("billing", &billing.group, midway, "charged again"),
        ("eta", &eta.group, Point::Earliest, "published again"),
    ];
    for (service, group, to, again) in plans {
        // A member that stopped a moment ago may still be leaving.
        let mut dry = replay_command(&p, service, group, to, &[]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !dry.status.success() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(1)).await;
            dry = replay_command(&p, service, group, to, &[]);
        }
        let printed = String::from_utf8_lossy(&dry.stdout);
        let said = String::from_utf8_lossy(&dry.stderr);
        assert!(dry.status.success(), "{printed}{said}");
        assert!(printed.contains("nothing moved"), "{printed}");
        assert!(
            p.committed_to_the_end(group, Topic::RideEvents).await,
            "a dry run moved {group}"
        );
        // Past the outputs a service remembers, a replay would make them again.
        let memory = format!("--{service}-replay-secs");
        let beyond = [memory.as_str(), "1", "--execute"];
        let refused = replay_command(&p, service, group, to, &beyond);
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "moved past {service}'s memory");
        assert!(said.contains(again), "{said}");
        assert!(
            p.committed_to_the_end(group, Topic::RideEvents).await,
            "a refused replay moved {group}"
        );
        let moved = replay_command(&p, service, group, to, &["--execute"]);
        let printed = String::from_utf8_lossy(&moved.stdout);
        assert!(moved.status.success(), "{printed}");
        let moves = {
            let (config, group) = (p.config.clone(), group.clone());
            tokio::task::spawn_blocking(move || {
                replay::plan(&config, &group, &[Topic::RideEvents], to)
            })
            .await
            .expect("joins")
            .expect("plan")
        };
        assert!(
            moves.iter().all(|m| m.committed == Some(m.to)),
            "{group} is at {to}: {moves:?}"
        );
        assert!(
            !p.committed_to_the_end(group, Topic::RideEvents).await,
            "{group} went back"
        );
        if to != Point::Earliest {
            assert!(
                moves.iter().any(|m| m.to > 0),
                "{to} is in the middle of the log: {moves:?}"
            );
        }
    }

    // The second run: the three recompute over the same log.
    let seen_twice = counted("bimride_billing_duplicates_total");
    let observed_before = counted("bimride_eta_already_published_total");
    let second = CancellationToken::new();
    let tasks = vec![
        p.spawn(billing.clone(), second.clone()),
        p.spawn(eta.clone(), second.clone()),
        p.spawn(
            SurgeSettings {
                surge_recompute_from: Some(Point::Earliest),
                ..surge
            },
            second.clone(),
        ),
    ];
    wait_until(
        "every leg observed again",
        Duration::from_secs(120),
        || async {
            counted("bimride_eta_already_published_total") - observed_before >= legs as f64
        },
    )
    .await;
    // The recompute publishes in one go, before surge goes live: wait for all of it, or for
    // it to stop short.
    let want = 2 * count(&published);
    let (mut seen, mut since) = (0, tokio::time::Instant::now());
    let deadline = since + Duration::from_secs(120);
    loop {
        let now = count(&records::<SurgeUpdated>(&p).await);
        if now != seen {
            (seen, since) = (now, tokio::time::Instant::now());
        }
        if now >= want || (now > count(&published) && since.elapsed() > Duration::from_secs(10)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "surge published {now} of {want}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    both_caught_up(&p, [&billing.group, &eta.group]).await;
    second.cancel();
    join_all(tasks).await;

    // Billing: the completions after the midway point read again (the second half's at
    // least), and not one ride charged again.
    let again = counted("bimride_billing_duplicates_total") - seen_twice;
    assert!(
        again >= (booked.len() / 2) as f64,
        "billing reread {again} completions"
    );
    assert_eq!(charges_by_ride(&p.config, &p.codec).await, charged);
    // ETA: every leg observed again and none published twice, so the learners learn each
    // once; the figures the tracker exports, started afresh, are the first run's.
    assert_eq!(
        counted("bimride_eta_already_published_total") - observed_before,
        legs as f64,
        "every leg observed again"
    );
    assert_eq!(
        records::<EtaObserved>(&p).await,
        observed,
        "the replayed tracker published legs again"
    );
    assert_exported(&observed, "the replay");
    // Surge: the same multipliers for the same windows, each once.
    let windows = |by: &BTreeMap<i32, Vec<SurgeUpdated>>| {
        let all: Vec<&SurgeUpdated> = by.values().flatten().collect();
        let set: BTreeSet<_> = all
            .iter()
            .map(|u| {
                (
                    u.window_end,
                    u.cell.clone(),
                    u.multiplier_milli,
                    u.demand,
                    u.supply,
                )
            })
            .collect();
        assert_eq!(set.len(), all.len(), "each window published once per run");
        set
    };
    let republished = windows(&appended(&published, &records::<SurgeUpdated>(&p).await));
    let first = windows(&published);
    assert!(
        republished == first,
        "the recomputed multipliers differ: only recomputed {:?}, only published first {:?}",
        republished.difference(&first).collect::<Vec<_>>(),
        first.difference(&republished).collect::<Vec<_>>()
    );

    // The audit an operator runs afterwards finds nothing: the ledger, and `bimride audit`.
    p.audit(booked.len()).await;
    let dir = std::env::temp_dir().join(format!("bimride-audit-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("a directory for the report");
    let (audit, printed, json) = audit_command(&p, &dir);
    assert!(
        audit.status.success(),
        "the audit found discrepancies: {printed}"
    );
    assert_eq!(json["clean"], true, "{json}");
    assert_eq!(json["rides"], booked.len(), "{json}");

    // A forged second charge of one ride, its split not its fare: `bimride audit` exits
    // non-zero, and its report names the ride under both rules.
    let ride = booked.first().expect("a ride").clone();
    let mut forged = records::<FareCharged>(&p)
        .await
        .into_values()
        .flatten()
        .find(|c| c.ride_id == ride)
        .expect("the ride's charge");
    forged.event_id = uuid::Uuid::new_v4().to_string();
    forged.commission.amount_minor += 1;
    p.producer
        .send_and_wait(&forged)
        .await
        .expect("the forged charge is written");
    let (audit, printed, json) = audit_command(&p, &dir);
    assert!(
        !audit.status.success(),
        "the forged charge passed: {printed}"
    );
    assert!(printed.contains("DISCREPANCIES FOUND"), "{printed}");
    assert_eq!(json["clean"], false, "{json}");
    let failed = |check: &str| -> Vec<String> {
        json["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["name"] == check)
            .flat_map(|c| c["failed"].as_array().cloned().unwrap_or_default())
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(failed("charged at most once"), [ride.as_str()], "{json}");
    assert_eq!(
        failed("commission plus payout is the fare"),
        [ride.as_str()],
        "{json}"
    );
    std::fs::remove_dir_all(&dir).expect("remove the report");
}
