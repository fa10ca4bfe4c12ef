"""The Flow DB schema: an append-only list of migrations, applied in order on open."""

from __future__ import annotations

# Never edit a released migration; append a new one.
MIGRATIONS: list[str] = [
    # 1: flows, their journals, bundles, inboxes, events
    """
    CREATE TABLE bundles (
        digest      TEXT PRIMARY KEY,
        data        BLOB NOT NULL,
        entry       TEXT NOT NULL,
        size        INTEGER NOT NULL,
        created     REAL NOT NULL
    );
    CREATE TABLE deployments (
        name        TEXT PRIMARY KEY,
        digest      TEXT NOT NULL REFERENCES bundles(digest),
        quota       TEXT NOT NULL,
        created     REAL NOT NULL,
        updated     REAL NOT NULL
    );
    CREATE TABLE flows (
        id            TEXT PRIMARY KEY,
        parent        TEXT REFERENCES flows(id),
        root          TEXT NOT NULL,
        name          TEXT NOT NULL,
        bundle        TEXT NOT NULL REFERENCES bundles(digest),
        entry         TEXT NOT NULL,
        args          TEXT NOT NULL,
        quota         TEXT NOT NULL,
        username      TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN
                        ('pending', 'running', 'waiting', 'completed', 'failed', 'cancelled')),
        result        TEXT,
        error         TEXT,
        created       REAL NOT NULL,
        updated       REAL NOT NULL,
        finished      REAL,
        lease_owner   TEXT,
        lease_expires REAL,
        lease_epoch   INTEGER NOT NULL DEFAULT 0,
        runnable      INTEGER NOT NULL DEFAULT 0,
        resumes       INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX flows_runnable ON flows(runnable, created) WHERE runnable = 1;
    CREATE INDEX flows_parent ON flows(parent);
    CREATE INDEX flows_root ON flows(root);
    CREATE INDEX flows_lease ON flows(lease_owner) WHERE lease_owner IS NOT NULL;
    CREATE TABLE journal (
        flow_id       TEXT NOT NULL REFERENCES flows(id),
        seq           INTEGER NOT NULL,
        kind          TEXT NOT NULL,
        args          TEXT NOT NULL,
        hash          TEXT NOT NULL,
        callsite      TEXT NOT NULL DEFAULT '',
        result        TEXT,
        requested_at  REAL NOT NULL,
        answered_at   REAL,
        worker        TEXT,
        executor      TEXT,
        executor_expires REAL,
        deadline      REAL,
        PRIMARY KEY (flow_id, seq)
    ) WITHOUT ROWID;
    CREATE INDEX journal_open ON journal(kind) WHERE result IS NULL;
    CREATE TABLE messages (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        flow_id     TEXT NOT NULL REFERENCES flows(id),
        inbox       TEXT NOT NULL,
        value       TEXT NOT NULL,
        sender      TEXT NOT NULL,
        created     REAL NOT NULL,
        consumed_seq INTEGER
    );
    CREATE INDEX messages_unread ON messages(flow_id, inbox, id) WHERE consumed_seq IS NULL;
    CREATE TABLE events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        flow_id     TEXT NOT NULL,
        root        TEXT NOT NULL,
        kind        TEXT NOT NULL,
        data        TEXT NOT NULL,
        at          REAL NOT NULL
    );
    CREATE INDEX events_root ON events(root, id);
    CREATE TABLE injections (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        flow_id     TEXT NOT NULL,
        action      TEXT NOT NULL CHECK (action IN ('fail', 'delay')),
        seconds     REAL NOT NULL DEFAULT 0,
        created     REAL NOT NULL,
        used_seq    INTEGER
    );
    """,
    # 2: journal events come from triggers, in the same statement as the journal write (one fewer
    # round trip per action, and no journal change can ever miss its event)
    """
    CREATE TRIGGER journal_requested AFTER INSERT ON journal
    BEGIN
        INSERT INTO events (flow_id, root, kind, data, at)
        SELECT NEW.flow_id, f.root, 'request',
               json_object('seq', NEW.seq, 'kind', NEW.kind, 'args', json(NEW.args), 'callsite', NEW.callsite,
                           'worker', NEW.worker, 'name', f.name),
               NEW.requested_at
        FROM flows f WHERE f.id = NEW.flow_id;
        INSERT INTO events (flow_id, root, kind, data, at)
        SELECT NEW.flow_id, f.root, CASE NEW.kind WHEN 'print' THEN 'log' ELSE 'result' END,
               json_object('seq', NEW.seq, 'kind', NEW.kind,
                           'ok', json(CASE WHEN json_extract(NEW.result, '$.ok') THEN 'true' ELSE 'false' END),
                           'error', json_extract(NEW.result, '$.error'), 'name', f.name,
                           'text', CASE NEW.kind WHEN 'print' THEN json_extract(NEW.args, '$.text') END),
               NEW.answered_at
        FROM flows f WHERE f.id = NEW.flow_id AND NEW.result IS NOT NULL;
    END;
    CREATE TRIGGER journal_answered AFTER UPDATE OF result ON journal
    WHEN OLD.result IS NULL AND NEW.result IS NOT NULL
    BEGIN
        INSERT INTO events (flow_id, root, kind, data, at)
        SELECT NEW.flow_id, f.root, CASE NEW.kind WHEN 'print' THEN 'log' ELSE 'result' END,
               json_object('seq', NEW.seq, 'kind', NEW.kind,
                           'ok', json(CASE WHEN json_extract(NEW.result, '$.ok') THEN 'true' ELSE 'false' END),
                           'error', json_extract(NEW.result, '$.error'), 'name', f.name,
                           'text', CASE NEW.kind WHEN 'print' THEN json_extract(NEW.args, '$.text') END),
               NEW.answered_at
        FROM flows f WHERE f.id = NEW.flow_id;
    END;
    """,
    # 3: a flow's creation and its end are events written by triggers too, so that starting a flow
    # and finishing a root flow are each one statement
    """
    CREATE TRIGGER flow_created AFTER INSERT ON flows
    BEGIN
        INSERT INTO events (flow_id, root, kind, data, at)
        VALUES (NEW.id, NEW.root, 'flow',
                json_object('status', NEW.status, 'name', NEW.name, 'parent', NEW.parent), NEW.created);
    END;
    CREATE TRIGGER flow_finished AFTER UPDATE OF status ON flows
    WHEN NEW.status IN ('completed', 'failed', 'cancelled') AND OLD.status NOT IN ('completed', 'failed', 'cancelled')
    BEGIN
        INSERT INTO events (flow_id, root, kind, data, at)
        VALUES (NEW.id, NEW.root, 'flow',
                json_object('status', NEW.status, 'name', NEW.name, 'parent', NEW.parent,
                            'result', json(NEW.result), 'error', json(NEW.error)), NEW.updated);
    END;
    """,
    # 4: triggers: webhooks and the deliveries each one answered (exactly once per delivery id), cron
    # schedules with their durable next fire time and every fire time they handled, and the grid's
    # clock (real, or virtual: then ``now`` is the only time flows see, and it moves by jumps)
    """
    CREATE TABLE hooks (
        name          TEXT PRIMARY KEY,
        deployment    TEXT NOT NULL,
        quota         TEXT NOT NULL,
        username      TEXT NOT NULL,
        signature     TEXT NOT NULL CHECK (signature IN ('github', 'hmac-sha256', 'none')),
        secret        TEXT,
        secret_source TEXT NOT NULL DEFAULT '',
        target        TEXT NOT NULL CHECK (target IN ('start', 'inbox')),
        inbox         TEXT NOT NULL DEFAULT '_stdin',
        match_arg     TEXT,
        match_source  TEXT,
        created       REAL NOT NULL,
        updated       REAL NOT NULL
    );
    CREATE TABLE hook_deliveries (
        hook        TEXT NOT NULL,
        delivery    TEXT NOT NULL,
        flow_ids    TEXT NOT NULL,
        created     REAL NOT NULL,
        PRIMARY KEY (hook, delivery)
    ) WITHOUT ROWID;
    CREATE TABLE schedules (
        name        TEXT PRIMARY KEY,
        deployment  TEXT NOT NULL,
        quota       TEXT NOT NULL,
        username    TEXT NOT NULL,
        cron        TEXT NOT NULL,
        tz          TEXT NOT NULL DEFAULT 'UTC',
        args        TEXT NOT NULL DEFAULT '{}',
        overlap     TEXT NOT NULL CHECK (overlap IN ('skip', 'allow', 'cancel-previous')),
        catch_up    TEXT NOT NULL CHECK (catch_up IN ('none', 'one', 'all')),
        paused      INTEGER NOT NULL DEFAULT 0,
        next_fire   REAL NOT NULL,
        created     REAL NOT NULL,
        updated     REAL NOT NULL
    );
    CREATE TABLE schedule_fires (
        schedule    TEXT NOT NULL,
        fire_time   REAL NOT NULL,
        outcome     TEXT NOT NULL CHECK (outcome IN ('started', 'skipped', 'missed')),
        flow_id     TEXT,
        at          REAL NOT NULL,
        PRIMARY KEY (schedule, fire_time)
    ) WITHOUT ROWID;
    CREATE INDEX schedule_fires_flow ON schedule_fires(flow_id) WHERE flow_id IS NOT NULL;
    CREATE TABLE grid_clock (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        mode        TEXT NOT NULL CHECK (mode IN ('real', 'virtual')),
        now         REAL NOT NULL
    );
    """,
    # 5: the quota tree: a node per path with its limits (NULL: none) and its share of the claim
    # order; each flow carries the journal caps of its ancestry (stamped when it starts) and, when it
    # has a byte cap, the bytes its journal holds (counted by triggers, in the journal's statement)
    """
    CREATE TABLE quota_nodes (
        path            TEXT PRIMARY KEY,
        running         INTEGER CHECK (running >= 0),
        rate            INTEGER CHECK (rate >= 0),
        live            INTEGER CHECK (live >= 0),
        journal_entries INTEGER CHECK (journal_entries >= 0),
        journal_bytes   INTEGER CHECK (journal_bytes >= 0),
        bundle_bytes    INTEGER CHECK (bundle_bytes >= 0),
        eval_budget     REAL CHECK (eval_budget > 0),
        share           INTEGER NOT NULL DEFAULT 1 CHECK (share >= 1),
        open            INTEGER NOT NULL DEFAULT 1 CHECK (open IN (0, 1)),
        created         REAL NOT NULL,
        updated         REAL NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO quota_nodes (path, created, updated) VALUES ('/', 0, 0);
    ALTER TABLE flows ADD COLUMN journal_cap INTEGER;
    ALTER TABLE flows ADD COLUMN bytes_cap INTEGER;
    ALTER TABLE flows ADD COLUMN journal_bytes INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX flows_status_quota ON flows(status, quota);
    CREATE INDEX flows_quota_created ON flows(quota, created);
    CREATE TRIGGER journal_bytes_requested AFTER INSERT ON journal
    WHEN (SELECT bytes_cap FROM flows WHERE id = NEW.flow_id) IS NOT NULL
    BEGIN
        UPDATE flows SET journal_bytes = journal_bytes + length(CAST(NEW.args AS BLOB))
                                      + COALESCE(length(CAST(NEW.result AS BLOB)), 0)
        WHERE id = NEW.flow_id;
    END;
    CREATE TRIGGER journal_bytes_answered AFTER UPDATE OF result ON journal
    WHEN OLD.result IS NULL AND NEW.result IS NOT NULL
         AND (SELECT bytes_cap FROM flows WHERE id = NEW.flow_id) IS NOT NULL
    BEGIN
        UPDATE flows SET journal_bytes = journal_bytes + length(CAST(NEW.result AS BLOB)) WHERE id = NEW.flow_id;
    END;
    """,
    # 6: worker deaths while a flow was being evaluated, counted per flow (at the journal position they
    # happened), so that a flow which kills every worker that evaluates it fails instead of looping
    """
    ALTER TABLE flows ADD COLUMN worker_deaths INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE flows ADD COLUMN deaths_at_seq INTEGER NOT NULL DEFAULT -1;
    """,
    # 7: who owns a bundle: the quota nodes that uploaded it (a digest one tenant knows is not a key to
    # another's bundle); the bundles of existing flows and deployments belong to their nodes
    """
    CREATE TABLE bundle_owners (
        digest      TEXT NOT NULL REFERENCES bundles(digest),
        quota       TEXT NOT NULL,
        created     REAL NOT NULL,
        PRIMARY KEY (digest, quota)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO bundle_owners (digest, quota, created)
        SELECT DISTINCT bundle, quota, 0 FROM flows WHERE parent IS NULL;
    INSERT OR IGNORE INTO bundle_owners (digest, quota, created) SELECT digest, quota, 0 FROM deployments;
    """,
    # 8: secrets, sealed with a key that is not in the database (db/secrets.py); a node's secret by name
    """
    CREATE TABLE secrets (
        quota       TEXT NOT NULL,
        name        TEXT NOT NULL,
        value       BLOB NOT NULL,
        set_by      TEXT NOT NULL,
        created     REAL NOT NULL,
        updated     REAL NOT NULL,
        PRIMARY KEY (quota, name)
    ) WITHOUT ROWID;
    """,
    # 9: a limit on the open resources (workspaces, containers) of a node's subtree; every journal's
    # size is counted (not only those with a byte cap), so each node reports the journal bytes it holds
    """
    ALTER TABLE quota_nodes ADD COLUMN resources INTEGER CHECK (resources >= 0);
    DROP TRIGGER journal_bytes_requested;
    DROP TRIGGER journal_bytes_answered;
    CREATE TRIGGER journal_bytes_requested AFTER INSERT ON journal
    BEGIN
        UPDATE flows SET journal_bytes = journal_bytes + length(CAST(NEW.args AS BLOB))
                                      + COALESCE(length(CAST(NEW.result AS BLOB)), 0)
        WHERE id = NEW.flow_id;
    END;
    CREATE TRIGGER journal_bytes_answered AFTER UPDATE OF result ON journal
    WHEN OLD.result IS NULL AND NEW.result IS NOT NULL
    BEGIN
        UPDATE flows SET journal_bytes = journal_bytes + length(CAST(NEW.result AS BLOB)) WHERE id = NEW.flow_id;
    END;
    UPDATE flows SET journal_bytes = COALESCE((SELECT SUM(length(CAST(args AS BLOB))
                                                          + COALESCE(length(CAST(result AS BLOB)), 0))
                                               FROM journal WHERE journal.flow_id = flows.id), 0)
    WHERE bytes_cap IS NULL;
    """,
    # 10: a cap on the memory (MiB) a flow's evaluation may grow its worker by (a bundle's [limits]
    # memory_mib is held to the tightest of its ancestry, as eval_budget is)
    """
    ALTER TABLE quota_nodes ADD COLUMN memory INTEGER CHECK (memory > 0);
    """,
]
