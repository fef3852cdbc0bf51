//! Where sign-in keeps its staff, challenges and sessions: the embedded database (`sqlite`) or
//! PostgreSQL (`pg`). Each method is one transaction, which takes its rows' locks and asks
//! `domain` what to do.

use redstore_platform::audit::AuditLog;
use redstore_platform::error::Result;

use crate::domain::{Counted, Limits, StaffRecord};

/// The challenges' column a limit counts by (the same in both stores).
pub(crate) fn counted_column(counted: Counted) -> &'static str {
    match counted {
        Counted::Staff => "staff_id",
        Counted::Terminal => "terminal_id",
        Counted::Address => "address",
    }
}

/// A one-time code asked for, to be recorded.
#[derive(Clone, Debug)]
pub struct NewChallenge {
    pub challenge_id: String,
    pub idempotency_key: String,
    pub staff_id: String,
    pub terminal_id: String,
    pub address: String,
    /// Empty for a staff member who does not exist or may not sign in.
    pub code_hash: String,
    /// The digest of the device credential presented; empty for none.
    pub device_digest: String,
    pub expires_at_ms: i64,
}

/// The challenge a RequestCode answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    pub challenge_id: String,
    pub expires_at_ms: i64,
    /// Made by this request (its code is to be sent), not found by its idempotency key.
    pub fresh: bool,
}

/// An attempt at a code, counted.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub staff_id: String,
    pub terminal_id: String,
    pub code_hash: String,
    pub device_digest: String,
    /// Attempts made, this one included.
    pub attempts: u32,
}

/// A session to open.
#[derive(Clone, Debug)]
pub struct NewSession {
    pub session_id: String,
    pub staff_id: String,
    pub terminal_id: String,
    pub refresh_hash: String,
    pub expires_at_ms: i64,
}

/// A live session and who holds it.
#[derive(Clone, Debug)]
pub struct SessionRecord {
    pub session_id: String,
    pub staff: StaffRecord,
    pub terminal_id: String,
    pub expires_at_ms: i64,
}

/// What a refresh did.
#[derive(Clone, Debug)]
pub enum Refreshed {
    Rotated(SessionRecord),
    /// The presented token was a copy of a spent one: the session is ended (committed).
    Ended(Ended),
}

/// Sign-in's store keeps the audit log too.
#[tonic::async_trait]
pub trait AuthStore: AuditLog + Send + Sync + 'static {
    async fn staff(&self, staff_id: &str) -> Result<Option<StaffRecord>>;

    /// Adds a staff member unless one with the id exists; whether it was added.
    async fn add_staff(&self, staff: StaffRecord) -> Result<bool>;

    /// Records a challenge, unless its idempotency key names one already (which is answered, or
    /// ALREADY_EXISTS for another request) or a limit of `limits` says to wait
    /// (RESOURCE_EXHAUSTED with the wait).
    async fn open_challenge(&self, new: NewChallenge, limits: Limits) -> Result<Opened>;

    /// Counts an attempt at a challenge's code, if `domain::may_attempt` allows one.
    async fn claim_attempt(&self, challenge_id: &str, key: &str) -> Result<Claimed>;

    /// Marks the challenge used by `key` and opens `session`; a retry by the same key instead
    /// gives the session it opened the new refresh token.
    async fn redeem(&self, challenge_id: &str, key: &str, session: NewSession) -> Result<SessionRecord>;

    /// Replaces the refresh token whose digest is `presented` by `new_hash`, as
    /// `domain::rotation` decides (a terminal idle for `idle_lock_ms` is locked; 0: never).
    async fn rotate(&self, presented: &str, key: &str, new_hash: &str, idle_lock_ms: i64) -> Result<Refreshed>;

    /// Ends the session of a refresh token (current or spent); a session already ended stays so.
    /// The session, when one was found.
    async fn end_session(&self, refresh_hash: &str, reason: &str) -> Result<Option<Ended>>;

    /// Sessions ended at or after `since_ms` that would not have expired by `now_ms`.
    async fn ended_since(&self, since_ms: i64, now_ms: i64) -> Result<Vec<(String, i64)>>;

    /// A live session: how it was opened and when it ends; `None` once it has ended or expired.
    async fn live_session(&self, session_id: &str) -> Result<Option<LiveSession>>;

    /// The live session bound to a terminal whose current refresh token has the digest
    /// `refresh_hash` (locked or not); `None` for any other.
    async fn terminal_session(&self, refresh_hash: &str) -> Result<Option<TerminalSession>>;

    /// The Argon2 hash of a staff member's PIN, if they set one.
    async fn pin_hash(&self, staff_id: &str) -> Result<Option<String>>;

    async fn set_pin(&self, staff_id: &str, pin_hash: &str) -> Result<()>;

    /// Counts a PIN attempt of `staff_id` at a terminal before the PIN is checked, if
    /// `domain::pin_lock` allows one: the attempt's id, to forget it when the PIN was right.
    async fn claim_pin_attempt(&self, staff_id: &str, store_id: &str, terminal_id: &str) -> Result<String>;

    async fn forget_pin_attempt(&self, attempt_id: &str) -> Result<()>;

    /// Opens `session` by PIN, or (a retry with the same non-empty `key`) gives the session that
    /// key opened the new refresh token.
    async fn open_by_pin(&self, key: &str, session: NewSession) -> Result<SessionRecord>;

    /// Deletes challenges and sessions that expired, and PIN attempts made, before `before_ms`:
    /// at most `retention::CHUNK` of each; how many in all.
    async fn expire(&self, before_ms: i64) -> Result<u64>;

    /// A store's staff after `after` in staff_id order, at most `limit`.
    async fn list_staff(&self, store_id: &str, after: &str, limit: u32) -> Result<Vec<StaffRecord>>;

    /// Marks a staff member inactive and ends their live sessions: the sessions it ended.
    async fn deactivate(&self, staff_id: &str, reason: &str) -> Result<Vec<Ended>>;

    /// Makes `digest` a terminal's device credential; unless `key` (not empty) issued the one it
    /// replaces (a retry), ends the live sessions on the terminal: those it ended.
    async fn issue_device(&self, store_id: &str, terminal_id: &str, digest: &str, key: &str) -> Result<Vec<Ended>>;

    /// Removes a terminal's device credential and ends the live sessions on it.
    async fn revoke_device(&self, store_id: &str, terminal_id: &str) -> Result<Vec<Ended>>;

    /// The digest of a terminal's device credential, if it has one.
    async fn device_digest(&self, store_id: &str, terminal_id: &str) -> Result<Option<String>>;
}

/// A live session as SetPin and SwitchStaff find it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveSession {
    /// `code` or `pin`.
    pub opened_by: String,
    pub expires_at_ms: i64,
}

/// A live session bound to a terminal, as UnlockTerminal finds it by its refresh token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TerminalSession {
    pub staff_id: String,
    pub terminal_id: String,
    pub expires_at_ms: i64,
}

/// A session just ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    pub session_id: String,
    pub expires_at_ms: i64,
}
