#!/usr/bin/env bash
# ARM proven, not assumed: builds the module for an ARM target (scripts/build-arm.sh) and
# runs that binary under Debian's qemu-user-static beside the amd64 release binary. Every
# output must be equal byte for byte:
#   --version; rules --arch A for each architecture; replay (events) and replay --messages
#   (same --agent-id) of every capture in tests/data (load.log.gz decompressed).
# A mismatch fails with the first lines of the diff. CI runs it for armv7 (scripts/test.sh);
# aarch64 is run before a release:
#   scripts/check-arm.sh armv7-unknown-linux-musleabihf
#   scripts/check-arm.sh aarch64-unknown-linux-musl
# AMD64_BIN: the reference binary (default target/release/azureiotsecurity, built).
# ARM_BIN: an ARM binary already built (default: scripts/build-arm.sh builds it).
# LOAD_LINES: compare only the first N lines of load.log.gz (default: the whole capture).
# ARM_RUNNER: what runs the ARM binary (default qemu-arm-static / qemu-aarch64-static; on an
# ARM machine `env` runs it natively).
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:-armv7-unknown-linux-musleabihf}
case "$target" in
  armv7-unknown-linux-musleabihf) qemu=qemu-arm-static; elf_class=1; elf_machine=40 ;;  # EM_ARM
  aarch64-unknown-linux-musl) qemu=qemu-aarch64-static; elf_class=2; elf_machine=183 ;;  # EM_AARCH64
  *) echo "check-arm: unsupported target $target" >&2; exit 2 ;;
esac
qemu=${ARM_RUNNER:-$qemu}
command -v "$qemu" >/dev/null \
  || { echo "check-arm: $qemu missing: run scripts/install-test-deps.sh" >&2; exit 1; }

start=$SECONDS
amd64=${AMD64_BIN:-$PWD/target/release/azureiotsecurity}
if [ -z "${AMD64_BIN:-}" ]; then
  cargo build --release --locked --bin azureiotsecurity
fi
if [ -n "${ARM_BIN:-}" ]; then
  arm=$ARM_BIN
else
  arm=$(scripts/build-arm.sh "$target" | tail -n 1)
fi
built=$((SECONDS - start))

# The binary must really be for the target: ELF class (byte 4) and e_machine (bytes 18-19,
# little endian), so qemu is what runs it and not the host.
read -r class < <(od -An -tu1 -j4 -N1 "$arm")
read -r machine < <(od -An -tu2 -j18 -N2 "$arm")
if [ "$class" != "$elf_class" ] || [ "$machine" != "$elf_machine" ]; then
  echo "check-arm: $arm is not a $target binary (ELF class $class, machine $machine)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/amd64" "$work/arm"
checks=0
failed=0
# run NAME STDIN ARGS...: the same command with both binaries, stdout and exit code compared.
run() {
  local name=$1 input=$2 rc_a=0 rc_b=0 t0=$SECONDS
  shift 2
  "$amd64" "$@" <"$input" >"$work/amd64/$name" 2>"$work/amd64/$name.err" || rc_a=$?
  "$qemu" "$arm" "$@" <"$input" >"$work/arm/$name" 2>"$work/arm/$name.err" || rc_b=$?
  checks=$((checks + 1))
  echo "check-arm: $name: $((SECONDS - t0)) s"
  if [ "$rc_a" != "$rc_b" ]; then
    echo "check-arm: MISMATCH $name: exit code amd64 $rc_a, $target $rc_b" >&2
    head -n 5 "$work/arm/$name.err" >&2
    failed=$((failed + 1))
  elif ! cmp -s "$work/amd64/$name" "$work/arm/$name"; then
    echo "check-arm: MISMATCH $name ($* ), first lines of the diff (amd64 <, $target >):" >&2
    diff "$work/amd64/$name" "$work/arm/$name" | head -n 20 | cut -c1-400 >&2 || true
    failed=$((failed + 1))
  elif [ ! -s "$work/amd64/$name" ]; then
    # Equal and empty proves nothing: every command here prints something.
    echo "check-arm: $name printed nothing on either binary" >&2
    failed=$((failed + 1))
  fi
}

run version /dev/null --version
for a in x86_64 i686 aarch64 armv7l; do
  run "rules-$a" /dev/null rules --arch "$a"
done
agent=6f1c2d3e-4a5b-4c6d-8e7f-8091a2b3c4d5
for log in tests/data/*.log tests/data/*.log.gz; do
  name=$(basename "$log")
  input=$log
  if [[ $log == *.gz ]]; then
    input="$work/${name%.gz}"
    if [ -n "${LOAD_LINES:-}" ] && [ "$name" = load.log.gz ]; then
      # A slice: both binaries read the same lines, so the comparison holds for it.
      gzip -dc "$log" | head -n "$LOAD_LINES" >"$input" || true
      name="load.log.gz-first-$LOAD_LINES-lines"
    else
      gzip -dc "$log" >"$input"
    fi
  fi
  run "$name.events" "$input" replay -
  run "$name.messages" "$input" replay --messages --agent-id "$agent" -
done

size=$(stat -c %s "$arm")
echo "check-arm: $target: $checks outputs compared, $failed different;" \
  "build ${built}s, check $((SECONDS - start - built))s, binary $size bytes"
[ "$failed" -eq 0 ]
