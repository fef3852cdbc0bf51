//! The rules of signing in, with no I/O: what a code looks like, how long things last, when a
//! code may be tried, when a caller must wait, and what a presented refresh token means. Both
//! stores (`sqlite`, `pg`) lock and store; they ask these functions what to do.

use std::time::Duration;

use redstore_platform::access_token::Role;
use redstore_platform::caller::Caller;
use redstore_platform::error::{Error, Result};

/// Digits of a one-time code.
pub const CODE_DIGITS: usize = 6;

/// Attempts at one code, right or wrong; the sixth is refused even with the right code.
pub const MAX_ATTEMPTS: u32 = 5;

/// How long things last, and how many codes may be asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// A one-time code's life.
    pub code_ttl: Duration,
    /// An access token's life: short, as a signed token is not checked against the database.
    pub access_ttl: Duration,
    /// A session's life from sign-in (a shift); its refresh tokens expire with it.
    pub session_ttl: Duration,
    /// How long a terminal may go without refreshing its token before it locks ([`locked`]);
    /// zero: never.
    pub idle_lock: Duration,
    pub limits: Limits,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            code_ttl: Duration::from_secs(5 * 60),
            access_ttl: Duration::from_secs(15 * 60),
            session_ttl: Duration::from_secs(12 * 3600),
            idle_lock: Duration::from_secs(5 * 60),
            limits: Limits::default(),
        }
    }
}

/// Codes one staff member, one terminal and one network address may ask for within `window`.
/// A shop's terminals often share one address (NAT), so its limit is the widest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub window: Duration,
    pub per_staff: u32,
    pub per_terminal: u32,
    pub per_address: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self { window: Duration::from_secs(15 * 60), per_staff: 5, per_terminal: 20, per_address: 50 }
    }
}

/// How long until fewer than `max` of the times `newest_first_ms` (newest first; at least `max`
/// of them when there are that many) fall within `window` of now; `None` when they already do.
fn window_wait(max: u32, window: Duration, newest_first_ms: &[i64], now_ms: i64) -> Option<Duration> {
    let max = max as usize;
    let window_ms = window.as_millis() as i64;
    let in_window = newest_first_ms.iter().take_while(|&&at| at > now_ms - window_ms).count();
    if in_window < max {
        return None;
    }
    // Another is allowed once the max-th newest leaves the window.
    let frees_at = newest_first_ms[max - 1] + window_ms;
    Some(Duration::from_millis((frees_at - now_ms).max(1) as u64))
}

/// How long challenges, sessions and PIN attempts are kept after they expire: long enough for
/// every limit's window and for a look at yesterday's sign-ins.
pub const KEPT_AFTER_EXPIRY: Duration = Duration::from_secs(86_400);

/// Records that expired before this (ms) are deleted.
pub fn expired_before(now: std::time::SystemTime) -> i64 {
    redstore_platform::time::unix_ms(now - KEPT_AFTER_EXPIRY)
}

/// Wrong PINs of one staff member at one terminal before they are locked out there.
pub const PIN_ATTEMPTS: u32 = 5;

/// How long wrong PINs count, and so how long a lock-out lasts.
pub const PIN_LOCK: Duration = Duration::from_secs(15 * 60);

/// A PIN as set: 4 to 8 digits, not one a colleague guesses first (one digit repeated, a run up
/// or down).
pub fn parse_pin(value: &str) -> Result<&str> {
    let pin = value.trim();
    if !(4..=8).contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::invalid("pin", "must be 4 to 8 digits"));
    }
    let steps: Vec<i8> = pin.as_bytes().windows(2).map(|w| w[1] as i8 - w[0] as i8).collect();
    if steps.iter().all(|&d| d == steps[0]) && matches!(steps[0], -1..=1) {
        return Err(Error::invalid("pin", "is too easy to guess (one digit repeated, or a run like 1234)"));
    }
    Ok(pin)
}

