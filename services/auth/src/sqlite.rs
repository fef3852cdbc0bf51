//! Sign-in's tables in the embedded database. Each method is one write job (the writer runs one
//! at a time, so a row read is a row locked until the job ends).

use redstore_platform::audit::{Actor, AuditLog, Entry, Recorded};
use redstore_platform::error::{Error, Result};
use redstore_platform::time::unix_ms;
use redstore_platform::{Db, retention};
use rusqlite::{Connection, OptionalExtension as _, params};

use crate::domain::{
    self, ChallengeState, Counted, Limits, Presented, Rotation, SessionState, StaffRecord, no_challenge, no_session,
};
use crate::store::{
    AuthStore, Claimed, Ended, LiveSession, NewChallenge, NewSession, Opened, Refreshed, SessionRecord, TerminalSession,
};

pub struct SqliteAuth(pub Db);

fn staff(conn: &Connection, staff_id: &str) -> Result<Option<StaffRecord>> {
    let row = conn
        .prepare_cached(
            "SELECT staff_id, display_name, role, store_id, contact, active FROM auth_staff WHERE staff_id = ?1",
        )?
        .query_row([staff_id], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .optional()?;
    row.map(|(staff_id, display_name, role, store_id, contact, active)| {
        Ok(StaffRecord { staff_id, display_name, role: domain::parse_role(&role)?, store_id, contact, active })
    })
    .transpose()
}

/// When `column` = `value` last asked for codes, newest first, as many as its limit counts.
fn recent(conn: &Connection, counted: Counted, value: &str, limits: &Limits) -> Result<Vec<i64>> {
    let column = crate::store::counted_column(counted);
    let sql =
        format!("SELECT created_at_ms FROM auth_challenges WHERE {column} = ?1 ORDER BY created_at_ms DESC LIMIT ?2");
    let times = conn
        .prepare_cached(&sql)?
        .query_map(params![value, limits.max(counted)], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok(times)
}

fn session(conn: &Connection, session_id: &str) -> Result<SessionRecord> {
    let (staff_id, terminal_id, expires_at_ms): (String, String, i64) = conn
        .prepare_cached("SELECT staff_id, terminal_id, expires_at_ms FROM auth_sessions WHERE session_id = ?1")?
        .query_row([session_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let staff = domain::may_sign_in(staff(conn, &staff_id)?.as_ref())?.clone();
    Ok(SessionRecord { session_id: session_id.to_owned(), staff, terminal_id, expires_at_ms })
}

#[tonic::async_trait]
impl AuthStore for SqliteAuth {
    async fn staff(&self, staff_id: &str) -> Result<Option<StaffRecord>> {
        let id = staff_id.to_owned();
        self.0.read(move |conn| staff(conn, &id)).await
    }

    async fn add_staff(&self, s: StaffRecord) -> Result<bool> {
        self.0
            .write(move |ctx| {
                let added = ctx
                    .conn
                    .prepare_cached(
                        "INSERT INTO auth_staff (staff_id, display_name, role, store_id, contact, active, created_at_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (staff_id) DO NOTHING",
                    )?
                    .execute(params![
                        s.staff_id,
                        s.display_name,
                        s.role.as_str(),
                        s.store_id,
                        s.contact,
                        s.active,
                        unix_ms(ctx.now)
                    ])?;
                Ok(added == 1)
            })
            .await
    }

    async fn open_challenge(&self, new: NewChallenge, limits: Limits) -> Result<Opened> {
        self.0
            .write(move |ctx| {
                let conn = ctx.conn;
                let now = unix_ms(ctx.now);
                if !new.idempotency_key.is_empty() {
                    let stored: Option<(String, i64, String, String)> = conn
                        .prepare_cached(
                            "SELECT challenge_id, expires_at_ms, staff_id, terminal_id FROM auth_challenges
                             WHERE idempotency_key = ?1",
                        )?
                        .query_row([&new.idempotency_key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                        .optional()?;
                    if let Some((challenge_id, expires_at_ms, staff_id, terminal_id)) = stored {
                        domain::same_request(
                            "RequestCode",
                            (&staff_id, &terminal_id),
                            (&new.staff_id, &new.terminal_id),
                            &new.idempotency_key,
                        )?;
                        return Ok(Opened { challenge_id, expires_at_ms, fresh: false });
                    }
                }
                for (counted, value) in [
                    (Counted::Staff, &new.staff_id),
                    (Counted::Terminal, &new.terminal_id),
                    (Counted::Address, &new.address),
                ] {
                    if value.is_empty() {
                        continue;
                    }
                    if let Some(wait) = limits.wait(counted, &recent(conn, counted, value, &limits)?, now) {
                        return Err(limits.refusal(counted, wait));
                    }
                }
                conn.prepare_cached(
                    "INSERT INTO auth_challenges (challenge_id, idempotency_key, staff_id, terminal_id, address,
                         code_hash, created_at_ms, expires_at_ms, device_digest)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    new.challenge_id,
                    new.idempotency_key,
                    new.staff_id,
                    new.terminal_id,
                    new.address,
                    new.code_hash,
                    now,
                    new.expires_at_ms,
                    new.device_digest
                ])?;
                Ok(Opened { challenge_id: new.challenge_id, expires_at_ms: new.expires_at_ms, fresh: true })
            })
            .await
    }

    async fn claim_attempt(&self, challenge_id: &str, key: &str) -> Result<Claimed> {
        let (id, key) = (challenge_id.to_owned(), key.to_owned());
        self.0
            .write(move |ctx| {
                type Row = (String, String, String, i64, u32, Option<String>, String);
                let row: Option<Row> = ctx
                    .conn
                    .prepare_cached(
                        "SELECT staff_id, terminal_id, code_hash, expires_at_ms, attempts, used_key, device_digest
                         FROM auth_challenges WHERE challenge_id = ?1",
                    )?
                    .query_row([&id], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
                    })
                    .optional()?;
                let (staff_id, terminal_id, code_hash, expires_at_ms, attempts, used_key, device_digest) =
                    row.ok_or_else(no_challenge)?;
                domain::may_attempt(&ChallengeState { expires_at_ms, attempts, used_key }, &key, unix_ms(ctx.now))?;
                ctx.conn
                    .prepare_cached("UPDATE auth_challenges SET attempts = attempts + 1 WHERE challenge_id = ?1")?
                    .execute([&id])?;
                Ok(Claimed { staff_id, terminal_id, code_hash, device_digest, attempts: attempts + 1 })
            })
            .await
    }

    async fn redeem(&self, challenge_id: &str, key: &str, new: NewSession) -> Result<SessionRecord> {
        let (id, key) = (challenge_id.to_owned(), key.to_owned());
        self.0
            .write(move |ctx| {
                let conn = ctx.conn;
                let (used_key, session_id): (Option<String>, Option<String>) = conn
                    .prepare_cached("SELECT used_key, session_id FROM auth_challenges WHERE challenge_id = ?1")?
                    .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?
                    .ok_or_else(no_challenge)?;
                match (used_key, session_id) {
                    (Some(used), Some(session_id)) if !key.is_empty() && used == key => {
                        let revoked: Option<i64> = conn
                            .prepare_cached(
                                "UPDATE auth_sessions SET refresh_hash = ?2 WHERE session_id = ?1 RETURNING revoked_at_ms",
                            )?
                            .query_row(params![session_id, new.refresh_hash], |r| r.get(0))?;
                        if revoked.is_some() {
                            return Err(Error::Unauthenticated("the session this code opened has ended; sign in again".into()));
                        }
                        session(conn, &session_id)
                    }
                    (Some(_), _) => {
                        Err(Error::Unauthenticated("code: this code was already used; ask for a new one".into()))
                    }
                    (None, _) => {
                        let now = unix_ms(ctx.now);
                        conn.prepare_cached(
                            "UPDATE auth_challenges SET used_at_ms = ?2, used_key = ?3, session_id = ?4 WHERE challenge_id = ?1",
                        )?
                        .execute(params![id, now, key, new.session_id])?;
                        conn.prepare_cached(
                            "INSERT INTO auth_sessions (session_id, staff_id, terminal_id, created_at_ms, expires_at_ms, refresh_hash)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        )?
                        .execute(params![
                            new.session_id,
                            new.staff_id,
                            new.terminal_id,
                            now,
                            new.expires_at_ms,
                            new.refresh_hash
                        ])?;
                        session(conn, &new.session_id)
                    }
                }
            })
            .await
    }

    async fn rotate(&self, presented: &str, key: &str, new_hash: &str, idle_lock_ms: i64) -> Result<Refreshed> {
        let (presented, key, new_hash) = (presented.to_owned(), key.to_owned(), new_hash.to_owned());
        self.0
            .write(move |ctx| {
                let conn = ctx.conn;
                let found = conn
                    .prepare_cached(
                        "SELECT session_id, expires_at_ms, revoked_at_ms, spent_key, refresh_hash = ?1,
                                terminal_id <> '', COALESCE(active_at_ms, created_at_ms)
                         FROM auth_sessions WHERE refresh_hash = ?1 OR spent_refresh_hash = ?1",
                    )?
                    .query_row([&presented], |r| {
                        let state = SessionState {
                            expires_at_ms: r.get(1)?,
                            revoked: r.get::<_, Option<i64>>(2)?.is_some(),
                            spent_key: r.get(3)?,
                            at_terminal: r.get(5)?,
                            active_at_ms: r.get(6)?,
                        };
                        Ok((r.get::<_, String>(0)?, state, r.get::<_, bool>(4)?))
                    })
                    .optional()?;
                let (session_id, state, current) = found.ok_or_else(no_session)?;
                let expires_at_ms = state.expires_at_ms;
                let presented_as = if current { Presented::Current } else { Presented::Spent };
                let now = unix_ms(ctx.now);
                match domain::rotation(&state, presented_as, &key, now, idle_lock_ms)? {
                    Rotation::Rotate { spend: true } => {
                        conn.prepare_cached(
                            "UPDATE auth_sessions
                             SET spent_refresh_hash = refresh_hash, spent_key = ?2, refresh_hash = ?3, active_at_ms = ?4
                             WHERE session_id = ?1",
                        )?
                        .execute(params![session_id, key, new_hash, now])?;
                    }
                    Rotation::Rotate { spend: false } => {
                        conn.prepare_cached("UPDATE auth_sessions SET refresh_hash = ?2 WHERE session_id = ?1")?
                            .execute(params![session_id, new_hash])?;
                    }
                    Rotation::EndSession => {
                        revoke(conn, &session_id, "a spent refresh token was presented again", unix_ms(ctx.now))?;
                        return Ok(Refreshed::Ended(Ended { session_id, expires_at_ms }));
                    }
                }
                session(conn, &session_id).map(Refreshed::Rotated)
            })
            .await
    }

    async fn end_session(&self, refresh_hash: &str, reason: &str) -> Result<Option<Ended>> {
        let (hash, reason) = (refresh_hash.to_owned(), reason.to_owned());
        self.0
            .write(move |ctx| {
                let found: Option<(String, i64)> = ctx
                    .conn
                    .prepare_cached(
                        "SELECT session_id, expires_at_ms FROM auth_sessions
                         WHERE refresh_hash = ?1 OR spent_refresh_hash = ?1",
                    )?
                    .query_row([&hash], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let Some((session_id, expires_at_ms)) = found else { return Ok(None) };
                revoke(ctx.conn, &session_id, &reason, unix_ms(ctx.now))?;
                Ok(Some(Ended { session_id, expires_at_ms }))
            })
            .await
    }

    async fn ended_since(&self, since_ms: i64, now_ms: i64) -> Result<Vec<(String, i64)>> {
        self.0
            .read(move |conn| {
                let ended = conn
                    .prepare_cached(
                        "SELECT session_id, expires_at_ms FROM auth_sessions
                         WHERE revoked_at_ms >= ?1 AND expires_at_ms > ?2",
                    )?
                    .query_map(params![since_ms, now_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(ended)
            })
            .await
    }

    async fn live_session(&self, session_id: &str) -> Result<Option<LiveSession>> {
        let id = session_id.to_owned();
        self.0
            .read(move |conn| {
                let now = unix_ms(std::time::SystemTime::now());
                let live = conn
                    .prepare_cached(
                        "SELECT opened_by, expires_at_ms FROM auth_sessions
                         WHERE session_id = ?1 AND revoked_at_ms IS NULL AND expires_at_ms > ?2",
                    )?
                    .query_row(params![id, now], |r| Ok(LiveSession { opened_by: r.get(0)?, expires_at_ms: r.get(1)? }))
                    .optional()?;
                Ok(live)
            })
            .await
    }

    async fn terminal_session(&self, refresh_hash: &str) -> Result<Option<TerminalSession>> {
        let hash = refresh_hash.to_owned();
        self.0
            .read(move |conn| {
                let now = unix_ms(std::time::SystemTime::now());
                let found = conn
                    .prepare_cached(
                        "SELECT staff_id, terminal_id, expires_at_ms FROM auth_sessions
                         WHERE refresh_hash = ?1 AND terminal_id <> '' AND revoked_at_ms IS NULL AND expires_at_ms > ?2",
                    )?
                    .query_row(params![hash, now], |r| {
                        Ok(TerminalSession { staff_id: r.get(0)?, terminal_id: r.get(1)?, expires_at_ms: r.get(2)? })
                    })
                    .optional()?;
                Ok(found)
            })
            .await
    }

    async fn pin_hash(&self, staff_id: &str) -> Result<Option<String>> {
        let id = staff_id.to_owned();
        self.0
            .read(move |conn| {
                let hash = conn
                    .prepare_cached("SELECT pin_hash FROM auth_staff WHERE staff_id = ?1")?
                    .query_row([&id], |r| r.get::<_, Option<String>>(0))
                    .optional()?;
                Ok(hash.flatten())
            })
            .await
    }

    async fn set_pin(&self, staff_id: &str, pin_hash: &str) -> Result<()> {
        let (id, hash) = (staff_id.to_owned(), pin_hash.to_owned());
        self.0
            .write(move |ctx| {
                ctx.conn
                    .prepare_cached("UPDATE auth_staff SET pin_hash = ?2 WHERE staff_id = ?1")?
                    .execute(params![id, hash])?;
                Ok(())
            })
            .await
    }

    async fn claim_pin_attempt(&self, staff_id: &str, store_id: &str, terminal_id: &str) -> Result<String> {
        let (staff, store, terminal) = (staff_id.to_owned(), store_id.to_owned(), terminal_id.to_owned());
        self.0
            .write(move |ctx| {
                let now = unix_ms(ctx.now);
                let recent = ctx
                    .conn
                    .prepare_cached(
                        "SELECT at_ms FROM auth_pin_attempts WHERE staff_id = ?1 AND store_id = ?2 AND terminal_id = ?3
                         ORDER BY at_ms DESC LIMIT ?4",
                    )?
                    .query_map(params![staff, store, terminal, domain::PIN_ATTEMPTS], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<i64>>>()?;
                domain::pin_lock(&recent, now)?;
                let attempt_id = uuid::Uuid::now_v7().to_string();
                ctx.conn
                    .prepare_cached(
                        "INSERT INTO auth_pin_attempts (attempt_id, staff_id, store_id, terminal_id, at_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![attempt_id, staff, store, terminal, now])?;
                Ok(attempt_id)
            })
            .await
    }

    async fn forget_pin_attempt(&self, attempt_id: &str) -> Result<()> {
        let id = attempt_id.to_owned();
        self.0
            .write(move |ctx| {
                ctx.conn.prepare_cached("DELETE FROM auth_pin_attempts WHERE attempt_id = ?1")?.execute([&id])?;
                Ok(())
            })
            .await
    }

    async fn open_by_pin(&self, key: &str, new: NewSession) -> Result<SessionRecord> {
        let key = key.to_owned();
        self.0
            .write(move |ctx| {
                let conn = ctx.conn;
                if !key.is_empty() {
                    let opened: Option<(String, String, String)> = conn
                        .prepare_cached(
                            "SELECT session_id, staff_id, terminal_id FROM auth_sessions WHERE opened_key = ?1",
                        )?
                        .query_row([&key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .optional()?;
                    if let Some((session_id, staff_id, terminal_id)) = opened {
                        domain::same_request(
                            "SwitchStaff",
                            (&staff_id, &terminal_id),
                            (&new.staff_id, &new.terminal_id),
                            &key,
                        )?;
                        conn.prepare_cached("UPDATE auth_sessions SET refresh_hash = ?2 WHERE session_id = ?1")?
                            .execute(params![session_id, new.refresh_hash])?;
                        return session(conn, &session_id);
                    }
                }
                conn.prepare_cached(
                    "INSERT INTO auth_sessions (session_id, staff_id, terminal_id, created_at_ms, expires_at_ms,
                         refresh_hash, opened_by, opened_key)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pin', ?7)",
                )?
                .execute(params![
                    new.session_id,
                    new.staff_id,
                    new.terminal_id,
                    unix_ms(ctx.now),
                    new.expires_at_ms,
                    new.refresh_hash,
                    key
                ])?;
                session(conn, &new.session_id)
            })
            .await
    }

    async fn expire(&self, before_ms: i64) -> Result<u64> {
        self.0
            .write(move |ctx| {
                let mut deleted = 0;
                for (table, key, column) in [
                    ("auth_challenges", "challenge_id", "expires_at_ms"),
                    ("auth_sessions", "session_id", "expires_at_ms"),
                    ("auth_pin_attempts", "attempt_id", "at_ms"),
                ] {
                    let sql = format!(
                        "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {column} < ?1 LIMIT ?2)"
                    );
                    deleted += ctx.conn.prepare_cached(&sql)?.execute(params![before_ms, retention::CHUNK])? as u64;
                }
                Ok(deleted)
            })
            .await
    }

    async fn list_staff(&self, store_id: &str, after: &str, limit: u32) -> Result<Vec<StaffRecord>> {
        let (store, after) = (store_id.to_owned(), after.to_owned());
        self.0
            .read(move |conn| {
                let ids = conn
                    .prepare_cached(
                        "SELECT staff_id FROM auth_staff WHERE store_id = ?1 AND staff_id > ?2 ORDER BY staff_id LIMIT ?3",
                    )?
                    .query_map(params![store, after, limit], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                ids.iter().filter_map(|id| staff(conn, id).transpose()).collect()
            })
            .await
    }

    async fn deactivate(&self, staff_id: &str, reason: &str) -> Result<Vec<Ended>> {
        let (id, reason) = (staff_id.to_owned(), reason.to_owned());
        self.0
            .write(move |ctx| {
                let now = unix_ms(ctx.now);
                ctx.conn.prepare_cached("UPDATE auth_staff SET active = 0 WHERE staff_id = ?1")?.execute([&id])?;
                let ended = ctx
                    .conn
                    .prepare_cached(
                        "SELECT session_id, expires_at_ms FROM auth_sessions
                         WHERE staff_id = ?1 AND revoked_at_ms IS NULL AND expires_at_ms > ?2",
                    )?
                    .query_map(params![id, now], |r| Ok(Ended { session_id: r.get(0)?, expires_at_ms: r.get(1)? }))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                for session in &ended {
                    revoke(ctx.conn, &session.session_id, &reason, now)?;
                }
                Ok(ended)
            })
            .await
    }

    async fn issue_device(&self, store_id: &str, terminal_id: &str, digest: &str, key: &str) -> Result<Vec<Ended>> {
        let (store, terminal, digest, key) =
            (store_id.to_owned(), terminal_id.to_owned(), digest.to_owned(), key.to_owned());
        self.0
            .write(move |ctx| {
                let issued_by: Option<String> = ctx
                    .conn
                    .prepare_cached("SELECT issued_key FROM auth_devices WHERE store_id = ?1 AND terminal_id = ?2")?
                    .query_row([&store, &terminal], |r| r.get(0))
                    .optional()?;
                ctx.conn
                    .prepare_cached(
                        "INSERT INTO auth_devices (store_id, terminal_id, credential_digest, issued_key, issued_at_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (store_id, terminal_id) DO UPDATE SET credential_digest = excluded.credential_digest,
                             issued_key = excluded.issued_key, issued_at_ms = excluded.issued_at_ms",
                    )?
                    .execute(params![store, terminal, digest, key, unix_ms(ctx.now)])?;
                let retry = !key.is_empty() && issued_by.as_deref() == Some(key.as_str());
                if retry {
                    return Ok(Vec::new());
                }
                end_terminal_sessions(ctx.conn, &store, &terminal, "the terminal's device credential was replaced", unix_ms(ctx.now))
            })
            .await
    }

    async fn revoke_device(&self, store_id: &str, terminal_id: &str) -> Result<Vec<Ended>> {
        let (store, terminal) = (store_id.to_owned(), terminal_id.to_owned());
        self.0
            .write(move |ctx| {
                ctx.conn
                    .prepare_cached("DELETE FROM auth_devices WHERE store_id = ?1 AND terminal_id = ?2")?
                    .execute([&store, &terminal])?;
                end_terminal_sessions(ctx.conn, &store, &terminal, "the terminal was revoked", unix_ms(ctx.now))
            })
            .await
    }

    async fn device_digest(&self, store_id: &str, terminal_id: &str) -> Result<Option<String>> {
        let (store, terminal) = (store_id.to_owned(), terminal_id.to_owned());
        self.0
            .read(move |conn| {
                let digest = conn
                    .prepare_cached(
                        "SELECT credential_digest FROM auth_devices WHERE store_id = ?1 AND terminal_id = ?2",
                    )?
                    .query_row([&store, &terminal], |r| r.get(0))
                    .optional()?;
                Ok(digest)
            })
            .await
    }
}

#[tonic::async_trait]
impl AuditLog for SqliteAuth {
    async fn append(&self, actor: &Actor, entry: &Entry) -> Result<()> {
        let (actor, entry) = (actor.clone(), entry.clone());
        self.0
            .write(move |ctx| {
                ctx.conn
                    .prepare_cached(
                        "INSERT INTO auth_audit_events (event_id, at_ms, store_id, staff_id, device, address, action,
                             subject, detail, outcome)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    )?
                    .execute(params![
                        uuid::Uuid::now_v7().to_string(),
                        unix_ms(ctx.now),
                        entry.store_id,
                        actor.staff_id,
                        actor.device,
                        actor.address,
                        entry.action,
                        entry.subject,
                        entry.detail,
                        entry.outcome
                    ])?;
                Ok(())
            })
            .await
    }

    async fn list(&self, store_id: &str, before: &str, limit: u32) -> Result<Vec<Recorded>> {
        let (store, before) = (store_id.to_owned(), before.to_owned());
        self.0
            .read(move |conn| {
                let rows = conn
                    .prepare_cached(
                        "SELECT event_id, at_ms, staff_id, device, address, action, subject, detail, outcome
                         FROM auth_audit_events WHERE store_id = ?1 AND (?2 = '' OR event_id < ?2)
                         ORDER BY event_id DESC LIMIT ?3",
                    )?
                    .query_map(params![store, before, limit], |r| {
                        Ok(Recorded {
                            event_id: r.get(0)?,
                            at_ms: r.get(1)?,
                            actor: Actor { staff_id: r.get(2)?, device: r.get(3)?, address: r.get(4)? },
                            store_id: store.clone(),
                            action: r.get(5)?,
                            subject: r.get(6)?,
                            detail: r.get(7)?,
                            outcome: r.get(8)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await
    }
}

/// Ends the live sessions of a store's terminal: those it ended.
fn end_terminal_sessions(conn: &Connection, store: &str, terminal: &str, reason: &str, now: i64) -> Result<Vec<Ended>> {
    let ended = conn
        .prepare_cached(
            "SELECT session_id, expires_at_ms FROM auth_sessions
             WHERE terminal_id = ?2 AND revoked_at_ms IS NULL AND expires_at_ms > ?3
               AND staff_id IN (SELECT staff_id FROM auth_staff WHERE store_id = ?1)",
        )?
        .query_map(params![store, terminal, now], |r| Ok(Ended { session_id: r.get(0)?, expires_at_ms: r.get(1)? }))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for session in &ended {
        revoke(conn, &session.session_id, reason, now)?;
    }
    Ok(ended)
}

fn revoke(conn: &Connection, session_id: &str, reason: &str, now: i64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE auth_sessions SET revoked_at_ms = ?2, revoked_reason = ?3 WHERE session_id = ?1 AND revoked_at_ms IS NULL",
    )?
    .execute(params![session_id, now, reason])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use redstore_platform::access_token::Role;

    use super::*;
    use crate::store::{NewChallenge, NewSession};

    #[tokio::test]
    async fn records_a_day_past_their_expiry_are_deleted_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), &[crate::SQLITE_MIGRATIONS]).unwrap();
        let auth = SqliteAuth(db);
        let staff = StaffRecord {
            staff_id: "s-1".into(),
            display_name: "S".into(),
            role: Role::Admin,
            store_id: None,
            contact: "s@x.invalid".into(),
            active: true,
        };
        auth.add_staff(staff).await.unwrap();
        let now = unix_ms(std::time::SystemTime::now());
        for (id, expires_at_ms) in [("old", 1_000), ("live", now + 60_000)] {
            let challenge = NewChallenge {
                challenge_id: id.into(),
                idempotency_key: String::new(),
                staff_id: "s-1".into(),
                terminal_id: String::new(),
                address: String::new(),
                code_hash: String::new(),
                device_digest: String::new(),
                expires_at_ms,
            };
            auth.open_challenge(challenge, crate::domain::Limits::default()).await.unwrap();
            let session = NewSession {
                session_id: format!("session-{id}"),
                staff_id: "s-1".into(),
                terminal_id: String::new(),
                refresh_hash: format!("hash-{id}"),
                expires_at_ms,
            };
            auth.redeem(id, "", session).await.unwrap();
        }
        let deleted = auth.expire(crate::domain::expired_before(std::time::SystemTime::now())).await.unwrap();
        assert_eq!(deleted, 2, "the old challenge and its session");
        assert!(auth.live_session("session-live").await.unwrap().is_some());
        let gone = auth.claim_attempt("old", "").await.unwrap_err();
        assert!(gone.to_string().contains("no such code"), "{gone}");
    }
}
