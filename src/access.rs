//! Who may call which RPC: one table, which the edge (`edge::guard`) enforces and the tests read.
//!
//! Every RPC but signing in needs a signed-in staff member of at least a role (each role may do
//! all the one before it may): cashiers sell at their terminal, supervisors also refund,
//! managers also adjust stock, register terminals and read reports, admins also run the catalog
//! and the stores. Which store and terminal a staff member may act at is the handlers' check
//! (`platform::caller::Caller`), as the store is in the request. Another Red Store process
//! calls with the service token and may call everything, and only it may call the internal RPCs
//! (how a sales process applies its sales and refunds to inventory's stock), which are never
//! offered to browsers.
use redstore_platform::access_token::Role;

/// What a caller needs to call an RPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone who reaches the port: health, reflection, signing in.
    Open,
    /// A staff member signed in with at least this role, or another Red Store process.
    Staff(Role),
    /// Another Red Store process only: the service token, over native gRPC only.
    Service,
}

use Access::{Open, Service, Staff};
use Role::{Admin, Cashier, Manager, Supervisor};

const INVENTORY: &str = "/redstore.inventory.v1.InventoryService/";
const SALES: &str = "/redstore.sales.v1.SalesService/";
const AUTH: &str = "/redstore.auth.v1.AuthService/";

/// Every RPC of every Red Store service (`/package.Service/` prefix, method), with its access.
/// A test checks that it names every method of the protos, so a new RPC cannot go unclassified.
pub const RPCS: &[(&str, &str, Access)] = &[
    (INVENTORY, "CreateStore", Staff(Admin)),
    (INVENTORY, "GetStore", Staff(Cashier)),
    // Every store of the chain.
    (INVENTORY, "ListStores", Staff(Admin)),
    (INVENTORY, "RegisterTerminal", Staff(Manager)),
    (INVENTORY, "GetTerminal", Staff(Cashier)),
    (INVENTORY, "ListTerminals", Staff(Manager)),
    (INVENTORY, "CreateProduct", Staff(Admin)),
    (INVENTORY, "UpdateProduct", Staff(Admin)),
    (INVENTORY, "GetProduct", Staff(Cashier)),
    (INVENTORY, "GetProducts", Staff(Cashier)),
    (INVENTORY, "ListProducts", Staff(Cashier)),
    (INVENTORY, "LookupBarcode", Staff(Cashier)),
    (INVENTORY, "GetStock", Staff(Cashier)),
    (INVENTORY, "ListStock", Staff(Cashier)),
    (INVENTORY, "AdjustStock", Staff(Manager)),
    (INVENTORY, "ApplySale", Service),
    (INVENTORY, "ApplySales", Service),
    (INVENTORY, "ApplyRefund", Service),
    (INVENTORY, "ListAppliedCheckouts", Service),
    // Onboarding a chain: many stores at once.
    (INVENTORY, "ImportProducts", Staff(Admin)),
    (INVENTORY, "ImportStock", Staff(Admin)),
    (SALES, "ScanStream", Staff(Cashier)),
    (SALES, "Scan", Staff(Cashier)),
    (SALES, "GetCart", Staff(Cashier)),
    (SALES, "AddCartItem", Staff(Cashier)),
    (SALES, "SetCartItemQuantity", Staff(Cashier)),
    (SALES, "RemoveCartItem", Staff(Cashier)),
    (SALES, "ClearCart", Staff(Cashier)),
    // A line with a price override needs a supervisor: the handler checks it (`domain::may_override`).
    (SALES, "Checkout", Staff(Cashier)),
    (SALES, "GetSale", Staff(Cashier)),
    (SALES, "ListSales", Staff(Cashier)),
    (SALES, "Refund", Staff(Supervisor)),
    ("/redstore.analytics.v1.AnalyticsService/", "GetSalesReport", Staff(Manager)),
    ("/redstore.stream.v1.InventoryStreamService/", "WatchInventory", Staff(Cashier)),
    (AUTH, "RequestCode", Open),
    (AUTH, "VerifyCode", Open),
    (AUTH, "Refresh", Open),
    (AUTH, "SignOut", Open),
    (AUTH, "UnlockTerminal", Open),
    (AUTH, "IssueStreamTicket", Staff(Cashier)),
    (AUTH, "SetPin", Staff(Cashier)),
    (AUTH, "SwitchStaff", Staff(Cashier)),
    (AUTH, "CreateStaff", Staff(Manager)),
    (AUTH, "ListStaff", Staff(Manager)),
    (AUTH, "DeactivateStaff", Staff(Manager)),
    (AUTH, "ListAuditEvents", Staff(Manager)),
    (AUTH, "IssueDeviceCredential", Staff(Manager)),
    (AUTH, "RevokeDevice", Staff(Manager)),
];

