#!/usr/bin/env bash
# Runs the module against local stand-ins for IoT Edge: a workload API on a unix socket and
# an edgeHub (Qpid Proton) on a free port with a test CA, both from tests/standin. What the
# stand-in edgeHub receives is written to $dir/edgehub.jsonl. The module reads the real
# auditd socket (run scripts/setup-host.sh first) in try-out mode. Ctrl-C stops everything.
# The stand-ins run with .venv's Python and its Qpid Proton (scripts/install-test-deps.sh).
#
#   scripts/run-with-standins.sh [path/to/azureiotsecurity]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/azureiotsecurity}
dir=$(mktemp -d /tmp/azureiotsecurity-standins.XXXXXX)
key=$(printf 'stand-in module key' | base64)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
py=.venv/bin/python
[ -x "$py" ] && "$py" -c 'import proton' 2>/dev/null \
  || { echo "run-with-standins: no Qpid Proton in .venv: run scripts/install-test-deps.sh" >&2; exit 2; }

bash tests/standin/make_certs.sh "$dir" >/dev/null
"$py" tests/standin/workload.py --socket "$dir/workload.sock" --module-key-base64 "$key" \
  --module azureiotsecurity --generation-id g1 --trust-bundle "$dir/ca.pem" \
  --record "$dir/workload.jsonl" > "$dir/workload.out" &
pids+=($!)
"$py" tests/standin/edgehub.py --cert "$dir/server-chain.pem" --key "$dir/server.key" \
  --module-key-base64 "$key" --hub myhub.azure-devices.net --device mydevice \
  --module azureiotsecurity --record "$dir/edgehub.jsonl" > "$dir/edgehub.out" &
pids+=($!)
for _ in $(seq 100); do grep -q READY "$dir/edgehub.out" 2>/dev/null && break; sleep 0.1; done
port=$(awk '/READY/ {print $2}' "$dir/edgehub.out")
echo "stand-ins in $dir: edgeHub on localhost:$port, records in $dir/edgehub.jsonl" >&2

export IOTEDGE_WORKLOADURI="unix://$dir/workload.sock" IOTEDGE_DEVICEID=mydevice \
  IOTEDGE_MODULEID=azureiotsecurity IOTEDGE_MODULEGENERATIONID=g1 \
  IOTEDGE_IOTHUBHOSTNAME=myhub.azure-devices.net IOTEDGE_GATEWAYHOSTNAME="localhost:$port" \
  IOTEDGE_AUTHSCHEME=sasToken IOTEDGE_APIVERSION=2018-06-28 \
  AZUREIOTSECURITY_MODULE__TRYOUT=true AZUREIOTSECURITY_MODULE__DATA_DIR="$dir/data"
"$bin" run
