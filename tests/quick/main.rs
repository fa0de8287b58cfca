//! The quick tier: the integration tests that need nothing outside the test process and the
//! module binary (no root, no auditd, no Python, no Node, no openssl), as one crate (one link
//! step). `scripts/quick-test.sh` runs it with the library's unit tests; the full suite
//! (`scripts/test.sh`) runs it too, with the crates that need real peers. `tiers` keeps the
//! list of both tiers in step with the crates in `tests/`.

#[path = "../support/mod.rs"]
mod support;

mod agent_settings;
mod bad_input;
mod deployment_manifest;
mod echo;
mod golden;
mod lifecycle;
mod parse_equivalence;
mod parse_props;
mod tiers;
mod twin_readme;
mod twin_task;
