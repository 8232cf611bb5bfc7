#!/usr/bin/env bash
# The .deb on a real Debian 12 system: install it, check what an admin relies on (binary, unit, man page,
# user, /etc and /var/lib modes, the packaged config), run the INSTALLED binary against the sandbox
# (`graphbridge check`) and as the service would (the unit's User and ExecStart; systemctl when systemd
# runs), then re-install over an edited config, remove, purge, and check what stays and what goes.
#
# Usage (as root, on a machine where graphbridge is not installed; CI runs it after scripts/package.sh):
#   tests/package/install_test.sh [PATH/graphbridge_VERSION_ARCH.deb]     default: build/graphbridge_*.deb
# It purges the package and deletes the graphbridge user (if it made it) when it ends, however it ends.
set -euo pipefail
cd "$(dirname "$0")/../.."

deb=${1:-}
if [ -z "$deb" ]; then
  debs=(build/graphbridge_*.deb)
  deb=${debs[0]}
fi
[ -f "$deb" ] || { echo "install_test: no package at '$deb' (build it with scripts/package.sh)" >&2; exit 1; }
deb=$(realpath "$deb")
[ "$(id -u)" -eq 0 ] || { echo "install_test: run as root (it installs and purges the package)" >&2; exit 1; }
state=$(dpkg-query -W -f='${db:Status-Status}' graphbridge 2>/dev/null || true)
if [ -n "$state" ] && [ "$state" != "not-installed" ]; then
  echo "install_test: graphbridge is already on this machine ($state); this test installs and purges it," \
       "so it refuses to run here. Purge it first (apt-get purge graphbridge)." >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
CONF=/etc/graphbridge/graphbridge.toml
STATE=/var/lib/graphbridge
UNIT_NAME=graphbridge.service
start_time=$(date +%s)
tmp=$(mktemp -d /tmp/gb-package-test.XXXXXX)
chmod 0755 "$tmp"
pids=()
installed=0
user_existed=0
getent passwd graphbridge >/dev/null && user_existed=1
passed=0

ok() { passed=$((passed + 1)); echo "  ok  $*"; }
fail() { echo "  FAIL $*" >&2; exit 1; }
# expect_eq WHAT ACTUAL EXPECTED
expect_eq() { [ "$2" = "$3" ] && ok "$1 ($2)" || fail "$1: got '$2', expected '$3'"; }
mode_owner() { stat -c '%a %U:%G' "$1"; }

