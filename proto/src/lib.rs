//! Generated Protobuf types and tonic services of Red Store, plus the encoded file descriptor set
//! used for server reflection.

#![allow(clippy::all, clippy::pedantic)]

pub mod redstore {
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("redstore.common.v1");
        }
    }
    pub mod events {
        pub mod v1 {
            tonic::include_proto!("redstore.events.v1");
        }
    }
    pub mod inventory {
        pub mod v1 {
            tonic::include_proto!("redstore.inventory.v1");
        }
    }
    pub mod sales {
        pub mod v1 {
            tonic::include_proto!("redstore.sales.v1");
        }
    }
    pub mod analytics {
        pub mod v1 {
            tonic::include_proto!("redstore.analytics.v1");
        }
    }
    pub mod stream {
        pub mod v1 {
            tonic::include_proto!("redstore.stream.v1");
        }
    }
    pub mod auth {
        pub mod v1 {
            tonic::include_proto!("redstore.auth.v1");
        }
    }
}

pub use redstore::{analytics::v1 as analytics, common::v1 as common, events::v1 as events};
pub use redstore::{auth::v1 as auth, inventory::v1 as inventory, sales::v1 as sales, stream::v1 as stream};

/// Encoded `FileDescriptorSet` of every Red Store contract, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("redstore_descriptor");

/// `Debug` of the messages that carry a secret: every field but the secret, which shows as
/// `<redacted>` (set) or `""` (empty), so a logged request or an assertion's output never leaks one.
mod redacted {
    use std::fmt;

    use super::auth::{
        IssueDeviceCredentialResponse, IssueStreamTicketResponse, RefreshRequest, RequestCodeRequest, Session,
        SetPinRequest, SignOutRequest, SwitchStaffRequest, UnlockTerminalRequest, VerifyCodeRequest,
    };

    fn secret(value: &str) -> &'static str {
        if value.is_empty() { "\"\"" } else { "<redacted>" }
    }

    struct Shown(&'static str);

    impl fmt::Debug for Shown {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl fmt::Debug for VerifyCodeRequest {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("VerifyCodeRequest")
                .field("idempotency_key", &self.idempotency_key)
                .field("challenge_id", &self.challenge_id)
                .field("code", &Shown(secret(&self.code)))
                .finish()
        }
    }

    impl fmt::Debug for Session {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Session")
                .field("session_id", &self.session_id)
                .field("staff", &self.staff)
                .field("terminal_id", &self.terminal_id)
                .field("access_token", &Shown(secret(&self.access_token)))
                .field("access_expires_at", &self.access_expires_at)
                .field("refresh_token", &Shown(secret(&self.refresh_token)))
                .field("refresh_expires_at", &self.refresh_expires_at)
                .field("idle_lock_seconds", &self.idle_lock_seconds)
                .finish()
        }
    }

    impl fmt::Debug for RefreshRequest {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("RefreshRequest")
                .field("idempotency_key", &self.idempotency_key)
                .field("refresh_token", &Shown(secret(&self.refresh_token)))
                .finish()
        }
    }

    impl fmt::Debug for SignOutRequest {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("SignOutRequest").field("refresh_token", &Shown(secret(&self.refresh_token))).finish()
        }
    }

    impl fmt::Debug for IssueStreamTicketResponse {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("IssueStreamTicketResponse")
                .field("ticket", &Shown(secret(&self.ticket)))
                .field("expires_at", &self.expires_at)
                .finish()
        }
    }

    impl fmt::Debug for SetPinRequest {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("SetPinRequest")
                .field("idempotency_key", &self.idempotency_key)
                .field("pin", &Shown(secret(&self.pin)))
                .finish()
        }
    }

    impl fmt::Debug for SwitchStaffRequest {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("SwitchStaffRequest")
                .field("idempotency_key", &self.idempotency_key)
                .field("staff_id", &self.staff_id)
                .field("pin", &Shown(secret(&self.pin)))
                .finish()
        }
    }

    impl fmt::Debug for UnlockTerminalRequest {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("UnlockTerminalRequest")
                .field("idempotency_key", &self.idempotency_key)
                .field("refresh_token", &Shown(secret(&self.refresh_token)))
                .field("staff_id", &self.staff_id)
                .field("pin", &Shown(secret(&self.pin)))
                .finish()
        }
    }

    impl fmt::Debug for RequestCodeRequest {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("RequestCodeRequest")
                .field("idempotency_key", &self.idempotency_key)
                .field("staff_id", &self.staff_id)
                .field("terminal_id", &self.terminal_id)
                .field("device_credential", &Shown(secret(&self.device_credential)))
                .finish()
        }
    }

    impl fmt::Debug for IssueDeviceCredentialResponse {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("IssueDeviceCredentialResponse")
                .field("device_credential", &Shown(secret(&self.device_credential)))
                .finish()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn secrets_are_left_out_of_debug_output() {
            let session = Session {
                session_id: "s-1".into(),
                access_token: "eyJhbGciOi.secret-access".into(),
                refresh_token: "secret-refresh".into(),
                ..Default::default()
            };
            let shown = format!(
                "{session:?} {:?} {:?} {:?} {:?} {:?}",
                VerifyCodeRequest { code: "123456".into(), ..Default::default() },
                RefreshRequest { refresh_token: "secret-refresh".into(), ..Default::default() },
                SignOutRequest { refresh_token: "secret-refresh".into() },
                SwitchStaffRequest { pin: "2580".into(), ..Default::default() },
                UnlockTerminalRequest {
                    refresh_token: "secret-refresh".into(),
                    pin: "2580".into(),
                    ..Default::default()
                },
            );
            for secret in ["secret-access", "secret-refresh", "123456", "2580"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            assert!(shown.contains("s-1") && shown.contains("<redacted>"), "{shown}");
        }
    }
}
