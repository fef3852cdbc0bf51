-- Staff who sign in, and where their one-time codes go.
CREATE TABLE auth_staff (
    staff_id      TEXT PRIMARY KEY,
    display_name  TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('cashier', 'supervisor', 'manager', 'admin')),
    -- NULL only for an admin, who acts in every store.
    store_id      TEXT CHECK ((store_id IS NULL) = (role = 'admin')),
    contact       TEXT NOT NULL,
    -- Argon2id of the PIN that takes over a terminal from a colleague (SwitchStaff).
    pin_hash      TEXT,
    active        INTEGER NOT NULL DEFAULT 1,
    created_at_ms INTEGER NOT NULL
);

-- One-time codes asked for: the code's Argon2 hash, its attempts and what redeemed it. The rows
-- are also the ledger the request rate limits count.
CREATE TABLE auth_challenges (
    challenge_id    TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL,
    staff_id        TEXT NOT NULL,
    terminal_id     TEXT NOT NULL,
    address         TEXT NOT NULL,
    -- The SHA-256 of the device credential the request presented (empty: none).
    device_digest   TEXT NOT NULL DEFAULT '',
    -- Empty for a staff id that does not exist: such a challenge never verifies.
    code_hash       TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    expires_at_ms   INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    used_at_ms      INTEGER,
    used_key        TEXT,
    session_id      TEXT
);
CREATE UNIQUE INDEX auth_challenges_by_key ON auth_challenges (idempotency_key) WHERE idempotency_key <> '';
CREATE INDEX auth_challenges_by_staff ON auth_challenges (staff_id, created_at_ms);
CREATE INDEX auth_challenges_by_terminal ON auth_challenges (terminal_id, created_at_ms) WHERE terminal_id <> '';
CREATE INDEX auth_challenges_by_address ON auth_challenges (address, created_at_ms) WHERE address <> '';

-- Signed-in sessions. Refresh tokens are kept as their SHA-256 (they are long random secrets).
CREATE TABLE auth_sessions (
    session_id            TEXT PRIMARY KEY,
    staff_id              TEXT NOT NULL,
    terminal_id           TEXT NOT NULL,
    -- How the session was opened: 'code' (a one-time code) or 'pin' (taking over a terminal), and
    -- the idempotency key of the request that opened it by PIN.
    opened_by             TEXT NOT NULL DEFAULT 'code',
    opened_key            TEXT NOT NULL DEFAULT '',
    created_at_ms         INTEGER NOT NULL,
    expires_at_ms         INTEGER NOT NULL,
    refresh_hash          TEXT NOT NULL UNIQUE,
    -- The refresh token the last rotation spent, and the idempotency key it was spent with: a
    -- retry of that rotation is answered again, anything else presenting it ends the session.
    spent_refresh_hash    TEXT,
    spent_key             TEXT,
    revoked_at_ms         INTEGER,
    revoked_reason        TEXT
);
CREATE INDEX auth_sessions_by_spent ON auth_sessions (spent_refresh_hash) WHERE spent_refresh_hash IS NOT NULL;
CREATE INDEX auth_sessions_by_staff ON auth_sessions (staff_id);
-- What every process reads to refuse the tokens of ended sessions.
CREATE INDEX auth_sessions_revoked ON auth_sessions (revoked_at_ms) WHERE revoked_at_ms IS NOT NULL;
CREATE UNIQUE INDEX auth_sessions_by_opened_key ON auth_sessions (opened_key) WHERE opened_key <> '';

-- PIN attempts at a terminal, each counted before the PIN is checked (a right one is then
-- deleted): wrong ones lock the staff member out of that terminal for a while.
CREATE TABLE auth_pin_attempts (
    attempt_id  TEXT PRIMARY KEY,
    staff_id    TEXT NOT NULL,
    store_id    TEXT NOT NULL,
    terminal_id TEXT NOT NULL,
    at_ms       INTEGER NOT NULL
);
CREATE INDEX auth_pin_attempts_by_staff ON auth_pin_attempts (staff_id, store_id, terminal_id, at_ms);
-- What retention deletes, a day after it expired.
CREATE INDEX auth_challenges_by_expiry ON auth_challenges (expires_at_ms);
CREATE INDEX auth_sessions_by_expiry ON auth_sessions (expires_at_ms);
CREATE INDEX auth_pin_attempts_by_time ON auth_pin_attempts (at_ms);

-- The audit log: appended to, never changed. Event ids are UUIDv7, so their order is time's.
CREATE TABLE auth_audit_events (
    event_id    TEXT PRIMARY KEY,
    at_ms       INTEGER NOT NULL,
    store_id    TEXT NOT NULL,
    staff_id    TEXT NOT NULL,
    device      TEXT NOT NULL,
    address     TEXT NOT NULL,
    action      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    detail      TEXT NOT NULL,
    outcome     TEXT NOT NULL
);
CREATE INDEX auth_audit_by_store ON auth_audit_events (store_id, event_id);

-- Terminals' device credentials, as their SHA-256 (256 random bits each), one per terminal.
CREATE TABLE auth_devices (
    store_id          TEXT NOT NULL,
    terminal_id       TEXT NOT NULL,
    credential_digest TEXT NOT NULL,
    issued_key        TEXT NOT NULL,
    issued_at_ms      INTEGER NOT NULL,
    PRIMARY KEY (store_id, terminal_id)
);
