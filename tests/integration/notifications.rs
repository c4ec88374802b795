//! Notifications on the embedded cluster: every step of a ride tells its rider and driver
//! once, even when the ride's events arrive twice, and a flaky webhook gets every message
//! after its retries, each with its id as the idempotency key.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use bimride_events::{Notification, RideEvent, Topic};
use bimride_notifications::NotificationSettings;
use bimride_tests::*;
use tokio_util::sync::CancellationToken;

use crate::group;

/// A webhook receiver that refuses its first `failures` posts with 503.
#[derive(Debug, Default)]
struct Hook {
    failures: usize,
    posts: usize,
    received: BTreeMap<String, serde_json::Value>,
}

async fn serve_hook(hook: Arc<Mutex<Hook>>, stop: CancellationToken) -> String {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: HeaderMap, body: axum::Json<serde_json::Value>| {
                let hook = Arc::clone(&hook);
                async move {
                    let mut h = hook.lock().expect("hook");
                    h.posts += 1;
                    if h.posts <= h.failures {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    h.received.insert(key, body.0);
                    StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_is_told_once_and_a_flaky_webhook_gets_every_message() {
    let broker = Broker::embedded();
    let p = Pipeline::start(&broker).await;
    let stop = CancellationToken::new();
    let hook = Arc::new(Mutex::new(Hook {
        failures: 3,
        ..Hook::default()
    }));
    let url = serve_hook(Arc::clone(&hook), stop.clone()).await;
    let notifications = p.spawn(
        NotificationSettings {
            group: group("notifications"),
            webhook_url: Some(url),
            ..NotificationSettings::default()
        },
        stop.clone(),
    );

    let rides = 10;
    let events: Vec<RideEvent> = (0..rides).flat_map(completed_trip).collect();
    p.producer.send_all(&events).await.expect("published");
    // The same events redelivered, and a driver app that repeats its arrival with a new id.
    p.producer.send_all(&events).await.expect("published again");
    let mut again: Vec<RideEvent> = (0..rides).map(|n| completed_trip(n)[1].clone()).collect();
    for e in &mut again {
        if let RideEvent::DriverArrived(a) = e {
            a.event_id = uuid::Uuid::new_v4().to_string();
        }
    }
    p.producer
        .send_all(&again)
        .await
        .expect("repeats published");

    // Confirmation and assignment, arrival, start: four messages per completed trip.
    let expected = 4 * rides as usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while hook.lock().expect("hook").received.len() < expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the webhook did not get every message"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let any duplicate land before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let config = p.config.clone();
    let records = tokio::task::spawn_blocking(move || {
        read_back(
            &config,
            config.topics().name(Topic::Notifications),
            "read_committed",
        )
    })
    .await
    .expect("reader joins");
    let sent: Vec<Notification> = decode_all(&p.codec, &records).await;
    stop.cancel();
    join_all(vec![notifications]).await;

    assert_eq!(sent.len(), expected, "each message once on the topic");
    let ids: BTreeSet<&str> = sent.iter().map(|n| n.notification_id.as_str()).collect();
    assert_eq!(ids.len(), expected);
    let h = hook.lock().expect("hook");
    assert_eq!(
        h.received.len(),
        expected,
        "each message once at the webhook"
    );
    assert!(h.posts > expected, "the refused posts were retried");
    assert!(
        ids.iter().all(|id| h.received.contains_key(*id)),
        "keyed by notification id"
    );
    let templates: BTreeSet<&str> = sent.iter().map(|n| n.template.as_str()).collect();
    assert_eq!(
        templates,
        BTreeSet::from([
            "booking_confirmed",
            "driver_arrived",
            "ride_assigned",
            "trip_started"
        ])
    );
    for n in &sent {
        let key = match n.recipient_kind {
            bimride_events::RecipientKind::Rider => "rider",
            bimride_events::RecipientKind::Driver => "driver",
        };
        assert!(
            n.recipient_id.starts_with(key),
            "{n:?} is keyed by its recipient"
        );
    }
}
