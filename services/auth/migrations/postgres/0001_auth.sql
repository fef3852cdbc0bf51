-- Staff sign-in. These tables have no row-level security by store: a sign-in is looked up by its
-- staff member, challenge or refresh token before any store is known, and admins have none.

-- Staff who sign in, and where their one-time codes go.
CREATE TABLE auth.staff (
    staff_id      TEXT PRIMARY KEY,
    display_name  TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('cashier', 'supervisor', 'manager', 'admin')),
    -- NULL only for an admin, who acts in every store.
    store_id      TEXT CHECK ((store_id IS NULL) = (role = 'admin')),
    contact       TEXT NOT NULL,
    -- Argon2id of the PIN that takes over a terminal from a colleague (SwitchStaff).
    pin_hash      TEXT,
    active        BOOLEAN NOT NULL DEFAULT true,
    created_at_ms BIGINT NOT NULL
);

-- One-time codes asked for: the code's Argon2 hash, its attempts and what redeemed it. The rows
-- are also the ledger the request rate limits count.
CREATE TABLE auth.challenges (
    challenge_id    TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL,
    staff_id        TEXT NOT NULL,
    terminal_id     TEXT NOT NULL,
    address         TEXT NOT NULL,
    -- The SHA-256 of the device credential the request presented (empty: none).
    device_digest   TEXT NOT NULL DEFAULT '',
    -- Empty for a staff id that does not exist: such a challenge never verifies.
    code_hash       TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    used_at_ms      BIGINT,
    used_key        TEXT,
    session_id      TEXT
);
CREATE UNIQUE INDEX challenges_by_key ON auth.challenges (idempotency_key) WHERE idempotency_key <> '';
CREATE INDEX challenges_by_staff ON auth.challenges (staff_id, created_at_ms);
CREATE INDEX challenges_by_terminal ON auth.challenges (terminal_id, created_at_ms) WHERE terminal_id <> '';
CREATE INDEX challenges_by_address ON auth.challenges (address, created_at_ms) WHERE address <> '';

-- Signed-in sessions. Refresh tokens are kept as their SHA-256 (they are long random secrets).
CREATE TABLE auth.sessions (
    session_id         TEXT PRIMARY KEY,
    staff_id           TEXT NOT NULL,
    terminal_id        TEXT NOT NULL,
    -- How the session was opened: 'code' (a one-time code) or 'pin' (taking over a terminal), and
    -- the idempotency key of the request that opened it by PIN.
    opened_by             TEXT NOT NULL DEFAULT 'code',
    opened_key            TEXT NOT NULL DEFAULT '',
    created_at_ms      BIGINT NOT NULL,
    expires_at_ms      BIGINT NOT NULL,
    refresh_hash       TEXT NOT NULL UNIQUE,
    -- The refresh token the last rotation spent, and the idempotency key it was spent with: a
    -- retry of that rotation is answered again, anything else presenting it ends the session.
    spent_refresh_hash TEXT,
    spent_key          TEXT,
    revoked_at_ms      BIGINT,
    revoked_reason     TEXT
);
CREATE INDEX sessions_by_spent ON auth.sessions (spent_refresh_hash) WHERE spent_refresh_hash IS NOT NULL;
CREATE INDEX sessions_by_staff ON auth.sessions (staff_id);
-- What every process reads to refuse the tokens of ended sessions.
CREATE INDEX sessions_revoked ON auth.sessions (revoked_at_ms) WHERE revoked_at_ms IS NOT NULL;
CREATE UNIQUE INDEX sessions_by_opened_key ON auth.sessions (opened_key) WHERE opened_key <> '';

-- PIN attempts at a terminal, each counted before the PIN is checked (a right one is then
-- deleted): wrong ones lock the staff member out of that terminal for a while.
CREATE TABLE auth.pin_attempts (
    attempt_id  TEXT PRIMARY KEY,
    staff_id    TEXT NOT NULL,
    store_id    TEXT NOT NULL,
    terminal_id TEXT NOT NULL,
    at_ms       BIGINT NOT NULL
);
CREATE INDEX pin_attempts_by_staff ON auth.pin_attempts (staff_id, store_id, terminal_id, at_ms);
-- What retention deletes, a day after it expired.
CREATE INDEX challenges_by_expiry ON auth.challenges (expires_at_ms);
CREATE INDEX sessions_by_expiry ON auth.sessions (expires_at_ms);
CREATE INDEX pin_attempts_by_time ON auth.pin_attempts (at_ms);

-- The audit log: appended to, never changed. Event ids are UUIDv7, so their order is time's.
CREATE TABLE auth.audit_events (
    event_id    TEXT PRIMARY KEY,
    at_ms       BIGINT NOT NULL,
    store_id    TEXT NOT NULL,
    staff_id    TEXT NOT NULL,
    device      TEXT NOT NULL,
    address     TEXT NOT NULL,
    action      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    detail      TEXT NOT NULL,
    outcome     TEXT NOT NULL
);
CREATE INDEX audit_by_store ON auth.audit_events (store_id, event_id);

-- Terminals' device credentials, as their SHA-256 (256 random bits each), one per terminal.
CREATE TABLE auth.devices (
    store_id          TEXT NOT NULL,
    terminal_id       TEXT NOT NULL,
    credential_digest TEXT NOT NULL,
    issued_key        TEXT NOT NULL,
    issued_at_ms      BIGINT NOT NULL,
    PRIMARY KEY (store_id, terminal_id)
);
