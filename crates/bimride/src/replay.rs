//! `bimride replay`: a stopped service's consumer group moved to a point in time.

use std::time::Duration;

use anyhow::Context;
use bimride_events::{Millis, RideEvent, Topic};
use bimride_kafka::KafkaConfig;
use bimride_kafka::partitioned::Inputs;
use bimride_kafka::replay::{self, Move, Point};

use crate::cli::{ReplayArgs, Replayable};

impl Replayable {
    fn group(self) -> String {
        match self {
            Replayable::Billing => bimride_billing::BillingSettings::default().group,
            Replayable::Eta => bimride_eta::EtaSettings::default().group,
        }
    }

    /// Both read the ride events.
    fn inputs(self) -> Vec<Topic> {
        <RideEvent as Inputs>::topics()
    }

    /// How far back the service reads its own outputs when it starts, and what it would do
    /// again, moved further back.
    fn memory(self, args: &ReplayArgs) -> Memory {
        match self {
            Replayable::Billing => Memory {
                window: Duration::from_secs(args.billing_replay_secs),
                flag: "--billing-replay-secs",
                again: "rides completed before then would be charged again",
            },
            Replayable::Eta => Memory {
                window: Duration::from_secs(args.eta_replay_secs),
                flag: "--eta-replay-secs",
                again: "legs observed before then would be published again",
            },
        }
    }
}

/// What a service remembers of its own outputs: it reads back `window` of them when it starts.
struct Memory {
    window: Duration,
    flag: &'static str,
    again: &'static str,
}

#[allow(clippy::print_stdout)]
pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let memory = args.service.memory(&args);
    let kafka = args.kafka.validated()?;
    let group = args.group.clone().unwrap_or_else(|| args.service.group());
    let moves = blocking({
        let (kafka, group, topics, to) =
            (kafka.clone(), group.clone(), args.service.inputs(), args.to);
        move || replay::plan(&kafka, &group, &topics, to)
    })
    .await?;
    print!("{}", table(&group, &moves));
    anyhow::ensure!(
        moves.iter().any(|m| m.committed.is_some()),
        "the group {group} has committed nothing on these topics: is it the service's group?"
    );
    let remembered = memory.window;
    refuse_beyond(&kafka, &group, &moves, memory).await?;
    if !args.execute {
        println!("nothing moved (a dry run): add --execute to move the group");
        return Ok(());
    }
    blocking(move || replay::execute(&kafka, &group, &moves)).await?;
    // The service's memory of its outputs counts back from its own start, not from now.
    println!(
        "moved: start the service to recompute from here, soon: it reads back {} s of its \
         outputs from when it starts, and what it made before that it would make again",
        remembered.as_secs()
    );
    Ok(())
}

/// Billing knows what it charged, and the tracker what it observed, from their own outputs of
/// the last window: moved further back, they would make again what they made before that.
async fn refuse_beyond(
    kafka: &KafkaConfig,
    group: &str,
    moves: &[Move],
    memory: Memory,
) -> anyhow::Result<()> {
    let Memory {
        window,
        flag,
        again,
    } = memory;
    let since = Millis(Millis::now().0 - i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
    let floor = blocking({
        let (kafka, group) = (kafka.clone(), group.to_owned());
        move || replay::plan(&kafka, &group, &[Topic::RideEvents], Point::At(since))
    })
    .await?;
    for m in moves {
        let limit = floor
            .iter()
            .find(|f| f.topic == m.topic && f.partition == m.partition)
            .map_or(m.to, |f| f.to);
        anyhow::ensure!(
            m.to >= limit,
            "{} partition {} would go back to {}, before the {} s the service remembers of \
             its outputs (offset {limit}): {again}; run the service and this with a longer \
             {flag}",
            m.topic,
            m.partition,
            m.to,
            window.as_secs()
        );
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, replay::ReplayError> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?.context("replaying")
}

fn table(group: &str, moves: &[Move]) -> String {
    let mut out = format!(
        "{group}\n{:<40} {:>9} {:>12} {:>12}\n",
        "topic", "partition", "committed", "to"
    );
    for m in moves {
        let committed = m
            .committed
            .map_or_else(|| "-".to_owned(), |c| c.to_string());
        out.push_str(&format!(
            "{:<40} {:>9} {:>12} {:>12}\n",
            m.topic, m.partition, committed, m.to
        ));
    }
    out
}
