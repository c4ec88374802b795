//! `bimride dispatch`: one dispatch instance.

use std::sync::Arc;

use anyhow::Context;
use bimride_events::{Codec, RegistryConfig};

use crate::cli::DispatchArgs;
use crate::shutdown;

pub async fn run(args: DispatchArgs) -> anyhow::Result<()> {
    args.kafka.validate()?;
    args.dispatch.validate()?;
    let city = args.city.city()?;
    let shutdown = shutdown::on_signal();
    let codec = Arc::new(Codec::new(&RegistryConfig::new(&args.schema_registry))?);
    codec
        .register_all()
        .await
        .context("registering the event schemas")?;
    bimride_dispatch::run(&args.kafka, codec, city, args.dispatch, shutdown)
        .await
        .context("dispatch")
}
