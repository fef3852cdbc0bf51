//! Sign-in's tables in PostgreSQL (schema `auth`). Each method is one transaction; a challenge or
//! session it decides about is locked (`FOR UPDATE`) for its length, and the codes a staff member
//! asks for are counted under a lock of that staff member, so concurrent requests cannot both
//! pass a limit.

use redstore_platform::audit::{Actor, AuditLog, Entry, Recorded};
use redstore_platform::error::{Error, Result};
use redstore_platform::pg::{PgPool, PgSchema, lost_unique_race};
use redstore_platform::retention;
use redstore_platform::time::unix_ms;
use sqlx::{PgConnection, Row as _};

use crate::domain::{
    self, ChallengeState, Counted, Limits, Presented, Rotation, SessionState, StaffRecord, no_challenge, no_session,
};
use crate::store::{
    AuthStore, Claimed, Ended, LiveSession, NewChallenge, NewSession, Opened, Refreshed, SessionRecord, TerminalSession,
};

/// Staff sign-in's PostgreSQL migrations (`migrations/postgres`), in schema `auth`.
pub static PG_SCHEMA: PgSchema = PgSchema { name: "auth", migrator: &sqlx::migrate!("migrations/postgres") };

#[derive(Clone)]
pub struct PgAuth(pub PgPool);

fn now_ms() -> i64 {
    unix_ms(std::time::SystemTime::now())
}

async fn staff(conn: &mut PgConnection, staff_id: &str) -> Result<Option<StaffRecord>> {
    let row = sqlx::query(
        "SELECT staff_id, display_name, role, store_id, contact, active FROM auth.staff WHERE staff_id = $1",
    )
    .bind(staff_id)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(StaffRecord {
            staff_id: r.get(0),
            display_name: r.get(1),
            role: domain::parse_role(r.get(2))?,
            store_id: r.get(3),
            contact: r.get(4),
            active: r.get(5),
        })
    })
    .transpose()
}

async fn recent(conn: &mut PgConnection, counted: Counted, value: &str, limits: &Limits) -> Result<Vec<i64>> {
    let column = crate::store::counted_column(counted);
    let sql =
        format!("SELECT created_at_ms FROM auth.challenges WHERE {column} = $1 ORDER BY created_at_ms DESC LIMIT $2");
    Ok(sqlx::query_scalar(&sql).bind(value).bind(i64::from(limits.max(counted))).fetch_all(conn).await?)
}

async fn session(conn: &mut PgConnection, session_id: &str) -> Result<SessionRecord> {
    let row = sqlx::query("SELECT staff_id, terminal_id, expires_at_ms FROM auth.sessions WHERE session_id = $1")
        .bind(session_id)
        .fetch_one(&mut *conn)
        .await?;
    let staff_id: String = row.get(0);
    let staff = domain::may_sign_in(staff(conn, &staff_id).await?.as_ref())?.clone();
    Ok(SessionRecord { session_id: session_id.to_owned(), staff, terminal_id: row.get(1), expires_at_ms: row.get(2) })
}