stop_pid() {  # TERM, up to 10 s, then KILL
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  set +e
  for pid in "${pids[@]}"; do stop_pid "$pid"; done
  if [ -d /run/systemd/system ] && [ "$installed" = 1 ]; then systemctl stop "$UNIT_NAME" 2>/dev/null; fi
  if [ "$installed" = 1 ]; then
    if [ "$rc" -ne 0 ]; then
      for log in "$tmp"/*.log; do [ -f "$log" ] && { echo "--- $log"; tail -n 40 "$log"; }; done
    fi
    apt-get purge -y -qq graphbridge >/dev/null 2>&1
    rm -rf /etc/graphbridge/cert
    rmdir /etc/graphbridge 2>/dev/null
  fi
  if [ "$user_existed" = 0 ] && getent passwd graphbridge >/dev/null; then
    deluser --quiet --system graphbridge >/dev/null 2>&1
    getent group graphbridge >/dev/null && delgroup --quiet --system graphbridge >/dev/null 2>&1
  fi
  rm -rf "$tmp"
  if [ "$rc" -eq 0 ]; then
    echo "install_test: $passed checks passed in $(( $(date +%s) - start_time )) s"
  else
    echo "install_test: FAILED after $passed checks" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_ports() {  # N distinct free loopback ports
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

wait_for_line() {  # FILE PATTERN PID SECONDS: until FILE has PATTERN; fails if PID dies first
  for _ in $(seq 1 $(( $4 * 10 ))); do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || fail "process $3 ended before printing '$2' (log: $1)"
    sleep 0.1
  done
  fail "no '$2' in $1 after $4 s"
}

wait_http_200() {  # URL PID SECONDS
  for _ in $(seq 1 $(( $3 * 10 ))); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" 2>/dev/null)" = 200 ] && return 0
    [ -z "$2" ] || kill -0 "$2" 2>/dev/null || fail "the bridge ended before $1 answered 200"
    sleep 0.1
  done
  fail "$1 did not answer 200 within $3 s: $(curl -s "$1")"
}

deb_version=$(dpkg-deb -f "$deb" Version)
echo "install_test: $deb ($deb_version)"

echo "== install"
apt-get install -y -q --no-install-recommends "$deb" >"$tmp/install.log" 2>&1 \
  || { installed=1; cat "$tmp/install.log"; fail "apt-get install $deb"; }
installed=1
expect_eq "package state" "$(dpkg-query -W -f='${db:Status-Abbrev}${Version}' graphbridge)" "ii $deb_version"
grep -q "edit /etc/graphbridge/graphbridge.toml" "$tmp/install.log" \
  && ok "postinst: not started, with the hint to edit the config" || fail "postinst printed no hint to edit the config"
depends=$(dpkg-query -W -f='${Depends}' graphbridge)
for dep in adduser libc6 libssl3 libcurl4 libsqlite3-0; do
  [[ ", $depends," == *", $dep "* || ", $depends," == *", $dep,"* ]] || fail "Depends lacks $dep: $depends"
done
ok "Depends from dpkg-shlibdeps: $depends"

echo "== binary"
expect_eq "graphbridge on PATH" "$(command -v graphbridge)" /usr/bin/graphbridge
expect_eq "graphbridge --version" "$(graphbridge --version)" "graphbridge ${deb_version%-*}"
ldd /usr/bin/graphbridge | grep -q "not found" && fail "missing libraries: $(ldd /usr/bin/graphbridge | grep 'not found')"
ok "every shared library resolves"
file -b /usr/bin/graphbridge | grep -q ", stripped" && ok "stripped" || fail "not stripped: $(file -b /usr/bin/graphbridge)"
graphbridge --help >"$tmp/help.txt"
# The commands the installed binary lists, as "cmd" or "cmd sub" (e.g. "cert new", "queue list").
mapfile -t commands < <(sed -n '/^commands:/,/^ *--help/p' "$tmp/help.txt" | grep -E '^  [a-z]' \
  | sed -E 's/^  //; s/  .*//' | awk '{ w = $1; if ($2 ~ /^[a-z]+$/) w = w " " $2; print w }')
[ "${#commands[@]}" -ge 8 ] || fail "graphbridge --help lists ${#commands[@]} commands: ${commands[*]}"
ok "graphbridge --help lists ${#commands[@]} commands"

echo "== man page"
man_gz=/usr/share/man/man8/graphbridge.8.gz
[ -f "$man_gz" ] || fail "$man_gz missing"
if command -v man >/dev/null; then
  expect_eq "man -w graphbridge" "$(man -w graphbridge)" "$man_gz"
  warnings=$(LC_ALL=C.UTF-8 man --warnings -l "$man_gz" 2>&1 >/dev/null || true)
  [ -z "$warnings" ] && ok "man --warnings: none" || fail "man --warnings: $warnings"
fi
zcat "$man_gz" >"$tmp/man.8"
for c in "${commands[@]}"; do   # every command of the binary has its entry in COMMANDS
  grep -qE "^\.B[IR]? \"?${c}( |\"|$)" "$tmp/man.8" || fail "the man page has no entry for '$c'"
done
ok "the man page describes every command: $(printf '%s, ' "${commands[@]}" | sed 's/, $//')"
for s in "SIGHUP" "SIGTERM" "EXIT STATUS" "/etc/graphbridge/graphbridge.toml" "/var/lib/graphbridge" \
         "admin\\-guide.md" "graphbridge ${deb_version%-*}"; do
  grep -qF -- "$s" "$tmp/man.8" || fail "the man page does not mention '$s'"
done
ok "the man page has signals, files, exit status, version and the admin guide"

echo "== systemd unit"
unit=/lib/systemd/system/$UNIT_NAME
[ -f "$unit" ] || fail "$unit missing"
expect_eq "unit owned by the package" "$(dpkg -S "$unit" | cut -d: -f1)" graphbridge
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
unit_user=$(sed -n 's/^User=//p' "$unit")
[ -x "${exec_start%% *}" ] && ok "ExecStart runs ${exec_start%% *}" || fail "ExecStart binary missing: $exec_start"
[[ "$exec_start" == *"--config $CONF"* ]] || fail "ExecStart does not read $CONF: $exec_start"
expect_eq "unit User" "$unit_user" graphbridge
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify "$unit" >"$tmp/verify.log" 2>&1 || { cat "$tmp/verify.log"; fail "systemd-analyze verify"; }
  [ ! -s "$tmp/verify.log" ] || { cat "$tmp/verify.log"; fail "systemd-analyze verify printed warnings"; }
  ok "systemd-analyze verify: clean"
fi
[ -L /etc/systemd/system/multi-user.target.wants/$UNIT_NAME ] && ok "unit enabled (multi-user.target.wants)" \
  || fail "unit not enabled"
if [ -d /run/systemd/system ]; then
  expect_eq "service not started on the unedited config" "$(systemctl is-active "$UNIT_NAME" || true)" inactive
fi

echo "== user, directories, config"
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd graphbridge) || fail "no user graphbridge"
[ "$uid" -lt 1000 ] || fail "graphbridge is not a system user (uid $uid)"
expect_eq "user graphbridge home, shell" "$home $shell" "$STATE /usr/sbin/nologin"
getent group graphbridge >/dev/null && ok "group graphbridge" || fail "no group graphbridge"
expect_eq "$STATE" "$(mode_owner "$STATE")" "700 graphbridge:graphbridge"
expect_eq "/etc/graphbridge" "$(mode_owner /etc/graphbridge)" "750 root:graphbridge"
expect_eq "$CONF" "$(mode_owner "$CONF")" "640 root:graphbridge"
dpkg-query -W -f='${Conffiles}' graphbridge | grep -q "^ $CONF " && ok "$CONF is a conffile" \
  || fail "$CONF is not a conffile"
