//! `redstore bench …` as scripts run it: `--json` prints one JSON object on stdout and nothing
//! else there (the human lines go to stderr), with the figures, the failures apart from the
//! warm-up's, and the settings; without it, the human summary. Against a real server, briefly:
//! these are checks of the commands, not measurements (docs/BENCHMARKS.md has those).

use redstore_proto::sales::GetCartRequest;

use crate::helpers::{TestApp, test_key_file};

/// Runs `redstore bench <args> --target <app>` with the tests' signing key: (stdout, stderr),
/// once it succeeded.
async fn bench(app: &TestApp, args: &[&str]) -> (String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_redstore"))
        .arg("bench")
        .args(args)
        .args(["--target", &app.url])
        .env("REDSTORE_AUTH_SIGNING_KEY_FILE", test_key_file())
        .env_remove("REDSTORE_ACCESS_TOKEN")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run redstore bench");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "redstore bench {args:?} failed: {stderr}");
    (stdout, stderr)
}

/// `redstore bench <args> --json`: its stdout, which must be one JSON object and nothing else.
async fn bench_json(app: &TestApp, args: &[&str]) -> (serde_json::Value, String) {
    let args = [args, &["--json"]].concat();
    let (stdout, stderr) = bench(app, &args).await;
    let json: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout of redstore bench {args:?} is not one JSON object ({e}): {stdout}"));
    assert!(json.is_object(), "{json}");
    (json, stderr)
}

fn number(json: &serde_json::Value, path: &[&str]) -> f64 {
    let value = path.iter().fold(json, |v, key| &v[key]);
    value.as_f64().unwrap_or_else(|| panic!("{} is not a number in {json}", path.join(".")))
}

/// Its percentiles, in milliseconds, in order.
fn assert_latencies(json: &serde_json::Value) {
    let [p50, p95, p99, max] = ["p50", "p95", "p99", "max"].map(|p| number(json, &["latency_ms", p]));
    assert!(0.0 < p50 && p50 <= p95 && p95 <= p99 && p99 <= max, "{json}");
}

#[tokio::test]
async fn bench_scan_json_counts_scans_and_warm_up_apart_and_scans_land_in_small_carts() {
    let app = TestApp::spawn().await;
    let (json, stderr) =
        bench_json(&app, &["scan", "--duration", "2s", "--warmup", "1s", "--scanners", "4", "--cart-lines", "3"]).await;
    assert!(stderr.contains("scan bench: 4 scanners"), "the human line goes to stderr: {stderr}");
    assert_eq!(json["bench"], "scan");
    let scans = number(&json, &["scans"]);
    assert!(scans > 0.0, "{json}");
    assert_eq!(json["failed"], 0, "{json}");
    assert_eq!(json["warmup_failures"], 0, "{json}");
    let warmup_scans = number(&json, &["warmup_scans"]);
    assert!(warmup_scans > 0.0, "the warm-up scanned too: {json}");
    assert!(number(&json, &["scans_per_second"]) > 0.0, "{json}");
    assert!(number(&json, &["elapsed_s"]) >= 2.0, "{json}");
    assert_latencies(&json);
    let settings = &json["settings"];
    assert_eq!(settings["scanners"], 4);
    assert_eq!(settings["in_flight"], 1);
    assert_eq!(settings["cart_lines"], 3);
    assert_eq!(settings["barcodes"], 20, "the demo catalog's barcodes: {json}");
    assert_eq!(settings["duration_s"], 2.0);
    assert_eq!(settings["warmup_s"], 1.0);
    assert_eq!(settings["target"], app.url);
    assert!(json["target"]["met"].is_boolean(), "{json}");
    assert_eq!(json["target"]["scans_per_second"], 30_000.0);

    // Every scan answered with its line added a unit to its scanner's cart, of 3 lines at most.
    let mut units = 0;
    for terminal in ["scanner-001", "scanner-002", "scanner-003", "scanner-004"] {
        let cart = app
            .sales()
            .get_cart(GetCartRequest { store_id: "bench-scan".into(), terminal_id: terminal.into() })
            .await
            .expect("the scanner's cart")
            .into_inner()
            .cart
            .expect("cart");
        assert!(!cart.lines.is_empty() && cart.lines.len() <= 3, "{cart:?}");
        units += cart.lines.iter().map(|l| l.quantity).sum::<i64>();
    }
    assert_eq!(units as f64, scans + warmup_scans, "every scan counted once: {json}");
}

#[tokio::test]
async fn bench_checkout_json_has_its_figures_and_settings_and_the_human_summary_stays_the_default() {
    let app = TestApp::spawn().await;
    let (json, _) = bench_json(&app, &["checkout", "--duration", "1s", "--warmup", "500ms", "--terminals", "2"]).await;
    assert_eq!(json["bench"], "checkout");
    assert!(number(&json, &["sales"]) > 0.0, "{json}");
    assert_eq!(json["failed"], 0, "{json}");
    assert_eq!(json["warmup_failures"], 0, "{json}");
    assert!(number(&json, &["sales_per_second"]) > 0.0, "{json}");
    assert!(number(&json, &["elapsed_s"]) >= 1.0, "{json}");
    assert_latencies(&json);
    assert_eq!(json["settings"]["terminals"], 2);
    assert_eq!(json["settings"]["lines"], 3);
    assert_eq!(json["settings"]["duration_s"], 1.0);
    assert_eq!(json["settings"]["warmup_s"], 0.5);

    let (stdout, _) = bench(&app, &["checkout", "--sales", "20", "--terminals", "2"]).await;
    assert!(stdout.starts_with("checkout bench: 2 terminals"), "{stdout}");
    assert!(stdout.contains("sales: 20 ok, 0 failed"), "{stdout}");
    assert!(stdout.contains("latency: p50"), "{stdout}");
}
