//! The end-to-end scenarios live in e2e/ next to the script that sets up their cluster; they
//! compile with every `cargo test` and run only with `WORKERPOOL_E2E=1` (see e2e/run.sh).

#[path = "../e2e/scenarios.rs"]
mod scenarios;