/// Whether `staff` may take over a terminal by PIN: locked for a while after [`PIN_ATTEMPTS`]
/// wrong PINs there (their times, newest first).
pub fn pin_lock(failures_newest_first_ms: &[i64], now_ms: i64) -> Result<()> {
    match window_wait(PIN_ATTEMPTS, PIN_LOCK, failures_newest_first_ms, now_ms) {
        None => Ok(()),
        Some(wait) => Err(Error::exhausted(
            format!(
                "pin: {PIN_ATTEMPTS} wrong PINs at this terminal; this staff member may try again in {} s, or sign \
                 in with a code",
                wait.as_secs_f64().ceil() as u64
            ),
            Some(wait),
        )),
    }
}

/// The staff member a terminal's session may hand over to: active, of the terminal's store, with
/// a PIN set.
pub fn may_take_over<'a>(staff: Option<&'a StaffRecord>, store_id: &str, has_pin: bool) -> Result<&'a StaffRecord> {
    let refused = || Error::Unauthenticated("staff_id or pin: wrong".into());
    let staff = staff.filter(|s| s.active).ok_or_else(refused)?;
    if staff.store_id.as_deref() != Some(store_id) {
        return Err(Error::PermissionDenied(format!(
            "staff_id: {} does not work in store {store_id:?}, where this terminal is",
            staff.staff_id
        )));
    }
    if !has_pin {
        return Err(Error::precondition(
            "PIN",
            staff.staff_id.clone(),
            format!("{} has no PIN yet: sign in with a code once and set one (SetPin)", staff.staff_id),
        ));
    }
    Ok(staff)
}

/// Whether `caller` may add or deactivate a staff member of `role` in `store` (`None` for an
/// admin): an admin anyone, a manager anyone but admins in their own store.
pub fn may_manage(caller: &Caller, role: Role, store: Option<&str>) -> Result<()> {
    let claims = match caller {
        Caller::Service => return Ok(()),
        Caller::Staff(claims) => claims,
    };
    match claims.role {
        Role::Admin => Ok(()),
        Role::Manager if role == Role::Admin => {
            Err(Error::PermissionDenied("role: only an admin adds or deactivates an admin".into()))
        }
        Role::Manager if store.is_some() && claims.store.as_deref() == store => Ok(()),
        Role::Manager => Err(Error::PermissionDenied(format!(
            "store_id: {} manages the staff of store {:?} only",
            claims.sub,
            claims.store.as_deref().unwrap_or_default()
        ))),
        other => Err(Error::PermissionDenied(format!(
            "{} is a {}: managers and admins manage staff",
            claims.sub,
            other.as_str()
        ))),
    }
}

/// A staff member's store as their role has it: none for an admin, one for anyone else.
pub fn staff_store(role: Role, store_id: &str) -> Result<Option<String>> {
    match (role, store_id.trim()) {
        (Role::Admin, "") => Ok(None),
        (Role::Admin, _) => Err(Error::invalid("store_id", "must be empty for an admin, who works in every store")),
        (_, store) => Ok(Some(redstore_platform::error::identifier("store_id", store)?.to_owned())),
    }
}

/// A CreateStaff for a staff id that exists: the same request again answers it; another is
/// ALREADY_EXISTS.
pub fn same_staff(existing: &StaffRecord, asked: &StaffRecord) -> Result<()> {
    let same = (&existing.display_name, existing.role, &existing.store_id, &existing.contact)
        == (&asked.display_name, asked.role, &asked.store_id, &asked.contact);
    if same {
        return Ok(());
    }
    Err(Error::AlreadyExists(format!("staff_id: {:?} is another staff member's", asked.staff_id)))
}

/// Whether a sign-in on a terminal came from it: the credential presented (its digest; empty
/// for none) is the one the terminal was issued.
pub fn device_proven(expected: Option<&str>, presented: &str, terminal_id: &str) -> Result<()> {
    match expected {
        Some(expected) if !presented.is_empty() && expected == presented => Ok(()),
        Some(_) if presented.is_empty() => Err(Error::PermissionDenied(format!(
            "device_credential: signing in at {terminal_id:?} needs the terminal's device credential"
        ))),
        Some(_) => Err(Error::PermissionDenied(format!(
            "device_credential: not the device credential of {terminal_id:?} (it was replaced or revoked?)"
        ))),
        None => Err(Error::PermissionDenied(format!(
            "device_credential: {terminal_id:?} has no device credential yet; a manager issues one \
             (IssueDeviceCredential)"
        ))),
    }
}

/// What a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    Staff,
    Terminal,
    Address,
}

