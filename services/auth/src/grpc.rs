//! AuthService: parses requests (naming the field at fault), hashes and checks secrets off the
//! async runtime (Argon2 takes a while by design), and issues the tokens of a session.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use redstore_inventory::InventoryStore;
use redstore_platform::access_token::{self, Claims, Role, TokenKeys};
use redstore_platform::audit::{self, Entry, Trail};
use redstore_platform::caller::Caller;
use redstore_platform::error::{Error, Result, identifier, optional_identifier, required};
use redstore_platform::page::Page;
use redstore_platform::text::{optional_text, text};
use redstore_platform::time::{duration_ms, from_unix_ms, timestamp, unix_ms};
use redstore_proto::auth::auth_service_server::{AuthService, AuthServiceServer};
use redstore_proto::auth::*;
use tonic::{Request, Response, Status};

use crate::domain::{self, Policy, StaffRecord};
use crate::revoked::Revoked;
use crate::secret;
use crate::sender::CodeSender;
use crate::store::{AuthStore, Claimed, NewChallenge, NewSession, Refreshed, SessionRecord};

#[derive(Clone)]
pub struct AuthGrpc {
    store: Arc<dyn AuthStore>,
    /// Where terminals are registered.
    inventory: Arc<dyn InventoryStore>,
    keys: Arc<TokenKeys>,
    sender: Arc<dyn CodeSender>,
    policy: Policy,
    /// Sessions this process ends are refused here at once (other processes read them).
    revoked: Arc<Revoked>,
}

impl AuthGrpc {
    pub fn new(
        store: Arc<dyn AuthStore>,
        inventory: Arc<dyn InventoryStore>,
        keys: Arc<TokenKeys>,
        sender: Arc<dyn CodeSender>,
        policy: Policy,
        revoked: Arc<Revoked>,
    ) -> Self {
        Self { store, inventory, keys, sender, policy, revoked }
    }

    pub fn into_server(self) -> AuthServiceServer<Self> {
        AuthServiceServer::new(self)
    }

    async fn send_code(&self, req: &RequestCodeRequest, address: String) -> Result<RequestCodeResponse> {
        let key = optional_identifier("idempotency_key", &req.idempotency_key)?.to_owned();
        let staff_id = identifier("staff_id", &req.staff_id)?.to_owned();
        let terminal_id = optional_identifier("terminal_id", &req.terminal_id)?.to_owned();
        let device_digest = match req.device_credential.trim() {
            "" => String::new(),
            credential => secret::digest(credential),
        };
        let staff = self.store.staff(&staff_id).await?.filter(|staff| staff.active);
        let code = secret::new_code();
        // Hashed whether or not the staff member exists: the answer takes as long either way.
        let hashed = hash_off_runtime(code.clone()).await?;
        let expires_at_ms = unix_ms(SystemTime::now() + self.policy.code_ttl);
        let new = NewChallenge {
            challenge_id: uuid::Uuid::now_v7().to_string(),
            idempotency_key: key,
            staff_id,
            terminal_id,
            address,
            code_hash: if staff.is_some() { hashed } else { String::new() },
            device_digest,
            expires_at_ms,
        };
        let opened = self.store.open_challenge(new, self.policy.limits).await?;
        match &staff {
            Some(staff) if opened.fresh => {
                if let Err(e) = self.sender.send(staff, &code, from_unix_ms(opened.expires_at_ms)).await {
                    tracing::error!(staff_id = %staff.staff_id, error = %format!("{e:#}"), "a sign-in code could not be sent");
                    return Err(Error::unavailable("the code could not be sent; ask for a new one in a moment"));
                }
            }
            Some(_) => {}
            None => {
                tracing::info!(staff_id = %req.staff_id.trim(), "a sign-in code was asked for a staff id that cannot sign in")
            }
        }
        Ok(RequestCodeResponse { challenge_id: opened.challenge_id, expires_at: Some(timestamp(opened.expires_at_ms)) })
    }