if ! grep -Eqs '^path-exclude[= ]+/usr/share/doc' /etc/dpkg/dpkg.cfg.d/*; then
  for f in README.md SECURITY.md admin-guide.md examples/graphbridge.example.toml; do
    [ -f "/usr/share/doc/graphbridge/$f" ] || fail "/usr/share/doc/graphbridge/$f missing"
  done
  ok "docs and the example in /usr/share/doc/graphbridge"
fi

# The packaged config, read as the service's user: everything parses, and the one problem is the keystore
# its header says to make with `graphbridge cert new`.
set +e
(cd / && runuser -u graphbridge -- graphbridge config check "$CONF") >"$tmp/check-etc.out" 2>"$tmp/check-etc.err"
rc=$?
set -e
expect_eq "config check on the unedited $CONF: exit" "$rc" 1
expect_eq "its problems" "$(wc -l <"$tmp/check-etc.err")" 1
grep -q "keystore.*/etc/graphbridge/cert/graphbridge.pem" "$tmp/check-etc.err" \
  && ok "the only problem: $(cat "$tmp/check-etc.err")" || fail "unexpected: $(cat "$tmp/check-etc.err")"
# The admin's first step, as the config's header and the man page say.
graphbridge cert new --out /etc/graphbridge/cert --cn graphbridge >"$tmp/cert.log" 2>&1 || fail "cert new"
chgrp graphbridge /etc/graphbridge/cert/graphbridge.pem
chmod 0640 /etc/graphbridge/cert/graphbridge.pem
out=$(cd / && runuser -u graphbridge -- graphbridge config check "$CONF") || fail "config check after cert new"
[[ "$out" == "$CONF: ok ("* ]] && ok "config check as graphbridge after cert new: $out" || fail "config check: $out"

