//! Builds the iPad terminal (`web/`: TypeScript, Vite, clients generated from `proto/`) into
//! `$OUT_DIR/terminal`, which `src/terminal.rs` embeds, so the one binary serves it at `/`.
//!
//! It needs Node.js and npm: `npm ci` installs the locked packages when `web/node_modules` is
//! missing or older than the lock file. Without npm, or with `REDSTORE_SKIP_TERMINAL=1` (a build
//! that serves only the APIs), a page saying how to get the terminal takes its place. With
//! `REDSTORE_TERMINAL_DIST=<dir>`, the terminal built there beforehand (`npm run build -- --outDir
//! <dir>`, as the image's Node stage does) is embedded as it is, and npm is not run.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("terminal");
    let web = Path::new("web");
    // Not web/gen: the build writes it.
    for watched in [
        "web/src",
        "web/index.html",
        "web/package-lock.json",
        "web/buf.gen.yaml",
        "web/vite.config.ts",
        "web/tsconfig.json",
        "proto/redstore",
    ] {
        println!("cargo:rerun-if-changed={watched}");
    }
    println!("cargo:rerun-if-env-changed=REDSTORE_SKIP_TERMINAL");
    println!("cargo:rerun-if-env-changed=REDSTORE_TERMINAL_DIST");
    if std::fs::exists(&out).unwrap_or(false) {
        std::fs::remove_dir_all(&out).expect("clear the terminal's previous build");
    }
    std::fs::create_dir_all(&out).expect("create the terminal's build directory");

    if let Some(dist) = std::env::var_os("REDSTORE_TERMINAL_DIST").filter(|v| !v.is_empty()) {
        let dist = PathBuf::from(dist);
        println!("cargo:rerun-if-changed={}", dist.display());
        assert!(
            dist.join("index.html").is_file(),
            "REDSTORE_TERMINAL_DIST={} holds no index.html: give the directory `npm run build -- --outDir <dir>` wrote",
            dist.display()
        );
        copy_dir(&dist, &out);
        return;
    }

    let skip = std::env::var_os("REDSTORE_SKIP_TERMINAL").is_some_and(|v| v != "0" && !v.is_empty());
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    if skip || Command::new(npm).arg("--version").output().is_err() {
        println!(
            "cargo:warning=the iPad terminal is not built ({}): the server will serve a page saying so",
            if skip { "REDSTORE_SKIP_TERMINAL is set" } else { "npm was not found; install Node.js 20 or later" }
        );
        std::fs::write(out.join("index.html"), PLACEHOLDER).expect("write the placeholder page");
        return;
    }
    if needs_install(web) {
        run(Command::new(npm).args(["ci", "--no-audit", "--no-fund"]).current_dir(web), "npm ci");
    }
    run(
        Command::new(npm).args(["run", "build", "--", "--outDir"]).arg(&out).arg("--emptyOutDir").current_dir(web),
        "npm run build (the terminal)",
    );
}

/// `npm ci` is needed when the packages are missing or the lock file changed since they were
/// installed (npm writes `node_modules/.package-lock.json` on every install).
fn needs_install(web: &Path) -> bool {
    let modified = |path: PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    match (modified(web.join("node_modules/.package-lock.json")), modified(web.join("package-lock.json"))) {
        (Some(installed), Some(locked)) => installed < locked,
        _ => true,
    }
}

/// Copies the files under `from` into `to`, subdirectories included.
fn copy_dir(from: &Path, to: &Path) {
    let entries = std::fs::read_dir(from).unwrap_or_else(|e| panic!("cannot read {}: {e}", from.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("cannot read {}: {e}", from.display()));
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if source.is_dir() {
            std::fs::create_dir_all(&target).unwrap_or_else(|e| panic!("cannot create {}: {e}", target.display()));
            copy_dir(&source, &target);
        } else {
            std::fs::copy(&source, &target).unwrap_or_else(|e| panic!("cannot copy {}: {e}", source.display()));
        }
    }
}

fn run(command: &mut Command, what: &str) {
    let status = command.status().unwrap_or_else(|e| panic!("{what} did not start: {e}"));
    assert!(status.success(), "{what} failed ({status}); see its output above");
}

const PLACEHOLDER: &str = "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Red Store</title>\
<p>This Red Store server was built without its terminal: build it where Node.js 20 or later and npm are \
installed (and REDSTORE_SKIP_TERMINAL is not set). Every API answers on this port.</p></html>\n";
