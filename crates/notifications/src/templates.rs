//! The messages: which events tell whom what. Pure: an event in, its messages out.
//!
//! A message's id is derived from its ride, template and recipient, so the same step of a
//! ride yields the same id however often its event arrives, and duplicates are recognisable
//! here and by any receiver.

use bimride_events::{
    CancelledBy, ChargeKind, FareCharged, Millis, Notification, RecipientKind, RideEvent,
};

/// What a message is about.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Ride(RideEvent),
    Charge(FareCharged),
}

pub fn notification_id(ride_id: &str, template: &str, recipient_id: &str) -> String {
    let name = format!("bimride:notification:{ride_id}:{template}:{recipient_id}");
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()).to_string()
}

fn message(
    at: Millis,
    ride_id: &str,
    kind: RecipientKind,
    recipient_id: &str,
    template: &str,
    text: String,
) -> Notification {
    let id = notification_id(ride_id, template, recipient_id);
    Notification {
        event_id: id.clone(),
        occurred_at: at,
        notification_id: id,
        recipient_kind: kind,
        recipient_id: recipient_id.to_owned(),
        ride_id: Some(ride_id.to_owned()),
        template: template.to_owned(),
        text,
    }
}

/// Minor units as a decimal amount: 1950 EUR is "EUR 19.50".
pub fn amount(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let m = minor.unsigned_abs();
    format!("{currency} {sign}{}.{:02}", m / 100, m % 100)
}

fn minutes(secs: i32) -> i32 {
    ((secs + 59) / 60).max(1)
}

fn reason_text(by: CancelledBy, reason: &str) -> String {
    match (by, reason) {
        (_, "no_driver") => "no driver was available nearby".into(),
        (CancelledBy::Rider, _) => "you cancelled it".into(),
        (CancelledBy::Driver, _) => "the driver could not take it".into(),
        (CancelledBy::System, r) => format!("it could not go ahead ({})", r.replace('_', " ")),
    }
}

