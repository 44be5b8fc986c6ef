-- Reactions to pull-request reviews and failed checks: what the project manager was told of
-- already (a review by its id, each failed check of a commit), so a redelivery or a late
-- delivery starts nothing new, and a branch's failed commits are counted against
-- `[github] max_ci_fix_rounds`.

CREATE TABLE forge_reactions (
    id          BIGSERIAL PRIMARY KEY,
    project     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    branch      TEXT NOT NULL,
    ref         TEXT NOT NULL,
    round       TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (project, kind, ref)
);
CREATE INDEX forge_reactions_branch ON forge_reactions (project, kind, branch);
