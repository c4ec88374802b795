-- One set of migrations for PostgreSQL and SQLite: portable types only.

-- Each ride's current state: the columns that queries select and sort on, and the whole view
-- that the API serves, as JSON.
CREATE TABLE rides (
    ride_id TEXT PRIMARY KEY,
    rider_id TEXT,
    status TEXT NOT NULL,
    region TEXT,
    product TEXT,
    requested_at BIGINT,
    updated_at BIGINT NOT NULL,
    fare_minor BIGINT,
    commission_minor BIGINT,
    payout_minor BIGINT,
    currency TEXT,
    surge_milli BIGINT,
    view TEXT NOT NULL
);
CREATE INDEX rides_by_rider ON rides (rider_id, requested_at DESC, ride_id DESC);
CREATE INDEX rides_by_status ON rides (status);

-- Every record applied, by its event id: a redelivered one is found here and changes nothing.
CREATE TABLE ride_events (
    event_id TEXT PRIMARY KEY,
    ride_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    topic TEXT NOT NULL,
    kafka_partition BIGINT NOT NULL,
    kafka_offset BIGINT NOT NULL
);
CREATE INDEX ride_events_by_ride ON ride_events (ride_id, occurred_at);

-- Messages sent about rides.
CREATE TABLE notifications (
    notification_id TEXT PRIMARY KEY,
    ride_id TEXT NOT NULL,
    recipient_kind TEXT NOT NULL,
    recipient_id TEXT NOT NULL,
    template TEXT NOT NULL,
    text TEXT NOT NULL,
    sent_at BIGINT NOT NULL
);
CREATE INDEX notifications_by_ride ON notifications (ride_id, sent_at);

-- The next offset to read of each partition, written in the transaction of the rows it
-- produced; the cluster it belongs to tells a new cluster from the old.
CREATE TABLE source_offsets (
    topic TEXT NOT NULL,
    kafka_partition BIGINT NOT NULL,
    next_offset BIGINT NOT NULL,
    cluster_id TEXT NOT NULL,
    PRIMARY KEY (topic, kafka_partition)
);
