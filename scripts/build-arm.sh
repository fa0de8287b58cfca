#!/usr/bin/env bash
# Cross-builds the module for a 32- or 64-bit ARM musl target on an amd64 machine:
#   scripts/build-arm.sh armv7-unknown-linux-musleabihf   (CI: scripts/check-arm.sh)
#   scripts/build-arm.sh aarch64-unknown-linux-musl       (before a release)
# prints the binary's path on its last line. rustup has no prebuilt std for these targets on
# this machine, so std is built from rust-src (-Zbuild-std, allowed on stable by
# RUSTC_BOOTSTRAP=1) and zig (ziglang + cargo-zigbuild, pinned in .venv by
# scripts/install-test-deps.sh) is the C compiler and linker with its own musl. The
# Dockerfiles use the same commands. The build goes to target/<triple>/release (or
# $CARGO_TARGET_DIR's), so a second run on the same tree only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:?usage: scripts/build-arm.sh <armv7-unknown-linux-musleabihf|aarch64-unknown-linux-musl>}
case "$target" in
  armv7-unknown-linux-musleabihf | aarch64-unknown-linux-musl) ;;
  *) echo "build-arm: unsupported target $target" >&2; exit 2 ;;
esac
[ -x .venv/bin/cargo-zigbuild ] \
  || { echo "build-arm: .venv/bin/cargo-zigbuild missing: run scripts/install-test-deps.sh" >&2; exit 1; }

# cargo-zigbuild finds zig as `python3 -m ziglang`: the venv's python3 must come first.
export PATH="$PWD/.venv/bin:$PATH"
# -Zbuild-std on the stable toolchain.
export RUSTC_BOOTSTRAP=1
# zig links its own musl and C runtime objects: rustc's self-contained musl copies (its
# default for *-musl targets, shipped with a prebuilt std we do not have) are not used.
export RUSTFLAGS="-C link-self-contained=no"
# panic_abort is built beside std only because std's build needs it; the image profile
# (Cargo.toml: release with fat LTO, symbols stripped) keeps panic = unwind (the supervised
# tasks' JoinHandles catch panics).
cargo zigbuild --profile image --locked --target "$target" -Zbuild-std=std,panic_abort \
  --bin azureiotsecurity >&2
echo "${CARGO_TARGET_DIR:-$PWD/target}/$target/image/azureiotsecurity"
