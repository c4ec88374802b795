//! The benchmark's results: a JSON report, a table for the terminal, and a plot of latency
//! against load.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::Serialize;

use crate::baseline::{HttpRate, PassThrough, Trials};
use crate::cpu::BrokerCpu;
use crate::track::{Outcomes, Percentiles, Stage};
use crate::{BenchError, BenchSettings, Target};

/// Latency from the booking's 202 to each stage, and of the 202 itself.
#[derive(Debug, Clone, Serialize)]
pub struct StageLatency {
    pub http_202: Percentiles,
    pub offered: Percentiles,
    pub assigned: Percentiles,
    pub completed: Percentiles,
    pub charged: Percentiles,
    pub notified: Percentiles,
}

/// The share of bookings that must be accepted, and then assigned, for a step to hold.
pub const HELD_SHARE: f64 = 0.999;

/// Share of the machine's cores beyond which the brokers alone bound the rate (1.6 of 2):
/// above it no pipeline change can raise the highest rate held on this machine.
pub const BROKER_BOUND_SHARE: f64 = 0.8;

/// CPU seconds a step read, by party, over a window of wall time.
#[derive(Debug, Clone, Default)]
pub struct Cpu {
    pub window_secs: f64,
    /// The city's process: BimRide's services (and an embedded cluster's brokers).
    pub services: f64,
    /// This process: the load generator (its HTTP client and the consumers that time each
    /// stage).
    pub load: f64,
    /// The simulated fleet's process.
    pub fleet: Option<f64>,
    /// The brokers' processes, where they run apart.
    pub brokers: Option<BrokerCpu>,
}

/// The fleet over a step's load.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FleetUse {
    /// Drivers in the fleet.
    pub drivers: usize,
    /// The fewest of them idle at once; 0 means the fleet ran out.
    pub fewest_idle: Option<u64>,
}

impl FleetUse {
    /// True when every driver was busy or offline at some moment of the load.
    pub fn ran_out(&self) -> bool {
        self.fewest_idle == Some(0)
    }
}

/// One rate, held for the step's duration.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub rate: f64,
    pub seconds: f64,
    pub sent: u64,
    pub accepted: u64,
    pub failed: u64,
    pub accepted_per_s: f64,
    pub assigned: u64,
    pub assigned_per_s: f64,
    /// How every accepted booking ended.
    pub outcomes: Outcomes,
    pub latency: StageLatency,
    /// Wall time over which CPU was read: the load and its settling.
    pub cpu_window_secs: f64,
    /// CPU of BimRide's services, the city's own process (an embedded cluster's brokers
    /// included: they run in it).
    pub cpu_seconds: f64,
    pub cpu_ms_per_ride: f64,
    /// Cores the services used on average over the window.
    pub cores: f64,
    /// CPU of the load generator, the benchmark's own process: its HTTP client, the riders'
    /// tokens and the consumers that time each stage.
    pub load_cpu_seconds: f64,
    pub load_cpu_ms_per_ride: f64,
    pub load_cores: f64,
    /// CPU of the simulated fleet's process.
    pub fleet_cpu_seconds: Option<f64>,
    pub fleet_cpu_ms_per_ride: Option<f64>,
    pub fleet_cores: Option<f64>,
    /// CPU of the broker processes, where they run apart from this one.
    pub broker_cpu_seconds: Option<f64>,
    pub broker_cpu_ms_per_ride: Option<f64>,
    pub broker_cores: Option<f64>,
    /// The brokers' cores by what their threads did: serving requests, replicating, compiling
    /// (the JVM's warm-up), collecting garbage, and the rest.
    pub broker_cores_by_role: Option<BTreeMap<String, f64>>,
    /// Records produced by every service per second of load.
    pub pipeline_records_per_s: f64,
    /// Records the services produced per accepted ride, by topic, over the step and its
    /// settling (telemetry and driver supply included: they are the load a ride puts on the
    /// brokers).
    pub records_per_ride: BTreeMap<String, f64>,
    /// The simulated fleet over the load.
    pub fleet: FleetUse,
}