async fn revoke(conn: &mut PgConnection, session_id: &str, reason: &str) -> Result<()> {
    sqlx::query(
        "UPDATE auth.sessions SET revoked_at_ms = $2, revoked_reason = $3 WHERE session_id = $1 AND revoked_at_ms IS NULL",
    )
    .bind(session_id)
    .bind(now_ms())
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends the live sessions of a store's terminal: those it ended.
async fn end_terminal_sessions(
    conn: &mut PgConnection,
    store_id: &str,
    terminal_id: &str,
    reason: &str,
) -> Result<Vec<Ended>> {
    let rows = sqlx::query(
        "SELECT session_id, expires_at_ms FROM auth.sessions
         WHERE terminal_id = $2 AND revoked_at_ms IS NULL AND expires_at_ms > $3
           AND staff_id IN (SELECT staff_id FROM auth.staff WHERE store_id = $1) FOR UPDATE",
    )
    .bind(store_id)
    .bind(terminal_id)
    .bind(now_ms())
    .fetch_all(&mut *conn)
    .await?;
    let ended: Vec<Ended> = rows.iter().map(|r| Ended { session_id: r.get(0), expires_at_ms: r.get(1) }).collect();
    for session in &ended {
        revoke(conn, &session.session_id, reason).await?;
    }
    Ok(ended)
}

impl PgAuth {
    async fn try_open(&self, new: &NewChallenge, limits: &Limits) -> Result<Opened> {
        let mut tx = self.0.begin().await?;
        if !new.idempotency_key.is_empty() {
            let stored = sqlx::query(
                "SELECT challenge_id, expires_at_ms, staff_id, terminal_id FROM auth.challenges WHERE idempotency_key = $1",
            )
            .bind(&new.idempotency_key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = stored {
                let (staff_id, terminal_id): (String, String) = (row.get(2), row.get(3));
                domain::same_request(
                    "RequestCode",
                    (&staff_id, &terminal_id),
                    (&new.staff_id, &new.terminal_id),
                    &new.idempotency_key,
                )?;
                return Ok(Opened { challenge_id: row.get(0), expires_at_ms: row.get(1), fresh: false });
            }
        }
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('auth.staff:' || $1, 0))")
            .bind(&new.staff_id)
            .execute(&mut *tx)
            .await?;
        let now = now_ms();
        for (counted, value) in
            [(Counted::Staff, &new.staff_id), (Counted::Terminal, &new.terminal_id), (Counted::Address, &new.address)]
        {
            if value.is_empty() {
                continue;
            }
            if let Some(wait) = limits.wait(counted, &recent(&mut tx, counted, value, limits).await?, now) {
                return Err(limits.refusal(counted, wait));
            }
        }
        sqlx::query(
            "INSERT INTO auth.challenges (challenge_id, idempotency_key, staff_id, terminal_id, address, code_hash,
                 created_at_ms, expires_at_ms, device_digest)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&new.challenge_id)
        .bind(&new.idempotency_key)
        .bind(&new.staff_id)
        .bind(&new.terminal_id)
        .bind(&new.address)
        .bind(&new.code_hash)
        .bind(now)
        .bind(new.expires_at_ms)
        .bind(&new.device_digest)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Opened { challenge_id: new.challenge_id.clone(), expires_at_ms: new.expires_at_ms, fresh: true })
    }
}

#[tonic::async_trait]
impl AuthStore for PgAuth {
    async fn staff(&self, staff_id: &str) -> Result<Option<StaffRecord>> {
        let mut conn = self.0.acquire().await?;
        staff(&mut conn, staff_id).await
    }

    async fn add_staff(&self, s: StaffRecord) -> Result<bool> {
        let added = sqlx::query(
            "INSERT INTO auth.staff (staff_id, display_name, role, store_id, contact, active, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (staff_id) DO NOTHING",
        )
        .bind(&s.staff_id)
        .bind(&s.display_name)
        .bind(s.role.as_str())
        .bind(&s.store_id)
        .bind(&s.contact)
        .bind(s.active)
        .bind(now_ms())
        .execute(&self.0)
        .await?;
        Ok(added.rows_affected() == 1)
    }

    async fn open_challenge(&self, new: NewChallenge, limits: Limits) -> Result<Opened> {
        match self.try_open(&new, &limits).await {
            // The same key sent twice at once: the one that lost finds what the other stored.
            Err(e) if lost_unique_race(&e) => self.try_open(&new, &limits).await,
            other => other,
        }
    }

