//! How a one-time code reaches its staff member. A deployment plugs in its own sender (a text
//! message or e-mail gateway); the built-in one is for development: it writes the code to the
//! server's log, so a developer can sign in with nothing else set up.

use std::time::SystemTime;

use crate::domain::StaffRecord;

#[tonic::async_trait]
pub trait CodeSender: Send + Sync + 'static {
    /// Delivers `code` to `staff` (at `staff.contact`). An error leaves the challenge standing
    /// (the caller may ask again) and answers the request UNAVAILABLE.
    async fn send(&self, staff: &StaffRecord, code: &str, expires_at: SystemTime) -> anyhow::Result<()>;
}

/// The development sender: the code goes to the log, at WARN so it is seen, and nowhere else.
pub struct LogSender;

#[tonic::async_trait]
impl CodeSender for LogSender {
    async fn send(&self, staff: &StaffRecord, code: &str, _expires_at: SystemTime) -> anyhow::Result<()> {
        tracing::warn!(
            staff_id = %staff.staff_id,
            contact = %staff.contact,
            "sign-in code {code} (the development code sender writes codes to this log; it expires in 5 minutes)"
        );
        Ok(())
    }
}
