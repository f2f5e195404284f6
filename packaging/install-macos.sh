#!/bin/sh
# Installs steward on macOS (the Mac Mini M4): builds for aarch64-apple-darwin, copies the
# binary to /usr/local/bin, puts an example config in ~/.config/steward/steward.toml if
# none is there, and loads LaunchAgents from `steward install launchd --agent`.
# Then give /usr/local/bin/steward Full Disk Access (README: "On the Mac Mini M4").
#
#   packaging/install-macos.sh [--binary PATH] [--mode timers|daemon] [--dry-run]
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
mode=daemon
. "$here/packaging/common.sh"

if [ -z "$binary" ]; then
  binary="$here/target/aarch64-apple-darwin/release/steward"
  if [ -n "$dry" ]; then
    echo "would run: (cd $here && cargo build --release --locked --target aarch64-apple-darwin)"
  else
    (cd "$here" && cargo build --release --locked --target aarch64-apple-darwin)
  fi
fi
run sudo install -m 0755 "$binary" /usr/local/bin/steward
config="$HOME/.config/steward/steward.toml"
if [ ! -f "$config" ]; then
  run mkdir -p "$HOME/.config/steward"
  run cp "$here/schedules/mac-mini-m4.toml" "$config"
  run chmod 0600 "$config"
  [ -n "$dry" ] || echo "wrote $config: check its paths and services, then rerun" >&2
fi
if [ -n "$dry" ]; then
  echo "would run: /usr/local/bin/steward --config $config install launchd --agent --mode $mode"
else
  /usr/local/bin/steward --config "$config" config check >/dev/null
  /usr/local/bin/steward --config "$config" install launchd --agent --mode "$mode"
fi
