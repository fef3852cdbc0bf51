//! Who may call which RPC: one table, which the edge (`edge::guard`) enforces and the tests read.
//!
//! Internal RPCs are how a sales process applies its sales and refunds to inventory's stock: they
//! need the service token and are never offered to browsers (gRPC-web). The other RPCs are the
//! terminals', managers' and operators'; until staff sign-in lands (issue #15) anyone who reaches
//! the port may call them, within the browser rules of `edge`.

/// What a caller needs to call an RPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone who reaches the port (health and reflection, and, until sign-in, every RPC a
    /// terminal, manager or operator calls).
    Anyone,
    /// Another Red Store process: the service token, over native gRPC only.
    Service,
}

const INVENTORY: &str = "/redstore.inventory.v1.InventoryService/";
const SALES: &str = "/redstore.sales.v1.SalesService/";
const AUTH: &str = "/redstore.auth.v1.AuthService/";

/// Every RPC of every Red Store service (`/package.Service/` prefix, method), with its access.
/// A test checks that it names every method of the protos, so a new RPC cannot go unclassified.
pub const RPCS: &[(&str, &str, Access)] = &[
    (INVENTORY, "CreateStore", Access::Anyone),
    (INVENTORY, "GetStore", Access::Anyone),
    (INVENTORY, "ListStores", Access::Anyone),
    (INVENTORY, "RegisterTerminal", Access::Anyone),
    (INVENTORY, "GetTerminal", Access::Anyone),
    (INVENTORY, "ListTerminals", Access::Anyone),
    (INVENTORY, "CreateProduct", Access::Anyone),
    (INVENTORY, "UpdateProduct", Access::Anyone),
    (INVENTORY, "GetProduct", Access::Anyone),
    (INVENTORY, "GetProducts", Access::Anyone),
    (INVENTORY, "ListProducts", Access::Anyone),
    (INVENTORY, "LookupBarcode", Access::Anyone),
    (INVENTORY, "GetStock", Access::Anyone),
    (INVENTORY, "ListStock", Access::Anyone),
    (INVENTORY, "AdjustStock", Access::Anyone),
    (INVENTORY, "ApplySale", Access::Service),
    (INVENTORY, "ApplySales", Access::Service),
    (INVENTORY, "ApplyRefund", Access::Service),
    (INVENTORY, "ListAppliedCheckouts", Access::Service),
    (INVENTORY, "ImportProducts", Access::Anyone),
    (INVENTORY, "ImportStock", Access::Anyone),
    (SALES, "ScanStream", Access::Anyone),
    (SALES, "Scan", Access::Anyone),
    (SALES, "GetCart", Access::Anyone),
    (SALES, "AddCartItem", Access::Anyone),
    (SALES, "SetCartItemQuantity", Access::Anyone),
    (SALES, "RemoveCartItem", Access::Anyone),
    (SALES, "ClearCart", Access::Anyone),
    (SALES, "Checkout", Access::Anyone),
    (SALES, "GetSale", Access::Anyone),
    (SALES, "ListSales", Access::Anyone),
    (SALES, "Refund", Access::Anyone),
    ("/redstore.analytics.v1.AnalyticsService/", "GetSalesReport", Access::Anyone),
    ("/redstore.stream.v1.InventoryStreamService/", "WatchInventory", Access::Anyone),
    (AUTH, "RequestCode", Access::Anyone),
    (AUTH, "VerifyCode", Access::Anyone),
    (AUTH, "Refresh", Access::Anyone),
    (AUTH, "SignOut", Access::Anyone),
];

/// The access a request path needs, with the RPC's method name when the table names it. Paths
/// the table does not name (health, reflection, the SSE routes, unknown paths, which are answered
/// UNIMPLEMENTED or 404) need nothing.
pub fn of(path: &str) -> (Access, Option<&'static str>) {
    RPCS.iter()
        .find(|(service, method, _)| path.strip_prefix(service) == Some(method))
        .map_or((Access::Anyone, None), |(_, method, access)| (*access, Some(method)))
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
        assert_eq!(of(&format!("{INVENTORY}GetStock")).0, Access::Anyone);
        assert_eq!(of(&format!("{INVENTORY}ApplySaleX")), (Access::Anyone, None), "a longer name is another path");
        assert_eq!(of("/grpc.health.v1.Health/Check"), (Access::Anyone, None));
    }
}
