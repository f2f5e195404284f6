#!/usr/bin/env bash
# The growth benchmark: a tree shaped like the Mac Mini host lives through simulated days
# (bench/growth.py: database rows, vector-store segments, logs and a rotation, models
# unchanged), and steward, borg 1.2 and restic back it up once a day with retention daily 7
# / weekly 4 / monthly 12. Every tool's clock is moved: steward and borg under libfaketime
# (Debian `faketime`), restic (Go, which libfaketime cannot reach) with `backup --time`;
# the policies only look at the snapshots' own times.
#
#   bench/growth.sh [--work DIR] [--mb 600] [--days 30] [--long-days 400] [--long-mb 60]
#
# Prints the size on disk after each day, the mean daily run (backup + retention), the
# restore of the newest (wall time, peak RSS), and steward's ratios against the peers;
# then a --long-days run of retention alone on a --long-mb tree (sizes only).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
work=/tmp/steward-growth
mb=600
days=30
long_days=400
long_mb=60
while [ $# -gt 0 ]; do
  case "$1" in
    --work) work="$2"; shift 2 ;;
    --mb) mb="$2"; shift 2 ;;
    --days) days="$2"; shift 2 ;;
    --long-days) long_days="$2"; shift 2 ;;
    --long-mb) long_mb="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

. "$here/bench/tools.sh"
ensure_tools restic borg faketime time bc
(cd "$here" && cargo build --release --locked -q)
steward="$here/target/release/steward"
gen="$here/bench/growth.py"

export BORG_PASSPHRASE=bench RESTIC_PASSWORD=bench BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
KEEP_RESTIC="--keep-daily 7 --keep-weekly 4 --keep-monthly 12"
KEEP_BORG="--keep-daily 7 --keep-weekly 4 --keep-monthly 12"

# day_time N: the wall-clock time of day N's run (03:00 UTC, from 2026-01-01).
day_time() { date -u -d "2026-01-01 03:00:00 UTC + $1 days" '+%Y-%m-%d %H:%M:%S'; }

# seconds CMD...: runs CMD, prints its wall seconds.
seconds() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>>"$work/errors.log"
  t1=$(date +%s.%N)
  printf '%.2f\n' "$(echo "$t1 - $t0" | bc)"
}

ratio() { echo "scale=2; $1 / $2" | bc; }

size_mib() { du -sb "$1" | awk '{printf "%.0f", $1 / 1048576}'; }

# setup ROOT MB: a fresh tree and a fresh repository per tool under ROOT.
setup() {
  local root="$1" m="$2"
  rm -rf "$root"
  mkdir -p "$root"
  python3 "$gen" init "$root/src" --mb "$m"
  mkdir -p "$root/state"
  cat >"$root/steward.toml" <<EOF
[state]
dir = "$root/state"

[backup]
destination = "$root/steward"
[backup.keep]
daily = 7
weekly = 4
monthly = 12
[backup.differential]
enabled = true

[[backup.set]]
name = "models"
paths = ["$root/src/models"]
[[backup.set]]
name = "vector-stores"
paths = ["$root/src/vector_stores"]
[[backup.set]]
name = "data"
paths = ["$root/src/data", "$root/src/conversations"]
[[backup.set]]
name = "logs"
paths = ["$root/src/logs"]
EOF
  borg init --encryption=none "$root/borg"
  restic init -q --repo "$root/restic" >/dev/null
}

# run_day ROOT N: day N's changes, then each tool's daily run; appends "N steward borg
# restic" seconds to ROOT/times and "N sizes..." to ROOT/sizes.
run_day() {
  local root="$1" n="$2" when
  when=$(day_time "$n")
  [ "$n" -gt 0 ] && python3 "$gen" day "$root/src" "$n" --mb "$3"
  local ts tb tr
  ts=$(seconds faketime "$when" "$steward" --config "$root/steward.toml" backup)
  tb=$(seconds sh -c "faketime '$when' borg create --compression zstd,3 --timestamp '${when/ /T}' '$root/borg::d$n' '$root/src' \
      && faketime '$when' borg prune $KEEP_BORG '$root/borg' && faketime '$when' borg compact '$root/borg'")
  tr=$(seconds sh -c "restic -q --repo '$root/restic' backup --time '$when' '$root/src' \
      && restic -q --repo '$root/restic' forget --prune $KEEP_RESTIC")
  echo "$n $ts $tb $tr" >>"$root/times"
  echo "$n $(size_mib "$root/steward") $(size_mib "$root/borg") $(size_mib "$root/restic")" >>"$root/sizes"
}

