//! The audit log: who did what, from which terminal and address, when, to what, and how it
//! ended: sign-ins and failed codes, refunds with their reason, stock adjustments with their
//! note, catalog and price changes, terminals, stores and staff. Entries are only ever appended.
//!
//! The edge (`src/edge.rs` `guard`) gives every request it lets through the log ([`AuditSink`])
//! and its checked caller; a handler that records makes the request's [`Trail`] and records an
//! [`Entry`] on it once it knows the outcome. Writing an entry never undoes what was
//! done: a failure to write is logged.

use std::sync::Arc;

use crate::caller::Caller;
use crate::error::{Error, Result};

/// Who acted: the staff member (empty before sign-in), their terminal, their network address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Actor {
    pub staff_id: String,
    pub device: String,
    pub address: String,
}

impl Actor {
    /// A checked caller (none yet, for signing in) at `address`.
    pub fn of(caller: Option<&Caller>, address: String) -> Self {
        let (staff_id, device) = match caller {
            Some(Caller::Staff(claims)) => (claims.sub.clone(), claims.device.clone().unwrap_or_default()),
            Some(Caller::Service) => ("service".to_owned(), String::new()),
            None => (String::new(), String::new()),
        };
        Self { staff_id, device, address }
    }
}

/// The network address of a request's peer, as an entry says it (empty when unknown).
pub fn peer_address(info: Option<&tonic::transport::server::TcpConnectInfo>) -> String {
    info.and_then(|info| info.remote_addr()).map(|addr| addr.ip().to_string()).unwrap_or_default()
}

/// Where the requests' audit entries go: the edge puts it in every request it lets through.
#[derive(Clone)]
pub struct AuditSink(pub Arc<dyn AuditLog>);

/// What was done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The store it concerns; empty for the chain (the catalog, an admin's sign-in).
    pub store_id: String,
    /// e.g. `stock.adjusted`, `sale.refunded`, `auth.signed_in`.
    pub action: &'static str,
    /// What it was done to: a sku, a sale, a terminal, a staff member.
    pub subject: String,
    /// The reason, note or change, as given.
    pub detail: String,
    /// `ok`, or the refusal (its gRPC code and message).
    pub outcome: String,
}

/// An entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub event_id: String,
    pub at_ms: i64,
    pub actor: Actor,
    pub store_id: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
    pub outcome: String,
}

#[tonic::async_trait]
pub trait AuditLog: Send + Sync + 'static {
    async fn append(&self, actor: &Actor, entry: &Entry) -> Result<()>;

    /// A store's entries (the chain's for an empty `store_id`), newest first, older than the
    /// entry `before` (from the newest when empty), at most `limit`.
    async fn list(&self, store_id: &str, before: &str, limit: u32) -> Result<Vec<Recorded>>;
}

/// The audit log and the caller of one request.
#[derive(Clone)]
pub struct Trail {
    log: Arc<dyn AuditLog>,
    actor: Actor,
}

impl std::fmt::Debug for Trail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trail").field("actor", &self.actor).finish_non_exhaustive()
    }
}

impl Trail {
    pub fn new(log: Arc<dyn AuditLog>, actor: Actor) -> Self {
        Self { log, actor }
    }

    /// The trail of `req`, if it passed the edge: into the log the edge named ([`AuditSink`]),
    /// by the caller the edge checked (none yet for signing in), from the address it came from.
    /// Made only by the handlers that record, not for every request.
    pub fn of<T>(req: &tonic::Request<T>) -> Option<Self> {
        let sink = req.extensions().get::<AuditSink>()?;
        let address = peer_address(req.extensions().get());
        Some(Self::new(sink.0.clone(), Actor::of(req.extensions().get::<Caller>(), address)))
    }

    /// The same trail for a caller known only now (a staff member signing in).
    #[must_use]
    pub fn as_staff(&self, staff_id: &str, device: &str) -> Self {
        let actor = Actor { staff_id: staff_id.to_owned(), device: device.to_owned(), ..self.actor.clone() };
        Self { log: self.log.clone(), actor }
    }

    /// Appends `entry`; a failure to write is logged, never returned.
    pub async fn record(&self, entry: Entry) {
        if let Err(e) = self.log.append(&self.actor, &entry).await {
            tracing::error!(error = %e, action = entry.action, subject = %entry.subject, "an audit entry could not be written");
        }
    }
}

/// Records `entry` on `trail` when there is one (a request that passed the edge).
pub async fn record(trail: &Option<Trail>, entry: Entry) {
    if let Some(trail) = trail {
        trail.record(entry).await;
    }
}

/// The outcome of a result, as an entry says it.
pub fn outcome<T>(result: &Result<T>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => refused(e),
    }
}

/// A refusal as an entry says it: its gRPC code and message.
pub fn refused(e: &Error) -> String {
    let message: String = e.to_string().chars().take(300).collect();
    format!("{:?}: {message}", e.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_name_the_code_and_the_reason() {
        assert_eq!(outcome::<()>(&Ok(())), "ok");
        let refused = outcome::<()>(&Err(Error::PermissionDenied("store_id: not yours".into())));
        assert_eq!(refused, "PermissionDenied: store_id: not yours");
    }
}
