-- Dispatch pauses per agent profile; see migrations/postgres/0002_agent_pauses.sql.
CREATE TABLE agent_pauses (
    agent   TEXT PRIMARY KEY,
    until   TEXT NOT NULL,
    reason  TEXT NOT NULL,
    at      TEXT NOT NULL
);