echo "== the installed binary against the sandbox"
read -r sandbox_port smtp smtps imap imaps pop3 pop3s admin < <(free_ports 8)
# The tenant only (--no-bridge): the bridge is started below as the service would run it.
graphbridge sandbox --dir "$tmp/sandbox" --port "$sandbox_port" --no-bridge >"$tmp/sandbox.log" 2>&1 &
pids+=($!)
wait_for_line "$tmp/sandbox.log" "Press Ctrl-C to stop" "${pids[-1]}" 60
grep -q "token endpoint  https://127.0.0.1:$sandbox_port/" "$tmp/sandbox.log" \
  && ok "sandbox serving on 127.0.0.1:$sandbox_port" || fail "sandbox: $(cat "$tmp/sandbox.log")"
set +e
graphbridge check --config "$tmp/sandbox/graphbridge.toml" >"$tmp/check.log" 2>&1
rc=$?
set -e
expect_eq "graphbridge check --config (sandbox): exit" "$rc" 0
for step in credential token "send permission" "read permission" "mailbox alice@sandbox.test" \
            "mailbox scanner@sandbox.test"; do
  grep -qE "^  \[ok\] +$step:" "$tmp/check.log" || fail "check: no ok for '$step': $(cat "$tmp/check.log")"
done
grep -q "FAILED" "$tmp/check.log" && fail "check: $(grep FAILED "$tmp/check.log")"
ok "check: $(tail -n 1 "$tmp/check.log")"

echo "== the service: the unit's user and command, on a config pointing at the sandbox"
install -m 0640 -g graphbridge "$tmp/sandbox/app.pem" /etc/graphbridge/cert/sandbox-app.pem
install -m 0640 -g graphbridge "$tmp/sandbox/ca.pem" /etc/graphbridge/cert/sandbox-ca.pem
sed -e "s|^state_dir = .*|state_dir = \"$STATE\"|" \
    -e "s|^keystore = .*|keystore = \"/etc/graphbridge/cert/sandbox-app.pem\"|" \
    -e "s|^ca_file = .*|ca_file = \"/etc/graphbridge/cert/sandbox-ca.pem\"|" \
    -e "s|127.0.0.1:1025\"|127.0.0.1:$smtp\"|; s|127.0.0.1:1465\"|127.0.0.1:$smtps\"|" \
    -e "s|127.0.0.1:1143\"|127.0.0.1:$imap\"|; s|127.0.0.1:1993\"|127.0.0.1:$imaps\"|" \
    -e "s|127.0.0.1:1110\"|127.0.0.1:$pop3\"|; s|127.0.0.1:1995\"|127.0.0.1:$pop3s\"|" \
    -e "s|127.0.0.1:1080\"|127.0.0.1:$admin\"|" \
    "$tmp/sandbox/graphbridge.toml" >"$tmp/service.toml"
grep -q "127.0.0.1:$admin" "$tmp/service.toml" || fail "could not move the sandbox config to free ports"
cat "$tmp/service.toml" >"$CONF"   # in place: the file keeps its owner and mode
conf_md5=$(md5sum <"$CONF")
bridge_pid=""
if [ -d /run/systemd/system ]; then
  systemctl start "$UNIT_NAME" || { journalctl -u "$UNIT_NAME" -n 40 --no-pager; fail "systemctl start"; }
  expect_eq "systemctl is-active" "$(systemctl is-active "$UNIT_NAME")" active
else
  # No systemd here (a container): run ExecStart as User with the unit's UMask, as systemd would.
  read -r -a exec_argv <<<"$exec_start"
  (cd / && umask 0077 && exec setpriv --reuid="$unit_user" --regid="$unit_user" --init-groups -- "${exec_argv[@]}") \
    >"$tmp/serve.log" 2>&1 &
  bridge_pid=$!
  pids+=("$bridge_pid")
fi
wait_http_200 "http://127.0.0.1:$admin/readyz" "$bridge_pid" 60
ok "/readyz 200: token from the sandbox, spool in $STATE writable by $unit_user"
printf 'From: scanner@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: package test\r\n\r\nfrom the installed package\r\n' \
  >"$tmp/msg.eml"
