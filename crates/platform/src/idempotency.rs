//! Idempotency keys for every mutating RPC.
//!
//! The first request with a key runs and its answer is stored with the request's encoding, in
//! the same transaction as its effect. A retry with the same key and the same request gets the
//! stored answer and changes nothing; the same key with a different request is rejected.

use prost::Message;
use rusqlite::{OptionalExtension, params};

use crate::db::WriteCtx;
use crate::retention::{self, Retention, SCAN_SCOPES};

/// An idempotency key with the canonical encoding of its request. An empty key means the caller
/// sent none (allowed only where a repeat is harmless).
#[derive(Clone, Debug, Default)]
pub struct Idem {
    pub key: String,
    pub fingerprint: Vec<u8>,
}
use crate::error::{Error, Result};

/// The answer to a key used again for a different request (ALREADY_EXISTS), in every backend.
pub fn key_reused(scope: &str, key: &str) -> Error {
    Error::AlreadyExists(format!(
        "idempotency_key {key:?} was already used for a different {scope} request; use a new key for a new request"
    ))
}

/// A key claimed with the same request whose answer was never stored (its transaction should have
/// stored both): corrupt state, INTERNAL.
pub fn key_unanswered(scope: &str, key: &str) -> Error {
    Error::Internal(anyhow::anyhow!("idempotency key {scope}/{key} has no stored answer"))
}

/// Runs `f` once per (`scope`, `key`). `request` is the canonical encoding of the request.
pub fn once<T, F>(ctx: &mut WriteCtx<'_>, scope: &str, key: &str, request: &[u8], f: F) -> Result<T>
where
    T: Message + Default,
    F: FnOnce(&mut WriteCtx<'_>) -> Result<T>,
{
    let stored: Option<(Vec<u8>, Vec<u8>)> = ctx
        .conn
        .prepare_cached("SELECT request, response FROM idempotency_keys WHERE scope = ?1 AND key = ?2")?
        .query_row(params![scope, key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((stored_request, response)) = stored {
        if stored_request != request {
            return Err(key_reused(scope, key));
        }
        return T::decode(response.as_slice())
            .map_err(|e| Error::Internal(anyhow::anyhow!("stored response for key {key} is corrupt: {e}")));
    }
    let response = f(ctx)?;
    ctx.conn
        .prepare_cached(
            "INSERT INTO idempotency_keys (scope, key, request, response, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![scope, key, request, response.encode_to_vec(), crate::time::unix_ms(ctx.now)])?;
    Ok(response)
}

/// Like [`once`] when `key` is set; runs `f` plainly when it is empty (for RPCs whose repeat is
/// harmless without a key, such as creating a thing that then already exists).
pub fn maybe_once<T, F>(ctx: &mut WriteCtx<'_>, scope: &str, key: &str, request: &[u8], f: F) -> Result<T>
where
    T: Message + Default,
    F: FnOnce(&mut WriteCtx<'_>) -> Result<T>,
{
    if key.is_empty() { f(ctx) } else { once(ctx, scope, key, request, f) }
}

/// The canonical encoding of a request for idempotency comparison: the message with its
/// idempotency key cleared by `clear`.
pub fn fingerprint<M: Message + Clone>(request: &M, clear: impl FnOnce(&mut M)) -> Vec<u8> {
    let mut m = request.clone();
    clear(&mut m);
    m.encode_to_vec()
}

/// Deletes expired keys and scan ids (at most [`retention::CHUNK`]); how many it deleted.
pub fn expire(conn: &rusqlite::Connection, retention: &Retention, now: std::time::SystemTime) -> Result<u64> {
    let (keys, scans) = (retention.keys_before_ms(now), retention.scans_before_ms(now));
    let [scan, cart] = SCAN_SCOPES;
    let deleted = conn
        .prepare_cached(
            "DELETE FROM idempotency_keys WHERE (scope, key) IN (
                 SELECT scope, key FROM idempotency_keys
                 WHERE created_at_ms < max(?1, ?2)
                   AND CASE WHEN scope LIKE ?3 OR scope LIKE ?4 THEN created_at_ms < ?2 ELSE created_at_ms < ?1 END
                 LIMIT ?5)",
        )?
        .execute(params![keys, scans, scan, cart, retention::CHUNK])?;
    Ok(deleted as u64)
}
