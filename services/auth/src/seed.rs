//! The demo chain's staff: one of each role, so every part of the system can be tried signed in.

use redstore_platform::access_token::Role;
use redstore_platform::error::Result;

use crate::domain::StaffRecord;
use crate::store::AuthStore;

/// (staff id, name, role, store)
pub const DEMO_STAFF: &[(&str, &str, Role, Option<&str>)] = &[
    ("cashier-1", "Casey (cashier, Central)", Role::Cashier, Some("store-1")),
    ("supervisor-1", "Sam (supervisor, Central)", Role::Supervisor, Some("store-1")),
    ("manager-1", "Morgan (manager, Central)", Role::Manager, Some("store-1")),
    ("cashier-2", "Charlie (cashier, Harbour)", Role::Cashier, Some("store-2")),
    ("manager-2", "Max (manager, Harbour)", Role::Manager, Some("store-2")),
    ("admin", "Alex (admin, every store)", Role::Admin, None),
];

/// Adds the demo staff who are missing; how many it added.
pub async fn seed_demo_staff(store: &dyn AuthStore) -> Result<usize> {
    let mut added = 0;
    for (staff_id, name, role, store_id) in DEMO_STAFF {
        let staff = StaffRecord {
            staff_id: (*staff_id).into(),
            display_name: (*name).into(),
            role: *role,
            store_id: store_id.map(Into::into),
            contact: format!("{staff_id}@demo.invalid"),
            active: true,
        };
        added += usize::from(store.add_staff(staff).await?);
    }
    Ok(added)
}
