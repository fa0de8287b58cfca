#!/usr/bin/env bash
# Records the real audit stream of a scenario into tests/data/ (as root, on a Debian 12 host).
#
#   scripts/capture.sh SCENARIO...     exec_args exec_i386 net_tcp login_ssh login_local
#                                      enriched_node, or "all"
#
# How a capture is made:
#  * scripts/setup-host.sh prepares auditd (af_unix plugin, string format, the module's rules).
#  * scripts/capture.py reads auditd's af_unix socket into a scratch file. auditd 3.0.9 serves
#    ONE client at a time, so the reader connects only for the capture (it first waits until
#    no other reader is connected), and proves it is the one served by waiting to see a
#    marker exec ("/bin/true azureiotsecurity-capture-ready-NONCE") in its stream.
#  * The scenario runs in a subshell that first sets its own audit login uid
#    (echo 0 > /proc/self/loginuid): the kernel gives it a fresh session id, which all its
#    processes inherit (auid=0 ses=N, as for an administrator's login session). Only the
#    events of that session (and of sessions opened from it, through LOGIN records) and of
#    explicitly seeded processes (the sshd of login_ssh) are kept, in stream order, from the
#    scenario's begin marker on; the marker execs themselves are dropped.
#  * The reader stays connected 2 s after the scenario, then disconnects.
# Files: tests/data/<scenario>.log (login_ssh also: nothing else; enriched_node writes
# enriched_node.log and raw_format.log; net_tcp also writes auditlog_excerpt.log, the same
# scenario's events as /var/log/audit/audit.log has them). See tests/data/README.md.
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C.UTF-8

REPO="$(cd "$(dirname "$0")/.." && pwd)"
DATA="$REPO/tests/data"
PY=/usr/bin/python3
CAP=("$PY" "$REPO/scripts/capture.py")
AUDITD_CONF=/etc/audit/auditd.conf
TEST_USER=aiostest
TEST_USER2=aiostest2
TEST_PW='Aios-capture-pw-1'
# A fixed path, so that the captures name the same files each time.
WORK=/tmp/azureiotsecurity-capture
rm -rf "$WORK"
mkdir -m 700 "$WORK"
READER=
SSHD=
CONF_SAVED=

say() { echo "capture: $*" >&2; }
die() { echo "capture: error: $*" >&2; exit 1; }

