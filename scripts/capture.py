#!/usr/bin/python3
"""Capture tool for tests/data (python3 standard library only).

  capture.py read [--socket PATH] --out RAW [--wait-free SECS]
      Connect to auditd's af_unix socket (string format) and append every byte received to
      RAW, unbuffered, until SIGTERM or SIGINT; then disconnect. auditd 3.0.9 serves ONE
      client at a time (a second one is accepted only when the first leaves), so this first
      waits until no other client is connected (checked with `ss -x`).

  capture.py seen RAW TEXT
      Exit 0 if TEXT occurs in RAW (used to wait for marker execs).

  capture.py filter RAW [--ses N ...] [--pid N ...] [--from TEXT] [--to TEXT] [--drop TEXT ...]
      Print the records of RAW, in their original order, that belong to the scenario: the
      events (grouped by msg=audit(TIME:SERIAL)) with any record whose ses= is a tracked
      session or whose pid= or ppid= is a tracked process. A LOGIN record of a tracked session
      or process adds its new ses; a kept event's pid is tracked from then on. With --from /
      --to, only the lines from the first line containing --from to the last line containing
      --to are considered (--from starts at the first record of the event of that line).
      Events with a record containing a --drop text are left out (the capture's own marker
      execs). With --all, every event of the window is kept (and only --drop applies).

  capture.py pty --password PW [--expect TEXT] -- COMMAND...
      Run COMMAND on a new pseudo-terminal, type PW (and a newline) when TEXT (default
      "assword") appears, copy its output to stdout and exit with its exit status.

  capture.py count RAW
      Print the number of records (lines) and events in RAW.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time

DEFAULT_SOCKET = "/run/audit/audispd_events"


def other_client_connected(path):
    """True if some process holds a connected stream socket to PATH (ss shows the path on
    auditd's accepted end)."""
    try:
        out = subprocess.run(
            ["ss", "-x", "-H", "state", "connected"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    except OSError:
        return False
    return any(path in line.split() for line in out.splitlines())


def cmd_read(args):
    deadline = time.monotonic() + args.wait_free
    while other_client_connected(args.socket):
        if time.monotonic() > deadline:
            print(f"capture.py: another reader still holds {args.socket}", file=sys.stderr)
            return 3
        time.sleep(0.5)

    stop = False

    def on_signal(_sig, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(args.socket)
    except OSError as e:
        print(f"capture.py: cannot connect to {args.socket}: {e}", file=sys.stderr)
        return 2
    sock.settimeout(0.2)
    total = 0
    with open(args.out, "ab", buffering=0) as out:
        while not stop:
            try:
                data = sock.recv(1 << 16)
            except socket.timeout:
                continue
            except InterruptedError:
                continue
            except OSError as e:
                print(f"capture.py: recv: {e}", file=sys.stderr)
                break
            if not data:
                print("capture.py: auditd closed the socket", file=sys.stderr)
                break
            out.write(data)
            total += len(data)
    sock.close()
    print(f"capture.py: read {total} bytes into {args.out}", file=sys.stderr)
    return 0


def cmd_seen(args):
    try:
        with open(args.raw, "rb") as f:
            data = f.read()
    except OSError:
        return 1
    return 0 if args.text.encode() in data else 1


EVENT_ID = re.compile(rb"msg=audit\((\d+\.\d+:\d+)\)")


def field(line, name):
    """The value of the first ` name=value` in LINE (bytes), or None."""
    m = re.search(rb"[ ']" + re.escape(name) + rb"=([^ '\x1d]+)", line)
    return m.group(1) if m else None


def cmd_filter(args):
    with open(args.raw, "rb") as f:
        lines = f.read().split(b"\n")
    # The last element is b"" after a final newline, else a partial line: drop either.
    lines.pop()
    start, end = 0, len(lines)
    if args.start:
        marks = [i for i, l in enumerate(lines) if args.start.encode() in l]
        if not marks:
            sys.exit(f"capture.py: --from {args.start!r} not found")
        start = marks[0]
        m = EVENT_ID.search(lines[start])
        if m:  # start at the first record of that event
            start = next(i for i, l in enumerate(lines) if m.group(0) in l)
    if args.end:
        marks = [i for i, l in enumerate(lines) if args.end.encode() in l]
        if not marks:
            sys.exit(f"capture.py: --to {args.end!r} not found")
        end = marks[-1] + 1
    window = lines[start:end]

    sessions = {s.encode() for s in args.ses}
    pids = {p.encode() for p in args.pid}
    events = {}  # event id -> list of lines
    order = []
    for line in window:
        m = EVENT_ID.search(line)
        key = m.group(1) if m else None
        if key not in events:
            events[key] = []
            order.append(key)
        events[key].append(line)

    drops = [d.encode() for d in args.drop]
    keep = set()
    for key in order:
        recs = events[key]
        if key is None:
            continue
        if any(d in r for d in drops for r in recs):
            continue
        hit = False
        for r in recs:
            if field(r, b"ses") in sessions:
                hit = True
            if field(r, b"pid") in pids or field(r, b"ppid") in pids:
                hit = True
            if r.split(b" msg=")[0].endswith(b"type=LOGIN"):
                old = field(r, b"old-ses")
                if old in sessions or field(r, b"pid") in pids:
                    hit = True
        if not hit and not args.all:
            continue
        keep.add(key)
        for r in recs:
            pid = field(r, b"pid")
            if pid and r.split(b" msg=")[0].endswith(b"type=SYSCALL"):
                pids.add(pid)
            if r.split(b" msg=")[0].endswith(b"type=LOGIN"):
                new = field(r, b"ses")
                if new and new != b"4294967295":
                    sessions.add(new)
    out = sys.stdout.buffer
    for line in window:
        m = EVENT_ID.search(line)
        if m and m.group(1) in keep:
            out.write(line + b"\n")
    return 0


def cmd_pty(args):
    import pty

    if not args.command:
        sys.exit("capture.py pty: no command")
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execvp(args.command[0], args.command)
        finally:
            os._exit(127)
    seen = b""
    typed = False
    deadline = time.monotonic() + args.timeout
    while True:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        seen += data
        if not typed and args.expect.encode() in seen:
            time.sleep(0.2)
            os.write(fd, args.password.encode() + b"\n")
            typed = True
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) & 0xFF


def cmd_count(args):
    with open(args.raw, "rb") as f:
        lines = [l for l in f.read().split(b"\n") if l]
    ids = {m.group(1) for m in (EVENT_ID.search(l) for l in lines) if m}
    print(f"{len(lines)} records, {len(ids)} events")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("read")
    r.add_argument("--socket", default=DEFAULT_SOCKET)
    r.add_argument("--out", required=True)
    r.add_argument("--wait-free", type=float, default=120.0)
    s = sub.add_parser("seen")
    s.add_argument("raw")
    s.add_argument("text")
    f = sub.add_parser("filter")
    f.add_argument("raw")
    f.add_argument("--ses", action="append", default=[])
    f.add_argument("--pid", action="append", default=[])
    f.add_argument("--from", dest="start")
    f.add_argument("--to", dest="end")
    f.add_argument("--drop", action="append", default=[])
    f.add_argument("--all", action="store_true", help="keep every event of the window")
    t = sub.add_parser("pty")
    t.add_argument("--password", required=True)
    t.add_argument("--expect", default="assword")
    t.add_argument("--timeout", type=float, default=30.0)
    t.add_argument("command", nargs=argparse.REMAINDER)
    c = sub.add_parser("count")
    c.add_argument("raw")
    args = p.parse_args()
    if args.cmd == "pty" and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    commands = {
        "read": cmd_read,
        "seen": cmd_seen,
        "filter": cmd_filter,
        "pty": cmd_pty,
        "count": cmd_count,
    }
    return commands[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
