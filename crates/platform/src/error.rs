//! One error type for every service, mapped to gRPC status codes in one exhaustive `match`.
//!
//! Domain code returns [`Error`]; transport turns it into a [`tonic::Status`] whose message a person
//! can act on. Field errors also carry `google.rpc.BadRequest` details naming the field, and stock
//! shortfalls carry `google.rpc.PreconditionFailure` details naming the sku.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How long a client is told to wait before retrying an UNAVAILABLE request, unless the error
/// knows better.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or malformed.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The thing to create exists already, or an idempotency key was reused for another request.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is well formed but the system is not in a state to do it.
    #[error("{message}")]
    FailedPrecondition {
        /// What failed, e.g. "stock" or "cart"; becomes the violation type.
        kind: &'static str,
        /// The thing that failed, e.g. the sku.
        subject: String,
        message: String,
    },
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unauthenticated(String),
    /// Too much at once: a queue is full, or a request is larger than allowed. `retry_after` is
    /// set when waiting helps (sent as `google.rpc.RetryInfo`).
    #[error("{message}")]
    ResourceExhausted { message: String, retry_after: Option<Duration> },
    /// The service is shutting down or a backend is unavailable; nothing was done, and the same
    /// request (with its idempotency key) may be sent again after `retry_after`.
    #[error("{message}")]
    Unavailable { message: String, retry_after: Duration },
    /// An error answered by another service, passed on unchanged (code, message and details).
    #[error("{}", .0.message())]
    Remote(tonic::Status),
    /// Anything unexpected; logged with its cause chain and returned as a sanitised INTERNAL.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { field: field.into(), reason: reason.into() }
    }

    /// UNAVAILABLE with the default retry hint.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable { message: message.into(), retry_after: DEFAULT_RETRY_AFTER }
    }

    /// RESOURCE_EXHAUSTED; `retry_after` when waiting helps (a full queue), `None` when it does
    /// not (a request over a size limit).
    pub fn exhausted(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self::ResourceExhausted { message: message.into(), retry_after }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }

    pub fn precondition(kind: &'static str, subject: impl Into<String>, message: impl Into<String>) -> Self {
        Self::FailedPrecondition { kind, subject: subject.into(), message: message.into() }
    }

    /// Prefixes the field of an `InvalidArgument` with a parent path, e.g. `lines[2]`.
    #[must_use]
    pub fn scope(self, parent: &str) -> Self {
        match self {
            Self::InvalidArgument { field, reason } => {
                Self::InvalidArgument { field: format!("{parent}.{field}"), reason }
            }
            other => other,
        }
    }

    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument { .. } => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::FailedPrecondition { .. } => Code::FailedPrecondition,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::ResourceExhausted { .. } => Code::ResourceExhausted,
            Self::Unavailable { .. } => Code::Unavailable,
            Self::Remote(status) => status.code(),
            Self::Internal(_) if self.is_transient() => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// Whether retrying the same thing later may succeed: a backend that is unreachable, overloaded,
    /// shutting down, or a transaction that lost a race (serialization failure, deadlock). A
    /// consumer waits such errors out instead of dead-lettering the event.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable { .. } | Self::ResourceExhausted { .. } => true,
            Self::Remote(status) => {
                matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted)
            }
            Self::Internal(err) => err.chain().any(|cause| {
                if let Some(e) = cause.downcast_ref::<sqlx::Error>() {
                    return match e {
                        sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed => true,
                        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
                            // 08: connection exception; 53: insufficient resources; 57P0x: operator
                            // intervention (shutdown); 40001/40P01: serialization failure, deadlock.
                            c.starts_with("08")
                                || c.starts_with("53")
                                || c.starts_with("57P0")
                                || c == "40001"
                                || c == "40P01"
                        }),
                        _ => false,
                    };
                }
                if let Some(e) = cause.downcast_ref::<rusqlite::Error>() {
                    return lock_held(e);
                }
                cause.downcast_ref::<std::io::Error>().is_some()
            }),
            Self::InvalidArgument { .. }
            | Self::NotFound(_)
            | Self::AlreadyExists(_)
            | Self::FailedPrecondition { .. }
            | Self::PermissionDenied(_)
            | Self::Unauthenticated(_) => false,
        }
    }

    /// The type of a failed precondition (e.g. "STOCK"), also when another service answered it
    /// over gRPC (its `google.rpc.PreconditionFailure` details).
    pub fn violation_type(&self) -> Option<String> {
        match self {
            Self::FailedPrecondition { kind, .. } => Some((*kind).to_owned()),
            Self::Remote(status) if status.code() == Code::FailedPrecondition => status
                .get_error_details()
                .precondition_failure()
                .and_then(|failure| failure.violations.first())
                .map(|violation| violation.r#type.clone()),
            _ => None,
        }
    }

    /// The field at fault, for invalid arguments.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::InvalidArgument { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        Self::Internal(anyhow::Error::new(err).context("embedded database"))
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let code = err.code();
        match err {
            Error::InvalidArgument { field, reason } => {
                let message = format!("{field}: {reason}");
                let details = ErrorDetails::with_bad_request_violation(field, reason);
                Status::with_error_details(code, message, details)
            }
            Error::FailedPrecondition { kind, subject, message } => {
                let details = ErrorDetails::with_precondition_failure_violation(kind, subject, message.clone());
                Status::with_error_details(code, message, details)
            }
            Error::Remote(status) => status,
            // A lost or refused database connection, or a transaction that lost a race: nothing
            // was done, and the client retries with the same idempotency key, safely.
            Error::Internal(err) if code == Code::Unavailable => {
                crate::warn_throttled!(error = %format!("{err:#}"), "backend unavailable; the request was refused");
                Status::with_error_details(
                    Code::Unavailable,
                    "a backend is unavailable right now; nothing was done, retry with the same idempotency_key",
                    ErrorDetails::with_retry_info(Some(DEFAULT_RETRY_AFTER)),
                )
            }
            Error::Internal(err) => {
                tracing::error!(error = ?err, "internal error");
                Status::internal("internal error; the operator can find the cause in the server log")
            }
            Error::Unavailable { message, retry_after }
            | Error::ResourceExhausted { message, retry_after: Some(retry_after) } => {
                Status::with_error_details(code, message, ErrorDetails::with_retry_info(Some(retry_after)))
            }
            Error::ResourceExhausted { message: m, retry_after: None }
            | Error::NotFound(m)
            | Error::AlreadyExists(m)
            | Error::PermissionDenied(m)
            | Error::Unauthenticated(m) => Status::new(code, m),
        }
    }
}

