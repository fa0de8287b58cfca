#!/usr/bin/env bash
# The whole test suite, as root on a fresh Debian 12 machine with this kernel's audit:
# installs what the tests need, prepares the real auditd (af_unix plugin, rules), then runs
# formatting and lint checks, every test (the live ones against the real auditd socket) and
# a bounded fuzz run of each fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
cargo build --release --bin azureiotsecurity
AZUREIOTSECURITY_BIN="$PWD/target/release/azureiotsecurity" scripts/setup-host.sh

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# The module docs' links (a contract at the top of each module links to its neighbours).
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps
cargo test --all-targets
if [ -x scripts/fuzz.sh ]; then
  # 45 s for each of the six targets: 4 min 30 s (proc_net's and baseline's 45 s each added to
  # the 3 minutes).
  scripts/fuzz.sh "${FUZZ_SECONDS:-45}"
fi