impl Step {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        rate: f64,
        seconds: f64,
        sent: u64,
        accepted: u64,
        failed: u64,
        outcomes: Outcomes,
        http_202: Percentiles,
        latencies: &HashMap<Stage, Histogram<u64>>,
        cpu: Cpu,
        pipeline_records_per_s: f64,
        records_per_ride: BTreeMap<String, f64>,
        fleet: FleetUse,
    ) -> Self {
        let Cpu {
            window_secs: cpu_window_secs,
            services: cpu_seconds,
            load: load_cpu_seconds,
            fleet: fleet_cpu_seconds,
            brokers: broker_cpu,
        } = cpu;
        let of = |s: Stage| latencies.get(&s).map(Percentiles::of).unwrap_or_default();
        let per_ride = |cpu: f64| {
            if accepted > 0 {
                cpu * 1000.0 / accepted as f64
            } else {
                0.0
            }
        };
        let cores = |cpu: f64| {
            if cpu_window_secs > 0.0 {
                cpu / cpu_window_secs
            } else {
                0.0
            }
        };
        let assigned = outcomes.assigned;
        let broker_cpu_seconds = broker_cpu.as_ref().map(|b| b.total);
        Self {
            rate,
            seconds,
            sent,
            accepted,
            failed,
            accepted_per_s: accepted as f64 / seconds,
            assigned,
            assigned_per_s: assigned as f64 / seconds,
            outcomes,
            latency: StageLatency {
                http_202,
                offered: of(Stage::Offered),
                assigned: of(Stage::Assigned),
                completed: of(Stage::Completed),
                charged: of(Stage::Charged),
                notified: of(Stage::Notified),
            },
            cpu_window_secs,
            cpu_seconds,
            cpu_ms_per_ride: per_ride(cpu_seconds),
            cores: cores(cpu_seconds),
            load_cpu_seconds,
            load_cpu_ms_per_ride: per_ride(load_cpu_seconds),
            load_cores: cores(load_cpu_seconds),
            fleet_cpu_seconds,
            fleet_cpu_ms_per_ride: fleet_cpu_seconds.map(per_ride),
            fleet_cores: fleet_cpu_seconds.map(cores),
            broker_cpu_seconds,
            broker_cpu_ms_per_ride: broker_cpu_seconds.map(per_ride),
            broker_cores: broker_cpu_seconds.map(cores),
            broker_cores_by_role: broker_cpu.map(|b| {
                b.by_role
                    .into_iter()
                    .map(|(role, s)| (role.to_owned(), cores(s)))
                    .collect()
            }),
            pipeline_records_per_s,
            records_per_ride,
            fleet,
        }
    }

    /// The rate held: at least 99.9% of the bookings sent accepted and of those accepted
    /// assigned, with the p99 to assignment, over every accepted booking, within the target.
    pub fn holds(&self, target_p99_ms: f64) -> bool {
        let accepted = self.accepted as f64 >= HELD_SHARE * self.sent as f64;
        let assigned = self.assigned as f64 >= HELD_SHARE * self.accepted as f64;
        self.accepted > 0 && accepted && assigned && self.latency.assigned.p99_ms <= target_p99_ms
    }

    /// True when the brokers alone used more than [`BROKER_BOUND_SHARE`] of `cpus` cores.
    pub fn brokers_bound(&self, cpus: usize) -> bool {
        self.broker_cores
            .is_some_and(|c| c > BROKER_BOUND_SHARE * cpus as f64)
    }
}

/// Baselines, each measured [`crate::TRIALS`] times before the load, and the ratios the targets
/// are set in, taken over their medians.
#[derive(Debug, Clone, Serialize)]
pub struct Baselines {
    pub trials: usize,
    pub kafka_pass_through: Trials<PassThrough>,
    pub pipeline_records_per_s: f64,
    /// Pipeline records per second over the median raw pass-through records per second.
    pub pipeline_efficiency: f64,
    pub bare_http: Trials<HttpRate>,
    pub booking_http: Trials<HttpRate>,
    /// Median booking POSTs per second over median bare-handler POSTs per second.
    pub http_ratio: f64,
}

