//! `bimride audit`: every topic read back and reconciled, a table and a JSON report.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bimride_codec::{Codec, RegistryConfig};

use crate::cli::AuditArgs;

#[allow(clippy::print_stdout)]
pub async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let kafka = args.kafka.validated()?;
    let mut registry = RegistryConfig::new(&args.schema_registry).with_topics(kafka.topics());
    registry.basic_auth = args.registry_credential.pair()?;
    // Decoding only fetches schemas by id: an audit registers nothing.
    let codec = Codec::new(&registry)?;
    let now = SystemTime::now();
    let window = match args.since {
        Some(since) => since.window(now)?,
        // Back to the epoch: every partition from its first retained record.
        None => now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO),
    };
    let ledger = bimride_audit::read_ledger(&kafka, &codec, window)
        .await
        .context("reading the topics")?;
    let settle_ms = i64::try_from(args.settle.as_millis()).unwrap_or(i64::MAX);
    let mut report = ledger.audit(settle_ms, args.since.is_none());
    let database = bimride_store::Database::from(args.database);
    if database.exists() {
        let url = database.url();
        let store = bimride_store::Store::open(&url)
            .await
            .with_context(|| format!("opening the ride store {}", bimride_store::redacted(&url)))?;
        let check = bimride_audit::check_store(&ledger, &store, settle_ms)
            .await
            .context("reading the ride store")?;
        store.close().await;
        report = report.with(check);
    } else {
        println!(
            "no ride store in {}: its rows are not checked",
            database.data_dir.display()
        );
    }
    print!("{}", report.table());
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(&args.report, json)
        .with_context(|| format!("writing {}", args.report.display()))?;
    println!("report: {}", args.report.display());
    anyhow::ensure!(
        report.clean,
        "the audit found discrepancies; {} names every ride concerned",
        args.report.display()
    );
    Ok(())
}
