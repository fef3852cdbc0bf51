//! Who is calling: a signed-in staff member (the claims of their access token) or another Red
//! Store process (the service token). The edge (`src/edge.rs` `guard`) puts it in every request's
//! extensions after checking the token and the role the RPC needs; handlers ask it whether the
//! caller may act in the store and at the terminal the request names. A request without one did
//! not pass the edge and is refused.

use std::sync::Arc;

use crate::access_token::{Claims, Role};
use crate::error::{Error, Result, identifier};

/// The checked identity of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Shared with the edge's cache of verified tokens: a request costs no copy of them.
    Staff(Arc<Claims>),
    /// Another process of this deployment: acts in every store.
    Service,
}

impl Caller {
    /// The caller of `req`, as the edge checked it.
    pub fn of<T>(req: &tonic::Request<T>) -> Result<&Caller> {
        req.extensions().get::<Caller>().ok_or_else(unchecked)
    }

    /// The caller of `req` and its message.
    pub fn split<T>(req: tonic::Request<T>) -> Result<(Caller, T)> {
        let (_, mut extensions, message) = req.into_parts();
        let caller = extensions.remove::<Caller>().ok_or_else(unchecked)?;
        Ok((caller, message))
    }

    /// The store a request names in `field`, an identifier the caller may act in.
    pub fn store<'a>(&self, field: &str, value: &'a str) -> Result<&'a str> {
        let store_id = identifier(field, value)?;
        self.may_act_in(store_id)?;
        Ok(store_id)
    }

    /// The store and terminal a request names (`store_id`, `terminal_id`), where the caller may work.
    pub fn terminal<'a>(&self, store_id: &'a str, terminal_id: &'a str) -> Result<(&'a str, &'a str)> {
        let (store_id, terminal_id) = (identifier("store_id", store_id)?, identifier("terminal_id", terminal_id)?);
        self.may_use_terminal(store_id, terminal_id)?;
        Ok((store_id, terminal_id))
    }

    /// PERMISSION_DENIED unless the caller may act in `store_id` (its token's store, or every
    /// store for an admin or a service).
    pub fn may_act_in(&self, store_id: &str) -> Result<()> {
        match self {
            Self::Service => Ok(()),
            Self::Staff(claims) if claims.acts_in(store_id) => Ok(()),
            Self::Staff(claims) => Err(Error::PermissionDenied(format!(
                "store_id: {} is signed in to store {:?}, not {store_id:?}",
                claims.sub,
                claims.store.as_deref().unwrap_or_default()
            ))),
        }
    }

    /// PERMISSION_DENIED unless the caller may work at `terminal_id` of `store_id`: a staff
    /// member signed in on a terminal works at that one; a manager or admin signed in without
    /// one (the back office) at any terminal of their stores; cashiers and supervisors only at
    /// the terminal they signed in on.
    pub fn may_use_terminal(&self, store_id: &str, terminal_id: &str) -> Result<()> {
        self.may_act_in(store_id)?;
        let Self::Staff(claims) = self else { return Ok(()) };
        match &claims.device {
            Some(device) if device == terminal_id => Ok(()),
            Some(device) => Err(Error::PermissionDenied(format!(
                "terminal_id: {} is signed in at terminal {device:?}, not {terminal_id:?}",
                claims.sub
            ))),
            None if claims.role >= Role::Manager => Ok(()),
            None => Err(Error::PermissionDenied(format!(
                "terminal_id: {} signed in without a terminal; a {} works at the terminal they sign in on",
                claims.sub,
                claims.role.as_str()
            ))),
        }
    }

    /// Whether the caller acts in every store: an admin, or another process.
    pub fn may_act_in_every_store(&self) -> bool {
        match self {
            Self::Service => true,
            Self::Staff(claims) => claims.role == Role::Admin,
        }
    }

    /// The staff member, for records of who did what; `None` for a service.
    pub fn staff_id(&self) -> Option<&str> {
        match self {
            Self::Staff(claims) => Some(&claims.sub),
            Self::Service => None,
        }
    }
}

fn unchecked() -> Error {
    Error::Unauthenticated("sign in first: this call carries no checked access token".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staff(role: Role, store: Option<&str>, device: Option<&str>) -> Caller {
        Caller::Staff(Arc::new(Claims {
            sub: "casey".into(),
            role,
            store: store.map(Into::into),
            device: device.map(Into::into),
            iat: 0,
            exp: 0,
            jti: String::new(),
            sid: String::new(),
            scope: None,
        }))
    }

    #[test]
    fn staff_act_in_their_store_admins_and_services_in_every_one() {
        let cashier = staff(Role::Cashier, Some("store-1"), Some("till-1"));
        assert!(cashier.may_act_in("store-1").is_ok());
        let other = cashier.may_act_in("store-2").unwrap_err();
        assert_eq!(tonic::Status::from(other).code(), tonic::Code::PermissionDenied);
        assert!(staff(Role::Admin, None, None).may_act_in("store-2").is_ok());
        assert!(Caller::Service.may_act_in("store-2").is_ok());
    }

    #[test]
    fn cashiers_work_at_their_own_terminal_and_managers_in_the_back_office_at_any() {
        let cashier = staff(Role::Cashier, Some("store-1"), Some("till-1"));
        assert!(cashier.may_use_terminal("store-1", "till-1").is_ok());
        assert!(cashier.may_use_terminal("store-1", "till-2").is_err());
        assert!(cashier.may_use_terminal("store-2", "till-1").is_err(), "till-1 of another store");
        assert!(staff(Role::Supervisor, Some("store-1"), None).may_use_terminal("store-1", "till-2").is_err());
        assert!(staff(Role::Manager, Some("store-1"), None).may_use_terminal("store-1", "till-2").is_ok());
        assert!(staff(Role::Manager, Some("store-1"), Some("till-1")).may_use_terminal("store-1", "till-2").is_err());
        assert!(staff(Role::Admin, None, None).may_use_terminal("store-9", "till-9").is_ok());
    }

    #[test]
    fn a_request_that_did_not_pass_the_edge_is_refused() {
        let req = tonic::Request::new(());
        let err = Caller::of(&req).unwrap_err();
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::Unauthenticated);
    }
}