    async fn sign_in(&self, req: &VerifyCodeRequest, trail: &Option<Trail>) -> Result<Session> {
        let key = optional_identifier("idempotency_key", &req.idempotency_key)?;
        let challenge_id = identifier("challenge_id", &req.challenge_id)?;
        let code = domain::parse_code(&req.code)?.to_owned();
        let claimed = self.store.claim_attempt(challenge_id, key).await?;
        let result = self.redeem_code(&claimed, challenge_id, key, code).await;
        // Every attempt at a code is recorded, in its staff member's store when there is one.
        if let Some(trail) = trail {
            let store_id = self.store.staff(&claimed.staff_id).await.ok().flatten().and_then(|s| s.store_id);
            let entry = Entry {
                store_id: store_id.unwrap_or_default(),
                action: if result.is_ok() { "auth.signed_in" } else { "auth.code_refused" },
                subject: claimed.staff_id.clone(),
                detail: format!("attempt {} of {}", claimed.attempts, domain::MAX_ATTEMPTS),
                outcome: audit::outcome(&result),
            };
            trail.as_staff(&claimed.staff_id, &claimed.terminal_id).record(entry).await;
        }
        result
    }

    /// The session a claimed attempt opens, if its code is right.
    async fn redeem_code(&self, claimed: &Claimed, challenge_id: &str, key: &str, code: String) -> Result<Session> {
        if !matches_off_runtime(claimed.code_hash.clone(), code).await? {
            return Err(domain::wrong_code(claimed.attempts));
        }
        let staff = self.store.staff(&claimed.staff_id).await?;
        let staff = domain::may_sign_in(staff.as_ref())?;
        if !claimed.terminal_id.is_empty() {
            self.require_terminal(staff, &claimed.terminal_id).await?;
            let store_id = staff.store_id.as_deref().unwrap_or_default();
            let expected = self.store.device_digest(store_id, &claimed.terminal_id).await?;
            domain::device_proven(expected.as_deref(), &claimed.device_digest, &claimed.terminal_id)?;
        }
        let refresh_token = secret::new_refresh_token();
        let new = NewSession {
            session_id: uuid::Uuid::now_v7().to_string(),
            staff_id: staff.staff_id.clone(),
            terminal_id: claimed.terminal_id.clone(),
            refresh_hash: secret::digest(&refresh_token),
            expires_at_ms: unix_ms(SystemTime::now() + self.policy.session_ttl),
        };
        let session = self.store.redeem(challenge_id, key, new).await?;
        tracing::info!(staff_id = %session.staff.staff_id, session_id = %session.session_id, "signed in");
        Ok(self.session(&session, refresh_token))
    }

    /// A terminal the staff member may sign in on: registered in their store.
    async fn require_terminal(&self, staff: &StaffRecord, terminal_id: &str) -> Result<()> {
        let Some(store_id) = &staff.store_id else {
            return Err(Error::PermissionDenied(
                "terminal_id: an admin signs in without a terminal (an admin works across stores)".into(),
            ));
        };
        match self.inventory.require_terminal(store_id, terminal_id).await {
            Err(Error::NotFound(_)) => Err(Error::PermissionDenied(format!(
                "terminal_id: {terminal_id:?} is not a registered terminal of store {store_id:?}, where this staff member works"
            ))),
            other => other,
        }
    }

    async fn rotated(&self, req: &RefreshRequest) -> Result<Session> {
        let key = optional_identifier("idempotency_key", &req.idempotency_key)?;
        let presented = secret::digest(required("refresh_token", &req.refresh_token)?);
        let refresh_token = secret::new_refresh_token();
        let idle_lock_ms = duration_ms(self.policy.idle_lock);
        match self.store.rotate(&presented, key, &secret::digest(&refresh_token), idle_lock_ms).await? {
            Refreshed::Rotated(session) => Ok(self.session(&session, refresh_token)),
            Refreshed::Ended(ended) => {
                self.revoked.insert(&ended.session_id, ended.expires_at_ms);
                tracing::warn!(session_id = %ended.session_id, "a spent refresh token was presented again; its session is ended");
                Err(domain::reused_refresh_token())
            }
        }
    }

