//! Staff sign-in (`redstore.auth.v1.AuthService`): one-time codes, sessions, refresh tokens, the
//! limits on guessing and on asking, in both shapes.

use std::time::Duration;

use redstore_platform::access_token::Role;
use redstore_proto::auth::{
    CreateStaffRequest, DeactivateStaffRequest, IssueDeviceCredentialRequest, ListStaffRequest, RefreshRequest,
    RequestCodeRequest, Session, SetPinRequest, SignOutRequest, SwitchStaffRequest, UnlockTerminalRequest,
};
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::helpers::{Ch, Process, TestApp, key, verify_code};

fn refresh(token: &str) -> RefreshRequest {
    RefreshRequest { idempotency_key: key(), refresh_token: token.into() }
}

/// A code of six digits that is not `code`.
fn other_than(code: &str) -> String {
    let n: u32 = code.parse().expect("six digits");
    format!("{:06}", (n + 1) % 1_000_000)
}

async fn refreshed(app: &TestApp, request: RefreshRequest) -> Result<Session, tonic::Status> {
    app.auth().refresh(request).await.map(|r| r.into_inner().session.expect("a session"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cashier_signs_in_with_the_code_sent_and_holds_a_token_of_staff_role_store_and_terminal() {
    let app = TestApp::spawn().await;
    let session = app.sign_in("cashier-1", "till-1").await;

    let staff = session.staff.clone().expect("staff");
    assert_eq!((staff.staff_id.as_str(), staff.store_id.as_str()), ("cashier-1", "store-1"));
    assert_eq!(staff.role, redstore_proto::auth::Role::Cashier as i32);
    assert_eq!(session.terminal_id, "till-1");
    let claims = app.token_keys().verify(&session.access_token).expect("the access token verifies");
    assert_eq!(claims.sub, "cashier-1");
    assert_eq!(claims.role, Role::Cashier);
    assert_eq!(claims.store.as_deref(), Some("store-1"));
    assert_eq!(claims.device.as_deref(), Some("till-1"));
    assert_eq!(claims.sid, session.session_id);
    let lifetime = claims.exp - claims.iat;
    assert!(
        (4 * 60..=5 * 60).contains(&lifetime),
        "a terminal's access tokens last its idle lock, 5 minutes, not {lifetime} s"
    );
    assert_eq!(app.inbox.codes("cashier-1").len(), 1, "one code was sent");

    let next = refreshed(&app, refresh(&session.refresh_token)).await.expect("the refresh token is traded");
    assert_eq!(next.session_id, session.session_id, "the same session");
    assert_ne!(next.refresh_token, session.refresh_token, "refresh tokens rotate");
    let renewed = app.token_keys().verify(&next.access_token).expect("the new access token verifies");
    assert_eq!((renewed.sub.as_str(), renewed.sid.as_str()), ("cashier-1", session.session_id.as_str()));

    // An admin works across stores: their token names no store.
    let admin = app.sign_in("admin", "").await;
    let claims = app.token_keys().verify(&admin.access_token).expect("verifies");
    assert_eq!((claims.role, claims.store), (Role::Admin, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_verifies_once_and_the_sixth_attempt_is_refused_even_with_the_right_code() {
    let app = TestApp::spawn().await;
    let challenge = app.request_code("supervisor-1", "till-2").await;
    let code = app.inbox.last("supervisor-1");
    for left in (0..5).rev() {
        let wrong =
            app.auth().verify_code(verify_code(&challenge, &other_than(&code))).await.expect_err("a wrong code");
        assert_eq!(wrong.code(), Code::Unauthenticated);
        let says = if left == 0 { "no attempts are left".to_owned() } else { format!("{left} attempt") };
        assert!(wrong.message().contains(&says), "{}", wrong.message());
    }
    let sixth = app.auth().verify_code(verify_code(&challenge, &code)).await.expect_err("the sixth attempt");
    assert_eq!(sixth.code(), Code::Unauthenticated);
    assert!(sixth.message().contains("5 attempts were made"), "{}", sixth.message());

    let challenge = app.request_code("supervisor-1", "till-2").await;
    let code = app.inbox.last("supervisor-1");
    app.auth().verify_code(verify_code(&challenge, &code)).await.expect("the right code");
    let again = app.auth().verify_code(verify_code(&challenge, &code)).await.expect_err("a used code");
    assert_eq!(again.code(), Code::Unauthenticated);
    assert!(again.message().contains("already used"), "{}", again.message());

    let malformed = app.auth().verify_code(verify_code(&challenge, "12 34")).await.expect_err("not six digits");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(malformed.message().starts_with("code:"), "{}", malformed.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_code_sent_twice_at_once_opens_one_session() {
    let app = TestApp::spawn().await;
    let challenge = app.request_code("cashier-1", "till-1").await;
    let code = app.inbox.last("cashier-1");
    let calls = (0..4).map(|_| {
        let (mut auth, request) = (app.auth(), verify_code(&challenge, &code));
        async move { auth.verify_code(request).await }
    });
    let answers = futures::future::join_all(calls).await;
    let opened = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(opened, 1, "one session, not {opened}: {answers:?}");
    for refused in answers.iter().filter_map(|a| a.as_ref().err()) {
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_is_answered_alike_and_no_code_of_theirs_ever_verifies() {
    let app = TestApp::spawn().await;
    let challenge = app.request_code("nobody-here", "").await;
    assert!(!challenge.is_empty(), "a stranger gets a challenge as staff do");
    assert!(app.inbox.codes("nobody-here").is_empty(), "no code is sent");
    for code in ["000000", "123456", "999999"] {
        let refused = app.auth().verify_code(verify_code(&challenge, code)).await.expect_err("never verifies");
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert!(refused.message().contains("wrong code"), "answered as a wrong code: {}", refused.message());
    }
    let unknown =
        app.auth().verify_code(verify_code("no-such-challenge", "123456")).await.expect_err("unknown challenge");
    assert_eq!(unknown.code(), Code::Unauthenticated);
    let bad = app
        .auth()
        .request_code(RequestCodeRequest {
            idempotency_key: key(),
            staff_id: "bob smith".into(),
            terminal_id: String::new(),
            ..Default::default()
        })
        .await
        .expect_err("an id with a space");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("staff_id:"), "{}", bad.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_code_sends_one_code_and_a_reused_key_is_refused() {
    let app = TestApp::spawn().await;
    let request = RequestCodeRequest {
        idempotency_key: key(),
        staff_id: "manager-1".into(),
        terminal_id: "till-3".into(),
        ..Default::default()
    };
    let first = app.auth().request_code(request.clone()).await.expect("first").into_inner();
    let retry = app.auth().request_code(request.clone()).await.expect("retry").into_inner();
    assert_eq!(retry.challenge_id, first.challenge_id, "the retry answers the same challenge");
    assert_eq!(app.inbox.codes("manager-1").len(), 1, "and sends no second code");

    let other = RequestCodeRequest { staff_id: "cashier-1".into(), ..request };
    let reused = app.auth().request_code(other).await.expect_err("the key of another request");
    assert_eq!(reused.code(), Code::AlreadyExists);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_too_many_codes_is_refused_with_a_retry_hint() {
    let app = TestApp::spawn().await;
    for _ in 0..5 {
        app.request_code("cashier-2", "").await;
    }
    let sixth = app
        .auth()
        .request_code(RequestCodeRequest {
            idempotency_key: key(),
            staff_id: "cashier-2".into(),
            terminal_id: String::new(),
            ..Default::default()
        })
        .await
        .expect_err("a sixth code within 15 minutes");
    assert_eq!(sixth.code(), Code::ResourceExhausted);
    assert!(sixth.message().contains("this staff member asked for 5 codes"), "{}", sixth.message());
    let hint = sixth.get_error_details().retry_info().and_then(|info| info.retry_delay).expect("a retry hint");
    let wait = hint;
    assert!(wait > Duration::from_secs(14 * 60) && wait <= Duration::from_secs(15 * 60), "{wait:?}");
    assert_eq!(app.inbox.codes("cashier-2").len(), 5, "no sixth code was sent");

    // One address asking for many staff members' codes (a stranger walking the staff list).
    let mut refused = None;
    for n in 0..60 {
        let request = RequestCodeRequest {
            idempotency_key: key(),
            staff_id: format!("guess-{n}"),
            terminal_id: String::new(),
            ..Default::default()
        };
        if let Err(status) = app.auth().request_code(request).await {
            refused = Some((n, status));
            break;
        }
    }
    let (n, status) = refused.expect("one address is limited");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("this network address"), "{}", status.message());
    assert_eq!(n, 50 - 5, "the address had asked 5 codes for cashier-2 and 45 more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_outside_the_staff_members_store_is_refused() {
    let app = TestApp::spawn().await;
    let challenge = app.request_code("cashier-1", "till-9").await;
    let refused = app
        .auth()
        .verify_code(verify_code(&challenge, &app.inbox.last("cashier-1")))
        .await
        .expect_err("till-9 is no terminal of store-1");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().starts_with("terminal_id:"), "{}", refused.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_refresh_token_presented_again_ends_the_session_but_a_retry_does_not() {
    let app = TestApp::spawn().await;
    let first = app.sign_in("cashier-1", "till-1").await;

    // A retry of a refresh whose answer was lost is answered again.
    let retried = refresh(&first.refresh_token);
    let lost = refreshed(&app, retried.clone()).await.expect("refresh");
    let again = refreshed(&app, retried).await.expect("the same refresh, retried");
    assert_ne!(again.refresh_token, lost.refresh_token);
    let lost_one = refreshed(&app, refresh(&lost.refresh_token)).await.expect_err("the answer the client never got");
    assert_eq!(lost_one.code(), Code::Unauthenticated);
    let next = refreshed(&app, refresh(&again.refresh_token)).await.expect("the retry's token works");

    // Someone else presents the spent token: the session ends for everyone.
    let stolen = refreshed(&app, refresh(&again.refresh_token)).await.expect_err("a spent token");
    assert_eq!(stolen.code(), Code::Unauthenticated);
    assert!(stolen.message().contains("already used"), "{}", stolen.message());
    let ended = refreshed(&app, refresh(&next.refresh_token)).await.expect_err("the session ended");
    assert!(ended.message().contains("ended"), "{}", ended.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_ends_the_session_and_a_retried_sign_in_answers_the_same_session() {
    let app = TestApp::spawn().await;
    let challenge = app.request_code("manager-2", "till-1").await;
    let request = verify_code(&challenge, &app.inbox.last("manager-2"));
    let session =
        app.auth().verify_code(request.clone()).await.expect("sign in").into_inner().session.expect("session");
    let retry = app.auth().verify_code(request).await.expect("retried").into_inner().session.expect("session");
    assert_eq!(retry.session_id, session.session_id, "a retry opens no second session");

    let sign_out = SignOutRequest { refresh_token: retry.refresh_token.clone() };
    app.auth().sign_out(sign_out.clone()).await.expect("sign out");
    app.auth().sign_out(sign_out).await.expect("signing out twice is no error");
    let refused = refreshed(&app, refresh(&retry.refresh_token)).await.expect_err("signed out");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let empty = app.auth().sign_out(SignOutRequest::default()).await.expect_err("no token");
    assert_eq!(empty.code(), Code::InvalidArgument);
}

/// The README's way in: `redstore up`, a code asked for with any client, read from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_development_sender_writes_the_code_to_the_log_and_no_token_is_logged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().to_str().expect("utf-8 path");
    let server = Process::start(&["up", "--data-dir", data_dir]);
    let mut auth = redstore_proto::auth::auth_service_client::AuthServiceClient::new(server.channel().await);
    let issue = IssueDeviceCredentialRequest {
        idempotency_key: key(),
        store_id: "store-1".into(),
        terminal_id: "till-1".into(),
    };
    let device_credential =
        auth.issue_device_credential(issue).await.expect("a credential").into_inner().device_credential;
    let request = RequestCodeRequest {
        idempotency_key: key(),
        staff_id: "manager-1".into(),
        terminal_id: "till-1".into(),
        device_credential: device_credential.clone(),
    };
    let challenge = auth.request_code(request).await.expect("a code").into_inner().challenge_id;
    let code = server.logged_code().await;
    let session = auth
        .verify_code(verify_code(&challenge, &code))
        .await
        .expect("signed in")
        .into_inner()
        .session
        .expect("session");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = server.logs().iter().map(ToString::to_string).collect::<String>();
    assert!(logs.contains("signed in"), "sign-ins are logged");
    assert!(!logs.contains(&session.access_token), "the access token is never logged");
    assert!(!logs.contains(&session.refresh_token), "the refresh token is never logged");
    assert!(!logs.contains(&device_credential), "the device credential is never logged");
}

fn auth_as(app: &TestApp, session: &Session) -> redstore_proto::auth::auth_service_client::AuthServiceClient<Ch> {
    redstore_proto::auth::auth_service_client::AuthServiceClient::new(app.channel_with(&session.access_token))
}

fn switch(staff_id: &str, pin: &str) -> SwitchStaffRequest {
    SwitchStaffRequest { idempotency_key: key(), staff_id: staff_id.into(), pin: pin.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_colleague_takes_over_a_terminal_with_their_pin_and_five_wrong_pins_lock_them_out_there() {
    let app = TestApp::spawn().await;
    let supervisor = app.sign_in("supervisor-1", "till-3").await;
    let weak = auth_as(&app, &supervisor).set_pin(SetPinRequest { idempotency_key: key(), pin: "1234".into() }).await;
    assert_eq!(weak.expect_err("a PIN anyone would try first").code(), Code::InvalidArgument);
    let set = SetPinRequest { idempotency_key: key(), pin: "2580".into() };
    auth_as(&app, &supervisor).set_pin(set).await.expect("a PIN");

    // A cashier signed in at till-1 with a code; the supervisor takes over with the PIN.
    let cashier = app.sign_in("cashier-1", "till-1").await;
    let mut till_1 = auth_as(&app, &cashier);
    let request = switch("supervisor-1", "2580");
    let taken = till_1.switch_staff(request.clone()).await.expect("taken over").into_inner().session.expect("session");
    assert_eq!(taken.staff.as_ref().map(|s| s.staff_id.as_str()), Some("supervisor-1"));
    assert_eq!(taken.terminal_id, "till-1", "the session is the terminal's");
    assert_eq!(taken.refresh_expires_at, cashier.refresh_expires_at, "it ends when the code's session would");
    let claims = app.token_keys().verify(&taken.access_token).expect("verifies");
    assert_eq!((claims.role, claims.device.as_deref()), (Role::Supervisor, Some("till-1")));
    let again = till_1.switch_staff(request).await.expect("retried").into_inner().session.expect("session");
    assert_eq!(again.session_id, taken.session_id, "a retry opens no second session");
    let from_pin = auth_as(&app, &taken).set_pin(SetPinRequest { idempotency_key: key(), pin: "3691".into() }).await;
    assert_eq!(from_pin.expect_err("a PIN session sets no PIN").code(), Code::PermissionDenied);

    // Five wrong PINs lock the supervisor out of till-1; the sixth is refused even when right.
    for _ in 0..5 {
        let wrong = till_1.switch_staff(switch("supervisor-1", "1357")).await.expect_err("a wrong PIN");
        assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    }
    let locked = till_1.switch_staff(switch("supervisor-1", "2580")).await.expect_err("locked out");
    assert_eq!(locked.code(), Code::ResourceExhausted, "{locked:?}");
    let hint = locked.get_error_details().retry_info().and_then(|info| info.retry_delay).expect("a retry hint");
    assert!(hint > Duration::from_secs(14 * 60), "{hint:?}");
    // ... at till-1 only.
    let till_2 = auth_as(&app, &app.sign_in("cashier-1", "till-2").await);
    till_2.clone().switch_staff(switch("supervisor-1", "2580")).await.expect("another terminal");

    // Only colleagues of the terminal's store with a PIN, and only from a terminal's session.
    let other_store = till_2.clone().switch_staff(switch("manager-2", "2580")).await.expect_err("store-2's manager");
    assert_eq!(other_store.code(), Code::PermissionDenied);
    let no_pin = till_2.clone().switch_staff(switch("manager-1", "2580")).await.expect_err("no PIN set");
    assert_eq!(no_pin.code(), Code::FailedPrecondition);
    let back_office =
        auth_as(&app, &app.sign_in("manager-1", "").await).switch_staff(switch("supervisor-1", "2580")).await;
    assert_eq!(back_office.expect_err("no terminal").code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_nobody_uses_locks_and_a_pin_of_its_store_unlocks_it() {
    const IDLE_LOCK: Duration = Duration::from_secs(2);
    let app = TestApp::spawn_configured(|cfg| cfg.auth.auth_idle_lock = IDLE_LOCK).await;
    for (staff, till, pin) in [("cashier-1", "till-1", "2580"), ("supervisor-1", "till-2", "3691")] {
        let session = app.sign_in(staff, till).await;
        auth_as(&app, &session).set_pin(SetPinRequest { idempotency_key: key(), pin: pin.into() }).await.expect("PIN");
    }
    let cashier = app.sign_in("cashier-1", "till-1").await;
    assert_eq!(cashier.idle_lock_seconds, 2, "the terminal learns when to show its PIN screen");
    let claims = app.token_keys().verify(&cashier.access_token).expect("verifies");
    assert!(claims.exp - claims.iat <= 2, "a terminal's access token outlives no idle period");
    let back_office = app.sign_in("manager-1", "").await;
    assert_eq!(back_office.idle_lock_seconds, 0, "a session at no terminal never locks");

    // In use, the terminal refreshes within the period and stays open; then nobody touches it.
    let in_use = refreshed(&app, refresh(&cashier.refresh_token)).await.expect("refreshed while in use");
    tokio::time::sleep(IDLE_LOCK + Duration::from_millis(500)).await;
    let locked = refreshed(&app, refresh(&in_use.refresh_token)).await.expect_err("locked");
    assert_eq!(locked.code(), Code::FailedPrecondition, "{locked:?}");
    assert!(locked.message().contains("UnlockTerminal"), "{}", locked.message());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let access_expired = in_use.access_expires_at.as_ref().expect("expiry").seconds;
    assert!(access_expired <= now as i64, "its access token has run out");
    refreshed(&app, refresh(&back_office.refresh_token)).await.expect("the back office stays signed in");

    let unlock = |staff_id: &str, pin: &str| UnlockTerminalRequest {
        idempotency_key: key(),
        refresh_token: in_use.refresh_token.clone(),
        staff_id: staff_id.into(),
        pin: pin.into(),
    };
    let mut auth = app.auth();
    let wrong = auth.unlock_terminal(unlock("cashier-1", "1357")).await.expect_err("a wrong PIN");
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    let stranger = auth.unlock_terminal(unlock("manager-2", "2580")).await.expect_err("store-2's manager");
    assert_eq!(stranger.code(), Code::PermissionDenied, "{stranger:?}");
    let no_session =
        UnlockTerminalRequest { refresh_token: back_office.refresh_token.clone(), ..unlock("manager-1", "2580") };
    let desk = auth.unlock_terminal(no_session).await.expect_err("not a terminal's session");
    assert_eq!(desk.code(), Code::Unauthenticated, "{desk:?}");

    // The cashier unlocks with her PIN; a retry answers the same session; a colleague may too.
    let request = unlock("cashier-1", "2580");
    let opened = auth.unlock_terminal(request.clone()).await.expect("unlocked").into_inner().session.expect("session");
    assert_eq!(opened.staff.as_ref().map(|s| s.staff_id.as_str()), Some("cashier-1"));
    assert_eq!(opened.terminal_id, "till-1");
    assert_eq!(opened.refresh_expires_at, cashier.refresh_expires_at, "it ends when the locked session would");
    let again = auth.unlock_terminal(request).await.expect("retried").into_inner().session.expect("session");
    assert_eq!(again.session_id, opened.session_id, "a retry opens no second session");
    let stock = redstore_proto::inventory::ListStockRequest { store_id: "store-1".into(), ..Default::default() };
    let mut inventory = redstore_proto::inventory::inventory_service_client::InventoryServiceClient::new(
        app.channel_with(&opened.access_token),
    );
    inventory.list_stock(stock).await.expect("the unlocked terminal works");
    let taken = auth.unlock_terminal(unlock("supervisor-1", "3691")).await.expect("a colleague unlocks");
    let taken = taken.into_inner().session.expect("session");
    assert_eq!(taken.staff.as_ref().map(|s| s.staff_id.as_str()), Some("supervisor-1"));

    // The audit log says who unlocked which terminal, from whose locked session.
    let mut as_manager = auth_as(&app, &back_office);
    let log = redstore_proto::auth::ListAuditEventsRequest { store_id: "store-1".into(), page: None, chain: false };
    let events = as_manager.list_audit_events(log).await.expect("store-1's log").into_inner().events;
    let unlocked = events.iter().find(|e| e.action == "auth.unlocked" && e.subject == "supervisor-1");
    let unlocked = unlocked.unwrap_or_else(|| panic!("no unlock by supervisor-1 in {events:#?}"));
    assert_eq!((unlocked.staff_id.as_str(), unlocked.terminal_id.as_str()), ("cashier-1", "till-1"));
    assert!(
        events.iter().any(|e| e.action == "auth.pin_refused" && e.subject == "cashier-1" && e.terminal_id == "till-1")
    );
}

fn new_staff(staff_id: &str, role: redstore_proto::auth::Role, store_id: &str) -> CreateStaffRequest {
    CreateStaffRequest {
        idempotency_key: key(),
        staff_id: staff_id.into(),
        display_name: String::new(),
        role: role as i32,
        store_id: store_id.into(),
        contact: format!("{staff_id}@shop.invalid"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_adds_and_deactivates_their_stores_staff_and_a_deactivated_member_is_signed_out_at_once() {
    use redstore_proto::auth::Role as R;
    let app = TestApp::spawn().await;
    let manager = app.sign_in("manager-1", "").await;
    let mut as_manager = auth_as(&app, &manager);

    let request = new_staff("cashier-9", R::Cashier, "store-1");
    let added = as_manager.create_staff(request.clone()).await.expect("added").into_inner().staff.expect("staff");
    assert_eq!((added.display_name.as_str(), added.active), ("cashier-9", true));
    as_manager.create_staff(request.clone()).await.expect("the same request again answers it");
    let other = CreateStaffRequest { role: R::Supervisor as i32, ..request };
    assert_eq!(as_manager.create_staff(other).await.expect_err("another request").code(), Code::AlreadyExists);
    for (refused, why) in [
        (new_staff("cashier-8", R::Cashier, "store-2"), "another store"),
        (new_staff("admin-2", R::Admin, ""), "an admin"),
    ] {
        let status = as_manager.create_staff(refused).await.expect_err(why);
        assert_eq!(status.code(), Code::PermissionDenied, "{why}: {status:?}");
    }
    let bad = as_manager.create_staff(new_staff("cashier-7", R::Unspecified, "store-1")).await.expect_err("no role");
    assert!(bad.message().starts_with("role:"), "{}", bad.message());
    let cashier = auth_as(&app, &app.sign_in("cashier-1", "till-1").await)
        .create_staff(new_staff("cashier-6", R::Cashier, "store-1"))
        .await
        .expect_err("a cashier adds nobody");
    assert_eq!(cashier.code(), Code::PermissionDenied);

    let listed = as_manager.list_staff(ListStaffRequest { store_id: "store-1".into(), page: None }).await;
    let ids: Vec<String> = listed.expect("listed").into_inner().staff.into_iter().map(|s| s.staff_id).collect();
    assert_eq!(ids, ["cashier-1", "cashier-9", "manager-1", "supervisor-1"]);
    let elsewhere = as_manager.list_staff(ListStaffRequest { store_id: "store-2".into(), page: None }).await;
    assert_eq!(elsewhere.expect_err("store-2's staff").code(), Code::PermissionDenied);

    // The new cashier signs in and works; deactivated, their token stops at once.
    let newcomer = app.sign_in("cashier-9", "till-3").await;
    let mut stock = redstore_proto::inventory::inventory_service_client::InventoryServiceClient::new(
        app.channel_with(&newcomer.access_token),
    );
    let get = || redstore_proto::inventory::GetStockRequest { store_id: "store-1".into(), sku: "SKU-0001".into() };
    stock.get_stock(get()).await.expect("signed in");
    let deactivate = DeactivateStaffRequest { idempotency_key: key(), staff_id: "cashier-9".into() };
    let gone = as_manager.deactivate_staff(deactivate.clone()).await.expect("deactivated").into_inner();
    assert_eq!(gone.staff.map(|s| s.active), Some(false));
    as_manager.deactivate_staff(deactivate).await.expect("twice is no error");
    assert_eq!(stock.get_stock(get()).await.expect_err("deactivated").code(), Code::Unauthenticated);
    let refresh = refreshed(&app, refresh(&newcomer.refresh_token)).await.expect_err("no refresh");
    assert_eq!(refresh.code(), Code::Unauthenticated);
    let challenge = app.request_code("cashier-9", "").await;
    assert_eq!(app.inbox.codes("cashier-9").len(), 1, "no code is sent to a deactivated member");
    let never = app.auth().verify_code(verify_code(&challenge, "000000")).await.expect_err("never verifies");
    assert_eq!(never.code(), Code::Unauthenticated);
    let not_theirs = DeactivateStaffRequest { idempotency_key: key(), staff_id: "cashier-2".into() };
    assert_eq!(as_manager.deactivate_staff(not_theirs).await.expect_err("store-2's").code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_at_a_terminal_needs_its_device_credential_and_replacing_or_revoking_it_ends_its_sessions() {
    use redstore_proto::auth::RevokeDeviceRequest;
    let app = TestApp::spawn().await;
    let manager = app.sign_in("manager-1", "").await;
    let mut as_manager = auth_as(&app, &manager);
    let issue = |key: &str| IssueDeviceCredentialRequest {
        idempotency_key: key.into(),
        store_id: "store-1".into(),
        terminal_id: "till-2".into(),
    };
    let first = as_manager.issue_device_credential(issue("k-1")).await.expect("issued").into_inner().device_credential;
    // (Two colleagues share the attempts: each may ask for 5 codes within 15 minutes.)
    let sign_in_with = |staff_id: &'static str, credential: String| {
        let request = RequestCodeRequest {
            idempotency_key: key(),
            staff_id: staff_id.into(),
            terminal_id: "till-2".into(),
            device_credential: credential,
        };
        let (mut auth, app) = (app.auth(), &app);
        async move {
            let challenge = auth.request_code(request).await.expect("a code").into_inner().challenge_id;
            auth.verify_code(verify_code(&challenge, &app.inbox.last(staff_id))).await
        }
    };
    for (credential, says) in [(String::new(), "needs the terminal's"), ("0".repeat(64), "not the device credential")] {
        let refused = sign_in_with("cashier-1", credential).await.expect_err("not from till-2");
        assert_eq!(refused.code(), Code::PermissionDenied);
        assert!(refused.message().contains(says), "{}", refused.message());
    }
    let session =
        sign_in_with("cashier-1", first.clone()).await.expect("from till-2").into_inner().session.expect("session");
    let stock = || {
        let channel = app.channel_with(&session.access_token);
        async move {
            redstore_proto::inventory::inventory_service_client::InventoryServiceClient::new(channel)
                .get_stock(redstore_proto::inventory::GetStockRequest {
                    store_id: "store-1".into(),
                    sku: "SKU-0001".into(),
                })
                .await
        }
    };
    stock().await.expect("signed in at till-2");

    // The same issue retried (its answer lost) replaces the credential without ending sessions;
    // a new issue ends them.
    let retried = as_manager.issue_device_credential(issue("k-1")).await.expect("retried").into_inner();
    assert_ne!(retried.device_credential, first);
    stock().await.expect("a retried issue ends nothing");
    let replaced = as_manager.issue_device_credential(issue("k-2")).await.expect("replaced").into_inner();
    assert_eq!(stock().await.expect_err("replaced: signed out").code(), Code::Unauthenticated);
    let old = sign_in_with("supervisor-1", first).await.expect_err("the old credential");
    assert!(old.message().contains("not the device credential"), "{}", old.message());

    let session = sign_in_with("supervisor-1", replaced.device_credential)
        .await
        .expect("signed in")
        .into_inner()
        .session
        .expect("s");
    let revoke =
        RevokeDeviceRequest { idempotency_key: key(), store_id: "store-1".into(), terminal_id: "till-2".into() };
    let revoked = as_manager.revoke_device(revoke).await.expect("revoked").into_inner();
    assert_eq!(revoked.sessions_ended, 1);
    let channel = app.channel_with(&session.access_token);
    let after = redstore_proto::inventory::inventory_service_client::InventoryServiceClient::new(channel)
        .get_stock(redstore_proto::inventory::GetStockRequest { store_id: "store-1".into(), sku: "SKU-0001".into() })
        .await;
    assert_eq!(after.expect_err("revoked").code(), Code::Unauthenticated);
    let none = sign_in_with("supervisor-1", String::new()).await.expect_err("no credential any more");
    assert!(none.message().contains("no device credential yet"), "{}", none.message());

    let other_store = auth_as(&app, &app.sign_in("manager-2", "").await).issue_device_credential(issue("k-3")).await;
    assert_eq!(other_store.expect_err("store-1's terminal").code(), Code::PermissionDenied);
}

/// The address the audit log gives `staff_id`'s sign-in, which sent `x-forwarded-for: forwarded`.
async fn signed_in_from(app: &TestApp, staff_id: &str, forwarded: &str) -> String {
    let challenge = app.request_code(staff_id, "till-1").await;
    let mut request = tonic::Request::new(verify_code(&challenge, &app.inbox.last(staff_id)));
    request.metadata_mut().insert("x-forwarded-for", forwarded.parse().unwrap());
    app.auth().verify_code(request).await.expect("signed in");
    let log = redstore_proto::auth::ListAuditEventsRequest { store_id: "store-1".into(), page: None, chain: false };
    let events = app.auth().list_audit_events(log).await.expect("store-1's log").into_inner().events;
    let signed_in = events.iter().rev().find(|e| e.action == "auth.signed_in" && e.staff_id == staff_id);
    signed_in.unwrap_or_else(|| panic!("no sign-in of {staff_id} in {events:#?}")).address.clone()
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_terminals_address_is_the_forwarded_one_and_elsewhere_the_peers() {
    let proxied = TestApp::spawn_configured(|cfg| {
        cfg.edge.trusted_proxies = vec![redstore::forwarded::parse_net("127.0.0.1").unwrap()];
    })
    .await;
    // The Ingress controller (this test, on 127.0.0.1) forwards a terminal on the shop's network.
    assert_eq!(signed_in_from(&proxied, "cashier-1", "198.51.100.7").await, "198.51.100.7");

    // A server that trusts no proxy believes no header: the address is the connection's.
    let direct = TestApp::spawn().await;
    assert_eq!(signed_in_from(&direct, "cashier-1", "198.51.100.7").await, "127.0.0.1");
}
