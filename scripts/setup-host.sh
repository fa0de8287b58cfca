#!/usr/bin/env bash
# Prepares this host's auditd for azureiotsecurity (as root; Debian 12; works without systemd).
# The module itself never changes the host; this does. It prints every change it makes, and a
# second run changes nothing and says so.
#
#   scripts/setup-host.sh          install auditd if missing; create /run/audit now and at every
#                                  boot (packaging/tmpfiles.d/azureiotsecurity.conf into
#                                  /etc/tmpfiles.d); enable the af_unix plugin with its socket
#                                  at /run/audit/audispd_events, string output (auditd 3.0.x's
#                                  builtin plugin and 3.1.2+'s audisp-af_unix alike); start
#                                  auditd (or restart it if the plugin config changed); enable
#                                  audit, -b 8192; load the module's rules (key azureiotsecurity)
#   scripts/setup-host.sh --stop   undo it: remove the module's rules, put back the plugin
#                                  config it found (from its backup), remove the tmpfiles.d
#                                  file and /run/audit if it added them, and leave auditd as it
#                                  found it (running with the old config, or stopped)
#
# What it found is kept in $STATE (the plugin config it replaced, whether auditd was running,
# what it added); --stop reads it and removes it. Packages it installed stay installed.
#
# The socket is in its own directory so that the container can bind the directory read-only:
# auditd re-creates the socket (a new inode) on every restart, and a bind of the socket file
# would keep pointing at the old one. /run/audit/audispd_events is auditd's own default only
# from 4.1.2 (audisp/plugins/af_unix/af_unix.conf in linux-audit/audit-userspace); before, it
# was /var/run/audispd_events.
#
# The rules come from "$AZUREIOTSECURITY_BIN rules" if that is set, else from
# target/release/azureiotsecurity or target/debug/azureiotsecurity (whichever exists), else
# from "cargo run -q -- rules". Only rules keyed azureiotsecurity are replaced; other rules stay.
set -euo pipefail

KEY=azureiotsecurity
# The socket (tests/quick/deployment_manifest.rs reads this line) and its directory.
SOCKET=/run/audit/audispd_events
SOCKET_DIR=${SOCKET%/*}
PLUGIN=/etc/audit/plugins.d/af_unix.conf
TMPFILES=/etc/tmpfiles.d/azureiotsecurity.conf
STATE=/var/backups/azureiotsecurity-host-setup
AUDITD=/sbin/auditd
BACKLOG=8192
REPO="$(cd "$(dirname "$0")/.." && pwd)"

changes=()
say() { echo "setup-host: $*"; }
changed() { say "$*"; changes+=("$*"); }
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
  changed "stopped auditd (pid $pid)"
  kill -TERM "$pid"
  wait_for 20 "auditd to exit" not_running
}

start_auditd() {
  mkdir -p /var/log/audit
  # auditd forks into the background; the parent returns once the daemon is set up. It keeps
  # every descriptor it inherits, so it gets none but stdin/out/err: run under
  # `flock /tmp/auditd-live.lock`, it would otherwise hold that lock for as long as it runs.
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
    done
    exec "$AUDITD"
  ) </dev/null >/dev/null 2>&1 || die "$AUDITD failed to start (exit $?)"
  wait_for 20 "auditd to register with the kernel (auditctl -s pid != 0)" registered
  changed "started auditd (pid $(auditd_pid))"
}

# The value of "key = value" in a plugin config ("" if absent).
get_key() { # file key
  sed -n -E "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*(.*[^[:space:]])[[:space:]]*$/\1/p" "$1" | tail -n1
}

set_key() { # file key value: replace "key = ..." or append it
  local file=$1 key=$2 value=$3
  if grep -qE "^[[:space:]]*${key}[[:space:]]*=" "$file"; then
    sed -i -E "s|^[[:space:]]*${key}[[:space:]]*=.*|${key} = ${value}|" "$file"
  else
    echo "${key} = ${value}" >>"$file"
  fi
}

# The plugin's args with the socket path replaced and string output. auditd 3.0.x–3.1.1's
# builtin plugin and 3.1.2–4.0's audisp-af_unix take "MODE PATH" in that order; 4.1+'s
# audisp-af_unix takes its arguments by their form (digits first: the mode, then the queue
# depth; a word with a '/': the path; "string"/"binary": the OUTPUT format; see
# audisp-af_unix.c setup_socket and audisp-af_unix(8)). So: the mode stays where it is (0640
# if there is none), the path is replaced in place, an output "binary" becomes "string".
plugin_args() { # current args
  local out=() mode_seen=no path_seen=no w
  for w in $1; do
    case $w in
      [0-9]*) if [ $mode_seen = no ]; then mode_seen=yes; fi; out+=("$w") ;;
      */*) out+=("$SOCKET"); path_seen=yes ;;
      binary) out+=(string) ;;
      *) out+=("$w") ;;
    esac
  done
  [ $mode_seen = yes ] || out=(0640 "${out[@]}")
  [ $path_seen = yes ] || out=("${out[0]}" "$SOCKET" "${out[@]:1}")
  echo "${out[*]}"
}

