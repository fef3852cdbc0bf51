//! Who may call what (issue #15): every RPC of `access::RPCS` against no token and each role,
//! another store's requests, terminals, refused tokens, ended sessions, and the live stream's
//! tickets, in both shapes.

use std::time::Duration;

use prost::Message as _;
use redstore::access::{Access, RPCS};
use redstore_platform::access_token::{Bearer, Claims, Role, SigningKey, TokenKeys};
use redstore_proto::auth::{IssueStreamTicketRequest, RequestCodeRequest, SignOutRequest};
use redstore_proto::inventory::GetStockRequest;
use redstore_proto::sales::{GetSaleRequest, RefundLine, RefundRequest};
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::fuzz::{Contracts, Raw};
use crate::helpers::*;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A token as sign-in issues them, signed by `keys`, expiring `ttl_secs` from now.
fn token_by(keys: &TokenKeys, role: Role, store: Option<&str>, device: Option<&str>, ttl_secs: i64) -> String {
    keys.issue(&Claims {
        sub: format!("{}-staff", role.as_str()),
        role,
        store: store.map(Into::into),
        device: device.map(Into::into),
        iat: now() as u64,
        exp: (now() + ttl_secs) as u64,
        jti: key(),
        sid: key(),
        scope: None,
    })
}

fn token(role: Role, store: Option<&str>, device: Option<&str>) -> String {
    token_by(test_keys(), role, store, device, 900)
}

/// Sends `authorization: Bearer <token>` when there is a token, nothing otherwise.
#[derive(Clone)]
struct MaybeBearer(Option<Bearer>);

impl tonic::service::Interceptor for MaybeBearer {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        match &mut self.0 {
            Some(bearer) => bearer.call(request),
            None => Ok(request),
        }
    }
}

/// What `path` answers `body` (one message) sent with `token`: its status, or OK once its
/// response stream ends.
async fn call(app: &TestApp, token: Option<&str>, path: &str, body: Vec<u8>) -> (Code, String) {
    let bearer = MaybeBearer(token.map(|t| Bearer::new(t).expect("a token")));
    let mut grpc = tonic::client::Grpc::new(InterceptedService::<Channel, _>::new(app.raw_channel(), bearer));
    grpc.ready().await.expect("ready");
    let request = tonic::Request::new(futures::stream::iter(vec![body]));
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        match grpc.streaming(request, PathAndQuery::try_from(path).expect("path"), Raw).await {
            Err(status) => (status.code(), status.message().to_owned()),
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => break (Code::Ok, String::new()),
                        Err(status) => break (status.code(), status.message().to_owned()),
                    }
                }
            }
        }
    });
    answer.await.unwrap_or_else(|_| panic!("{path} hung"))
}

const REFUSED: [Code; 2] = [Code::Unauthenticated, Code::PermissionDenied];

