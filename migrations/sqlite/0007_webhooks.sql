-- Durable webhooks (see migrations/postgres/0007_webhooks.sql).

ALTER TABLE webhook_deliveries RENAME TO webhook_deliveries_0004;

CREATE TABLE webhook_deliveries (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id   TEXT NOT NULL UNIQUE,
    event         TEXT NOT NULL,
    body          BLOB NOT NULL,
    received_at   TEXT NOT NULL,
    processed_at  TEXT
);
CREATE INDEX webhook_deliveries_waiting ON webhook_deliveries (seq) WHERE processed_at IS NULL;

INSERT INTO webhook_deliveries (delivery_id, event, body, received_at, processed_at)
    SELECT id, event, X'', received_at, received_at FROM webhook_deliveries_0004 ORDER BY received_at;

DROP TABLE webhook_deliveries_0004;
