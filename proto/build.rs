//! Compiles the contracts under `redstore/` with a vendored `protoc`, so no system protoc is needed,
//! and writes the file descriptor set that server reflection serves.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "redstore/common/v1/common.proto",
    "redstore/events/v1/events.proto",
    "redstore/inventory/v1/inventory.proto",
    "redstore/sales/v1/sales.proto",
    "redstore/analytics/v1/analytics.proto",
    "redstore/stream/v1/stream.proto",
    "redstore/auth/v1/auth.proto",
];

const SECRET_BEARING: &[&str] = &[
    ".redstore.auth.v1.VerifyCodeRequest",
    ".redstore.auth.v1.Session",
    ".redstore.auth.v1.RefreshRequest",
    ".redstore.auth.v1.SignOutRequest",
    ".redstore.auth.v1.IssueStreamTicketResponse",
    ".redstore.auth.v1.SetPinRequest",
    ".redstore.auth.v1.SwitchStaffRequest",
    ".redstore.auth.v1.UnlockTerminalRequest",
    ".redstore.auth.v1.RequestCodeRequest",
    ".redstore.auth.v1.IssueDeviceCredentialResponse",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Messages that carry secrets (codes, tokens) get a `Debug` that leaves them out (src/lib.rs).
    config.skip_debug(SECRET_BEARING);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("redstore_descriptor.bin"))
        .compile_with_config(config, PROTOS, &["."])?;
    println!("cargo:rerun-if-changed=redstore");
    Ok(())
}
