-- When a session last issued an access token (opened, refreshed): a terminal's session that
-- issued none for the idle lock period is locked until a PIN unlocks the terminal. NULL: when
-- it was opened.
ALTER TABLE auth.sessions ADD COLUMN active_at_ms BIGINT;
