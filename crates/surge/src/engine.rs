//! The surge engine: pure state, driven only by event time.
//!
//! - Demand (requests, plus requests that found no driver) and supply (distinct available
//!   drivers seen) are counted per H3 cell in tumbling windows of `tumbling_ms`.
//! - The watermark is the latest event time seen less `lateness_ms`. When it passes the end
//!   of a tumbling window, that window closes, and every cell's multiplier is computed over
//!   the sliding window of the last `sliding_ms` that ends there.
//! - An event for a window already closed is late: it is counted, not applied.
//! - A cell's raw multiplier grows with its demand-to-supply ratio. It is then blended with
//!   its neighbours' (so that two adjacent cells never differ by a cliff), smoothed over time
//!   (so that it never flaps), capped, and published only when it moves by `step_milli`.
//!
//! Nothing here reads a clock, so the same events give the same multipliers, in any order
//! within the lateness bound.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use bimride_events::{Millis, SurgeUpdated};
use h3o::CellIndex;

/// 1.0 in thousandths.
pub const NO_SURGE: i32 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SurgeConfig {
    pub tumbling_ms: i64,
    /// A whole number of tumbling windows.
    pub sliding_ms: i64,
    pub lateness_ms: i64,
    pub cap_milli: i32,
    /// How strongly the demand-to-supply ratio moves the multiplier, in thousandths:
    /// 500 turns a ratio of 3 into x2.0.
    pub sensitivity_milli: i32,
    /// Weight of the neighbours' mean in a cell's multiplier, in thousandths.
    pub neighbour_milli: i32,
    /// Share of the way to the new value a multiplier moves per window, in thousandths.
    pub smoothing_milli: i32,
    /// Smallest change worth publishing.
    pub step_milli: i32,
}

impl Default for SurgeConfig {
    fn default() -> Self {
        Self {
            tumbling_ms: 30_000,
            sliding_ms: 120_000,
            lateness_ms: 5_000,
            cap_milli: 3_000,
            sensitivity_milli: 500,
            neighbour_milli: 400,
            smoothing_milli: 500,
            step_milli: 50,
        }
    }
}

/// One input, already located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A ride was requested at `cell`.
    Requested {
        ride_id: String,
        cell: CellIndex,
        at: Millis,
    },
    /// A ride found no driver: demand left unserved, counted again where it was requested.
    Unfulfilled { ride_id: String, at: Millis },
    /// A driver's status changed at `cell`.
    Status {
        driver_id: String,
        cell: CellIndex,
        available: bool,
        at: Millis,
    },
    /// A driver was seen at `cell`; it counts as supply if it is available.
    Seen {
        driver_id: String,
        cell: CellIndex,
        at: Millis,
    },
}

