-- Reactions to pull-request reviews and failed checks (see migrations/postgres/0008_reactions.sql).

CREATE TABLE forge_reactions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    branch      TEXT NOT NULL,
    ref         TEXT NOT NULL,
    round       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (project, kind, ref)
);
CREATE INDEX forge_reactions_branch ON forge_reactions (project, kind, branch);
