#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian 12 machine (as root): Debian's auditd
# and the programs the live tests run, a Python venv with the reference schema validator,
# and the IoT Edge stand-ins: Qpid Proton (Debian's python3-qpid-proton, TLS built in) for
# the edgeHub stand-in, openssl for test certificates, Node.js with the official Azure IoT
# SDK (tests/standin/node, from its package-lock.json) as the reference client. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(auditd audispd-plugins openssh-server openssh-client sshpass sudo pamtester
      gcc gcc-multilib libc6-dev-i386 build-essential python3 python3-venv iproute2 procps
      python3-qpid-proton openssl)
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

# The reference validator: python-jsonschema with rfc3339-validator (without it, jsonschema
# silently skips "date-time"). Debian has no package for rfc3339-validator.
if ! .venv/bin/python -c 'import jsonschema, rfc3339_validator' 2>/dev/null; then
  /usr/bin/python3 -m venv .venv
  .venv/bin/pip install -q jsonschema rfc3339-validator
fi
# The official Azure IoT Node.js SDK, pinned by package-lock.json.
node_dir=tests/standin/node
if [ ! -d "$node_dir/node_modules/azure-iot-device-amqp" ] \
   || [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]; then
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
/usr/bin/python3 -c 'import proton; assert proton.SSL.present(), "Proton without TLS"'
echo "install-test-deps: ok"