impl Input {
    fn at(&self) -> Millis {
        match self {
            Input::Requested { at, .. }
            | Input::Unfulfilled { at, .. }
            | Input::Status { at, .. }
            | Input::Seen { at, .. } => *at,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Bucket {
    demand: u32,
    drivers: HashSet<String>,
    /// Drivers seen, and when: each counts if the driver was available then, which is known
    /// once the window closes.
    seen: Vec<(String, i64)>,
}

/// A cell's figures over the sliding window that closed last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellSurge {
    pub multiplier_milli: i32,
    pub demand: i32,
    pub supply: i32,
    pub window_end: Millis,
}

#[derive(Debug, Default)]
pub struct Engine {
    config: SurgeConfig,
    /// Window start → cell → counts.
    windows: BTreeMap<i64, HashMap<CellIndex, Bucket>>,
    max_seen: Option<i64>,
    /// Every window ending at or before this is closed.
    closed_until: Option<i64>,
    smoothed: HashMap<CellIndex, i32>,
    published: HashMap<CellIndex, CellSurge>,
    requested_at: HashMap<String, (CellIndex, i64)>,
    /// Each driver's statuses by event time, back to the one in force at the last close: a
    /// driver's records reach several regions' partitions, which are read in no common order.
    statuses: HashMap<String, BTreeMap<i64, bool>>,
    late: u64,
}

fn uuid_of(cell: CellIndex, end: i64) -> String {
    let name = format!("bimride:surge:{cell}:{end}");
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()).to_string()
}

impl Engine {
    pub fn new(config: SurgeConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Events that arrived after their window had closed.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// The multipliers last published, by cell.
    pub fn published(&self) -> &HashMap<CellIndex, CellSurge> {
        &self.published
    }

    /// Restores a multiplier read back from the surge topic, so a restart continues from it
    /// instead of from 1.0.
    pub fn seed(&mut self, cell: CellIndex, surge: CellSurge) {
        self.smoothed.insert(cell, surge.multiplier_milli);
        self.published.insert(cell, surge);
        let end = surge.window_end.0;
        self.closed_until = Some(self.closed_until.map_or(end, |c| c.max(end)));
    }

    fn window_of(&self, at: i64) -> i64 {
        at.div_euclid(self.config.tumbling_ms) * self.config.tumbling_ms
    }

    /// Applies one input; returns the updates of the windows it closed.
    pub fn apply(&mut self, input: Input) -> Vec<SurgeUpdated> {
        let at = input.at().0;
        let start = self.window_of(at);
        if self
            .closed_until
            .is_some_and(|c| start + self.config.tumbling_ms <= c)
        {
            self.late += 1;
            return Vec::new();
        }
        let cell_and_counts = match input {
            // A request written twice (a producer retrying after a broker failure) is one
            // request.
            Input::Requested { ride_id, cell, .. } => self
                .requested_at
                .insert(ride_id, (cell, at))
                .is_none()
                .then_some((cell, None)),
            Input::Unfulfilled { ride_id, .. } => self
                .requested_at
                .get(&ride_id)
                .map(|&(cell, _)| (cell, None)),
            Input::Status {
                driver_id,
                cell,
                available,
                ..
            } => {
                self.statuses
                    .entry(driver_id.clone())
                    .or_default()
                    .insert(at, available);
                available.then_some((cell, Some(driver_id)))
            }
            Input::Seen {
                driver_id, cell, ..
            } => {
                self.windows
                    .entry(start)
                    .or_default()
                    .entry(cell)
                    .or_default()
                    .seen
                    .push((driver_id, at));
                None
            }
        };
        if let Some((cell, driver)) = cell_and_counts {
            let bucket = self
                .windows
                .entry(start)
                .or_default()
                .entry(cell)
                .or_default();
            match driver {
                Some(d) => {
                    bucket.drivers.insert(d);
                }
                None => bucket.demand += 1,
            }
        }
        self.max_seen = Some(self.max_seen.map_or(at, |m| m.max(at)));
        self.close_ready()
    }

    /// Closes every window the watermark has passed, oldest first.
    fn close_ready(&mut self) -> Vec<SurgeUpdated> {
        let Some(max_seen) = self.max_seen else {
            return Vec::new();
        };
        let watermark = max_seen - self.config.lateness_ms;
        let mut out = Vec::new();
        loop {
            let next_end = match self.closed_until {
                Some(c) => c + self.config.tumbling_ms,
                None => match self.windows.keys().next() {
                    Some(&first) => first + self.config.tumbling_ms,
                    None => return out,
                },
            };
            if next_end > watermark {
                return out;
            }
            self.settle_sightings(next_end);
            out.extend(self.close(next_end));
            self.closed_until = Some(next_end);
        }
    }

    /// Counts the drivers seen in the tumbling window ending at `end` that were available
    /// when seen, then forgets statuses no later window needs.
    fn settle_sightings(&mut self, end: i64) {
        let start = end - self.config.tumbling_ms;
        let statuses = &self.statuses;
        let available_at = |driver: &str, at: i64| {
            statuses
                .get(driver)
                .and_then(|s| s.range(..=at).next_back())
                .is_some_and(|(_, available)| *available)
        };
        if let Some(cells) = self.windows.get_mut(&start) {
            for bucket in cells.values_mut() {
                for (driver, at) in std::mem::take(&mut bucket.seen) {
                    if available_at(&driver, at) {
                        bucket.drivers.insert(driver);
                    }
                }
            }
        }
        for statuses in self.statuses.values_mut() {
            if let Some((&in_force, _)) = statuses.range(..end).next_back() {
                *statuses = statuses.split_off(&in_force);
            }
        }
    }

    fn close(&mut self, end: i64) -> Vec<SurgeUpdated> {
        let c = self.config;
        let from = end - c.sliding_ms;
        // Demand and distinct supply per cell over the sliding window.
        let mut demand: HashMap<CellIndex, u32> = HashMap::new();
        let mut supply: HashMap<CellIndex, HashSet<&str>> = HashMap::new();
        for (_, cells) in self.windows.range(from..end) {
            for (cell, b) in cells {
                *demand.entry(*cell).or_default() += b.demand;
                supply
                    .entry(*cell)
                    .or_default()
                    .extend(b.drivers.iter().map(String::as_str));
            }
        }
        let raw = |cell: &CellIndex| -> i32 {
            let d = i64::from(demand.get(cell).copied().unwrap_or(0));
            if d == 0 {
                return NO_SURGE;
            }
            let s = supply.get(cell).map_or(0, HashSet::len).max(1) as i64;
            let ratio = d * 1_000 / s;
            let m = 1_000 + i64::from(c.sensitivity_milli) * (ratio - 1_000) / 1_000;
            m.clamp(i64::from(NO_SURGE), i64::from(c.cap_milli)) as i32
        };
        // Every cell that has, or borders, demand, or still carries a surge.
        let mut cells: BTreeSet<CellIndex> = self.smoothed.keys().copied().collect();
        for cell in demand.keys() {
            cells.extend(cell.grid_disk::<Vec<_>>(1));
        }
        let mut out = Vec::new();
        for cell in cells {
            let ring: Vec<CellIndex> = cell
                .grid_disk::<Vec<_>>(1)
                .into_iter()
                .filter(|n| *n != cell)
                .collect();
            let neighbours = if ring.is_empty() {
                NO_SURGE
            } else {
                (ring.iter().map(|n| i64::from(raw(n))).sum::<i64>() / ring.len() as i64) as i32
            };
            let w = c.neighbour_milli;
            let spatial = (raw(&cell) * (1_000 - w) + neighbours * w) / 1_000;
            let before = self.smoothed.get(&cell).copied().unwrap_or(NO_SURGE);
            let mut now = before + (spatial - before) * c.smoothing_milli / 1_000;
            if (now - NO_SURGE).abs() < c.step_milli / 2 {
                now = NO_SURGE;
            }
            let now = now.clamp(NO_SURGE, c.cap_milli);
            if now == NO_SURGE {
                self.smoothed.remove(&cell);
            } else {
                self.smoothed.insert(cell, now);
            }
            let last = self
                .published
                .get(&cell)
                .map_or(NO_SURGE, |p| p.multiplier_milli);
            let moved = (now - last).abs() >= c.step_milli || (now == NO_SURGE && last != NO_SURGE);
            if moved {
                let surge = CellSurge {
                    multiplier_milli: now,
                    demand: demand.get(&cell).copied().unwrap_or(0) as i32,
                    supply: supply.get(&cell).map_or(0, HashSet::len) as i32,
                    window_end: Millis(end),
                };
                self.published.insert(cell, surge);
                out.push(SurgeUpdated {
                    event_id: uuid_of(cell, end),
                    occurred_at: Millis(end),
                    cell: cell.to_string(),
                    multiplier_milli: now,
                    demand: surge.demand,
                    supply: surge.supply,
                    window_end: Millis(end),
                });
            }
        }
        // Windows and requests older than any future sliding window are done with.
        let keep_from = end + c.tumbling_ms - c.sliding_ms;
        self.windows.retain(|start, _| *start >= keep_from);
        self.requested_at.retain(|_, (_, at)| *at >= keep_from);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bimride_domain::City;
    use rand::rngs::SmallRng;
    use rand::{RngExt, SeedableRng};

    fn cell_at(lat: f64, lng: f64) -> CellIndex {
        City::amsterdam().locate(lat, lng).expect("in town").cell
    }

    fn centre() -> CellIndex {
        cell_at(52.3676, 4.9041)
    }

    fn far() -> CellIndex {
        cell_at(52.40, 4.85)
    }

    fn request(n: u32, cell: CellIndex, at: i64) -> Input {
        Input::Requested {
            ride_id: format!("ride-{n}"),
            cell,
            at: Millis(at),
        }
    }

    fn driver(n: u32, cell: CellIndex, at: i64) -> Input {
        Input::Status {
            driver_id: format!("driver-{n}"),
            cell,
            available: true,
            at: Millis(at),
        }
    }

    /// A quiet heartbeat far away, which moves event time on.
    fn tick(at: i64) -> Input {
        Input::Seen {
            driver_id: "driver-far".into(),
            cell: far(),
            at: Millis(at),
        }
    }

    fn run(engine: &mut Engine, inputs: Vec<Input>) -> Vec<SurgeUpdated> {
        inputs.into_iter().flat_map(|i| engine.apply(i)).collect()
    }

    fn level(engine: &Engine, cell: CellIndex) -> i32 {
        engine
            .published()
            .get(&cell)
            .map_or(NO_SURGE, |s| s.multiplier_milli)
    }

    #[test]
    fn a_spike_raises_its_cell_and_partly_its_neighbours_then_decays() {
        let mut engine = Engine::new(SurgeConfig::default());
        let spot = centre();
        let neighbour = spot
            .grid_disk::<Vec<_>>(1)
            .into_iter()
            .find(|c| *c != spot)
            .expect("ring");
        let mut inputs = vec![driver(1, spot, 0), driver(2, spot, 100)];
        inputs.extend((0..30).map(|n| request(n, spot, 1_000 + i64::from(n) * 500)));
        inputs.extend((1..=6).map(|k| tick(k * 10_000 + 30_000)));
        run(&mut engine, inputs);
        let (at_spot, next_door) = (level(&engine, spot), level(&engine, neighbour));
        assert!(at_spot > 1_500, "the spike surges: {at_spot}");
        assert!(
            next_door > NO_SURGE && next_door < at_spot,
            "neighbours partly: {next_door}"
        );
        assert!(at_spot <= SurgeConfig::default().cap_milli);

        // The spike ends: once its windows slide out, the multipliers come back to 1.0.
        run(
            &mut engine,
            (7..=40).map(|k| tick(k * 10_000 + 30_000)).collect(),
        );
        assert_eq!(level(&engine, spot), NO_SURGE);
        assert_eq!(level(&engine, neighbour), NO_SURGE);
    }

    #[test]
    fn a_request_written_twice_counts_once() {
        let spot = centre();
        let traffic = |copies: usize| {
            let mut inputs = vec![driver(1, spot, 0), driver(2, spot, 100)];
            for n in 0..20 {
                for _ in 0..copies {
                    inputs.push(request(n, spot, 1_000 + i64::from(n) * 500));
                }
            }
            inputs.extend((1..=6).map(|k| tick(k * 10_000 + 30_000)));
            inputs
        };
        let (mut once, mut twice) = (
            Engine::new(SurgeConfig::default()),
            Engine::new(SurgeConfig::default()),
        );
        run(&mut once, traffic(1));
        run(&mut twice, traffic(2));
        assert!(level(&once, spot) > NO_SURGE, "the traffic surges");
        assert_eq!(level(&twice, spot), level(&once, spot));
    }

    #[test]
    fn supply_keeps_prices_down_and_the_cap_holds() {
        let mut engine = Engine::new(SurgeConfig::default());
        let spot = centre();
        let mut inputs: Vec<Input> = (0..20).map(|n| driver(n, spot, 0)).collect();
        inputs.extend((0..10).map(|n| request(n, spot, 1_000 + i64::from(n))));
        inputs.extend((1..=8).map(|k| tick(k * 10_000 + 30_000)));
        run(&mut engine, inputs);
        assert_eq!(
            level(&engine, spot),
            NO_SURGE,
            "ten requests, twenty drivers"
        );

        let mut engine = Engine::new(SurgeConfig {
            cap_milli: 1_800,
            ..SurgeConfig::default()
        });
        let mut inputs: Vec<Input> = (0..500)
            .map(|n| request(n, spot, i64::from(n) * 10))
            .collect();
        inputs.extend((1..=20).map(|k| tick(k * 10_000 + 30_000)));
        let updates = run(&mut engine, inputs);
        let peak = updates
            .iter()
            .map(|u| u.multiplier_milli)
            .max()
            .unwrap_or(NO_SURGE);
        assert!(
            peak > 1_300 && peak <= 1_800,
            "surged, within the cap: {peak}"
        );
    }

    #[test]
    fn unfulfilled_requests_count_again() {
        let spot = centre();
        let demand = |unfulfilled: bool| {
            let mut engine = Engine::new(SurgeConfig::default());
            let mut inputs = vec![driver(1, spot, 0)];
            inputs.extend((0..3).map(|n| request(n, spot, 1_000)));
            if unfulfilled {
                inputs.extend((0..3).map(|n| Input::Unfulfilled {
                    ride_id: format!("ride-{n}"),
                    at: Millis(20_000),
                }));
            }
            inputs.extend((1..=4).map(|k| tick(k * 10_000 + 30_000)));
            run(&mut engine, inputs)
                .iter()
                .find(|u| u.cell == spot.to_string())
                .map(|u| u.demand)
        };
        assert_eq!(demand(false), Some(3));
        assert_eq!(demand(true), Some(6));
    }

    #[test]
    fn late_events_are_counted_not_applied() {
        let mut engine = Engine::new(SurgeConfig::default());
        let spot = centre();
        run(&mut engine, vec![driver(1, spot, 0), tick(100_000)]);
        let before = engine.published().clone();
        let updates = run(
            &mut engine,
            (0..50).map(|n| request(n, spot, 1_000)).collect(),
        );
        assert!(updates.is_empty());
        assert_eq!(engine.late(), 50);
        assert_eq!(engine.published(), &before);
    }

    #[test]
    fn the_same_events_in_any_order_within_lateness_give_the_same_multipliers() {
        let cells: Vec<CellIndex> = centre().grid_disk::<Vec<_>>(2);
        let mut rng = SmallRng::seed_from_u64(11);
        let mut inputs = Vec::new();
        for n in 0..3_000u32 {
            let at = i64::from(n) * 100;
            let cell = cells[rng.random_range(0..cells.len())];
            // Drivers come and go, and are seen in between: whether a sighting counts
            // depends on the status in force at its time, not on which arrived first.
            let id = format!("driver-{}", (n / 2) % 40);
            inputs.push(match rng.random_range(0..10) {
                0..6 => request(n, cell, at),
                6 | 7 => Input::Status {
                    driver_id: id,
                    cell,
                    available: rng.random_bool(0.7),
                    at: Millis(at),
                },
                _ => Input::Seen {
                    driver_id: id,
                    cell,
                    at: Millis(at),
                },
            });
        }
        let mut shuffled = inputs.clone();
        // Swap neighbours in arrival order: each event moves by well under the lateness bound.
        for i in (1..shuffled.len()).step_by(2) {
            if rng.random_bool(0.5) {
                shuffled.swap(i - 1, i);
            }
        }
        let sorted = |mut u: Vec<SurgeUpdated>| {
            u.sort_by(|a, b| (a.window_end, &a.cell).cmp(&(b.window_end, &b.cell)));
            u
        };
        let a = sorted(run(&mut Engine::new(SurgeConfig::default()), inputs));
        let b = sorted(run(&mut Engine::new(SurgeConfig::default()), shuffled));
        assert!(!a.is_empty());
        assert_eq!(a, b);
    }

    #[test]
    fn a_seeded_engine_continues_instead_of_dropping_to_one() {
        let spot = centre();
        let mut engine = Engine::new(SurgeConfig::default());
        let surge = CellSurge {
            multiplier_milli: 2_000,
            demand: 12,
            supply: 2,
            window_end: Millis(60_000),
        };
        engine.seed(spot, surge);
        // The first window after the restart carries no demand at the spot yet: the level
        // eases down by one smoothing step, never straight to 1.0.
        run(&mut engine, vec![driver(1, spot, 61_000), tick(100_000)]);
        let after = level(&engine, spot);
        assert!(
            after > 1_300 && after < 2_000,
            "eased, not dropped: {after}"
        );
    }
}
