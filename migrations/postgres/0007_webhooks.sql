-- Durable webhooks: a delivery is stored whole (event, body) before it is answered, and the
-- leading engine processes it from here, in arrival order (seq), marking it processed in the
-- same transaction as its effect where that effect is a database write. Processed rows are
-- removed after the retention period; unprocessed ones never are.

ALTER TABLE webhook_deliveries RENAME TO webhook_deliveries_0004;

CREATE TABLE webhook_deliveries (
    seq           BIGSERIAL PRIMARY KEY,
    delivery_id   TEXT NOT NULL UNIQUE,
    event         TEXT NOT NULL,
    body          BYTEA NOT NULL,
    received_at   TIMESTAMPTZ NOT NULL,
    processed_at  TIMESTAMPTZ
);
CREATE INDEX webhook_deliveries_waiting ON webhook_deliveries (seq) WHERE processed_at IS NULL;

-- Ids seen before this migration were processed (or lost with the old in-memory queue): they
-- stay duplicates until the retention period ends.
INSERT INTO webhook_deliveries (delivery_id, event, body, received_at, processed_at)
    SELECT id, event, ''::bytea, received_at, received_at FROM webhook_deliveries_0004 ORDER BY received_at;

DROP TABLE webhook_deliveries_0004;
