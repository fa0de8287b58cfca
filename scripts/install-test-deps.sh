#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian 12 machine (as root): Debian's auditd
# and the programs the live tests run, and a Python venv with the reference schema
# validator. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(auditd audispd-plugins openssh-server openssh-client sshpass sudo pamtester
      gcc gcc-multilib libc6-dev-i386 build-essential python3 python3-venv iproute2 procps)
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
echo "install-test-deps: ok"
