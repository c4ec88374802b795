//! `bimride token` and `bimride dlq`: operator commands. `dlq` goes through the API's admin
//! endpoints, so that the admin credential guards every read and replay.

use std::time::Duration;

use anyhow::Context;
use bimride_auth::Authority;

use crate::cli::{DlqAction, DlqArgs, TokenArgs};

/// Prints a rider token: the command's output, not a log line.
#[allow(clippy::print_stdout)]
pub fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let authority = Authority::new(&args.auth_secret, None)?;
    let token = authority.rider_token(&args.rider, Duration::from_secs(args.ttl_secs))?;
    println!("{}", token.expose());
    Ok(())
}

#[allow(clippy::print_stdout)]
pub async fn dlq(args: DlqArgs) -> anyhow::Result<()> {
    let base = format!("{}/v1/admin/dead-letters", args.api.trim_end_matches('/'));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let request = match &args.action {
        DlqAction::List { topic: None } => http.get(&base),
        DlqAction::List { topic: Some(t) } => http.get(format!("{base}/{t}")),
        DlqAction::Show {
            topic,
            partition,
            offset,
        } => http.get(format!("{base}/{topic}/{partition}/{offset}")),
        DlqAction::Replay {
            topic,
            reason,
            source_topic,
            from_offset,
        } => http
            .post(format!("{base}/{topic}/replay"))
            .json(&serde_json::json!({
                "reason": reason,
                "source_topic": source_topic,
                "from_offset": from_offset,
            })),
    };
    let response = request
        .bearer_auth(args.admin_token.expose())
        .send()
        .await
        .with_context(|| format!("calling {}", args.api))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .context("the API's answer is not JSON")?;
    if !status.is_success() {
        anyhow::bail!(
            "the API answered {status}: {}",
            body["error"]["message"].as_str().unwrap_or("no message")
        );
    }
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}
