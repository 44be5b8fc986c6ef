-- Dispatch pauses per agent profile (that is, per credential): set when a run hits a rate or
-- usage limit, lifted when the limit resets.
CREATE TABLE agent_pauses (
    agent   TEXT PRIMARY KEY,
    until   TIMESTAMPTZ NOT NULL,
    reason  TEXT NOT NULL,
    at      TIMESTAMPTZ NOT NULL
);
