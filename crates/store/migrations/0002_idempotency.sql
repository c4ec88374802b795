-- Idempotency keys, claimed by the API before it produces a request: a retry that reaches any
-- instance, at any moment, finds the first claim and gets the same answer.
CREATE TABLE idempotency_keys (
    rider_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    ride_id TEXT NOT NULL,
    request TEXT NOT NULL,
    answer TEXT NOT NULL,
    claimed_at BIGINT NOT NULL,
    PRIMARY KEY (rider_id, idempotency_key)
);