cleanup() {
  set +e
  if [ -n "$READER" ]; then kill -TERM "$READER" 2>/dev/null; wait "$READER" 2>/dev/null; fi
  if [ -n "$SSHD" ]; then kill -TERM "$SSHD" 2>/dev/null; wait "$SSHD" 2>/dev/null; fi
  for u in "$TEST_USER" "$TEST_USER2"; do
    id "$u" >/dev/null 2>&1 && userdel -r "$u" >/dev/null 2>&1
  done
  if [ -n "$CONF_SAVED" ]; then
    cp "$CONF_SAVED" "$AUDITD_CONF"
    restart_auditd
  fi
  rm -rf "$WORK" "/tmp/aios cap"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || die "must run as root"
[ $# -gt 0 ] || die "usage: $0 SCENARIO... (exec_args exec_i386 net_tcp login_ssh login_local enriched_node activity | all)"

# Packages the scenarios need (a fresh CI machine has none of them).
APT_UPDATED=no
need() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$APT_UPDATED" = no ]; then apt-get update -qq; APT_UPDATED=yes; fi
  apt-get install -y -qq "${missing[@]}" >/dev/null
}

setup_host() { "$REPO/scripts/setup-host.sh" >&2; }

restart_auditd() {
  local pid
  pid=$(auditctl -s | awk '$1 == "pid" { print $2 }')
  if [ "${pid:-0}" != 0 ]; then
    say "restarting auditd (pid $pid) for the new auditd.conf"
    kill -TERM "$pid"
    for _ in $(seq 200); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then die "auditd (pid $pid) did not exit"; fi
  fi
  setup_host
}

NONCE=
start_reader() { # raw file
  local raw=$1 i
  NONCE=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
  : >"$raw"
  "${CAP[@]}" read --out "$raw" &
  READER=$!
  for ((i = 0; i < 300; i++)); do
    kill -0 "$READER" 2>/dev/null || die "the socket reader exited (see above)"
    /bin/true "azureiotsecurity-capture-ready-$NONCE"
    if "${CAP[@]}" seen "$raw" "azureiotsecurity-capture-ready-$NONCE"; then
      return
    fi
    sleep 0.5
  done
  die "the reader got no events in 150 s (is another reader connected to the socket?)"
}

stop_reader() {
  sleep 2
  kill -TERM "$READER"
  wait "$READER" || true
  READER=
}

# Runs "$@" in a subshell with its own audit session; writes the session id to $WORK/ses.
tagged() {
  (
    echo 0 >"/proc/$BASHPID/loginuid"
    read -r ses <"/proc/$BASHPID/sessionid" || true # no trailing newline
    echo "$ses" >"$WORK/ses"
    /bin/true "azureiotsecurity-capture-begin-$NONCE"
    "$@"
    /bin/true "azureiotsecurity-capture-end-$NONCE"
  )
}

# filter RAW OUT [extra capture.py filter arguments]
filter_to() {
  local raw=$1 out=$2
  shift 2
  "${CAP[@]}" filter "$raw" --ses "$(cat "$WORK/ses")" \
    --from "azureiotsecurity-capture-begin-$NONCE" \
    --drop "azureiotsecurity-capture-begin-$NONCE" \
    --drop "azureiotsecurity-capture-end-$NONCE" "$@" >"$out"
  say "$(basename "$out"): $("${CAP[@]}" count "$out"), $(stat -c %s "$out") bytes"
}

# capture NAME FUNCTION [filter arguments]: the whole dance for one scenario.
capture() {
  local name=$1 fn=$2
  shift 2
  local raw="$WORK/$name.raw"
  start_reader "$raw"
  tagged "$fn"
  stop_reader
  filter_to "$raw" "$DATA/$name.log" "$@"
}

# ---------------------------------------------------------------- exec_args
exec_args_body() {
  /bin/echo "arg with space" 'double"quote' "single'quote" $'tab\there' $'new\nline' \
    'ünïcödé' 'back\slash' 'a=b' '' 'semi;colon' >/dev/null
  /bin/true "$BIG_ARG"
  /bin/true "${MANY_ARGS[@]}"
  "/tmp/aios cap/ünï/my \"echo\" 'prog'" "exe with special characters" >/dev/null
  /usr/bin/env /bin/echo "via env" >/dev/null
  /bin/sh -c 'exec /bin/echo via-sh-exec' >/dev/null
  "/tmp/aios cap/script.sh" "script arg"
  "$WORK/execveat_probe" >/dev/null
  /nonexistent/azureiotsecurity-no-such-program 2>/dev/null || true
}
scenario_exec_args() {
  need gcc
  gcc -O2 -Wall -Wextra -o "$WORK/execveat_probe" "$REPO/tests/programs/execveat_probe.c"
  printf -v BIG_ARG '%9000s' ''
  BIG_ARG=${BIG_ARG// /x}
  MANY_ARGS=()
  local i a
  for ((i = 1; i <= 2100; i++)); do
    printf -v a 'arg%04d' "$i"
    MANY_ARGS+=("$a")
  done
  mkdir -p "/tmp/aios cap/ünï"
  cp /bin/echo "/tmp/aios cap/ünï/my \"echo\" 'prog'"
  printf '#!/bin/sh\nexit 0\n' >"/tmp/aios cap/script.sh"
  chmod +x "/tmp/aios cap/script.sh"
  capture exec_args exec_args_body
  rm -rf "/tmp/aios cap"
}

# ---------------------------------------------------------------- exec_i386
scenario_exec_i386() {
  need gcc gcc-multilib
  gcc -m32 -static -O2 -Wall -Wextra -o "$WORK/i386_probe" "$REPO/tests/programs/i386_probe.c"
  capture exec_i386 i386_body
}
i386_body() { "$WORK/i386_probe" >&2; }

# ---------------------------------------------------------------- net_tcp
scenario_net_tcp() {
  need gcc
  gcc -O2 -Wall -Wextra -o "$WORK/net_probe" "$REPO/tests/programs/net_probe.c"
  capture net_tcp net_body
  # The same scenario's events as audit.log has them (no EOE lines). auditd flushes
  # incrementally; give it a moment.
  sleep 1
  local logs=()
  [ -f /var/log/audit/audit.log.1 ] && logs+=(/var/log/audit/audit.log.1)
  logs+=(/var/log/audit/audit.log)
  cat "${logs[@]}" >"$WORK/audit.log"
  filter_to "$WORK/audit.log" "$DATA/auditlog_excerpt.log"
}
net_body() { "$WORK/net_probe" >&2; }

# ---------------------------------------------------------------- users
make_user() { # name
  useradd -m -s /bin/bash "$1"
  echo "$1:$TEST_PW" | chpasswd
}

# ---------------------------------------------------------------- login_ssh
SSH_PORT=
ssh_opts() {
  echo -F /dev/null -p "$SSH_PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o LogLevel=ERROR -o ConnectTimeout=10
}
login_ssh_body() {
  local o
  read -ra o <<<"$(ssh_opts)"
  local pw=(-o PubkeyAuthentication=no -o PreferredAuthentications=password
    -o NumberOfPasswordPrompts=1)
  # 1. wrong password for an existing user
  if sshpass -p wrong-password ssh "${o[@]}" "${pw[@]}" "$TEST_USER@127.0.0.1" true 2>/dev/null; then
    die "ssh with a wrong password succeeded"
  fi
  # 2. a user that does not exist
  if sshpass -p wrong-password ssh "${o[@]}" "${pw[@]}" "nosuchuser@127.0.0.1" true 2>/dev/null; then
    die "ssh as an invalid user succeeded"
  fi
  # 3. right password
  sshpass -p "$TEST_PW" ssh "${o[@]}" "${pw[@]}" "$TEST_USER@127.0.0.1" true ||
    die "ssh with the right password failed"
  # 4. key, no tty
  ssh "${o[@]}" -i "$WORK/id_ed25519" -o BatchMode=yes "$TEST_USER@127.0.0.1" id >&2 ||
    die "ssh with a key failed"
  # 5. key, with a tty
  ssh "${o[@]}" -tt -i "$WORK/id_ed25519" -o BatchMode=yes "$TEST_USER@127.0.0.1" id </dev/null >&2 ||
    die "ssh -tt with a key failed"
}
scenario_login_ssh() {
  need openssh-server openssh-client sshpass
  make_user "$TEST_USER"
  ssh-keygen -q -t ed25519 -N '' -C azureiotsecurity-capture -f "$WORK/id_ed25519"
  install -d -m 700 -o "$TEST_USER" -g "$TEST_USER" "/home/$TEST_USER/.ssh"
  install -m 600 -o "$TEST_USER" -g "$TEST_USER" "$WORK/id_ed25519.pub" \
    "/home/$TEST_USER/.ssh/authorized_keys"
  ssh-keygen -A >/dev/null
  mkdir -p /run/sshd
  SSH_PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  /usr/sbin/sshd -D -p "$SSH_PORT" -o ListenAddress=127.0.0.1 -o PidFile="$WORK/sshd.pid" \
    -o UsePAM=yes -o PasswordAuthentication=yes -o KbdInteractiveAuthentication=no \
    -o PermitRootLogin=no -o MaxStartups=50 -E "$WORK/sshd.log" &
  SSHD=$!
  for _ in $(seq 50); do
    ss -ltn "sport = :$SSH_PORT" | grep -q LISTEN && break
    sleep 0.1
  done
  say "sshd (pid $SSHD) on 127.0.0.1:$SSH_PORT"
  # sshd runs outside the scenario's session (as a daemon would): follow it by its pid.
  capture login_ssh login_ssh_body --pid "$SSHD"
  kill -TERM "$SSHD"
  wait "$SSHD" || true
  SSHD=
  userdel -r "$TEST_USER" >/dev/null 2>&1
}

# ---------------------------------------------------------------- login_local
login_local_body() {
  # 1. su root -> user (pam_rootok, no password)
  su - "$TEST_USER" -c id >&2
  # 2. su user -> root with a wrong password, typed on a pty
  if "${CAP[@]}" pty --password wrong-password -- \
    setpriv --reuid "$TEST_USER2" --regid "$TEST_USER2" --init-groups /bin/su root -c true >&2; then
    die "su with a wrong password succeeded"
  fi
  # 3. su user2 -> user with the right password, typed on a pty
  "${CAP[@]}" pty --password "$TEST_PW" -- \
    setpriv --reuid "$TEST_USER2" --regid "$TEST_USER2" --init-groups /bin/su "$TEST_USER" -c id >&2 ||
    die "su with the right password failed"
  # 4. pamtester, service login, right and wrong password (read from stdin)
  printf '%s\n' "$TEST_PW" | pamtester login "$TEST_USER" authenticate >&2 ||
    die "pamtester with the right password failed"
  if printf '%s\n' wrong-password | pamtester login "$TEST_USER" authenticate >&2; then
    die "pamtester with a wrong password succeeded"
  fi
  # 5. sudo as root to the user (not a login)
  sudo -u "$TEST_USER" id >&2
}
scenario_login_local() {
  need pamtester sudo util-linux
  make_user "$TEST_USER"
  make_user "$TEST_USER2"
  capture login_local login_local_body
  userdel -r "$TEST_USER" >/dev/null 2>&1
  userdel -r "$TEST_USER2" >/dev/null 2>&1
}

# ---------------------------------------------------------------- enriched_node
few_execs() {
  /bin/true
  /bin/echo "arg with space" 'a=b' >/dev/null
  /bin/sh -c '/bin/true sh-child'
  exec 3>/dev/udp/127.0.0.1/9 # bash connects a UDP socket
  exec 3>&-
}
set_conf() { # key value
  sed -i -E "s|^[[:space:]]*$1[[:space:]]*=.*|$1 = $2|" "$AUDITD_CONF"
  grep -qE "^$1 = $2\$" "$AUDITD_CONF" || die "could not set $1 in $AUDITD_CONF"
}
scenario_enriched_node() {
  CONF_SAVED="$WORK/auditd.conf.orig"
  cp "$AUDITD_CONF" "$CONF_SAVED"
  set_conf name_format hostname
  set_conf log_format ENRICHED
  restart_auditd
  capture enriched_node few_execs
  cp "$CONF_SAVED" "$AUDITD_CONF"
  set_conf name_format none
  set_conf log_format RAW
  restart_auditd
  capture raw_format few_execs
  cp "$CONF_SAVED" "$AUDITD_CONF"
  CONF_SAVED=
  restart_auditd
}

# ---------------------------------------------------------------- activity
# A few minutes of an ordinary device's life, for the cost benchmark: a local service
# answering health checks, a periodic health script, a log rotation-like job.
activity_body() {
  local port end
  port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$PY" -m http.server --bind 127.0.0.1 "$port" --directory "$WORK" >/dev/null 2>&1 &
  local server=$!
  sleep 1
  end=$((SECONDS + ${ACTIVITY_SECONDS:-120}))
  local n=0
  while [ "$SECONDS" -lt "$end" ]; do
    n=$((n + 1))
    date -u +%FT%TZ >/dev/null
    cat /proc/loadavg >/dev/null
    df -P / >/dev/null
    ps -e -o pid=,comm= >/dev/null
    "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/', timeout=5).read()"
    if [ $((n % 6)) -eq 0 ]; then
      find "$WORK" -maxdepth 1 -name '*.old' -delete
      gzip -c /etc/os-release >"$WORK/rotated.old"
      ip -br addr >/dev/null
    fi
    sleep 5
  done
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}
scenario_activity() {
  capture activity activity_body
}

# ----------------------------------------------------------------
scenarios=("$@")
if [ "${scenarios[0]}" = all ]; then
  scenarios=(exec_args exec_i386 net_tcp login_ssh login_local enriched_node)
fi
for s in "${scenarios[@]}"; do
  declare -F "scenario_$s" >/dev/null || die "unknown scenario $s"
done
mkdir -p "$DATA"
setup_host
for s in "${scenarios[@]}"; do
  say "== $s"
  "scenario_$s"
done
say "done; kernel $(uname -r), $(dpkg-query -W -f='auditd ${Version}' auditd)"
