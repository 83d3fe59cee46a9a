//! Build script: the migrations are embedded at compile time (`src/db/migrations.rs`), and
//! `embed_migrations!` only tracks the files it saw, so a new migration directory would not
//! rebuild the binary without this (diesel_migrations' documented advice).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