/// The access token of each role as the demo staff hold them: cashiers and supervisors at a
/// terminal, managers and admins in the back office.
fn roles() -> [(Role, String); 4] {
    [
        (Role::Cashier, token(Role::Cashier, Some("store-1"), Some("till-1"))),
        (Role::Supervisor, token(Role::Supervisor, Some("store-1"), Some("till-1"))),
        (Role::Manager, token(Role::Manager, Some("store-1"), None)),
        (Role::Admin, token(Role::Admin, None, None)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_no_token_and_each_role_exactly_as_the_access_table_says() {
    let app = TestApp::spawn().await;
    let roles = roles();
    for (service, method, access) in RPCS {
        let path = format!("{service}{method}");
        // An empty request: where the caller may call, the handler refuses it as invalid (or
        // answers an empty read); the table's refusals come first.
        let (code, message) = call(&app, None, &path, Vec::new()).await;
        match access {
            Access::Open => assert!(!REFUSED.contains(&code), "{path} is open, answered {code:?}: {message}"),
            _ => assert_eq!(code, Code::Unauthenticated, "{path} without a token: {message}"),
        }
        for (role, token) in &roles {
            let (code, message) = call(&app, Some(token), &path, Vec::new()).await;
            match access {
                Access::Open => assert!(!REFUSED.contains(&code), "{path} as {role:?}: {code:?} {message}"),
                Access::Staff(least) if role >= least => {
                    assert!(!REFUSED.contains(&code), "{path} is a {least:?}'s; a {role:?} got {code:?}: {message}")
                }
                Access::Staff(least) => {
                    assert_eq!(code, Code::PermissionDenied, "{path} needs a {least:?}; a {role:?}: {message}");
                    assert!(message.contains(&format!("needs a {}", least.as_str())), "{message}");
                }
                Access::Service => {
                    assert_eq!(code, Code::Unauthenticated, "{path} is internal; a {role:?}'s token: {message}")
                }
            }
        }
        // Another Red Store process calls anything with the service token.
        let (code, message) = call(&app, Some(SERVICE_TOKEN), &path, Vec::new()).await;
        assert!(!REFUSED.contains(&code), "{path} with the service token: {code:?} {message}");
    }
}

/// A request naming `store_id` (and `terminal_id`, `idempotency_key`, `staff_id` and `role` where
/// the message has them),
/// encoded by the field numbers the contract gives them.
fn naming(contracts: &Contracts, input: &str, store_id: &str) -> Option<Vec<u8>> {
    let message = &contracts.messages[input];
    let number = |name: &str| message.field.iter().find(|f| f.name() == name).map(|f| f.number() as u32);
    let store = number("store_id")?;
    let mut body = Vec::new();
    prost::encoding::string::encode(store, &store_id.to_owned(), &mut body);
    if let Some(n) = number("terminal_id") {
        prost::encoding::string::encode(n, &"till-1".to_owned(), &mut body);
    }
    if let Some(n) = number("idempotency_key") {
        prost::encoding::string::encode(n, &key(), &mut body);
    }
    // Adding a staff member names who and as what before where.
    if let Some(n) = number("staff_id") {
        prost::encoding::string::encode(n, &"newcomer-1".to_owned(), &mut body);
    }
    if let Some(n) = number("role") {
        prost::encoding::int32::encode(n, &(redstore_proto::auth::Role::Cashier as i32), &mut body);
    }
    Some(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_1_token_reads_and_changes_nothing_of_store_2_through_any_rpc() {
    let app = TestApp::spawn().await;
    let contracts = Contracts::load();
    let mut methods = contracts.methods.clone();
    methods.push((
        "/redstore.stream.v1.InventoryStreamService/WatchInventory".into(),
        ".redstore.stream.v1.WatchInventoryRequest".into(),
    ));
    let mut checked = Vec::new();
    for (path, input) in &methods {
        let Some((_, _, Access::Staff(least))) = RPCS.iter().find(|(s, m, _)| format!("{s}{m}") == *path) else {
            continue;
        };
        if *least == Role::Admin {
            continue;
        }
        let Some(body) = naming(&contracts, input, "store-2") else { continue };
        // The least role that may call it, in store-1 (at till-1 where a terminal is needed).
        let device = (*least < Role::Manager).then_some("till-1");
        let token = token(*least, Some("store-1"), device);
        let (code, message) = call(&app, Some(&token), path, body).await;
        assert_eq!(code, Code::PermissionDenied, "{path} for store-2 with a store-1 {least:?}'s token: {message}");
        assert!(message.starts_with("store_id:"), "{path}: the refusal names the field: {message}");
        checked.push(path.clone());
    }
    assert!(checked.len() >= 18, "every store-scoped RPC was tried: {checked:?}");
    assert_eq!(app.stock("store-2", "SKU-0001").await, 25, "store-2's stock is untouched");

    // Sales found by id: another store's sale is neither shown nor refunded.
    let sale = app
        .sales()
        .checkout(checkout(&key(), "store-2", "till-1", &[("SKU-0001", 2)], vec![cash(1000)]))
        .await
        .expect("a store-2 sale")
        .into_inner()
        .sale
        .expect("sale");
    let supervisor = app.channel_with(&token(Role::Supervisor, Some("store-1"), Some("till-1")));
    let mut sales = redstore_proto::sales::sales_service_client::SalesServiceClient::new(supervisor);
    let read = sales.get_sale(GetSaleRequest { sale_id: sale.sale_id.clone() }).await.expect_err("store-2's sale");
    assert_eq!(read.code(), Code::PermissionDenied, "{read:?}");
    let refund = RefundRequest {
        idempotency_key: key(),
        sale_id: sale.sale_id.clone(),
        lines: vec![RefundLine { sku: "SKU-0001".into(), quantity: 2 }],
        reason: "not ours".into(),
        terminal_id: String::new(),
    };
    let refused = sales.refund(refund).await.expect_err("a refund of store-2's sale");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(app.stock("store-2", "SKU-0001").await, 23, "nothing was put back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cashier_signed_in_at_a_terminal_sells_there_and_nowhere_else() {
    let app = TestApp::spawn().await;
    let session = app.sign_in("cashier-1", "till-2").await;
    let mut sales =
        redstore_proto::sales::sales_service_client::SalesServiceClient::new(app.channel_with(&session.access_token));
    let here = checkout(&key(), "store-1", "till-2", &[("SKU-0001", 1)], vec![cash(500)]);
    sales.checkout(here).await.expect("a sale at the cashier's own terminal");
    let there = checkout(&key(), "store-1", "till-3", &[("SKU-0001", 1)], vec![cash(500)]);
    let refused = sales.checkout(there).await.expect_err("another terminal");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().starts_with("terminal_id:"), "{}", refused.message());
    let refund = RefundRequest { idempotency_key: key(), sale_id: "x".into(), ..Default::default() };
    let refused = sales.refund(refund).await.expect_err("a cashier does not refund");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(app.stock("store-1", "SKU-0001").await, 39, "one sale, at till-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tampered_foreign_and_ticket_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let get = || GetStockRequest { store_id: "store-1".into(), sku: "SKU-0001".into() };
    let stock = |token: String| {
        let channel = app.channel_with(&token);
        let request = get();
        async move {
            redstore_proto::inventory::inventory_service_client::InventoryServiceClient::new(channel)
                .get_stock(request)
                .await
        }
    };
    stock(token(Role::Cashier, Some("store-1"), Some("till-1"))).await.expect("a good token");

    let expired = token_by(test_keys(), Role::Cashier, Some("store-1"), Some("till-1"), -60);
    let foreign = TokenKeys::new(SigningKey::generate().unwrap(), []);
    let foreign = token_by(&foreign, Role::Admin, None, None, 900);
    // A cashier's header and signature on an admin's claims.
    let cashier = token(Role::Cashier, Some("store-1"), Some("till-1"));
    let admin = token(Role::Admin, None, None);
    let (c, a): (Vec<&str>, Vec<&str>) = (cashier.split('.').collect(), admin.split('.').collect());
    let tampered = format!("{}.{}.{}", c[0], a[1], c[2]);
    for (what, bad, says) in [
        ("expired", expired, "expired"),
        ("signed by another key", foreign, "key this server does not know"),
        ("tampered", tampered, "signature"),
        ("not a token", "Basic dXNlcjpwYXNz".to_owned(), "not a token"),
    ] {
        let refused = stock(bad).await.expect_err(what);
        assert_eq!(refused.code(), Code::Unauthenticated, "{what}: {refused:?}");
        assert!(refused.message().contains(says), "{what}: {}", refused.message());
    }

    // A stream ticket opens a live stream and nothing else.
    let mut auth = redstore_proto::auth::auth_service_client::AuthServiceClient::new(app.channel_with(&cashier));
    let ticket = auth.issue_stream_ticket(IssueStreamTicketRequest { store_id: "store-1".into() }).await;
    let ticket = ticket.expect("a ticket").into_inner().ticket;
    let refused = stock(ticket).await.expect_err("a ticket as an access token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(refused.message().contains("stream ticket"), "{}", refused.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_ends_the_access_token_at_once() {
    let app = TestApp::spawn().await;
    let session = app.sign_in("manager-1", "").await;
    let mut inventory = redstore_proto::inventory::inventory_service_client::InventoryServiceClient::new(
        app.channel_with(&session.access_token),
    );
    let get = || GetStockRequest { store_id: "store-1".into(), sku: "SKU-0001".into() };
    inventory.get_stock(get()).await.expect("signed in");
    app.auth().sign_out(SignOutRequest { refresh_token: session.refresh_token }).await.expect("sign out");
    let refused = inventory.get_stock(get()).await.expect_err("signed out");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(refused.message().contains("ended"), "{}", refused.message());
}

/// The live stream (SSE) with `ticket` or `bearer`: its HTTP status.
async fn sse_with(app: &TestApp, store: &str, ticket: Option<&str>, bearer: Option<&str>) -> reqwest::Response {
    let query = ticket.map(|t| format!("?ticket={t}")).unwrap_or_default();
    let mut request = reqwest::Client::new().get(format!("{}/v1/stores/{store}/inventory/events{query}", app.url));
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.send().await.expect("an answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browsers_live_stream_opens_with_a_ticket_of_its_store_and_sees_only_that_store() {
    let app = TestApp::spawn().await;
    let cashier_2 = app.sign_in("cashier-2", "till-1").await;
    let mut auth =
        redstore_proto::auth::auth_service_client::AuthServiceClient::new(app.channel_with(&cashier_2.access_token));
    let ticket = |store: &str| IssueStreamTicketRequest { store_id: store.into() };
    let other = auth.issue_stream_ticket(ticket("store-1")).await.expect_err("a ticket for another store");
    assert_eq!(other.code(), Code::PermissionDenied);
    let ticket = auth.issue_stream_ticket(ticket("store-2")).await.expect("a ticket").into_inner().ticket;

    assert_eq!(sse_with(&app, "store-2", None, None).await.status(), 401, "no token, no stream");
    assert_eq!(sse_with(&app, "store-1", Some(&ticket), None).await.status(), 403, "another store's stream");
    let access_in_url = sse_with(&app, "store-2", Some(&cashier_2.access_token), None).await;
    assert_eq!(access_in_url.status(), 401, "an access token is never taken from a URL");
    assert_eq!(sse_with(&app, "store-2", None, Some(&ticket)).await.status(), 401, "a ticket is not a bearer");

    // Store-2's stream, opened with its ticket, carries store-2's sales and never store-1's.
    let mut stream = sse_with(&app, "store-2", Some(&ticket), None).await;
    assert_eq!(stream.status(), 200);
    for (store, sku) in [("store-1", "SKU-0003"), ("store-2", "SKU-0004")] {
        let sale = checkout(&key(), store, "till-1", &[(sku, 1)], vec![cash(1000)]);
        app.sales().checkout(sale).await.expect("a sale");
    }
    let mut seen = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        // The seed's event is the store's first, the sale's its second.
        while !seen.contains("\"storeSeq\":\"2\"") {
            let chunk = stream.chunk().await.expect("read").expect("open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    });
    read.await.expect("store-2's sale arrives");
    let events = seen.matches("\"storeId\":").count();
    assert!(events >= 2, "the seed's and the sale's events: {seen}");
    assert_eq!(seen.matches("\"storeId\":\"store-2\"").count(), events, "nothing of store-1: {seen}");

    // gRPC-web alike: store-2's cashier cannot watch store-1.
    let watch = redstore_proto::stream::WatchInventoryRequest { store_id: "store-1".into(), ..Default::default() };
    let reply = crate::interop::grpc_web_with(
        &app,
        "redstore.stream.v1.InventoryStreamService/WatchInventory",
        &watch,
        &[("authorization", &format!("Bearer {}", cashier_2.access_token))],
    )
    .await;
    let status = reply.grpc("grpc-status");
    assert_eq!(status.as_deref(), Some("7"), "PERMISSION_DENIED over gRPC-web: {status:?}");
}

/// The distributed shape: a session ended at the auth process is refused by the inventory process
/// within a second (each process reads the ended sessions every half second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_in_one_process_is_refused_by_another_within_a_second() {
    let db = redstore_platform::pg::scratch::ScratchDb::create(&redstore::server::pg_migrations())
        .await
        .expect("scratch database");
    let url = db.app_url.clone();
    let inventory = Process::start(&["serve", "inventory", "--demo", "--database-url", &url]);
    let auth_process = Process::start(&["serve", "auth", "--demo", "--database-url", &url]);
    let mut auth = redstore_proto::auth::auth_service_client::AuthServiceClient::new(auth_process.raw_channel().await);
    let request = RequestCodeRequest {
        idempotency_key: key(),
        staff_id: "manager-1".into(),
        terminal_id: String::new(),
        ..Default::default()
    };
    let challenge_id = auth.request_code(request).await.expect("a code").into_inner().challenge_id;
    let code = auth_process.logged_code().await;
    let session = auth
        .verify_code(verify_code(&challenge_id, &code))
        .await
        .expect("signed in")
        .into_inner()
        .session
        .expect("session");

    let channel = with_token(inventory.raw_channel().await, &session.access_token);
    let mut stock = redstore_proto::inventory::inventory_service_client::InventoryServiceClient::new(channel);
    let get = || GetStockRequest { store_id: "store-1".into(), sku: "SKU-0001".into() };
    stock.get_stock(get()).await.expect("the other process takes the token");
    auth.sign_out(SignOutRequest { refresh_token: session.refresh_token }).await.expect("sign out");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let refused = stock.get_stock(get()).await.expect_err("the session ended a second ago");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    drop((inventory, auth_process));
    db.drop_db().await.expect("drop scratch database");
}

/// Unused field numbers keep their meaning: a body encoded here decodes as the contract says.
#[test]
fn requests_naming_a_store_decode_as_the_contract_says() {
    let contracts = Contracts::load();
    let body = naming(&contracts, ".redstore.inventory.v1.GetStockRequest", "store-2").expect("store_id");
    assert_eq!(GetStockRequest::decode(body.as_slice()).unwrap().store_id, "store-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_actions_are_in_the_audit_log_with_who_where_when_and_how_they_ended() {
    use redstore_proto::auth::{AuditEvent, ListAuditEventsRequest};
    use redstore_proto::inventory::inventory_service_client::InventoryServiceClient;
    use redstore_proto::inventory::{AdjustStockRequest, AdjustmentReason, UpdateProductRequest};
    use redstore_proto::sales::sales_service_client::SalesServiceClient;
    let app = TestApp::spawn().await;

    let manager = app.sign_in("manager-1", "").await;
    let challenge = app.request_code("cashier-1", "till-1").await;
    let wrong = if app.inbox.last("cashier-1") == "000000" { "000001" } else { "000000" };
    app.auth().verify_code(verify_code(&challenge, wrong)).await.expect_err("a wrong code");
    let mut as_manager = InventoryServiceClient::new(app.channel_with(&manager.access_token));
    let adjust = AdjustStockRequest {
        idempotency_key: key(),
        store_id: "store-1".into(),
        sku: "SKU-0002".into(),
        quantity_delta: -2,
        reason: AdjustmentReason::Damaged as i32,
        note: "dropped crate".into(),
    };
    as_manager.adjust_stock(adjust.clone()).await.expect("adjusted");
    let cashier = app.sign_in("cashier-1", "till-1").await;
    let reaching = InventoryServiceClient::new(app.channel_with(&cashier.access_token)).adjust_stock(adjust).await;
    assert_eq!(reaching.expect_err("a cashier adjusts nothing").code(), Code::PermissionDenied);
    let sale = checkout(&key(), "store-1", "till-1", &[("SKU-0001", 2)], vec![cash(500)]);
    let sale = app.sales().checkout(sale).await.expect("a sale").into_inner().sale.expect("sale");
    let supervisor = app.sign_in("supervisor-1", "till-1").await;
    let refund = RefundRequest {
        idempotency_key: key(),
        sale_id: sale.sale_id.clone(),
        lines: vec![RefundLine { sku: "SKU-0001".into(), quantity: 1 }],
        reason: "customer changed mind".into(),
        terminal_id: "till-1".into(),
    };
    SalesServiceClient::new(app.channel_with(&supervisor.access_token)).refund(refund).await.expect("refunded");
    let price = UpdateProductRequest {
        idempotency_key: key(),
        sku: "SKU-0005".into(),
        price: Some(eur(1)),
        ..Default::default()
    };
    app.inventory().update_product(price).await.expect("a price change");

    let list = |store: &str, token: &str| {
        let mut auth = redstore_proto::auth::auth_service_client::AuthServiceClient::new(app.channel_with(token));
        let request = ListAuditEventsRequest { store_id: store.into(), page: None, chain: store.is_empty() };
        async move { auth.list_audit_events(request).await.map(|r| r.into_inner().events) }
    };
    let events = list("store-1", &manager.access_token).await.expect("store-1's log");
    let find = |action: &str, staff: &str| -> AuditEvent {
        events
            .iter()
            .find(|e| e.action == action && e.staff_id == staff)
            .unwrap_or_else(|| panic!("no {action} by {staff} in {events:#?}"))
            .clone()
    };
    assert_eq!(find("auth.signed_in", "manager-1").outcome, "ok");
    let refused_code = find("auth.code_refused", "cashier-1");
    assert!(refused_code.outcome.starts_with("Unauthenticated"), "{refused_code:?}");
    assert_eq!(refused_code.terminal_id, "till-1");
    let adjusted = find("stock.adjusted", "manager-1");
    assert_eq!((adjusted.subject.as_str(), adjusted.outcome.as_str()), ("SKU-0002", "ok"));
    assert!(adjusted.detail.contains("dropped crate") && adjusted.detail.contains("-2"), "{adjusted:?}");
    assert_eq!(adjusted.address, "127.0.0.1");
    assert!(adjusted.at.is_some());
    let refunded = find("sale.refunded", "supervisor-1");
    assert_eq!((refunded.subject.as_str(), refunded.terminal_id.as_str()), (sale.sale_id.as_str(), "till-1"));
    assert!(refunded.detail.contains("customer changed mind"), "{refunded:?}");
    let reached = find("access.refused", "cashier-1");
    assert!(reached.subject == "AdjustStock" && reached.outcome.starts_with("PermissionDenied"), "{reached:?}");
    assert!(events.windows(2).all(|w| w[0].event_id > w[1].event_id), "newest first");

    // The chain's log (the catalog) is an admin's; another store's is not the manager's.
    let chain = list("", &admin_token()).await.expect("the chain's log");
    let changed = chain.iter().find(|e| e.action == "product.updated").expect("the price change");
    assert!(changed.subject == "SKU-0005" && changed.detail.contains("price 1 EUR"), "{changed:?}");
    assert_eq!(list("", &manager.access_token).await.expect_err("the chain's").code(), Code::PermissionDenied);
    assert_eq!(list("store-2", &manager.access_token).await.expect_err("store-2's").code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_override_is_a_supervisors_and_the_audit_log_has_who_tried_and_how_it_ended() {
    use redstore_proto::auth::ListAuditEventsRequest;
    use redstore_proto::inventory::GetStockRequest;
    use redstore_proto::sales::sales_service_client::SalesServiceClient;
    let app = TestApp::spawn().await;
    let stock = || async {
        let request = GetStockRequest { store_id: "store-1".into(), sku: "SKU-0005".into() };
        app.inventory().get_stock(request).await.expect("stock").into_inner().stock.expect("a level").quantity
    };
    let before = stock().await;
    let overridden = |till: &str| {
        let mut sale = checkout(&key(), "store-1", till, &[("SKU-0005", 1)], vec![cash(1000)]);
        sale.lines[0].unit_price_override = Some(eur(100));
        sale.lines[0].override_reason = "dented tin".into();
        sale
    };

    let cashier = app.sign_in("cashier-1", "till-2").await;
    let refused = SalesServiceClient::new(app.channel_with(&cashier.access_token)).checkout(overridden("till-2")).await;
    let refused = refused.expect_err("a cashier overrides no price");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().starts_with("lines[0].unit_price_override"), "{}", refused.message());
    assert_eq!(stock().await, before, "nothing was sold");

    let supervisor = app.sign_in("supervisor-1", "till-1").await;
    let sale = SalesServiceClient::new(app.channel_with(&supervisor.access_token)).checkout(overridden("till-1")).await;
    let sale = sale.expect("a supervisor's override").into_inner().sale.expect("sale");
    assert_eq!((sale.total.clone(), sale.lines[0].override_reason.as_str()), (Some(eur(100)), "dented tin"));
    assert_eq!(stock().await, before - 1);

    let manager = app.sign_in("manager-1", "").await;
    let mut auth =
        redstore_proto::auth::auth_service_client::AuthServiceClient::new(app.channel_with(&manager.access_token));
    let request = ListAuditEventsRequest { store_id: "store-1".into(), page: None, chain: false };
    let events = auth.list_audit_events(request).await.expect("store-1's log").into_inner().events;
    let overrides: Vec<_> = events.iter().filter(|e| e.action == "sale.price_overridden").collect();
    let by = |staff: &str| {
        overrides.iter().find(|e| e.staff_id == staff).unwrap_or_else(|| panic!("{staff}: {overrides:#?}"))
    };
    let done = by("supervisor-1");
    assert_eq!(
        (done.subject.as_str(), done.terminal_id.as_str(), done.outcome.as_str()),
        (sale.sale_id.as_str(), "till-1", "ok")
    );
    assert!(done.detail.contains("SKU-0005") && done.detail.contains("dented tin"), "{done:?}");
    let tried = by("cashier-1");
    assert!(tried.outcome.starts_with("PermissionDenied"), "{tried:?}");
    assert_eq!(tried.terminal_id, "till-2");
}