    async fn claim_attempt(&self, challenge_id: &str, key: &str) -> Result<Claimed> {
        let mut tx = self.0.begin().await?;
        let row = sqlx::query(
            "SELECT staff_id, terminal_id, code_hash, expires_at_ms, attempts, used_key, device_digest
             FROM auth.challenges WHERE challenge_id = $1 FOR UPDATE",
        )
        .bind(challenge_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(no_challenge)?;
        let attempts = row.get::<i32, _>(4).max(0) as u32;
        let state = ChallengeState { expires_at_ms: row.get(3), attempts, used_key: row.get(5) };
        domain::may_attempt(&state, key, now_ms())?;
        sqlx::query("UPDATE auth.challenges SET attempts = attempts + 1 WHERE challenge_id = $1")
            .bind(challenge_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Claimed {
            staff_id: row.get(0),
            terminal_id: row.get(1),
            code_hash: row.get(2),
            device_digest: row.get(6),
            attempts: attempts + 1,
        })
    }

    async fn redeem(&self, challenge_id: &str, key: &str, new: NewSession) -> Result<SessionRecord> {
        let mut tx = self.0.begin().await?;
        let row = sqlx::query("SELECT used_key, session_id FROM auth.challenges WHERE challenge_id = $1 FOR UPDATE")
            .bind(challenge_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(no_challenge)?;
        let (used_key, session_id): (Option<String>, Option<String>) = (row.get(0), row.get(1));
        let record = match (used_key, session_id) {
            (Some(used), Some(session_id)) if !key.is_empty() && used == key => {
                let revoked: Option<i64> = sqlx::query_scalar(
                    "UPDATE auth.sessions SET refresh_hash = $2 WHERE session_id = $1 RETURNING revoked_at_ms",
                )
                .bind(&session_id)
                .bind(&new.refresh_hash)
                .fetch_one(&mut *tx)
                .await?;
                if revoked.is_some() {
                    return Err(Error::Unauthenticated("the session this code opened has ended; sign in again".into()));
                }
                session(&mut tx, &session_id).await?
            }
            (Some(_), _) => {
                return Err(Error::Unauthenticated("code: this code was already used; ask for a new one".into()));
            }
            (None, _) => {
                let now = now_ms();
                sqlx::query(
                    "UPDATE auth.challenges SET used_at_ms = $2, used_key = $3, session_id = $4 WHERE challenge_id = $1",
                )
                .bind(challenge_id)
                .bind(now)
                .bind(key)
                .bind(&new.session_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO auth.sessions (session_id, staff_id, terminal_id, created_at_ms, expires_at_ms, refresh_hash)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&new.session_id)
                .bind(&new.staff_id)
                .bind(&new.terminal_id)
                .bind(now)
                .bind(new.expires_at_ms)
                .bind(&new.refresh_hash)
                .execute(&mut *tx)
                .await?;
                session(&mut tx, &new.session_id).await?
            }
        };
        tx.commit().await?;
        Ok(record)
    }

    async fn rotate(&self, presented: &str, key: &str, new_hash: &str, idle_lock_ms: i64) -> Result<Refreshed> {
        let mut tx = self.0.begin().await?;
        let row = sqlx::query(
            "SELECT session_id, expires_at_ms, revoked_at_ms, spent_key, refresh_hash = $1,
                    terminal_id <> '', COALESCE(active_at_ms, created_at_ms)
             FROM auth.sessions WHERE refresh_hash = $1 OR spent_refresh_hash = $1 FOR UPDATE",
        )
        .bind(presented)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(no_session)?;
        let session_id: String = row.get(0);
        let state = SessionState {
            expires_at_ms: row.get(1),
            revoked: row.get::<Option<i64>, _>(2).is_some(),
            spent_key: row.get(3),
            at_terminal: row.get(5),
            active_at_ms: row.get(6),
        };
        let presented_as = if row.get::<bool, _>(4) { Presented::Current } else { Presented::Spent };
        let now = now_ms();
        match domain::rotation(&state, presented_as, key, now, idle_lock_ms)? {
            Rotation::Rotate { spend: true } => {
                sqlx::query(
                    "UPDATE auth.sessions
                     SET spent_refresh_hash = refresh_hash, spent_key = $2, refresh_hash = $3, active_at_ms = $4
                     WHERE session_id = $1",
                )
                .bind(&session_id)
                .bind(key)
                .bind(new_hash)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            Rotation::Rotate { spend: false } => {
                sqlx::query("UPDATE auth.sessions SET refresh_hash = $2 WHERE session_id = $1")
                    .bind(&session_id)
                    .bind(new_hash)
                    .execute(&mut *tx)
                    .await?;
            }
            Rotation::EndSession => {
                revoke(&mut tx, &session_id, "a spent refresh token was presented again").await?;
                tx.commit().await?;
                return Ok(Refreshed::Ended(Ended { session_id, expires_at_ms: state.expires_at_ms }));
            }
        }
        let record = session(&mut tx, &session_id).await?;
        tx.commit().await?;
        Ok(Refreshed::Rotated(record))
    }

    async fn end_session(&self, refresh_hash: &str, reason: &str) -> Result<Option<Ended>> {
        let mut tx = self.0.begin().await?;
        let row = sqlx::query(
            "SELECT session_id, expires_at_ms FROM auth.sessions
             WHERE refresh_hash = $1 OR spent_refresh_hash = $1 FOR UPDATE",
        )
        .bind(refresh_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let ended = Ended { session_id: row.get(0), expires_at_ms: row.get(1) };
        revoke(&mut tx, &ended.session_id, reason).await?;
        tx.commit().await?;
        Ok(Some(ended))
    }

    async fn ended_since(&self, since_ms: i64, now_ms: i64) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT session_id, expires_at_ms FROM auth.sessions WHERE revoked_at_ms >= $1 AND expires_at_ms > $2",
        )
        .bind(since_ms)
        .bind(now_ms)
        .fetch_all(&self.0)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn live_session(&self, session_id: &str) -> Result<Option<LiveSession>> {
        let row = sqlx::query(
            "SELECT opened_by, expires_at_ms FROM auth.sessions
             WHERE session_id = $1 AND revoked_at_ms IS NULL AND expires_at_ms > $2",
        )
        .bind(session_id)
        .bind(now_ms())
        .fetch_optional(&self.0)
        .await?;
        Ok(row.map(|r| LiveSession { opened_by: r.get(0), expires_at_ms: r.get(1) }))
    }

    async fn terminal_session(&self, refresh_hash: &str) -> Result<Option<TerminalSession>> {
        let row = sqlx::query(
            "SELECT staff_id, terminal_id, expires_at_ms FROM auth.sessions
             WHERE refresh_hash = $1 AND terminal_id <> '' AND revoked_at_ms IS NULL AND expires_at_ms > $2",
        )
        .bind(refresh_hash)
        .bind(now_ms())
        .fetch_optional(&self.0)
        .await?;
        Ok(row.map(|r| TerminalSession { staff_id: r.get(0), terminal_id: r.get(1), expires_at_ms: r.get(2) }))
    }

    async fn pin_hash(&self, staff_id: &str) -> Result<Option<String>> {
        let hash: Option<Option<String>> = sqlx::query_scalar("SELECT pin_hash FROM auth.staff WHERE staff_id = $1")
            .bind(staff_id)
            .fetch_optional(&self.0)
            .await?;
        Ok(hash.flatten())
    }

    async fn set_pin(&self, staff_id: &str, pin_hash: &str) -> Result<()> {
        sqlx::query("UPDATE auth.staff SET pin_hash = $2 WHERE staff_id = $1")
            .bind(staff_id)
            .bind(pin_hash)
            .execute(&self.0)
            .await?;
        Ok(())
    }

    async fn claim_pin_attempt(&self, staff_id: &str, store_id: &str, terminal_id: &str) -> Result<String> {
        let mut tx = self.0.begin().await?;
        // Attempts of one staff member at one terminal are counted one at a time.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('auth.pin:' || $1 || '/' || $2 || '/' || $3, 0))")
            .bind(staff_id)
            .bind(store_id)
            .bind(terminal_id)
            .execute(&mut *tx)
            .await?;
        let recent: Vec<i64> = sqlx::query_scalar(
            "SELECT at_ms FROM auth.pin_attempts WHERE staff_id = $1 AND store_id = $2 AND terminal_id = $3
             ORDER BY at_ms DESC LIMIT $4",
        )
        .bind(staff_id)
        .bind(store_id)
        .bind(terminal_id)
        .bind(i64::from(domain::PIN_ATTEMPTS))
        .fetch_all(&mut *tx)
        .await?;
        let now = now_ms();
        domain::pin_lock(&recent, now)?;
        let attempt_id = uuid::Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO auth.pin_attempts (attempt_id, staff_id, store_id, terminal_id, at_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&attempt_id)
        .bind(staff_id)
        .bind(store_id)
        .bind(terminal_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(attempt_id)
    }

    async fn forget_pin_attempt(&self, attempt_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM auth.pin_attempts WHERE attempt_id = $1").bind(attempt_id).execute(&self.0).await?;
        Ok(())
    }

    async fn open_by_pin(&self, key: &str, new: NewSession) -> Result<SessionRecord> {
        let mut tx = self.0.begin().await?;
        if !key.is_empty() {
            let opened = sqlx::query(
                "SELECT session_id, staff_id, terminal_id FROM auth.sessions WHERE opened_key = $1 FOR UPDATE",
            )
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = opened {
                let (session_id, staff_id, terminal_id): (String, String, String) =
                    (row.get(0), row.get(1), row.get(2));
                domain::same_request("SwitchStaff", (&staff_id, &terminal_id), (&new.staff_id, &new.terminal_id), key)?;
                sqlx::query("UPDATE auth.sessions SET refresh_hash = $2 WHERE session_id = $1")
                    .bind(&session_id)
                    .bind(&new.refresh_hash)
                    .execute(&mut *tx)
                    .await?;
                let record = session(&mut tx, &session_id).await?;
                tx.commit().await?;
                return Ok(record);
            }
        }
        sqlx::query(
            "INSERT INTO auth.sessions (session_id, staff_id, terminal_id, created_at_ms, expires_at_ms, refresh_hash,
                 opened_by, opened_key)
             VALUES ($1, $2, $3, $4, $5, $6, 'pin', $7)",
        )
        .bind(&new.session_id)
        .bind(&new.staff_id)
        .bind(&new.terminal_id)
        .bind(now_ms())
        .bind(new.expires_at_ms)
        .bind(&new.refresh_hash)
        .bind(key)
        .execute(&mut *tx)
        .await?;
        let record = session(&mut tx, &new.session_id).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn expire(&self, before_ms: i64) -> Result<u64> {
        let mut deleted = 0;
        for (table, key, column) in [
            ("auth.challenges", "challenge_id", "expires_at_ms"),
            ("auth.sessions", "session_id", "expires_at_ms"),
            ("auth.pin_attempts", "attempt_id", "at_ms"),
        ] {
            let sql =
                format!("DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {column} < $1 LIMIT $2)");
            let done = sqlx::query(&sql).bind(before_ms).bind(i64::from(retention::CHUNK)).execute(&self.0).await?;
            deleted += done.rows_affected();
        }
        Ok(deleted)
    }

    async fn list_staff(&self, store_id: &str, after: &str, limit: u32) -> Result<Vec<StaffRecord>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT staff_id FROM auth.staff WHERE store_id = $1 AND staff_id > $2 ORDER BY staff_id LIMIT $3",
        )
        .bind(store_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.0)
        .await?;
        let mut conn = self.0.acquire().await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            out.extend(staff(&mut conn, id).await?);
        }
        Ok(out)
    }

    async fn deactivate(&self, staff_id: &str, reason: &str) -> Result<Vec<Ended>> {
        let mut tx = self.0.begin().await?;
        sqlx::query("UPDATE auth.staff SET active = false WHERE staff_id = $1")
            .bind(staff_id)
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(
            "SELECT session_id, expires_at_ms FROM auth.sessions
             WHERE staff_id = $1 AND revoked_at_ms IS NULL AND expires_at_ms > $2 FOR UPDATE",
        )
        .bind(staff_id)
        .bind(now_ms())
        .fetch_all(&mut *tx)
        .await?;
        let ended: Vec<Ended> = rows.iter().map(|r| Ended { session_id: r.get(0), expires_at_ms: r.get(1) }).collect();
        for session in &ended {
            revoke(&mut tx, &session.session_id, reason).await?;
        }
        tx.commit().await?;
        Ok(ended)
    }

    async fn issue_device(&self, store_id: &str, terminal_id: &str, digest: &str, key: &str) -> Result<Vec<Ended>> {
        let mut tx = self.0.begin().await?;
        let issued_by: Option<String> = sqlx::query_scalar(
            "SELECT issued_key FROM auth.devices WHERE store_id = $1 AND terminal_id = $2 FOR UPDATE",
        )
        .bind(store_id)
        .bind(terminal_id)
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO auth.devices (store_id, terminal_id, credential_digest, issued_key, issued_at_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (store_id, terminal_id) DO UPDATE SET credential_digest = excluded.credential_digest,
                 issued_key = excluded.issued_key, issued_at_ms = excluded.issued_at_ms",
        )
        .bind(store_id)
        .bind(terminal_id)
        .bind(digest)
        .bind(key)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        let retry = !key.is_empty() && issued_by.as_deref() == Some(key);
        let ended = match retry {
            true => Vec::new(),
            false => {
                end_terminal_sessions(&mut tx, store_id, terminal_id, "the terminal's device credential was replaced")
                    .await?
            }
        };
        tx.commit().await?;
        Ok(ended)
    }

    async fn revoke_device(&self, store_id: &str, terminal_id: &str) -> Result<Vec<Ended>> {
        let mut tx = self.0.begin().await?;
        sqlx::query("DELETE FROM auth.devices WHERE store_id = $1 AND terminal_id = $2")
            .bind(store_id)
            .bind(terminal_id)
            .execute(&mut *tx)
            .await?;
        let ended = end_terminal_sessions(&mut tx, store_id, terminal_id, "the terminal was revoked").await?;
        tx.commit().await?;
        Ok(ended)
    }

    async fn device_digest(&self, store_id: &str, terminal_id: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT credential_digest FROM auth.devices WHERE store_id = $1 AND terminal_id = $2")
            .bind(store_id)
            .bind(terminal_id)
            .fetch_optional(&self.0)
            .await?)
    }
}