    /// The tokens of `session`: a fresh access token, and `refresh_token` (just stored).
    fn session(&self, session: &SessionRecord, refresh_token: String) -> Session {
        let now = SystemTime::now();
        let at_terminal = !session.terminal_id.is_empty();
        let idle_lock_ms = if at_terminal { duration_ms(self.policy.idle_lock) } else { 0 };
        let ttl = domain::access_ttl(duration_ms(self.policy.access_ttl), at_terminal, idle_lock_ms);
        let access_expires = (now + Duration::from_millis(ttl as u64)).min(from_unix_ms(session.expires_at_ms));
        let staff = &session.staff;
        let claims = Claims {
            sub: staff.staff_id.clone(),
            role: staff.role,
            store: staff.store_id.clone(),
            device: Some(session.terminal_id.clone()).filter(|t| !t.is_empty()),
            iat: secs(now),
            exp: secs(access_expires),
            jti: uuid::Uuid::now_v7().to_string(),
            sid: session.session_id.clone(),
            scope: None,
        };
        Session {
            session_id: session.session_id.clone(),
            staff: Some(staff_proto(staff)),
            terminal_id: session.terminal_id.clone(),
            access_token: self.keys.issue(&claims),
            access_expires_at: Some(timestamp(unix_ms(access_expires))),
            refresh_token,
            refresh_expires_at: Some(timestamp(session.expires_at_ms)),
            idle_lock_seconds: u32::try_from(idle_lock_ms / 1000).unwrap_or(u32::MAX),
        }
    }

    /// A colleague of `store_id` (or the one signed in) takes over `terminal_id` with their PIN:
    /// a session of their own there, ending at `expires_at_ms`. Attempts are counted before the
    /// PIN is checked; a wrong one is recorded. SwitchStaff and UnlockTerminal.
    async fn take_over(&self, trail: &Option<Trail>, at: TakeOver<'_>) -> Result<Session> {
        let TakeOver { key, store_id, terminal_id, staff_id, pin, expires_at_ms, action, from } = at;
        let staff = self.store.staff(staff_id).await?;
        let hash = self.store.pin_hash(staff_id).await?;
        let staff = domain::may_take_over(staff.as_ref(), store_id, hash.is_some())?.clone();
        let attempt = self.store.claim_pin_attempt(staff_id, store_id, terminal_id).await?;
        let right = matches_off_runtime(hash.unwrap_or_default(), pin).await?;
        let detail = format!("from {from}");
        if !right {
            tracing::info!(staff_id = %staff.staff_id, %terminal_id, "a wrong PIN");
            let refusal = Error::Unauthenticated("staff_id or pin: wrong".into());
            let refused = Entry {
                outcome: audit::refused(&refusal),
                ..entry(store_id.to_owned(), "auth.pin_refused", staff_id, detail)
            };
            audit::record(trail, refused).await;
            return Err(refusal);
        }
        self.store.forget_pin_attempt(&attempt).await?;
        let refresh_token = secret::new_refresh_token();
        let new = NewSession {
            session_id: uuid::Uuid::now_v7().to_string(),
            staff_id: staff.staff_id.clone(),
            terminal_id: terminal_id.to_owned(),
            refresh_hash: secret::digest(&refresh_token),
            expires_at_ms,
        };
        let session = self.store.open_by_pin(key, new).await?;
        tracing::info!(staff_id = %staff.staff_id, %from, %terminal_id, action, "took over a terminal by PIN");
        audit::record(trail, entry(store_id.to_owned(), action, staff_id, detail)).await;
        Ok(self.session(&session, refresh_token))
    }
}

/// What [`AuthGrpc::take_over`] is asked.
struct TakeOver<'a> {
    key: &'a str,
    store_id: &'a str,
    terminal_id: &'a str,
    staff_id: &'a str,
    pin: String,
    /// When the new session ends: with the session it takes over from.
    expires_at_ms: i64,
    /// The audit entry's action.
    action: &'static str,
    /// Who was signed in.
    from: &'a str,
}

/// A successful action's entry.
fn entry(store_id: String, action: &'static str, subject: &str, detail: String) -> Entry {
    Entry { store_id, action, subject: subject.to_owned(), detail, outcome: "ok".to_owned() }
}

fn staff_proto(staff: &StaffRecord) -> Staff {
    Staff {
        staff_id: staff.staff_id.clone(),
        display_name: staff.display_name.clone(),
        role: role(staff.role) as i32,
        store_id: staff.store_id.clone().unwrap_or_default(),
        active: staff.active,
    }
}