/// The messages `source` causes, or none. An empty rider id (from records that predate it)
/// leaves the rider's message out.
pub fn render(source: &Source) -> Vec<Notification> {
    use RecipientKind::{Driver, Rider};
    let mut out = Vec::new();
    let mut to = |kind, id: &str, ride: &str, at, template: &str, text: String| {
        if !id.is_empty() {
            out.push(message(at, ride, kind, id, template, text));
        }
    };
    match source {
        Source::Ride(RideEvent::OfferSent(o)) => to(
            Driver,
            &o.driver_id,
            &o.ride_id,
            o.occurred_at,
            "new_offer",
            format!(
                "New ride offer: pickup about {} min away. Answer within {} s.",
                minutes(o.pickup_eta_secs),
                ((o.expires_at.0 - o.occurred_at.0) / 1_000).max(0)
            ),
        ),
        Source::Ride(RideEvent::DriverAssigned(a)) => {
            let v = &a.vehicle;
            to(
                Rider,
                &a.rider_id,
                &a.ride_id,
                a.occurred_at,
                "booking_confirmed",
                format!(
                    "Your ride is confirmed. Driver {} is on the way in a {} {}, plate {}, about {} min away.",
                    a.driver_id,
                    v.colour,
                    v.model,
                    v.plate,
                    minutes(a.pickup_eta_secs)
                ),
            );
            to(
                Driver,
                &a.driver_id,
                &a.ride_id,
                a.occurred_at,
                "ride_assigned",
                format!(
                    "The ride is yours: head to the pickup, rider {} is waiting.",
                    a.rider_id
                ),
            );
        }
        Source::Ride(RideEvent::DriverArrived(e)) => to(
            Rider,
            &e.rider_id,
            &e.ride_id,
            e.occurred_at,
            "driver_arrived",
            format!("Your driver {} has arrived at the pickup.", e.driver_id),
        ),
        Source::Ride(RideEvent::TripStarted(e)) => to(
            Rider,
            &e.rider_id,
            &e.ride_id,
            e.occurred_at,
            "trip_started",
            "Your trip has started. Enjoy the ride.".into(),
        ),
        Source::Ride(RideEvent::RideCancelled(c)) => {
            to(
                Rider,
                &c.rider_id,
                &c.ride_id,
                c.occurred_at,
                "ride_cancelled",
                format!("Your ride was cancelled: {}.", reason_text(c.by, &c.reason)),
            );
            if let Some(driver) = &c.driver_id
                && c.by != CancelledBy::Driver
            {
                to(
                    Driver,
                    driver,
                    &c.ride_id,
                    c.occurred_at,
                    "ride_cancelled",
                    "The ride was cancelled; you are free for the next one.".into(),
                );
            }
        }
        Source::Charge(c) => {
            let cur = c.fare.currency.as_str();
            let (rider_template, rider_text) = match c.kind {
                ChargeKind::Trip => (
                    "receipt",
                    format!(
                        "Receipt: {} charged. Base {}, distance {}, time {}, surge x{}.{:03}.",
                        amount(c.fare.amount_minor, cur),
                        amount(c.base_minor, cur),
                        amount(c.distance_minor, cur),
                        amount(c.time_minor, cur),
                        c.surge_milli / 1_000,
                        c.surge_milli % 1_000
                    ),
                ),
                ChargeKind::CancellationFee => (
                    "cancellation_fee",
                    format!(
                        "A late-cancellation fee of {} was charged.",
                        amount(c.fare.amount_minor, cur)
                    ),
                ),
            };
            to(
                Rider,
                &c.rider_id,
                &c.ride_id,
                c.occurred_at,
                rider_template,
                rider_text,
            );
            if let Some(driver) = &c.driver_id {
                to(
                    Driver,
                    driver,
                    &c.ride_id,
                    c.occurred_at,
                    "payout",
                    format!(
                        "You earned {} (fare {} less {} commission).",
                        amount(c.payout.amount_minor, cur),
                        amount(c.fare.amount_minor, cur),
                        amount(c.commission.amount_minor, cur)
                    ),
                );
            }
        }
        Source::Ride(_) => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bimride_events::{DriverArrived, DriverAssigned, Money, Product, Vehicle};

    fn assigned() -> RideEvent {
        DriverAssigned {
            event_id: "e1".into(),
            occurred_at: Millis(10),
            ride_id: "ride-1".into(),
            rider_id: "rider-1".into(),
            driver_id: "driver-7".into(),
            vehicle: Vehicle {
                plate: "B-RX 42".into(),
                model: "Toyota Prius".into(),
                colour: "white".into(),
            },
            pickup_eta_secs: 190,
            region: "r".into(),
            product: Some(Product::Economy),
            surge_milli: 1_000,
            distance_eta_secs: None,
            quoted_duration_secs: None,
        }
        .into()
    }

    #[test]
    fn the_confirmation_names_the_driver_car_and_eta() {
        let out = render(&Source::Ride(assigned()));
        let rider = &out[0];
        assert_eq!(rider.recipient_kind, RecipientKind::Rider);
        assert_eq!(rider.recipient_id, "rider-1");
        assert_eq!(rider.template, "booking_confirmed");
        for part in ["driver-7", "white Toyota Prius", "B-RX 42", "4 min"] {
            assert!(
                rider.text.contains(part),
                "{part:?} missing from {:?}",
                rider.text
            );
        }
        assert_eq!(out[1].recipient_kind, RecipientKind::Driver);
    }

    #[test]
    fn the_same_step_twice_gives_the_same_ids() {
        let mut again = assigned();
        if let RideEvent::DriverAssigned(a) = &mut again {
            a.event_id = "e2".into();
        }
        let ids = |e| {
            render(&Source::Ride(e))
                .into_iter()
                .map(|n| n.notification_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(assigned()), ids(again));
    }

    #[test]
    fn the_receipt_breaks_the_fare_down() {
        let money = |amount_minor| Money {
            amount_minor,
            currency: "EUR".into(),
        };
        let charge = FareCharged {
            event_id: "c".into(),
            occurred_at: Millis(5),
            ride_id: "ride-1".into(),
            rider_id: "rider-1".into(),
            driver_id: Some("driver-7".into()),
            kind: ChargeKind::Trip,
            fare: money(1_950),
            base_minor: 250,
            distance_minor: 600,
            time_minor: 450,
            surge_milli: 1_500,
            commission: money(488),
            payout: money(1_462),
        };
        let out = render(&Source::Charge(charge));
        assert_eq!(out[0].template, "receipt");
        assert_eq!(
            out[0].text,
            "Receipt: EUR 19.50 charged. Base EUR 2.50, distance EUR 6.00, time EUR 4.50, surge x1.500."
        );
        assert_eq!(out[1].template, "payout");
        assert!(out[1].text.contains("EUR 14.62"));
    }

    #[test]
    fn records_without_a_rider_tell_no_rider() {
        let arrived = DriverArrived {
            event_id: "e".into(),
            occurred_at: Millis(1),
            ride_id: "ride-1".into(),
            driver_id: "d".into(),
            rider_id: String::new(),
        };
        assert!(render(&Source::Ride(arrived.into())).is_empty());
        assert_eq!(amount(-5, "EUR"), "EUR -0.05");
    }
}
