#!/usr/bin/env bash
# Prepares this host's auditd for azureiotsecurity (as root; Debian 12; works without systemd).
# Idempotent: run it as often as you like. The module itself never changes the host; this does.
#
#   scripts/setup-host.sh          install auditd if missing, enable its af_unix plugin (string
#                                  format, /var/run/audispd_events), start auditd (or restart it
#                                  if the plugin config changed), enable audit, -b 8192, and
#                                  (re)load the module's rules (key azureiotsecurity)
#   scripts/setup-host.sh --stop   remove the module's rules and stop auditd
#
# The rules come from "$AZUREIOTSECURITY_BIN rules" if that is set, else from
# target/release/azureiotsecurity or target/debug/azureiotsecurity (whichever exists), else
# from "cargo run -q -- rules". Only rules keyed azureiotsecurity are replaced; other rules stay.
set -euo pipefail

KEY=azureiotsecurity
SOCKET=/var/run/audispd_events
PLUGIN=/etc/audit/plugins.d/af_unix.conf
AUDITD=/sbin/auditd
BACKLOG=8192
REPO="$(cd "$(dirname "$0")/.." && pwd)"

say() { echo "setup-host: $*"; }
die() { echo "setup-host: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

# The pid auditd registered with the kernel (0 if none), if that process is really auditd.
auditd_pid() {
  local pid
  pid=$(auditctl -s 2>/dev/null | awk '$1 == "pid" { print $2 }')
  pid=${pid:-0}
  if [ "$pid" != 0 ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = auditd ]; then
    echo "$pid"
  else
    # A stale registration (auditd killed hard), or an auditd that has not registered yet.
    pgrep -x auditd | head -n1 || echo 0
  fi
}

wait_for() { # seconds, description, command...
  local secs=$1 what=$2; shift 2
  local i
  for ((i = 0; i < secs * 10; i++)); do
    if "$@"; then return 0; fi
    sleep 0.1
  done
  die "timed out after ${secs}s waiting for $what"
}

registered() { [ "$(auditctl -s 2>/dev/null | awk '$1 == "pid" { print $2 }')" != 0 ]; }
not_running() { [ "$(auditd_pid)" = 0 ]; }
socket_ready() { [ -S "$SOCKET" ]; }

stop_auditd() {
  local pid
  pid=$(auditd_pid)
  if [ "$pid" = 0 ]; then
    say "auditd is not running"
    return
  fi
  say "stopping auditd (pid $pid)"
  kill -TERM "$pid"
  wait_for 20 "auditd to exit" not_running
}

start_auditd() {
  mkdir -p /var/log/audit
  say "starting $AUDITD"
  # auditd forks into the background; the parent returns once the daemon is set up.
  "$AUDITD" || die "$AUDITD failed to start (exit $?)"
  wait_for 20 "auditd to register with the kernel (auditctl -s pid != 0)" registered
  say "auditd running (pid $(auditd_pid))"
}

if [ "${1:-}" = --stop ]; then
  if command -v auditctl >/dev/null; then
    auditctl -D -k "$KEY" >/dev/null
    say "removed the audit rules keyed $KEY"
    stop_auditd
  else
    say "auditctl is not installed; nothing to stop"
  fi
  exit 0
elif [ $# -gt 0 ]; then
  die "usage: $0 [--stop]"
fi

# 1. Packages.
missing=()
for p in auditd audispd-plugins; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
else
  say "auditd and audispd-plugins are installed"
fi
[ -f "$PLUGIN" ] || die "$PLUGIN is missing (it ships with the auditd package)"

# 2. The af_unix plugin: active, string format, Debian's socket path, mode 0640.
set_key() { # file key value: replace "key = ..." or append it
  local file=$1 key=$2 value=$3
  if grep -qE "^[[:space:]]*${key}[[:space:]]*=" "$file"; then
    sed -i -E "s|^[[:space:]]*${key}[[:space:]]*=.*|${key} = ${value}|" "$file"
  else
    echo "${key} = ${value}" >>"$file"
  fi
}
before=$(sha256sum "$PLUGIN")
set_key "$PLUGIN" active yes
set_key "$PLUGIN" format string
set_key "$PLUGIN" args "0640 $SOCKET"
plugin_changed=no
if [ "$before" != "$(sha256sum "$PLUGIN")" ]; then
  plugin_changed=yes
  say "updated $PLUGIN (active = yes, format = string, args = 0640 $SOCKET)"
else
  say "$PLUGIN already set (active = yes, format = string, args = 0640 $SOCKET)"
fi

# 3. auditd: start it, or restart it when the plugin config changed (plugins load at start).
mkdir -p /var/log/audit
pid=$(auditd_pid)
if [ "$pid" = 0 ]; then
  start_auditd
elif [ "$plugin_changed" = yes ] || ! socket_ready; then
  say "restarting auditd (pid $pid) to load the af_unix plugin"
  stop_auditd
  start_auditd
else
  say "auditd already running (pid $pid)"
fi

# 4. Kernel audit settings.
auditctl -e 1 >/dev/null
auditctl -b "$BACKLOG" >/dev/null
say "audit enabled, backlog limit $BACKLOG"

# 5. The module's rules.
if [ -n "${AZUREIOTSECURITY_BIN:-}" ]; then
  rules_cmd=("$AZUREIOTSECURITY_BIN" rules)
elif [ -x "$REPO/target/release/azureiotsecurity" ]; then
  rules_cmd=("$REPO/target/release/azureiotsecurity" rules)
elif [ -x "$REPO/target/debug/azureiotsecurity" ]; then
  rules_cmd=("$REPO/target/debug/azureiotsecurity" rules)
else
  rules_cmd=(cargo run -q --manifest-path "$REPO/Cargo.toml" --bin azureiotsecurity -- rules)
fi
rules_file=$(mktemp /tmp/azureiotsecurity-rules.XXXXXX)
trap 'rm -f "$rules_file"' EXIT
"${rules_cmd[@]}" >"$rules_file" || die "'${rules_cmd[*]}' failed"
n_rules=$(grep -cv '^#' "$rules_file" || true)
[ "$n_rules" -gt 0 ] || die "'${rules_cmd[*]}' printed no rules"
if grep -v '^#' "$rules_file" | grep -qv -- "-k $KEY\$"; then
  die "'${rules_cmd[*]}' printed a rule without -k $KEY"
fi
auditctl -D -k "$KEY" >/dev/null
# auditctl -R needs a regular file: on a pipe (/dev/stdin) it fails without a message.
auditctl -R "$rules_file" >/dev/null || die "auditctl -R rejected the rules of '${rules_cmd[*]}'"
loaded=$(auditctl -l -k "$KEY" | grep -c "key=$KEY" || true)
[ "$loaded" = "$n_rules" ] || die "loaded $loaded rules, expected $n_rules"
say "loaded $n_rules rules keyed $KEY (from '${rules_cmd[*]}')"

# 6. The socket the module reads.
wait_for 20 "$SOCKET" socket_ready
say "af_unix socket ready: $SOCKET"