/// A role as the contract names it; UNSPECIFIED is no role.
fn role_of(field: &str, value: i32) -> Result<Role> {
    match redstore_proto::auth::Role::try_from(value) {
        Ok(redstore_proto::auth::Role::Cashier) => Ok(Role::Cashier),
        Ok(redstore_proto::auth::Role::Supervisor) => Ok(Role::Supervisor),
        Ok(redstore_proto::auth::Role::Manager) => Ok(Role::Manager),
        Ok(redstore_proto::auth::Role::Admin) => Ok(Role::Admin),
        _ => Err(Error::invalid(field, "must be ROLE_CASHIER, ROLE_SUPERVISOR, ROLE_MANAGER or ROLE_ADMIN")),
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}

fn role(role: Role) -> redstore_proto::auth::Role {
    match role {
        Role::Cashier => redstore_proto::auth::Role::Cashier,
        Role::Supervisor => redstore_proto::auth::Role::Supervisor,
        Role::Manager => redstore_proto::auth::Role::Manager,
        Role::Admin => redstore_proto::auth::Role::Admin,
    }
}

/// Argon2 takes a while by design: it runs on a blocking thread.
async fn hash_off_runtime(secret: String) -> Result<String> {
    tokio::task::spawn_blocking(move || secret::hash(&secret))
        .await
        .map_err(|e| Error::Internal(anyhow::anyhow!("hashing a secret: {e}")))
}

/// Whether `secret` (a code, a PIN) is what `hash` was made from, checked on a blocking thread.
async fn matches_off_runtime(hash: String, secret: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || secret::matches(&hash, &secret))
        .await
        .map_err(|e| Error::Internal(anyhow::anyhow!("checking a secret: {e}")))
}

/// The caller's network address, as the connection gives it.
fn address<T>(req: &Request<T>) -> String {
    req.remote_addr().map(|addr| addr.ip().to_string()).unwrap_or_default()
}

