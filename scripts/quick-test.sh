#!/usr/bin/env bash
# The quick tier: the library's unit tests and the integration tests that need nothing but the
# test process and the module binary (no root, no auditd, no Python, no Node, no openssl), so a
# contributor can run them anywhere Rust builds. Extra arguments go to `cargo test`.
# The full suite (scripts/test.sh, as root) runs every crate: these and FULL_ONLY_CRATES.
# Every crate in tests/ is in exactly one of the two lists (tests/quick/tiers.rs checks it).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK_CRATES=(quick amqp_inprocess error_catalogue)
# Need real peers: auditd and root (live, rules_live), root for a tmpfs (outbox_faults), the
# reference validator in .venv (messages, schema_reference, validate_agreement), Qpid Proton in
# .venv (deployment_load, edgehub_interop, outbox_faults, standin_node, twin_interop, twin_task,
# twin_live), Node (edgehub_interop, standin_node).
FULL_ONLY_CRATES=(deployment_load echo edgehub_interop listening_ports live messages os_baseline outbox_faults rules_live schema_reference snapshot standin_node twin_interop twin_live twin_task validate_agreement watch)

args=(--lib)
for c in "${QUICK_CRATES[@]}"; do args+=(--test "$c"); done
exec cargo test "${args[@]}" "$@"