/// Requires a non-empty string field; trims it.
pub fn required<'a>(field: &str, value: &'a str) -> Result<&'a str> {
    let v = value.trim();
    if v.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    Ok(v)
}

/// Whether an embedded-database error says another program (a backup, an operator's shell) holds
/// the database's lock.
pub fn lock_held(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// An identifier where one is optional: empty (after trimming) stays empty, anything else must be
/// an [`identifier`].
pub fn optional_identifier<'a>(field: &str, value: &'a str) -> Result<&'a str> {
    match value.trim() {
        "" => Ok(""),
        _ => identifier(field, value),
    }
}

/// Validates an identifier (store id, terminal id, sku, idempotency key): 1–64 characters of
/// letters, digits, `-`, `_`, `.` and `:`.
pub fn identifier<'a>(field: &str, value: &'a str) -> Result<&'a str> {
    let v = required(field, value)?;
    if v.len() > 64 {
        return Err(Error::invalid(field, format!("is {} characters long; at most 64 are allowed", v.len())));
    }
    if let Some(c) = v.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))) {
        return Err(Error::invalid(
            field,
            format!("contains {c:?}; only letters, digits, '-', '_', '.' and ':' are allowed"),
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_the_field_in_message_and_details() {
        let status = Status::from(Error::invalid("lines[1].quantity", "must be positive, got 0"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "lines[1].quantity: must be positive, got 0");
        let details = status.get_error_details();
        let bad = details.bad_request().expect("bad request details");
        assert_eq!(bad.field_violations[0].field, "lines[1].quantity");
    }

    #[test]
    fn internal_errors_are_sanitised() {
        let status = Status::from(Error::Internal(anyhow::anyhow!("secret connection string")));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }

    #[test]
    fn identifiers_reject_spaces_and_long_values() {
        assert!(identifier("store_id", "store-1").is_ok());
        assert_eq!(identifier("store_id", "  ").unwrap_err().field(), Some("store_id"));
        assert!(identifier("store_id", "a b").is_err());
        assert!(identifier("store_id", &"x".repeat(65)).is_err());
    }

    #[test]
    fn lost_connections_are_transient_and_bad_data_is_not() {
        let io = anyhow::Error::new(sqlx::Error::Io(std::io::Error::other("connection reset"))).context("postgres");
        assert!(Error::Internal(io).is_transient());
        assert!(Error::Internal(anyhow::Error::new(sqlx::Error::PoolTimedOut)).is_transient());
        assert!(Error::unavailable("redis down").is_transient());
        assert!(Error::Remote(Status::unavailable("inventory restarting")).is_transient());
        assert!(!Error::Internal(anyhow::anyhow!("corrupt event")).is_transient());
        assert!(!Error::invalid("sku", "bad").is_transient());
        assert!(!Error::Remote(Status::failed_precondition("out of stock")).is_transient());
    }

    #[test]
    fn a_precondition_keeps_its_type_across_grpc() {
        let local = Error::precondition("STOCK", "sku:a", "not enough");
        assert_eq!(local.violation_type().as_deref(), Some("STOCK"));
        let remote = Error::Remote(Status::from(local));
        assert_eq!(remote.violation_type().as_deref(), Some("STOCK"));
        assert_eq!(Error::not_found("x").violation_type(), None);
        assert_eq!(Error::Remote(Status::failed_precondition("no details")).violation_type(), None);
    }

    #[test]
    fn scope_prefixes_the_field() {
        let e = Error::invalid("quantity", "must be positive").scope("lines[2]");
        assert_eq!(e.field(), Some("lines[2].quantity"));
    }
}