impl Counted {
    fn what(self) -> &'static str {
        match self {
            Self::Staff => "this staff member",
            Self::Terminal => "this terminal",
            Self::Address => "this network address",
        }
    }
}

impl Limits {
    pub fn max(&self, counted: Counted) -> u32 {
        match counted {
            Counted::Staff => self.per_staff,
            Counted::Terminal => self.per_terminal,
            Counted::Address => self.per_address,
        }
    }

    /// How long the caller must wait before `counted` may ask for another code, given when its
    /// latest requests were made (newest first; at least `max` of them when there are that
    /// many); `None` when it may ask now.
    pub fn wait(&self, counted: Counted, newest_first_ms: &[i64], now_ms: i64) -> Option<Duration> {
        window_wait(self.max(counted), self.window, newest_first_ms, now_ms)
    }

    /// RESOURCE_EXHAUSTED for `counted`, with the wait as a retry hint.
    pub fn refusal(&self, counted: Counted, wait: Duration) -> Error {
        Error::exhausted(
            format!(
                "{} asked for {} codes within {} minutes; try again in {} s",
                counted.what(),
                self.max(counted),
                self.window.as_secs() / 60,
                wait.as_secs_f64().ceil() as u64
            ),
            Some(wait),
        )
    }
}

/// A one-time code as typed: exactly six digits (spaces around them are forgiven).
pub fn parse_code(value: &str) -> Result<&str> {
    let code = value.trim();
    if code.len() != CODE_DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::invalid("code", format!("must be the {CODE_DIGITS} digits of the code that was sent")));
    }
    Ok(code)
}

/// A role as stored.
pub fn parse_role(name: &str) -> Result<Role> {
    Role::parse(name).ok_or_else(|| Error::Internal(anyhow::anyhow!("unknown role {name:?} stored")))
}

/// A staff member as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaffRecord {
    pub staff_id: String,
    pub display_name: String,
    pub role: Role,
    /// `None` only for an admin.
    pub store_id: Option<String>,
    /// Where codes are sent.
    pub contact: String,
    pub active: bool,
}

/// A challenge as a verification attempt finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChallengeState {
    pub expires_at_ms: i64,
    pub attempts: u32,
    /// The idempotency key of the VerifyCode that redeemed it, when one did.
    pub used_key: Option<String>,
}

/// Whether the code of `challenge` may be tried now by a VerifyCode with `key`: a code not yet
/// used, or used by this same request (a retry); not expired; attempts left.
pub fn may_attempt(challenge: &ChallengeState, key: &str, now_ms: i64) -> Result<()> {
    if let Some(used_key) = &challenge.used_key
        && (key.is_empty() || used_key != key)
    {
        return Err(Error::Unauthenticated("code: this code was already used; ask for a new one".into()));
    }
    if now_ms >= challenge.expires_at_ms {
        return Err(Error::Unauthenticated("code: this code has expired; ask for a new one".into()));
    }
    if challenge.attempts >= MAX_ATTEMPTS {
        return Err(Error::Unauthenticated(format!(
            "code: {MAX_ATTEMPTS} attempts were made at this code; ask for a new one"
        )));
    }
    Ok(())
}

/// The answer to a wrong code, after the attempt numbered `attempts` (1-based).
pub fn wrong_code(attempts: u32) -> Error {
    let left = MAX_ATTEMPTS.saturating_sub(attempts);
    Error::Unauthenticated(match left {
        0 => "code: wrong code, and no attempts are left; ask for a new one".into(),
        1 => "code: wrong code; 1 attempt left".into(),
        n => format!("code: wrong code; {n} attempts left"),
    })
}

/// A request of `scope` (RequestCode, SwitchStaff) retried with an idempotency key must ask for
/// the same (staff member, terminal) as the one that used the key.
pub fn same_request(scope: &str, stored: (&str, &str), asked: (&str, &str), key: &str) -> Result<()> {
    if stored == asked {
        return Ok(());
    }
    Err(redstore_platform::idempotency::key_reused(scope, key))
}

/// A session as a refresh finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionState {
    pub expires_at_ms: i64,
    pub revoked: bool,
    /// The idempotency key of the rotation that spent the previous refresh token.
    pub spent_key: Option<String>,
    /// Whether the session is bound to a terminal (those lock when idle).
    pub at_terminal: bool,
    /// When the session last issued an access token (opened or refreshed).
    pub active_at_ms: i64,
}

