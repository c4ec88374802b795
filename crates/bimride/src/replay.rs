//! `bimride replay`: a stopped service's consumer group moved to a point in time.

use anyhow::Context;
use bimride_events::{RideEvent, Topic};
use bimride_kafka::partitioned::Inputs;
use bimride_kafka::replay::{self, Move};

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
}

#[allow(clippy::print_stdout)]
pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let kafka = args.kafka.validated()?;
    let group = args.group.unwrap_or_else(|| args.service.group());
    let (to, execute, topics) = (args.to, args.execute, args.service.inputs());
    let (moves, group) = tokio::task::spawn_blocking(move || {
        let moves = replay::plan(&kafka, &group, &topics, to)?;
        if execute {
            replay::execute(&kafka, &group, &moves)?;
        }
        Ok::<_, replay::ReplayError>((moves, group))
    })
    .await?
    .context("replaying")?;
    print!("{}", table(&group, &moves));
    if execute {
        println!("moved: start the service to recompute from here");
    } else {
        println!("nothing moved (a dry run): add --execute to move the group");
    }
    Ok(())
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