impl Baselines {
    /// The pipeline's figures at `step`, set against the pass-through.
    pub(crate) fn with_pipeline(self, step: Option<&Step>) -> Self {
        let pipeline = step.map_or(0.0, |s| s.pipeline_records_per_s);
        Self {
            pipeline_records_per_s: pipeline,
            pipeline_efficiency: pipeline / self.kafka_pass_through.median,
            ..self
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kafka: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub drivers: usize,
    pub duration_secs: u64,
    pub target_p99_ms: Option<f64>,
    pub steps: Vec<Step>,
    /// The highest rate that held the target, when one was given.
    pub max_sustainable_rate: Option<f64>,
    pub baselines: Option<Baselines>,
}

impl Report {
    pub(crate) fn new(
        target: &Target,
        settings: &BenchSettings,
        steps: Vec<Step>,
        max_sustainable_rate: Option<f64>,
        baselines: Option<Baselines>,
    ) -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        Self {
            machine: Machine {
                cpus: std::thread::available_parallelism().map_or(1, usize::from),
                cpu_model,
                kafka: target.kafka.bootstrap_servers().to_owned(),
            },
            drivers: target.drivers,
            duration_secs: settings.duration,
            target_p99_ms: settings.target_p99_ms,
            steps,
            max_sustainable_rate,
            baselines,
        }
    }

    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        let json = serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| unreachable!("a report serialises: {e}"));
        std::fs::write(path, json).map_err(|source| BenchError::Write {
            path: path.display().to_string(),
            source,
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "machine: {} CPUs, {} · drivers {} · {} s per step",
            self.machine.cpus, self.machine.cpu_model, self.drivers, self.duration_secs
        )?;
        writeln!(
            f,
            "{:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10} {:>11} {:>11} {:>11} {:>9} {:>9} {:>10} {:>12} {:>6} {:>10} {:>11} {:>13}",
            "rate/s",
            "accepted",
            "assigned",
            "cancelled",
            "undecided",
            "assign/s",
            "202 p99",
            "offer p99",
            "assign p50",
            "assign p99",
            "complete p99",
            "charge p99",
            "notify p99",
            "cpu/ride",
            "load/ride",
            "fleet/ride",
            "brokers/ride",
            "cores",
            "load cores",
            "fleet cores",
            "brokers cores"
        )?;
        for s in &self.steps {
            let l = &s.latency;
            writeln!(
                f,
                "{:>8.0} {:>9} {:>9} {:>9} {:>9} {:>9.1} {:>7.1}ms {:>8.1}ms {:>8.1}ms {:>8.1}ms {:>10.0}ms {:>9.0}ms {:>9.0}ms {:>7.2}ms {:>7.2}ms {:>10} {:>12} {:>6.2} {:>10.2} {:>11} {:>13}",
                s.rate,
                s.accepted,
                s.outcomes.assigned,
                s.outcomes.cancelled,
                s.outcomes.undecided,
                s.assigned_per_s,
                l.http_202.p99_ms,
                l.offered.p99_ms,
                l.assigned.p50_ms,
                l.assigned.p99_ms,
                l.completed.p99_ms,
                l.charged.p99_ms,
                l.notified.p99_ms,
                s.cpu_ms_per_ride,
                s.load_cpu_ms_per_ride,
                s.fleet_cpu_ms_per_ride
                    .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.2}ms")),
                s.broker_cpu_ms_per_ride
                    .map_or_else(|| "in process".to_owned(), |ms| format!("{ms:.2}ms")),
                s.cores,
                s.load_cores,
                s.fleet_cores
                    .map_or_else(|| "-".to_owned(), |c| format!("{c:.2}")),
                s.broker_cores
                    .map_or_else(|| "in process".to_owned(), |c| format!("{c:.2}")),
            )?;
        }
        writeln!(
            f,
            "percentiles are over every accepted booking; one never assigned counts as inf"
        )?;
        for s in &self.steps {
            let topics: Vec<String> = s
                .records_per_ride
                .iter()
                .map(|(topic, n)| format!("{topic} {n:.1}"))
                .collect();
            writeln!(
                f,
                "records per ride at {:.0}/s: {} (total {:.1})",
                s.rate,
                topics.join(" · "),
                s.records_per_ride.values().sum::<f64>()
            )?;
            let fewest = s
                .fleet
                .fewest_idle
                .map_or_else(|| "unknown".to_owned(), |n| n.to_string());
            writeln!(
                f,
                "fleet at {:.0}/s: {} drivers, fewest idle at once {fewest}{}",
                s.rate,
                s.fleet.drivers,
                if s.fleet.ran_out() {
                    ": the fleet ran out, so this step measured the drivers, not the pipeline"
                } else {
                    ""
                }
            )?;
        }
        match (self.target_p99_ms, self.max_sustainable_rate) {
            (Some(t), Some(rate)) => writeln!(
                f,
                "highest rate held (99.9% assigned, p99 ≤ {t} ms): {rate:.0} bookings/s"
            )?,
            (Some(t), None) => writeln!(f, "no rate held (99.9% assigned, p99 ≤ {t} ms)")?,
            (None, _) => writeln!(f, "no target given: no rate is called held")?,
        }
        // Whether the brokers, not the pipeline, bound the highest rate tried.
        if let Some(last) = self.steps.last()
            && let Some(cores) = last.broker_cores
        {
            let cpus = self.machine.cpus;
            let verdict = if last.brokers_bound(cpus) {
                "more than 80% of the machine: at this rate the brokers alone bound it"
            } else {
                "the brokers do not bound it"
            };
            writeln!(
                f,
                "at {:.0}/s, the highest rate tried, the brokers used {cores:.2} of {cpus} cores over the load and its settling: {verdict}",
                last.rate
            )?;
            if let Some(roles) = &last.broker_cores_by_role {
                let roles: Vec<String> = roles
                    .iter()
                    .map(|(role, cores)| format!("{role} {cores:.2}"))
                    .collect();
                writeln!(
                    f,
                    "the brokers' cores by thread: {} (jit is the JVM compiling: it falls as the brokers warm up)",
                    roles.join(" · ")
                )?;
            }
        }
        writeln!(
            f,
            "cpu/ride is BimRide's services (the city's process); load/ride the load generator (this process: HTTP client, riders' tokens, stage timers); fleet/ride the simulated drivers' process; brokers/ride their own processes (in process: in the city's)"
        )?;
        if let Some(b) = &self.baselines {
            fn range<T>(t: &Trials<T>) -> String {
                format!("{:.0}/s (median; {:.0} to {:.0})", t.median, t.min, t.max)
            }
            writeln!(
                f,
                "before the load, {} trials each: kafka pass-through {} · bare axum POST {} · booking POST {}",
                b.trials,
                range(&b.kafka_pass_through),
                range(&b.bare_http),
                range(&b.booking_http),
            )?;
            writeln!(
                f,
                "pipeline {:.0} records/s · efficiency {:.3} · HTTP ratio {:.2}",
                b.pipeline_records_per_s, b.pipeline_efficiency, b.http_ratio
            )?;
        }
        Ok(())
    }
}

