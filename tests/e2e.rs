//! The end-to-end scenarios live in e2e/ next to the script that sets up their cluster; they
//! compile with every `cargo test`, which lists them as ignored; e2e/run.sh runs them.

#[path = "../e2e/scenarios.rs"]
mod scenarios;