/// How long a stream ticket opens a stream.
const TICKET_TTL: Duration = Duration::from_secs(60);

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    #[tracing::instrument(name = "auth.request_code", skip_all)]
    async fn request_code(&self, req: Request<RequestCodeRequest>) -> Result<Response<RequestCodeResponse>, Status> {
        let address = address(&req);
        Ok(Response::new(self.send_code(req.get_ref(), address).await?))
    }

    #[tracing::instrument(name = "auth.verify_code", skip_all)]
    async fn verify_code(&self, req: Request<VerifyCodeRequest>) -> Result<Response<VerifyCodeResponse>, Status> {
        let trail = Trail::of(&req);
        let session = self.sign_in(req.get_ref(), &trail).await?;
        Ok(Response::new(VerifyCodeResponse { session: Some(session) }))
    }

    #[tracing::instrument(name = "auth.refresh", skip_all)]
    async fn refresh(&self, req: Request<RefreshRequest>) -> Result<Response<RefreshResponse>, Status> {
        let session = self.rotated(req.get_ref()).await?;
        Ok(Response::new(RefreshResponse { session: Some(session) }))
    }

    #[tracing::instrument(name = "auth.sign_out", skip_all)]
    async fn sign_out(&self, req: Request<SignOutRequest>) -> Result<Response<SignOutResponse>, Status> {
        let token = required("refresh_token", &req.get_ref().refresh_token)?;
        if let Some(ended) = self.store.end_session(&secret::digest(token), "signed out").await? {
            self.revoked.insert(&ended.session_id, ended.expires_at_ms);
            tracing::info!(session_id = %ended.session_id, "signed out");
        }
        Ok(Response::new(SignOutResponse {}))
    }

    #[tracing::instrument(name = "auth.stream_ticket", skip_all)]
    async fn issue_stream_ticket(
        &self,
        req: Request<IssueStreamTicketRequest>,
    ) -> Result<Response<IssueStreamTicketResponse>, Status> {
        let store_id = identifier("store_id", &req.get_ref().store_id)?;
        let caller = Caller::of(&req)?;
        caller.may_act_in(store_id)?;
        let Caller::Staff(claims) = caller else {
            return Err(Error::PermissionDenied("stream tickets are for staff signed in".into()).into());
        };
        let now = SystemTime::now();
        let expires = now + TICKET_TTL;
        let ticket = Claims {
            store: Some(store_id.to_owned()),
            iat: secs(now),
            exp: secs(expires),
            jti: uuid::Uuid::now_v7().to_string(),
            scope: Some(access_token::STREAM_SCOPE.to_owned()),
            ..Claims::clone(claims)
        };
        Ok(Response::new(IssueStreamTicketResponse {
            ticket: self.keys.issue(&ticket),
            expires_at: Some(timestamp(unix_ms(expires))),
        }))
    }

    #[tracing::instrument(name = "auth.set_pin", skip_all)]
    async fn set_pin(&self, req: Request<SetPinRequest>) -> Result<Response<SetPinResponse>, Status> {
        let trail = Trail::of(&req);
        let (caller, req) = Caller::split(req)?;
        // Setting the same PIN again changes nothing: the key is taken, not required.
        optional_identifier("idempotency_key", &req.idempotency_key)?;
        let pin = domain::parse_pin(&req.pin)?.to_owned();
        let Caller::Staff(claims) = caller else {
            return Err(Error::PermissionDenied("PINs are staff members'".into()).into());
        };
        let session = self.store.live_session(&claims.sid).await?;
        let session = session.ok_or_else(|| Error::Unauthenticated("the session has ended; sign in again".into()))?;
        if session.opened_by != "code" {
            return Err(Error::PermissionDenied(
                "pin: a PIN is set from a session opened with a code, not from one opened by PIN".into(),
            )
            .into());
        }
        let hashed = hash_off_runtime(pin).await?;
        self.store.set_pin(&claims.sub, &hashed).await?;
        tracing::info!(staff_id = %claims.sub, "PIN set");
        let store_id = claims.store.clone().unwrap_or_default();
        audit::record(&trail, entry(store_id, "auth.pin_set", &claims.sub, String::new())).await;
        Ok(Response::new(SetPinResponse {}))
    }

    #[tracing::instrument(name = "auth.switch_staff", skip_all)]
    async fn switch_staff(&self, req: Request<SwitchStaffRequest>) -> Result<Response<SwitchStaffResponse>, Status> {
        let trail = Trail::of(&req);
        let (caller, req) = Caller::split(req)?;
        let key = optional_identifier("idempotency_key", &req.idempotency_key)?;
        let staff_id = identifier("staff_id", &req.staff_id)?;
        let pin = domain::parse_pin(&req.pin)?.to_owned();
        let terminal = match &caller {
            Caller::Staff(claims) => claims.store.clone().zip(claims.device.clone()).map(|t| (claims, t)),
            Caller::Service => None,
        };
        let Some((claims, (store_id, terminal_id))) = terminal else {
            return Err(Error::PermissionDenied(
                "a PIN takes over a terminal: call with the session signed in on the terminal".into(),
            )
            .into());
        };
        let terminal_session = self.store.live_session(&claims.sid).await?;
        let terminal_session = terminal_session
            .ok_or_else(|| Error::Unauthenticated("the terminal's session has ended; sign in with a code".into()))?;
        let at = TakeOver {
            key,
            store_id: &store_id,
            terminal_id: &terminal_id,
            staff_id,
            pin,
            // The terminal stays signed in as long as the code's session would have.
            expires_at_ms: terminal_session.expires_at_ms,
            action: "auth.switched",
            from: &claims.sub,
        };
        let session = self.take_over(&trail, at).await?;
        Ok(Response::new(SwitchStaffResponse { session: Some(session) }))
    }

    #[tracing::instrument(name = "auth.unlock_terminal", skip_all)]
    async fn unlock_terminal(
        &self,
        req: Request<UnlockTerminalRequest>,
    ) -> Result<Response<UnlockTerminalResponse>, Status> {
        let trail = Trail::of(&req);
        let req = req.into_inner();
        let key = optional_identifier("idempotency_key", &req.idempotency_key)?;
        let presented = secret::digest(required("refresh_token", &req.refresh_token)?);
        let staff_id = identifier("staff_id", &req.staff_id)?;
        let pin = domain::parse_pin(&req.pin)?.to_owned();
        let locked = self.store.terminal_session(&presented).await?.ok_or_else(|| {
            Error::Unauthenticated(
                "refresh_token: not the current refresh token of a terminal's live session; sign in with a code".into(),
            )
        })?;
        // The request carries no access token: the entries name the terminal and who held it.
        let trail = trail.map(|t| t.as_staff(&locked.staff_id, &locked.terminal_id));
        let holder = self.store.staff(&locked.staff_id).await?;
        let store_id = holder.and_then(|h| h.store_id).ok_or_else(|| {
            Error::PermissionDenied("refresh_token: the session belongs to no store, so no PIN unlocks it".into())
        })?;
        let at = TakeOver {
            key,
            store_id: &store_id,
            terminal_id: &locked.terminal_id,
            staff_id,
            pin,
            expires_at_ms: locked.expires_at_ms,
            action: "auth.unlocked",
            from: &locked.staff_id,
        };
        let session = self.take_over(&trail, at).await?;
        Ok(Response::new(UnlockTerminalResponse { session: Some(session) }))
    }

    #[tracing::instrument(name = "auth.create_staff", skip_all)]
    async fn create_staff(&self, req: Request<CreateStaffRequest>) -> Result<Response<CreateStaffResponse>, Status> {
        let trail = Trail::of(&req);
        let (caller, req) = Caller::split(req)?;
        // A staff id exists once: the same request again answers it, so the key is taken, not needed.
        optional_identifier("idempotency_key", &req.idempotency_key)?;
        let staff_id = identifier("staff_id", &req.staff_id)?.to_owned();
        let role = role_of("role", req.role)?;
        let store_id = domain::staff_store(role, &req.store_id)?;
        domain::may_manage(&caller, role, store_id.as_deref())?;
        if let Some(store_id) = &store_id {
            self.inventory.get_store(store_id).await?;
        }
        let display_name = match optional_text("display_name", &req.display_name, 100)? {
            name if name.is_empty() => staff_id.clone(),
            name => name,
        };
        let contact = text("contact", &req.contact, 200)?;
        let asked = StaffRecord { staff_id, display_name, role, store_id, contact, active: true };
        if !self.store.add_staff(asked.clone()).await? {
            let existing = self.store.staff(&asked.staff_id).await?;
            let existing = existing.ok_or_else(|| Error::Internal(anyhow::anyhow!("a staff member vanished")))?;
            domain::same_staff(&existing, &asked)?;
            return Ok(Response::new(CreateStaffResponse { staff: Some(staff_proto(&existing)) }));
        }
        tracing::info!(staff_id = %asked.staff_id, role = asked.role.as_str(), by = caller.staff_id(), "staff member added");
        let (store_id, role) = (asked.store_id.clone().unwrap_or_default(), asked.role.as_str());
        audit::record(&trail, entry(store_id, "staff.created", &asked.staff_id, format!("role {role}"))).await;
        Ok(Response::new(CreateStaffResponse { staff: Some(staff_proto(&asked)) }))
    }

    async fn list_staff(&self, req: Request<ListStaffRequest>) -> Result<Response<ListStaffResponse>, Status> {
        let (caller, req) = Caller::split(req)?;
        let store_id = caller.store("store_id", &req.store_id)?;
        let page = Page::from_proto("page", req.page.as_ref())?;
        let mut rows = self.store.list_staff(store_id, &page.after, page.fetch_limit()).await?;
        let next = page.finish(&mut rows, |s| s.staff_id.clone());
        Ok(Response::new(ListStaffResponse { staff: rows.iter().map(staff_proto).collect(), page: Some(next) }))
    }

    #[tracing::instrument(name = "auth.deactivate_staff", skip_all)]
    async fn deactivate_staff(
        &self,
        req: Request<DeactivateStaffRequest>,
    ) -> Result<Response<DeactivateStaffResponse>, Status> {
        let trail = Trail::of(&req);
        let (caller, req) = Caller::split(req)?;
        // Deactivating twice is deactivating once: the key is taken, not needed.
        optional_identifier("idempotency_key", &req.idempotency_key)?;
        let staff_id = identifier("staff_id", &req.staff_id)?;
        let staff = self.store.staff(staff_id).await?;
        let staff = staff.ok_or_else(|| Error::not_found(format!("staff_id: no staff member {staff_id:?}")))?;
        domain::may_manage(&caller, staff.role, staff.store_id.as_deref())?;
        let ended = self.store.deactivate(staff_id, "the staff member was deactivated").await?;
        for session in &ended {
            self.revoked.insert(&session.session_id, session.expires_at_ms);
        }
        tracing::info!(%staff_id, sessions_ended = ended.len(), by = caller.staff_id(), "staff member deactivated");
        let detail = format!("{} sessions ended", ended.len());
        let store_id = staff.store_id.clone().unwrap_or_default();
        audit::record(&trail, entry(store_id, "staff.deactivated", staff_id, detail)).await;
        Ok(Response::new(DeactivateStaffResponse { staff: Some(staff_proto(&StaffRecord { active: false, ..staff })) }))
    }

    async fn list_audit_events(
        &self,
        req: Request<ListAuditEventsRequest>,
    ) -> Result<Response<ListAuditEventsResponse>, Status> {
        let (caller, req) = Caller::split(req)?;
        let store_id = match (req.chain, req.store_id.trim()) {
            (true, "") if caller.may_act_in_every_store() => "",
            (true, "") => {
                return Err(Error::PermissionDenied("chain: the chain's entries are an admin's".into()).into());
            }
            (true, _) => return Err(Error::invalid("store_id", "must be empty with chain").into()),
            (false, _) => caller.store("store_id", &req.store_id)?,
        };
        let page = Page::from_proto("page", req.page.as_ref())?;
        let mut rows = self.store.list(store_id, &page.after, page.fetch_limit()).await?;
        let next = page.finish(&mut rows, |r| r.event_id.clone());
        let events = rows
            .into_iter()
            .map(|r| AuditEvent {
                event_id: r.event_id,
                at: Some(timestamp(r.at_ms)),
                store_id: r.store_id,
                staff_id: r.actor.staff_id,
                terminal_id: r.actor.device,
                address: r.actor.address,
                action: r.action,
                subject: r.subject,
                detail: r.detail,
                outcome: r.outcome,
            })
            .collect();
        Ok(Response::new(ListAuditEventsResponse { events, page: Some(next) }))
    }

    #[tracing::instrument(name = "auth.issue_device_credential", skip_all)]
    async fn issue_device_credential(
        &self,
        req: Request<IssueDeviceCredentialRequest>,
    ) -> Result<Response<IssueDeviceCredentialResponse>, Status> {
        let trail = Trail::of(&req);
        let (caller, req) = Caller::split(req)?;
        let key = optional_identifier("idempotency_key", &req.idempotency_key)?;
        let store_id = caller.store("store_id", &req.store_id)?;
        let terminal_id = identifier("terminal_id", &req.terminal_id)?;
        self.inventory.require_terminal(store_id, terminal_id).await?;
        let credential = secret::new_refresh_token();
        let ended = self.store.issue_device(store_id, terminal_id, &secret::digest(&credential), key).await?;
        for session in &ended {
            self.revoked.insert(&session.session_id, session.expires_at_ms);
        }
        let detail = format!("{} sessions ended", ended.len());
        audit::record(&trail, entry(store_id.to_owned(), "device.credential_issued", terminal_id, detail)).await;
        Ok(Response::new(IssueDeviceCredentialResponse { device_credential: credential }))
    }

    #[tracing::instrument(name = "auth.revoke_device", skip_all)]
    async fn revoke_device(&self, req: Request<RevokeDeviceRequest>) -> Result<Response<RevokeDeviceResponse>, Status> {
        let trail = Trail::of(&req);
        let (caller, req) = Caller::split(req)?;
        // Revoking twice is revoking once: the key is taken, not needed.
        optional_identifier("idempotency_key", &req.idempotency_key)?;
        let store_id = caller.store("store_id", &req.store_id)?;
        let terminal_id = identifier("terminal_id", &req.terminal_id)?;
        let ended = self.store.revoke_device(store_id, terminal_id).await?;
        for session in &ended {
            self.revoked.insert(&session.session_id, session.expires_at_ms);
        }
        let detail = format!("{} sessions ended", ended.len());
        audit::record(&trail, entry(store_id.to_owned(), "device.revoked", terminal_id, detail)).await;
        Ok(Response::new(RevokeDeviceResponse { sessions_ended: ended.len() as u32 }))
    }
}