if [ "${1:-}" = --stop ]; then
  if command -v auditctl >/dev/null; then
    if auditctl -l -k "$KEY" 2>/dev/null | grep -q "key=$KEY"; then
      auditctl -D -k "$KEY" >/dev/null
      changed "removed the audit rules keyed $KEY"
    fi
  fi
  # No record: set up by an older version of this script, which had no backup; stop auditd
  # as --stop always did.
  was_running=unknown
  [ -f "$STATE/auditd-was-running" ] && was_running=$(cat "$STATE/auditd-was-running")
  restored=no
  if [ -f "$STATE/af_unix.conf" ] && ! cmp -s "$STATE/af_unix.conf" "$PLUGIN"; then
    cp -p "$STATE/af_unix.conf" "$PLUGIN"
    changed "restored $PLUGIN from $STATE/af_unix.conf"
    restored=yes
  fi
  # auditd as it was found: stopped, or running with the restored config (plugins load at
  # start; the af_unix plugin removes its socket when auditd stops).
  if command -v auditctl >/dev/null; then
    case $was_running in
      yes)
        if [ "$restored" = yes ]; then
          say "restarting auditd with the restored plugin config"
          stop_auditd
          start_auditd
        elif [ "$(auditd_pid)" = 0 ]; then
          start_auditd
        fi ;;
      *) stop_auditd ;;
    esac
  fi
  if [ -f "$STATE/added-tmpfiles" ] && [ -f "$TMPFILES" ]; then
    rm -f "$TMPFILES"
    changed "removed $TMPFILES"
  fi
  if [ -f "$STATE/added-run-audit" ] && [ -d "$SOCKET_DIR" ]; then
    if rmdir "$SOCKET_DIR" 2>/dev/null; then
      changed "removed $SOCKET_DIR"
    else
      say "left $SOCKET_DIR in place: it is not empty ($(ls -A "$SOCKET_DIR" | tr '\n' ' '))"
    fi
  fi
  if [ -d "$STATE" ]; then
    rm -rf "$STATE"
    say "removed $STATE"
  fi
  if [ ${#changes[@]} = 0 ]; then say "nothing to undo"; fi
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
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
  changed "installed ${missing[*]}"
else
  say "auditd and audispd-plugins are installed"
fi
[ -f "$PLUGIN" ] || die "$PLUGIN is missing (it ships with the auditd package)"

# What was found, kept once (the first run's view is the one --stop restores).
mkdir -p "$STATE"
if [ ! -f "$STATE/af_unix.conf" ]; then
  cp -p "$PLUGIN" "$STATE/af_unix.conf"
  say "kept the plugin config found in $STATE/af_unix.conf"
fi
if [ ! -f "$STATE/auditd-was-running" ]; then
  if [ "$(auditd_pid)" = 0 ]; then echo no; else echo yes; fi >"$STATE/auditd-was-running"
fi

# 2. The socket's directory, at every boot (tmpfiles.d) and now.
if ! cmp -s "$REPO/packaging/tmpfiles.d/azureiotsecurity.conf" "$TMPFILES"; then
  [ -f "$TMPFILES" ] || touch "$STATE/added-tmpfiles"
  install -m 0644 "$REPO/packaging/tmpfiles.d/azureiotsecurity.conf" "$TMPFILES"
  changed "installed $TMPFILES (d $SOCKET_DIR 0750 root root at boot)"
else
  say "$TMPFILES already installed"
fi
if [ ! -d "$SOCKET_DIR" ]; then
  touch "$STATE/added-run-audit"
  if command -v systemd-tmpfiles >/dev/null; then
    systemd-tmpfiles --create "$TMPFILES"
  else
    install -d -m 0750 -o root -g root "$SOCKET_DIR"
  fi
  [ -d "$SOCKET_DIR" ] || die "could not create $SOCKET_DIR"
  changed "created $SOCKET_DIR"
else
  say "$SOCKET_DIR exists"
fi

# 3. The af_unix plugin: active, its socket in /run/audit, string output.
ptype=$(get_key "$PLUGIN" path)
before=$(sha256sum "$PLUGIN")
set_key "$PLUGIN" active yes
set_key "$PLUGIN" args "$(plugin_args "$(get_key "$PLUGIN" args)")"
case $ptype in
  builtin_af_unix)
    # auditd 3.0.x–3.1.1: the builtin plugin writes what auditd hands it; hand it text.
    set_key "$PLUGIN" format string ;;
  */audisp-af_unix)
    # 3.1.2+: leave "format" (what auditd hands the plugin) as the package set it: 4.1+'s
    # plugin needs binary input ("format = binary", audisp-af_unix(8)); its output format is
    # the args' "string".
    [ -x "$ptype" ] || die "$PLUGIN names $ptype, which is not installed" ;;
  *) die "$PLUGIN: unknown plugin path '$ptype' (builtin_af_unix or /sbin/audisp-af_unix expected)" ;;
