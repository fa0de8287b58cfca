#!/usr/bin/env bash
# Records real audit load from auditd's af_unix socket into tests/data/load.log.gz (as root).
#
#   scripts/make-load-capture.sh [SECONDS] [WORKERS]       (default: 15 s, 2 workers)
#
# tests/programs/load_gen.c runs WORKERS processes that posix_spawn /bin/true in a loop (with
# TCP connects/accepts every 10th spawn, non-blocking every 50th) while scripts/capture.py
# reads the socket. The file keeps the WHOLE stream of the window (whatever else the host
# did, too), from the first record of the reader's ready-marker event to the last complete
# line, gzip -9. It must hold at least 100,000 records; it should stay under about 4 MB.
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C.UTF-8

SECONDS_=${1:-15}
WORKERS=${2:-2}
MIN_RECORDS=100000
MAX_BYTES=$((4 * 1024 * 1024))
REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$REPO/tests/data/load.log.gz"
PY=/usr/bin/python3
CAP=("$PY" "$REPO/scripts/capture.py")
WORK=/tmp/azureiotsecurity-load
READER=

say() { echo "make-load-capture: $*" >&2; }
die() { echo "make-load-capture: error: $*" >&2; exit 1; }
cleanup() {
  if [ -n "$READER" ]; then kill -TERM "$READER" 2>/dev/null || true; wait "$READER" || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || die "must run as root"
for p in gcc python3 gzip; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    say "installing $p"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq gcc python3 gzip >/dev/null
    break
  fi
done
"$REPO/scripts/setup-host.sh" >&2

rm -rf "$WORK"
mkdir -m 700 "$WORK"
gcc -O2 -Wall -Wextra -o "$WORK/load_gen" "$REPO/tests/programs/load_gen.c"

raw="$WORK/load.raw"
nonce=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
marker="azureiotsecurity-load-ready-$nonce"
"${CAP[@]}" read --out "$raw" &
READER=$!
ready=no
for ((i = 0; i < 300; i++)); do
  kill -0 "$READER" 2>/dev/null || die "the socket reader exited"
  /bin/true "$marker"
  if "${CAP[@]}" seen "$raw" "$marker"; then ready=yes; break; fi
  sleep 0.5
done
[ "$ready" = yes ] || die "the reader got no events in 150 s (is another reader connected?)"

say "load: $WORKERS workers for $SECONDS_ s"
"$WORK/load_gen" "$SECONDS_" "$WORKERS" | tee "$WORK/load_gen.out" >&2
sleep 2
kill -TERM "$READER"
wait "$READER" || true
READER=

"${CAP[@]}" filter "$raw" --all --from "$marker" >"$WORK/load.log"
stats=$("${CAP[@]}" count "$WORK/load.log")
records=${stats%% records*}
spawned=$(awk '{ s += $3 } END { print s }' "$WORK/load_gen.out")
seen=$(grep -c '^type=EXECVE .* a0="/bin/true" a1="load" ' "$WORK/load.log" || true)
raw_bytes=$(stat -c %s "$WORK/load.log")
gzip -9 -c "$WORK/load.log" >"$WORK/load.log.gz"
gz_bytes=$(stat -c %s "$WORK/load.log.gz")
say "$stats, $raw_bytes bytes ($gz_bytes gzip -9); load_gen spawned $spawned, EXECVE seen $seen"
[ "$records" -ge "$MIN_RECORDS" ] || die "only $records records (< $MIN_RECORDS): run longer"
[ "$gz_bytes" -le "$MAX_BYTES" ] || die "$gz_bytes bytes gzipped (> $MAX_BYTES): run shorter"
cp "$WORK/load.log.gz" "$OUT"
say "wrote $OUT; kernel $(uname -r), $(dpkg-query -W -f='auditd ${Version}' auditd)"
