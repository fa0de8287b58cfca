#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian 12 machine (as root): Debian's auditd
# and the programs the live tests run, a Python venv (.venv) with the reference schema
# validator and Qpid Proton for the edgeHub stand-in, openssl for test certificates, and
# Node.js with the official Azure IoT SDK (tests/standin/node, from its package-lock.json)
# as the reference client, and the ARM cross-build and its emulator (scripts/build-arm.sh,
# scripts/check-arm.sh): rust-src, zig and cargo-zigbuild in the venv, qemu-user-static.
# Idempotent and quiet: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(auditd audispd-plugins openssh-server openssh-client sshpass sudo pamtester
      gcc gcc-multilib libc6-dev-i386 build-essential python3 python3-venv iproute2 procps
      openssl
      # python-qpid-proton is only an sdist on PyPI: it compiles, and it has TLS only when
      # libssl-dev and pkg-config are there at build time (else SSL is silently stubbed).
      python3-dev libssl-dev pkg-config
      # The ARM binaries run under user-mode emulation (qemu-arm-static, qemu-aarch64-static).
      qemu-user-static)
# Node.js: Debian's, unless a node and npm are already there (e.g. from NodeSource).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  pkgs+=(nodejs npm)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-test-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The venv: the reference validator (python-jsonschema with rfc3339-validator; without it,
# jsonschema silently skips "date-time"; Debian has no rfc3339-validator) and Qpid Proton.
[ -x .venv/bin/python ] || /usr/bin/python3 -m venv .venv
if ! .venv/bin/python -c 'import jsonschema, rfc3339_validator' 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check jsonschema rfc3339-validator
fi
proton_ok='import proton; assert proton.VERSION >= (0, 40, 0) and proton.SSL.present()'
if ! .venv/bin/python -c "$proton_ok" 2>/dev/null; then
  # --no-cache-dir: never reuse a wheel built before libssl-dev was installed (no TLS).
  echo "install-test-deps: building python-qpid-proton (about 30 s)"
  .venv/bin/pip install -q --disable-pip-version-check --no-cache-dir --force-reinstall \
    python-qpid-proton==0.40.0
fi
.venv/bin/python -c "$proton_ok" \
  || { echo "install-test-deps: python-qpid-proton in .venv has no TLS" >&2; exit 1; }

# The ARM cross-build: std for the ARM musl targets is built from source (no prebuilt one
# can be installed here), zig is the C compiler and linker. Pinned: a new zig can change
# the binaries.
if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
  echo "install-test-deps: rustup component add rust-src"
  rustup component add rust-src >/dev/null
fi
if ! .venv/bin/python -m ziglang version 2>/dev/null | grep -qx '0.17.0' \
   || ! .venv/bin/cargo-zigbuild --version 2>/dev/null | grep -qx 'cargo-zigbuild 0.24.0'; then
  echo "install-test-deps: ziglang and cargo-zigbuild in .venv"
  .venv/bin/pip install -q --disable-pip-version-check ziglang==0.17.0 cargo-zigbuild==0.24.0
fi

# The official Azure IoT Node.js SDK, pinned by package-lock.json; again only when
# node_modules is missing or older than the lock file.
node_dir=tests/standin/node
if [ ! -d "$node_dir/node_modules/azure-iot-device-amqp" ] \
   || [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]; then
  echo "install-test-deps: npm ci in $node_dir"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
echo "install-test-deps: ok"
