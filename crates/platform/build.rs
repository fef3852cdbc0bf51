//! `sqlx::migrate!` embeds `migrations/postgres` as the crate compiles, but a migration added
//! there changes no Rust source: this makes Cargo compile the crate again when the folder changes.
fn main() {
    println!("cargo::rerun-if-changed=migrations/postgres");
}
