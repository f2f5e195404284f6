#!/bin/sh
# Installs steward on Linux: the binary in /usr/local/bin, a `steward` system account (it
# owns nothing yet; jobs run as root because quiesce needs systemctl and backups must read
# every file), state and backup folders with mode 0700, an example config in
# /etc/steward if none is there, and systemd units from `steward install systemd`.
#
#   sudo packaging/install.sh [--binary PATH] [--mode timers|daemon] [--dry-run]
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
mode=timers
. "$here/packaging/common.sh"

if [ -z "$binary" ]; then
  binary="$here/target/release/steward"
  # A dry run changes nothing, a build included: it says what it would build.
  if [ -n "$dry" ]; then
    echo "would run: (cd $here && cargo build --release --locked)"
  else
    (cd "$here" && cargo build --release --locked)
  fi
fi
run install -m 0755 "$binary" /usr/local/bin/steward
if ! id steward >/dev/null 2>&1; then
  run useradd --system --home-dir /var/lib/steward --shell /usr/sbin/nologin steward
fi
run install -d -m 0700 /var/lib/steward /srv/backups
if [ ! -f /etc/steward/steward.toml ]; then
  run install -D -m 0600 "$here/packaging/steward.example.toml" /etc/steward/steward.toml
  [ -n "$dry" ] || echo "wrote /etc/steward/steward.toml: add your [[backup.set]] entries, then rerun" >&2
fi
if [ -n "$dry" ]; then
  echo "would run: /usr/local/bin/steward --config /etc/steward/steward.toml install systemd --system --mode $mode"
else
  /usr/local/bin/steward --config /etc/steward/steward.toml config check >/dev/null
  /usr/local/bin/steward --config /etc/steward/steward.toml install systemd --system --mode "$mode"
fi