esac
plugin_changed=no
now="active = yes, args = $(get_key "$PLUGIN" args), format = $(get_key "$PLUGIN" format)"
if [ "$before" != "$(sha256sum "$PLUGIN")" ]; then
  plugin_changed=yes
  changed "updated $PLUGIN ($now)"
else
  say "$PLUGIN already set ($now)"
fi

# 4. auditd: start it, or restart it when the plugin config changed (plugins load at start).
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

# 5. Kernel audit settings.
status=$(auditctl -s)
if [ "$(awk '$1 == "enabled" { print $2 }' <<<"$status")" != 1 ] \
   || [ "$(awk '$1 == "backlog_limit" { print $2 }' <<<"$status")" != "$BACKLOG" ]; then
  auditctl -e 1 >/dev/null
  auditctl -b "$BACKLOG" >/dev/null
  changed "enabled audit, backlog limit $BACKLOG"
else
  say "audit enabled, backlog limit $BACKLOG"
fi

# 6. The module's rules: reloaded only when they differ from what this script loaded last,
# or when the kernel does not hold as many as that (auditctl -l prints them in its own form,
# so the text loaded is what is compared).
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
loaded=$(auditctl -l -k "$KEY" | grep -c "key=$KEY" || true)
if [ "$loaded" = "$n_rules" ] && cmp -s "$rules_file" "$STATE/rules"; then
  say "the $n_rules rules keyed $KEY are loaded"
else
  auditctl -D -k "$KEY" >/dev/null
  # auditctl -R needs a regular file: on a pipe (/dev/stdin) it fails without a message.
  auditctl -R "$rules_file" >/dev/null || die "auditctl -R rejected the rules of '${rules_cmd[*]}'"
  loaded=$(auditctl -l -k "$KEY" | grep -c "key=$KEY" || true)
  [ "$loaded" = "$n_rules" ] || die "loaded $loaded rules, expected $n_rules"
  cp "$rules_file" "$STATE/rules"
  changed "loaded $n_rules rules keyed $KEY (from '${rules_cmd[*]}')"
fi

# 7. The socket the module reads.
wait_for 20 "$SOCKET" socket_ready
say "af_unix socket ready: $SOCKET"
if [ ${#changes[@]} = 0 ]; then
  say "nothing changed"
else
  say "${#changes[@]} changes made"
fi
