#!/usr/bin/env bash
# Fuzz the audit parser, the coalescer + pipeline, the decoders, the twin's apply step, the
# /proc/net socket table parser and the OSBaseline parsers (cargo-fuzz, libFuzzer).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     default: 60 s each for parse, coalesce, decode,
#                                             twin, proc_net, baseline
#
# Installs cargo-fuzz when missing, seeds fuzz/corpus/<target>/ from the real captures in
# tests/data (plus the committed regression inputs in fuzz/regressions/<target>/; twin's seeds
# are only those: the published default desired document and hand-written patches; proc_net's
# are the synthetic socket tables of tests/data/host-ports, whole and line by line; baseline's
# the text files of the synthetic tree tests/data/host-baseline), then runs
# each target for SECONDS on stable Rust without a sanitizer (`-s none`: sanitizers need
# nightly). Debug assertions and overflow checks are on. Exits non-zero if any target
# crashed; the crashing input is in fuzz/artifacts/<target>/. fuzz/corpus and
# fuzz/artifacts are git-ignored: corpora are made at run time, not committed.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
shift || true
if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=(parse coalesce decode twin proc_net baseline)
fi
case "$secs" in
  ''|*[!0-9]*) echo "fuzz.sh: SECONDS must be a number, got '$secs'" >&2; exit 2 ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
command -v python3 >/dev/null || { echo "fuzz.sh: python3 is needed to seed the corpora" >&2; exit 2; }

# Seed corpora from the captures: one file per input, named by its SHA-1 as libFuzzer does.
python3 - "${targets[@]}" <<'PY'
import gzip, hashlib, pathlib, re, shutil, sys

data = pathlib.Path("tests/data")
corpus = pathlib.Path("fuzz/corpus")
captures = {p.name: p.read_bytes() for p in sorted(data.glob("*.log"))}
load = gzip.decompress((data / "load.log.gz").read_bytes())
ID = re.compile(rb"msg=audit\(([0-9.:]+)\)")

def lines(text):
    return [l for l in text.split(b"\n") if l.strip()]

def events(ls):
    """Records grouped by event id, in order of first appearance."""
    groups = {}
    for l in ls:
        m = ID.search(l)
        groups.setdefault(m.group(1) if m else b"", []).append(l)
    return list(groups.values())

def seeds_parse():
    for text in captures.values():
        yield from lines(text)
    # From the load capture: the first records of each type, and the longest ones.
    per_type = {}
    ls = lines(load)
    for l in ls:
        t = l.split(b" msg=", 1)[0]
        if len(per_type.setdefault(t, [])) < 8:
            per_type[t].append(l)
    for v in per_type.values():
        yield from v
    yield from sorted(ls, key=len)[-16:]

def seeds_coalesce():
    # Runs of consecutive lines (interleaved events, EOEs, user records), a varying
    # first byte to pick bounds and tick rates.
    n = 0
    for text in list(captures.values()) + [b"\n".join(lines(load)[:4000])]:
        ls = lines(text)
        for size in (6, 25, 60):
            for i in range(0, len(ls), size):
                chunk = b"\n".join(ls[i:i + size])[:12000]
                yield bytes([n % 256]) + chunk
                n += 1

def seeds_decode():
    wanted = (b"type=EXECVE", b"type=SOCKADDR", b"type=PROCTITLE", b"type=SYSCALL", b"type=SOCKETCALL")
    for text in captures.values():
        for ev in events(lines(text)):
            recs = [l for l in ev if any(w in l for w in wanted)]
            if recs:
                yield b"\n".join(recs)[:16000]
            for l in ev:
                for key in (b"saddr=", b"proctitle="):
                    j = l.find(key)
                    if j >= 0:
                        yield l[j + len(key):].split(b" ")[0].split(b"\x1d")[0]

def seeds_proc_net():
    # The first byte picks the table (low 2 bits) and the byte order (bit 2): the tables as
    # this little-endian machine printed them, whole and one row (with the header) at a time.
    net = data / "host-ports" / "proc" / "1" / "net"
    for i, name in enumerate(("tcp", "tcp6", "udp", "udp6")):
        text = (net / name).read_bytes()
        yield bytes([i]) + text
        yield bytes([i | 4]) + text
        head, *rows = text.split(b"\n")
        for r in rows:
            if r.strip():
                yield bytes([i]) + head + b"\n" + r + b"\n"

def seeds_baseline():
    # The synthetic host tree's text files (sshd_config, limits, passwd, group, shadow,
    # mounts), and sshd_config with its included file after a NUL, as the target splits.
    tree = data / "host-baseline"
    files = sorted(p for p in tree.rglob("*") if p.is_file() and p.name != "README.md")
    for p in files:
        yield p.read_bytes()
    ssh = tree / "etc/ssh"
    yield (ssh / "sshd_config").read_bytes() + b"\0" + (ssh / "sshd_config.d/10-synthetic.conf").read_bytes()

seeders = {"parse": seeds_parse, "coalesce": seeds_coalesce, "decode": seeds_decode,
           "proc_net": seeds_proc_net, "baseline": seeds_baseline}
for target in sys.argv[1:]:
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    n = 0
    for s in seeders.get(target, lambda: [])():
        f = d / hashlib.sha1(s).hexdigest()
        if not f.exists():
            f.write_bytes(s)
            n += 1
    reg = pathlib.Path("fuzz/regressions") / target
    if reg.is_dir():
        for f in reg.iterdir():
            shutil.copyfile(f, d / f.name)
            n += 1
    print(f"fuzz.sh: {target}: {n} new seeds, {sum(1 for _ in d.iterdir())} inputs in {d}")
PY

failed=()
for t in "${targets[@]}"; do
  echo "fuzz.sh: running $t for ${secs}s"
  # -timeout: an input that takes 30 s is a hang, not a slow unit.
  if ! cargo fuzz run --fuzz-dir fuzz -s none "$t" "fuzz/corpus/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1; then
    echo "fuzz.sh: $t FAILED; the input is in fuzz/artifacts/$t/" >&2
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: crashes in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: no crash in ${targets[*]} (${secs}s each)"