/// What a presented refresh token is to its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presented {
    /// The session's current refresh token.
    Current,
    /// The refresh token the session's last rotation spent.
    Spent,
}

/// What a refresh does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// Replace the session's refresh token; `spend` says whether the presented one becomes the
    /// spent one (a first rotation) or the spent one stays (a retry of the last rotation).
    Rotate { spend: bool },
    /// The spent token presented by someone other than the rotation that spent it: it was
    /// copied. End the session, then refuse.
    EndSession,
}

/// Decides a refresh: `Err` when the session cannot be refreshed at all, FAILED_PRECONDITION
/// (`locked`) when its terminal was idle for `idle_lock_ms` (0: never locks).
pub fn rotation(
    session: &SessionState,
    presented: Presented,
    key: &str,
    now_ms: i64,
    idle_lock_ms: i64,
) -> Result<Rotation> {
    if session.revoked {
        return Err(Error::Unauthenticated("refresh_token: the session has ended; sign in again".into()));
    }
    if now_ms >= session.expires_at_ms {
        return Err(Error::Unauthenticated("refresh_token: the session has expired; sign in again".into()));
    }
    if locked(session, now_ms, idle_lock_ms) {
        return Err(terminal_locked());
    }
    Ok(match presented {
        Presented::Current => Rotation::Rotate { spend: true },
        Presented::Spent if !key.is_empty() && session.spent_key.as_deref() == Some(key) => {
            Rotation::Rotate { spend: false }
        }
        Presented::Spent => Rotation::EndSession,
    })
}

/// Whether a session's terminal locked: it is bound to one and issued no access token for
/// `idle_lock_ms` (the terminal refreshes only while someone uses it).
pub fn locked(session: &SessionState, now_ms: i64, idle_lock_ms: i64) -> bool {
    session.at_terminal && idle_lock_ms > 0 && now_ms >= session.active_at_ms.saturating_add(idle_lock_ms)
}

/// The answer to a refresh of a locked terminal's session.
pub fn terminal_locked() -> Error {
    Error::precondition(
        "locked",
        "refresh_token",
        "refresh_token: the terminal locked after being idle; unlock it with a PIN (UnlockTerminal)",
    )
}

/// How long a session's access tokens live: the access lifetime, and for a terminal's session at
/// most its idle lock (so that a terminal nobody refreshes for that long holds no usable token).
pub fn access_ttl(access_ttl_ms: i64, at_terminal: bool, idle_lock_ms: i64) -> i64 {
    if at_terminal && idle_lock_ms > 0 { access_ttl_ms.min(idle_lock_ms) } else { access_ttl_ms }
}

/// The answer once a copied refresh token ended its session.
pub fn reused_refresh_token() -> Error {
    Error::Unauthenticated(
        "refresh_token: this refresh token was already used, so the session has been ended; sign in again".into(),
    )
}

/// Whether a staff member may hold a session: active, and (for a terminal) of that terminal's store.
pub fn may_sign_in(staff: Option<&StaffRecord>) -> Result<&StaffRecord> {
    match staff {
        Some(staff) if staff.active => Ok(staff),
        _ => Err(Error::Unauthenticated("the staff member may no longer sign in".into())),
    }
}

/// A challenge id that names nothing: said as a wrong code is, so ids cannot be probed.
pub fn no_challenge() -> Error {
    Error::Unauthenticated("challenge_id: no such code was sent; ask for a new one".into())
}