# restore_newest ROOT: "tool seconds peak-KiB" for a restore of the newest backup.
restore_newest() {
  local root="$1"
  local out="$root/restored"
  local t0 t1 peak=0 rss
  rm -rf "$out"; mkdir -p "$out"
  t0=$(date +%s.%N)
  for set in models vector-stores data logs; do
    rss=$(/usr/bin/time -f %M "$steward" --config "$root/steward.toml" restore --latest --set "$set" \
      --to "$out/steward" --yes 2>&1 >/dev/null | tail -1)
    [ "$rss" -gt "$peak" ] && peak=$rss
  done
  t1=$(date +%s.%N)
  printf 'steward %.2f %s\n' "$(echo "$t1 - $t0" | bc)" "$peak"
  mkdir -p "$out/borg"
  t0=$(date +%s.%N)
  rss=$(cd "$out/borg" && /usr/bin/time -f %M borg extract "$root/borg::$(borg list --short --last 1 "$root/borg")" 2>&1 >/dev/null | tail -1)
  t1=$(date +%s.%N)
  printf 'borg %.2f %s\n' "$(echo "$t1 - $t0" | bc)" "$rss"
  t0=$(date +%s.%N)
  rss=$(/usr/bin/time -f %M restic -q --repo "$root/restic" restore latest --target "$out/restic" 2>&1 >/dev/null | tail -1)
  t1=$(date +%s.%N)
  printf 'restic %.2f %s\n' "$(echo "$t1 - $t0" | bc)" "$rss"
  # Every tool gave back the same tree.
  diff -r "$root/src" "$out/steward/${root#/}/src" >/dev/null
  diff -r "$root/src" "$out/restic/${root#/}/src" >/dev/null
}

mkdir -p "$work"
: >"$work/errors.log"
if [ "$days" -gt 0 ]; then
main="$work/main"
setup "$main" "$mb"
for n in $(seq 0 "$days"); do
  run_day "$main" "$n" "$mb"
  echo "day $n: $(tail -1 "$main/sizes" | cut -d' ' -f2-) MiB (steward borg restic)" >&2
done
restore_newest "$main" >"$main/restore"

echo
echo "== $days days on a $mb MB tree (sizes in MiB on disk, after each day's run)"
printf '%5s %9s %9s %9s\n' day steward borg restic
while read -r n s b r; do printf '%5s %9s %9s %9s\n' "$n" "$s" "$b" "$r"; done <"$main/sizes"
read -r _ s_end b_end r_end < <(tail -1 "$main/sizes")
read -r _ s_0 b_0 r_0 < <(head -1 "$main/sizes")
week=$(( days < 7 ? days : 7 ))
read -r _ s_7 b_7 r_7 < <(sed -n "$(( week + 1 ))p" "$main/sizes")
mean() { awk -v c="$1" 'NR > 1 { s += $c; n++ } END { printf "%.2f", n ? s / n : 0 }' "$main/times"; }
ms=$(mean 2); mb_=$(mean 3); mr=$(mean 4)
read -r _ rs_t rs_m < <(grep '^steward' "$main/restore")
read -r _ rb_t rb_m < <(grep '^borg' "$main/restore")
read -r _ rr_t rr_m < <(grep '^restic' "$main/restore")
echo
printf '%-32s %10s %10s %10s\n' "day $days" steward "borg 1.2" "restic"
printf '%-32s %10s %10s %10s\n' "size on disk (MiB)" "$s_end" "$b_end" "$r_end"
printf '%-32s %10s %10s %10s\n' "growth per day, days 1-$week (MiB)" \
  "$(( (s_7 - s_0) / week ))" "$(( (b_7 - b_0) / week ))" "$(( (r_7 - r_0) / week ))"
printf '%-32s %10s %10s %10s\n' "mean daily run (s)" "$ms" "$mb_" "$mr"
printf '%-32s %10s %10s %10s\n' "restore of the newest (s)" "$rs_t" "$rb_t" "$rr_t"
printf '%-32s %10s %10s %10s\n' "restore peak RSS (MiB)" \
  "$((rs_m / 1024))" "$((rb_m / 1024))" "$((rr_m / 1024))"
echo
echo "steward size / restic:        $(ratio "$s_end" "$r_end")   (target <= 1.5)"
echo "steward daily run / borg:     $(ratio "$ms" "$mb_")   (target <= 1.0)"
echo "steward restore / borg:       $(ratio "$rs_t" "$rb_t")   (target <= 1.3)"
echo "steward restore peak RSS:     $((rs_m / 1024)) MiB   (target <= 64)"
fi

if [ "$long_days" -gt 0 ]; then
  long="$work/long"
  setup "$long" "$long_mb"
  for n in $(seq 0 "$long_days"); do
    run_day "$long" "$n" "$long_mb"
    [ $((n % 50)) -eq 0 ] && echo "long day $n: $(tail -1 "$long/sizes" | cut -d' ' -f2-) MiB" >&2
  done
  read -r _ ls lb lr < <(tail -1 "$long/sizes")
  echo
  echo "== retention over $long_days days on a $long_mb MB tree"
  printf '%-32s %10s %10s %10s\n' "size on disk (MiB)" "$ls" "$lb" "$lr"
  echo "steward size / restic:        $(ratio "$ls" "$lr")"
  echo "steward backups kept:         $("$steward" --config "$long/steward.toml" backups list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"
fi