curl -s --url "smtp://127.0.0.1:$smtp" --mail-from scanner@sandbox.test --mail-rcpt bob@sandbox.test \
     --upload-file "$tmp/msg.eml" || fail "SMTP submission to 127.0.0.1:$smtp"
ok "SMTP: 250 for a message from the relay network"
delivered=0
for _ in $(seq 1 300); do
  delivered=$(curl -s "http://127.0.0.1:$admin/metrics" | awk '/^graphbridge_messages_delivered_total/ { s += $2 } END { print s + 0 }')
  [ "$delivered" -ge 1 ] && break
  sleep 0.1
done
[ "$delivered" -ge 1 ] && ok "delivered to Graph (graphbridge_messages_delivered_total $delivered)" \
  || fail "not delivered within 30 s"
others=$(find "$STATE" ! -user graphbridge | head -3)
[ -z "$others" ] && ok "everything in $STATE belongs to graphbridge" || fail "not owned by graphbridge: $others"
if [ -n "$bridge_pid" ]; then
  kill -TERM "$bridge_pid"
  rc=0
  for _ in $(seq 1 300); do kill -0 "$bridge_pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$bridge_pid" 2>/dev/null && fail "the bridge did not exit within 30 s of SIGTERM"
  wait "$bridge_pid" || rc=$?
  expect_eq "exit status after SIGTERM" "$rc" 0
else
  systemctl stop "$UNIT_NAME"
  expect_eq "systemctl stop" "$(systemctl is-active "$UNIT_NAME" || true)" inactive
fi
stop_pid "${pids[0]}"   # the sandbox

echo "== re-install over the edited config"
dpkg -i "$deb" >"$tmp/reinstall.log" 2>&1 || { cat "$tmp/reinstall.log"; fail "dpkg -i again"; }
expect_eq "the admin's config kept" "$(md5sum <"$CONF")" "$conf_md5"
expect_eq "$CONF" "$(mode_owner "$CONF")" "640 root:graphbridge"
grep -q "edit /etc/graphbridge/graphbridge.toml" "$tmp/reinstall.log" && fail "hint printed for an edited config"
ok "no hint for an edited config"

echo "== remove"
apt-get remove -y -q graphbridge >"$tmp/remove.log" 2>&1 || { cat "$tmp/remove.log"; fail "apt-get remove"; }
[ ! -e /usr/bin/graphbridge ] && [ ! -e "$unit" ] && [ ! -e "$man_gz" ] && ok "binary, unit and man page gone" \
  || fail "files left after remove"
expect_eq "after remove: $CONF kept" "$(md5sum <"$CONF")" "$conf_md5"
[ -d "$STATE/spool" ] && ok "after remove: $STATE kept" || fail "$STATE gone after remove"
expect_eq "package state" "$(dpkg-query -W -f='${db:Status-Abbrev}' graphbridge)" "rc "

echo "== purge"
apt-get purge -y -q graphbridge >"$tmp/purge.log" 2>&1 || { cat "$tmp/purge.log"; fail "apt-get purge"; }
installed=0
[ ! -e "$CONF" ] && ok "after purge: $CONF gone" || fail "$CONF left after purge"
[ ! -e "$STATE" ] && ok "after purge: $STATE gone" || fail "$STATE left after purge"
[ ! -e /etc/systemd/system/multi-user.target.wants/$UNIT_NAME ] && ok "after purge: not enabled" \
  || fail "enable symlink left after purge"
[ -f /etc/graphbridge/cert/graphbridge.pem ] && ok "after purge: the admin's own key in /etc/graphbridge/cert kept" \
  || fail "purge deleted the admin's key"
rm -rf /etc/graphbridge/cert
rmdir /etc/graphbridge
state=$(dpkg-query -W -f='${db:Status-Abbrev}' graphbridge 2>/dev/null || true)
[ -z "$state" ] || [ "$state" = "un " ] && ok "package purged" || fail "package state after purge: '$state'"
