//! A backend a process needs could not be reached at start: the context of such an error, so the
//! process exits with EX_UNAVAILABLE, which tells an operator or a supervisor to retry rather
//! than to fix flags.

/// "cannot reach PostgreSQL at …": the context an error carries when the backend itself, not
/// what the process was told about it, was the trouble.
#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot reach {}", self.0)
    }
}

/// Whether `error` says a backend could not be reached.
pub fn is_unreachable(error: &anyhow::Error) -> bool {
    error.downcast_ref::<Unreachable>().is_some()
}