/// Draws booking-to-assigned p50 and p99 against the offered rate, as an SVG. A rate whose
/// percentile is infinite (bookings never assigned) has no point on that line.
pub fn plot(report: &Report, path: &Path) -> Result<(), BenchError> {
    let plot_err = |e: &dyn std::fmt::Display| BenchError::Plot(e.to_string());
    let points = |f: fn(&Step) -> f64| -> Vec<(f64, f64)> {
        report
            .steps
            .iter()
            .map(|s| (s.rate, f(s).max(0.1)))
            .filter(|(_, ms)| ms.is_finite())
            .collect()
    };
    let p50 = points(|s| s.latency.assigned.p50_ms);
    let p99 = points(|s| s.latency.assigned.p99_ms);
    let max_rate = report.steps.iter().map(|s| s.rate).fold(1.0, f64::max) * 1.1;
    let max_ms = p99.iter().map(|p| p.1).fold(1.0, f64::max) * 1.5;

    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Booking accepted → driver assigned", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..max_rate, (0.1..max_ms).log_scale())
        .map_err(|e| plot_err(&e))?;
    chart
        .configure_mesh()
        .x_desc("offered load, bookings per second")
        .y_desc("latency, ms (log)")
        .draw()
        .map_err(|e| plot_err(&e))?;
    if let Some(target) = report.target_p99_ms {
        chart
            .draw_series(LineSeries::new(
                [(0.0, target), (max_rate, target)],
                RED.mix(0.4),
            ))
            .map_err(|e| plot_err(&e))?
            .label(format!("p99 target {target} ms"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED.mix(0.4)));
    }
    for (series, colour, name) in [(&p50, BLUE, "p50"), (&p99, MAGENTA, "p99")] {
        chart
            .draw_series(LineSeries::new(
                series.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|e| plot_err(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2)));
        chart
            .draw_series(series.iter().map(|p| Circle::new(*p, 3, colour.filled())))
            .map_err(|e| plot_err(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(|e| plot_err(&e))?;
    root.present().map_err(|e| plot_err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(sent: u64, accepted: u64, assigned: u64, assigned_p99_us: u64) -> Step {
        measured(sent, accepted, assigned, assigned_p99_us, None)
    }

    fn measured(
        sent: u64,
        accepted: u64,
        assigned: u64,
        assigned_p99_us: u64,
        broker_cpu_seconds: Option<f64>,
    ) -> Step {
        let broker_cpu = broker_cpu_seconds.map(|total| BrokerCpu {
            total,
            by_role: BTreeMap::from([("requests", total * 0.75), ("jit", total * 0.25)]),
        });
        let mut h = crate::track::histogram();
        for _ in 0..assigned {
            h.record(assigned_p99_us).expect("in range");
        }
        for _ in assigned..accepted {
            h.record(crate::track::NEVER_US).expect("in range");
        }
        let latencies = HashMap::from([(Stage::Assigned, h)]);
        let outcomes = Outcomes {
            assigned,
            cancelled: 0,
            undecided: accepted - assigned,
        };
        Step::new(
            1_000.0,
            10.0,
            sent,
            accepted,
            sent - accepted,
            outcomes,
            Percentiles::default(),
            &latencies,
            Cpu {
                window_secs: 20.0,
                services: 1.0,
                load: 4.0,
                fleet: Some(2.0),
                brokers: broker_cpu,
            },
            0.0,
            BTreeMap::new(),
            FleetUse {
                drivers: 10,
                fewest_idle: Some(3),
            },
        )
    }

    #[test]
    fn a_step_holds_only_with_nearly_every_booking_assigned_in_time() {
        assert!(step(10_000, 10_000, 10_000, 20_000).holds(25.0));
        // One in a thousand undecided still holds; two do not, whatever the assigned took.
        assert!(step(10_000, 10_000, 9_990, 20_000).holds(25.0));
        assert!(!step(10_000, 10_000, 9_980, 1_000).holds(25.0));
        // Every booking assigned, but too slowly.
        assert!(!step(10_000, 10_000, 10_000, 30_000).holds(25.0));
        // Bookings refused count too.
        assert!(!step(10_000, 9_980, 9_980, 1_000).holds(25.0));
        assert!(!step(0, 0, 0, 1_000).holds(25.0));
    }

    #[test]
    fn the_brokers_bound_the_rate_only_beyond_four_fifths_of_the_cores() {
        // 20 s of window: 33 CPU seconds are 1.65 cores, 31 are 1.55.
        let busy = measured(100, 100, 100, 1_000, Some(33.0));
        assert!((busy.broker_cores.expect("apart") - 1.65).abs() < 1e-9);
        assert!((busy.cores - 0.05).abs() < 1e-9);
        assert!((busy.load_cores - 0.2).abs() < 1e-9);
        assert!((busy.load_cpu_ms_per_ride - 40.0).abs() < 1e-9);
        assert!((busy.fleet_cores.expect("apart") - 0.1).abs() < 1e-9);
        assert!((busy.fleet_cpu_ms_per_ride.expect("apart") - 20.0).abs() < 1e-9);
        assert!(busy.brokers_bound(2));
        assert!(!busy.brokers_bound(4));
        let roles = busy.broker_cores_by_role.as_ref().expect("apart");
        assert!((roles["requests"] - 1.2375).abs() < 1e-9, "{roles:?}");
        assert!((roles["jit"] - 0.4125).abs() < 1e-9, "{roles:?}");
        assert!(!measured(100, 100, 100, 1_000, Some(31.0)).brokers_bound(2));
        // Brokers in this process cannot be told apart, so they never bound it.
        assert!(!step(100, 100, 100, 1_000).brokers_bound(2));
    }
}