pub fn no_session() -> Error {
    Error::Unauthenticated("refresh_token: not the refresh token of a session; sign in again".into())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MIN: i64 = 60_000;

    fn limits() -> Limits {
        Limits { window: Duration::from_secs(15 * 60), per_staff: 5, per_terminal: 20, per_address: 50 }
    }

    #[test]
    fn a_sixth_code_within_the_window_waits_until_the_oldest_of_five_leaves_it() {
        let now = 100 * MIN;
        let recent = [now - MIN, now - 2 * MIN, now - 3 * MIN, now - 4 * MIN, now - 10 * MIN];
        let wait = limits().wait(Counted::Staff, &recent, now).expect("a sixth code waits");
        assert_eq!(wait, Duration::from_millis((5 * MIN) as u64), "the fifth newest leaves the window in 5 minutes");
        assert_eq!(limits().wait(Counted::Staff, &recent[..4], now), None, "four codes leave room for a fifth");
        let old = [now - MIN, now - 2 * MIN, now - 3 * MIN, now - 4 * MIN, now - 15 * MIN];
        assert_eq!(limits().wait(Counted::Staff, &old, now), None, "a request 15 minutes old no longer counts");
        let status = tonic::Status::from(limits().refusal(Counted::Terminal, Duration::from_millis(1_500)));
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("this terminal asked for 20 codes"), "{}", status.message());
        assert!(status.message().contains("try again in 2 s"), "{}", status.message());
    }

    #[test]
    fn pins_are_four_to_eight_digits_and_not_the_first_a_colleague_would_try() {
        for good in ["2580", "40721", "19283746"] {
            assert_eq!(parse_pin(good).unwrap(), good);
        }
        for bad in ["", "123", "123456789", "12a4", "0000", "1234", "9876", "55555"] {
            assert_eq!(parse_pin(bad).unwrap_err().field(), Some("pin"), "{bad:?}");
        }
    }

    #[test]
    fn five_wrong_pins_lock_the_staff_member_at_the_terminal_for_a_while() {
        let now = 100 * MIN;
        let four: Vec<i64> = (1..=4).map(|m| now - m * MIN).collect();
        assert!(pin_lock(&four, now).is_ok());
        let five: Vec<i64> = (1..=5).map(|m| now - m * MIN).collect();
        let locked = tonic::Status::from(pin_lock(&five, now).unwrap_err());
        assert_eq!(locked.code(), tonic::Code::ResourceExhausted);
        assert!(pin_lock(&five, now + 11 * MIN).is_ok(), "the oldest of the five no longer counts");
    }

    #[test]
    fn managers_manage_their_own_stores_staff_and_admins_everyones() {
        let staff = |role: Role, store: Option<&str>| {
            Caller::Staff(std::sync::Arc::new(redstore_platform::access_token::Claims {
                sub: "x".into(),
                role,
                store: store.map(Into::into),
                device: None,
                iat: 0,
                exp: 0,
                jti: String::new(),
                sid: String::new(),
                scope: None,
            }))
        };
        let manager = staff(Role::Manager, Some("store-1"));
        assert!(may_manage(&manager, Role::Manager, Some("store-1")).is_ok());
        assert!(may_manage(&manager, Role::Cashier, Some("store-2")).is_err());
        assert!(may_manage(&manager, Role::Admin, None).is_err());
        assert!(may_manage(&staff(Role::Supervisor, Some("store-1")), Role::Cashier, Some("store-1")).is_err());
        assert!(may_manage(&staff(Role::Admin, None), Role::Admin, None).is_ok());
        assert_eq!(staff_store(Role::Admin, "").unwrap(), None);
        assert_eq!(staff_store(Role::Admin, "store-1").unwrap_err().field(), Some("store_id"));
        assert_eq!(staff_store(Role::Cashier, "").unwrap_err().field(), Some("store_id"));
    }

    #[test]
    fn codes_are_six_digits() {
        assert_eq!(parse_code(" 012345 ").unwrap(), "012345");
        for bad in ["", "12345", "1234567", "12a456", "１２３４５６", "12 456"] {
            let err = parse_code(bad).unwrap_err();
            assert_eq!(err.field(), Some("code"), "{bad:?}");
        }
    }

    #[test]
    fn a_used_code_answers_only_a_retry_of_the_request_that_used_it() {
        let used = ChallengeState { expires_at_ms: 10 * MIN, attempts: 1, used_key: Some("k1".into()) };
        assert!(may_attempt(&used, "k1", MIN).is_ok());
        for key in ["k2", ""] {
            let err = may_attempt(&used, key, MIN).unwrap_err();
            assert!(err.to_string().contains("already used"), "{err}");
        }
        let unkeyed = ChallengeState { used_key: Some(String::new()), ..used };
        assert!(may_attempt(&unkeyed, "", MIN).is_err(), "a code used without a key is not retried without one");
    }

    #[test]
    fn refresh_tokens_rotate_and_a_copy_ends_the_session() {
        let live = SessionState {
            expires_at_ms: 10 * MIN,
            revoked: false,
            spent_key: Some("r1".into()),
            at_terminal: true,
            active_at_ms: 0,
        };
        assert_eq!(rotation(&live, Presented::Current, "r2", MIN, 0).unwrap(), Rotation::Rotate { spend: true });
        assert_eq!(rotation(&live, Presented::Spent, "r1", MIN, 0).unwrap(), Rotation::Rotate { spend: false });
        assert_eq!(rotation(&live, Presented::Spent, "r3", MIN, 0).unwrap(), Rotation::EndSession);
        assert_eq!(rotation(&live, Presented::Spent, "", MIN, 0).unwrap(), Rotation::EndSession);
        let ended = SessionState { revoked: true, ..live.clone() };
        assert!(rotation(&ended, Presented::Current, "r2", MIN, 0).is_err());
        assert!(rotation(&live, Presented::Current, "r2", 10 * MIN, 0).is_err(), "expired at its end");
    }

    #[test]
    fn a_terminal_idle_for_its_lock_period_locks_and_nothing_else_does() {
        let session = SessionState {
            expires_at_ms: 60 * MIN,
            revoked: false,
            spent_key: None,
            at_terminal: true,
            active_at_ms: 10 * MIN,
        };
        let lock = 5 * MIN;
        assert!(
            rotation(&session, Presented::Current, "r", 15 * MIN - 1, lock).is_ok(),
            "in use until the last moment"
        );
        let err = rotation(&session, Presented::Current, "r", 15 * MIN, lock).unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(err.to_string().contains("UnlockTerminal"), "{err}");
        assert!(rotation(&session, Presented::Current, "r", 15 * MIN, 0).is_ok(), "no idle lock configured");
        let desk = SessionState { at_terminal: false, ..session.clone() };
        assert!(
            rotation(&desk, Presented::Current, "r", 50 * MIN, lock).is_ok(),
            "a session at no terminal never locks"
        );
        let ended = SessionState { revoked: true, ..session };
        assert_eq!(
            rotation(&ended, Presented::Current, "r", 20 * MIN, lock).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(access_ttl(15 * MIN, true, lock), lock);
        assert_eq!(access_ttl(15 * MIN, false, lock), 15 * MIN);
        assert_eq!(access_ttl(15 * MIN, true, 0), 15 * MIN);
        assert_eq!(access_ttl(2 * MIN, true, lock), 2 * MIN);
    }

    proptest! {
        /// However attempts and time fall, a code is tried at most MAX_ATTEMPTS times, never
        /// after it expires, and never by a second request once used.
        #[test]
        fn a_code_is_tried_at_most_five_times_and_only_while_it_lives(
            attempts in 0u32..20, expires in 0i64..1_000, now in 0i64..1_000, used in proptest::option::of("[ab]"), key in "[ab]?",
        ) {
            let state = ChallengeState { expires_at_ms: expires, attempts, used_key: used.clone() };
            let allowed = may_attempt(&state, &key, now).is_ok();
            let retry = used.as_deref().is_some_and(|u| !key.is_empty() && u == key);
            prop_assert_eq!(allowed, attempts < MAX_ATTEMPTS && now < expires && (used.is_none() || retry));
        }

        /// A limit never lets more than `max` requests through within any window, and a caller
        /// told to wait may ask once the wait is over.
        #[test]
        fn a_limit_holds_within_every_window(gaps in proptest::collection::vec(0i64..400_000, 1..40)) {
            let limits = limits();
            let window = limits.window.as_millis() as i64;
            let mut granted: Vec<i64> = Vec::new();
            let mut now = 0;
            for gap in gaps {
                now += gap;
                let newest_first: Vec<i64> = granted.iter().rev().copied().collect();
                match limits.wait(Counted::Staff, &newest_first, now) {
                    None => granted.push(now),
                    Some(wait) => {
                        let after = now + wait.as_millis() as i64;
                        prop_assert_eq!(limits.wait(Counted::Staff, &newest_first, after), None);
                    }
                }
                let in_window = granted.iter().filter(|&&at| at > now - window).count();
                prop_assert!(in_window <= limits.per_staff as usize);
            }
        }
    }
}