#[tonic::async_trait]
impl AuditLog for PgAuth {
    async fn append(&self, actor: &Actor, entry: &Entry) -> Result<()> {
        sqlx::query(
            "INSERT INTO auth.audit_events (event_id, at_ms, store_id, staff_id, device, address, action, subject,
                 detail, outcome)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(now_ms())
        .bind(&entry.store_id)
        .bind(&actor.staff_id)
        .bind(&actor.device)
        .bind(&actor.address)
        .bind(entry.action)
        .bind(&entry.subject)
        .bind(&entry.detail)
        .bind(&entry.outcome)
        .execute(&self.0)
        .await?;
        Ok(())
    }

    async fn list(&self, store_id: &str, before: &str, limit: u32) -> Result<Vec<Recorded>> {
        let rows = sqlx::query(
            "SELECT event_id, at_ms, staff_id, device, address, action, subject, detail, outcome
             FROM auth.audit_events WHERE store_id = $1 AND ($2 = '' OR event_id < $2)
             ORDER BY event_id DESC LIMIT $3",
        )
        .bind(store_id)
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.0)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Recorded {
                event_id: r.get(0),
                at_ms: r.get(1),
                actor: Actor { staff_id: r.get(2), device: r.get(3), address: r.get(4) },
                store_id: store_id.to_owned(),
                action: r.get(5),
                subject: r.get(6),
                detail: r.get(7),
                outcome: r.get(8),
            })
            .collect())
    }
}