/// The access a request path needs, with the RPC's method name when the table names it. Paths
/// the table does not name (health, reflection, unknown paths, which are answered UNIMPLEMENTED
/// or 404) are open; the live stream's is [`stream_store`]'s.
pub fn of(path: &str) -> (Access, Option<&'static str>) {
    RPCS.iter()
        .find(|(service, method, _)| path.strip_prefix(service) == Some(method))
        .map_or((Open, None), |(_, method, access)| (*access, Some(method)))
}

/// The store whose live stream (SSE) a path opens, if it is one: a cashier of that store may.
pub fn stream_store(path: &str) -> Option<&str> {
    let store = path.strip_prefix("/v1/stores/")?.strip_suffix("/inventory/events")?;
    (!store.is_empty() && !store.contains('/')).then_some(store)
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    /// Every method the protos declare, as `/package.Service/Method`.
    fn declared() -> Vec<String> {
        let set = prost_types::FileDescriptorSet::decode(redstore_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
        let mut out = Vec::new();
        for file in set.file {
            let package = file.package().to_owned();
            for service in &file.service {
                for method in &service.method {
                    out.push(format!("/{package}.{}/{}", service.name(), method.name()));
                }
            }
        }
        out
    }

    #[test]
    fn the_table_names_every_rpc_of_the_protos_once() {
        let declared = declared();
        let mut listed: Vec<String> = RPCS.iter().map(|(service, method, _)| format!("{service}{method}")).collect();
        for path in &declared {
            assert!(listed.contains(path), "{path} is not in access::RPCS: decide who may call it");
        }
        for path in &listed {
            assert!(declared.contains(path), "access::RPCS names {path}, which no proto declares");
        }
        let count = listed.len();
        listed.sort();
        listed.dedup();
        assert_eq!(listed.len(), count, "access::RPCS names an RPC twice");
    }

    #[test]
    fn applying_sales_and_refunds_is_for_services_only() {
        for method in ["ApplySale", "ApplySales", "ApplyRefund", "ListAppliedCheckouts"] {
            let path = format!("{INVENTORY}{method}");
            assert_eq!(of(&path), (Access::Service, Some(method)), "{path}");
        }
        assert_eq!(of(&format!("{INVENTORY}GetStock")).0, Staff(Cashier));
        assert_eq!(of(&format!("{INVENTORY}ApplySaleX")), (Open, None), "a longer name is another path");
        assert_eq!(of("/grpc.health.v1.Health/Check"), (Open, None));
        assert_eq!(of(&format!("{AUTH}RequestCode")).0, Open, "signing in needs no token");
    }
}

#[cfg(test)]
mod stream_paths {
    use super::stream_store;

    #[test]
    fn the_live_stream_names_its_store() {
        assert_eq!(stream_store("/v1/stores/store-1/inventory/events"), Some("store-1"));
        assert_eq!(stream_store("/v1/stores//inventory/events"), None);
        assert_eq!(stream_store("/v1/stores/a/b/inventory/events"), None);
        assert_eq!(stream_store("/v1/stores/store-1/inventory"), None);
    }
}
