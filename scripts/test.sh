#!/usr/bin/env bash
# The whole test suite, as root on a fresh Debian 12 machine with this kernel's audit:
# installs what the tests need, prepares the real auditd (af_unix plugin, rules), then runs
# formatting and lint checks, every test (the live ones against the real auditd socket) and
# a bounded fuzz run of each fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
cargo build --release --bin azureiotsecurity

# ARM proven, not assumed (README "ARM"): the armv7 binary is cross-built and run under
# qemu beside this amd64 binary, every output compared byte for byte. It runs niced in the
# background from here, on the CPU the test phase leaves idle, and is waited for at the end;
# its log is kept in target/check-arm.log and shown when it fails. Its own process group,
# so that a failing step before the end stops it with everything it started. load.log.gz is
# compared on its first 5000 lines: replay --messages of the whole takes minutes under qemu
# (README "ARM"); scripts/check-arm.sh without LOAD_LINES compares the whole before a release.
mkdir -p target/check-arm
cp target/release/azureiotsecurity target/check-arm/amd64  # the tests may rebuild the release binary
arm_log=target/check-arm.log
# A target directory of its own: cargo locks the directories it builds in, and the tests'
# builds must never wait for this one.
AMD64_BIN="$PWD/target/check-arm/amd64" LOAD_LINES=5000 CARGO_TARGET_DIR="$PWD/target/arm" \
  setsid nice -n 10 \
  scripts/check-arm.sh armv7-unknown-linux-musleabihf >"$arm_log" 2>&1 &
arm_pid=$!
trap 'kill -- -"$arm_pid" 2>/dev/null || true' EXIT
arm_start=$SECONDS

AZUREIOTSECURITY_BIN="$PWD/target/release/azureiotsecurity" scripts/setup-host.sh

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# The module docs' links (a contract at the top of each module links to its neighbours).
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps
cargo test --all-targets
if [ -x scripts/fuzz.sh ]; then
  # 30 s for each of the six targets: 3 minutes, what the fuzz step had with four targets
  # at 45 s (CI also builds and checks ARM now; longer runs are for before a release).
  scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
fi

echo "test: waiting for the ARM check (started $((SECONDS - arm_start)) s ago)"
if wait "$arm_pid"; then
  tail -n 1 "$arm_log"
else
  echo "test: the ARM check failed ($arm_log):" >&2
  tail -n 60 "$arm_log" >&2
  exit 1
fi
echo "test: ARM check done $((SECONDS - arm_start)) s after it started"
