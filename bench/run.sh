#!/usr/bin/env bash
# steward's backup benchmark: first verified backup, unchanged re-run, full verify, the
# verified restore and a restore drill (beside `zstd -dc | tar -x`),
# against `tar | zstd -T0 -3` (taking turns with it), `zstd -t`, borg (zstd,3) and restic,
# in one run on one machine, on the shared 2 GB dataset; then peak RSS on a tree of many small files.
#
#   bench/run.sh [--work DIR] [--mb 2048] [--reps 3] [--small-files 1000000]
#
# Prints a table (wall seconds = median of --reps runs, peak RSS, size) and steward's
# ratios against the targets. Caches are warm for every tool alike (a read-through of
# the dataset runs first); every output goes under --work.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
work=/tmp/steward-bench
mb=2048
reps=3
small=1000000
while [ $# -gt 0 ]; do
  case "$1" in
    --work) work="$2"; shift 2 ;;
    --mb) mb="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --small-files) small="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

. "$here/bench/tools.sh"
ensure_tools restic borg zstd time bc

(cd "$here" && cargo build --release --locked -q)
steward="$here/target/release/steward"
data="$work/dataset"
mkdir -p "$work"
if [ ! -f "$data/.complete-$mb" ]; then
  rm -rf "$data"
  python3 "$here/../shared/bench/make_dataset.py" "$data" --mb "$mb" >&2
  touch "$data/.complete-$mb"
fi
# Warm the page cache for everyone.
tar -cf - -C "$data" . | cat >/dev/null

results="$work/results.tsv"
: >"$results"
: >"$work/reps.tsv"

# one_rep NAME CMD...: one run of CMD (prep with $PREP first) into NAME's list of reps.
one_rep() {
  local name="$1"; shift
  [ -n "${PREP:-}" ] && eval "$PREP"
  # Flush what earlier runs left dirty, so no run pays for another's writeback.
  sync
  /usr/bin/time -f "%e %M %U %S" -o "$work/time.out" "$@" >"$work/out.log" 2>&1 || {
    echo "$name failed:" >&2; tail -20 "$work/out.log" >&2; exit 1; }
  read -r wall kb user sys <"$work/time.out"
  printf '%s\t%s %s %s\n' "$name" "$wall" "$kb" "$(echo "$user + $sys" | bc)" >>"$work/reps.tsv"
}

# summarize NAME: records the median wall time, the median CPU core-seconds (user+sys,
# children included) and the largest peak RSS of NAME's reps.
summarize() {
  local name="$1"
  awk -F '\t' -v n="$name" '$1 == n {print $2}' "$work/reps.tsv" >"$work/rep.out"
  local walls cpu median rss
  walls=$(awk '{print $1}' "$work/rep.out" | tr '\n' ' ')
  median=$(awk '{print $1}' "$work/rep.out" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  cpu=$(awk '{print $3}' "$work/rep.out" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  rss=$(awk '{print $2}' "$work/rep.out" | sort -n | tail -1)
  printf '%s\t%s\t%s\t%s\n' "$name" "$median" "$rss" "$cpu" >>"$results"
  echo "$name: ${walls}s (median $median), CPU $cpu core-s, peak RSS $((rss / 1024)) MiB" >&2
}

# measure NAME CMD...: runs CMD --reps times (prep with $PREP before each).
measure() {
  local name="$1"; shift
  local n="${REPS_OVERRIDE:-$reps}" i
  for ((i = 0; i < n; i++)); do
    one_rep "$name" "$@"
  done
  summarize "$name"
}

# alternate NAME_A PREP_A CMD_A NAME_B PREP_B CMD_B: --reps runs of each, A and B taking
# turns, so that both meet the machine in the same states (this VM's page cache and disk
# drift from minute to minute); the ratios of the targets compare such pairs.
alternate() {
  local i
  for ((i = 0; i < reps; i++)); do
    PREP="$2" one_rep "$1" sh -c "$3"
    PREP="$5" one_rep "$4" sh -c "$6"
  done
  summarize "$1"
  summarize "$4"
}

# --- tar | zstd (unverified) and steward's first verified backup, taking turns
out="$work/tar"
mkdir -p "$out"
st="$work/steward"
cat >"$work/steward.toml" <<TOML
[state]
dir = "$st/state"
[backup]
destination = "$st/backups"
compression-level = 3
[[backup.set]]
name = "host"
paths = ["$data"]
TOML
alternate \
  "tar|zstd -T0 -3" "rm -f $out/x.tar.zst" \
  "tar -cf - -C / '${data#/}' | zstd -T0 -3 -q -o $out/x.tar.zst" \
  "steward backup (first, verified)" "rm -rf $st" \
  "'$steward' --config '$work/steward.toml' backup"
tar_size=$(stat -c %s "$out/x.tar.zst")
steward_size=$(stat -c %s "$st"/backups/host/host-*.tar.zst | head -1)
PREP="" measure "zstd -t" zstd -t -q "$out/x.tar.zst"
# The cheapest "verified" peer: a digest of the compressed stream as it is written.
PREP="rm -f $out/y.tar.zst" measure "tar|zstd|tee|sha256sum" \
  sh -c "tar -cf - -C / '${data#/}' | zstd -T0 -3 -q | tee $out/y.tar.zst | sha256sum >/dev/null"

PREP="" measure "steward backup (unchanged)" "$steward" --config "$work/steward.toml" backup
PREP="" measure "steward verify --all" "$steward" --config "$work/steward.toml" verify --all

# --- restore: steward's verified restore into an empty folder vs zstd -dc | tar -x
PREP="rm -rf $work/untar; mkdir -p $work/untar" measure "zstd -dc | tar -x" \
  sh -c "zstd -dc -q $out/x.tar.zst | tar -xf - -C $work/untar"
PREP="rm -rf $work/unsteward" measure "steward restore --to (verified)" \
  "$steward" --config "$work/steward.toml" restore --latest --set host --yes --to "$work/unsteward"
# A restore drill: the same verified restore into a scratch folder, then the checks on the
# copy (every database's integrity_check and row counts), the folder removed after.
PREP="" measure "steward drill" "$steward" --config "$work/steward.toml" drill
rm -rf "$work/untar" "$work/unsteward"

# --- one check cycle: CPU time (user+sys) per cycle over 20 cycles; the CPU sampling
# window is a sleep, so it costs nothing here
cat >"$work/check.toml" <<TOML
[state]
dir = "$work/check-state"
[checks]
paths-exist = ["$data"]
paths-writable = ["$work"]
TOML
/usr/bin/time -f "%U %S" -o "$work/check.time" sh -c \
  "for i in \$(seq 20); do '$steward' --config '$work/check.toml' check >/dev/null || true; done"
read -r cu cs <"$work/check.time"
check_ms=$(python3 -c "print(round(($cu + $cs) * 1000 / 20, 1))")
echo "check cycle: $check_ms ms CPU per cycle" >&2

# --- the idle daemon over a minute: CPU ticks and peak RSS from /proc
cat >"$work/idle.toml" <<TOML
[state]
dir = "$work/idle-state"
[schedule]
check = "0 * * * *"
daily = "30 3 * * *"
catch-up = false
TOML
"$steward" --config "$work/idle.toml" daemon 2>/dev/null &
dpid=$!
sleep 3
t0=$(awk '{print $14+$15}' /proc/$dpid/stat)
sleep 60
t1=$(awk '{print $14+$15}' /proc/$dpid/stat)
idle_rss_kb=$(awk '/VmHWM/ {print $2}' /proc/$dpid/status)
kill $dpid; wait $dpid 2>/dev/null || true
idle_cpu_pct=$(python3 -c "print(round(($t1 - $t0) / $(getconf CLK_TCK) / 60 * 100, 3))")
echo "idle daemon: $idle_cpu_pct % CPU over 60 s, peak RSS $((idle_rss_kb / 1024)) MiB" >&2

# --- borg
export BORG_REPO="$work/borg" BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes \
  BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_BASE_DIR="$work/borg-home"
REPS_OVERRIDE=1 PREP="rm -rf $BORG_REPO $BORG_BASE_DIR; borg init --encryption none >/dev/null" \
  measure "borg create (first)" borg create --compression zstd,3 ::first "$data"
borg_size=$(du -sb "$BORG_REPO" | cut -f1)
PREP="borg delete ::again >/dev/null 2>&1 || true" measure "borg create (unchanged)" \
  borg create --compression zstd,3 ::again "$data"
REPS_OVERRIDE=1 PREP="" measure "borg check --verify-data" borg check --verify-data

# --- restic
export RESTIC_REPOSITORY="$work/restic" RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$work/restic-cache"
REPS_OVERRIDE=1 PREP="rm -rf $RESTIC_REPOSITORY $RESTIC_CACHE_DIR; restic init -q" \
  measure "restic backup (first)" restic backup -q --compression auto "$data"
restic_size=$(du -sb "$RESTIC_REPOSITORY" | cut -f1)
PREP="" measure "restic backup (unchanged)" restic backup -q "$data"
REPS_OVERRIDE=1 PREP="" measure "restic check --read-data" restic check -q --read-data

# --- many small files: steward's peak RSS must stay flat
if [ "$small" -gt 0 ]; then
  sm="$work/small-$small"
  if [ ! -f "$sm/.complete" ]; then
    rm -rf "$sm"
    python3 - "$sm" "$small" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
per = 1000
for i in range(n):
    d = os.path.join(root, f"d{i // per // per:03d}", f"d{i // per % per:03d}")
    if i % per == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i % per:04d}.json"), "w") as f:
        f.write('{"id": %d, "text": "message %d"}\n' % (i, i * 7919 % 100003))
open(os.path.join(root, ".complete"), "w").close()
PY
  fi
  cat >"$work/small.toml" <<TOML
[state]
dir = "$work/small-state"
[backup]
destination = "$work/small-backups"
[[backup.set]]
name = "small"
paths = ["$sm"]
exclude = [".complete"]
TOML
  # Warm the tree's inodes and pages for both tools, as for the dataset.
  tar -cf - -C / "${sm#/}" | cat >/dev/null
  alternate \
    "tar|zstd ($small small files)" "rm -f $work/small.tar.zst" \
    "tar -cf - -C / '${sm#/}' | zstd -T0 -3 -q -o $work/small.tar.zst" \
    "steward backup ($small small files)" "rm -rf $work/small-state $work/small-backups" \
    "'$steward' --config '$work/small.toml' backup"
  REPS_OVERRIDE=1 PREP="" measure "steward verify ($small small files)" \
    "$steward" --config "$work/small.toml" verify --all
fi

# --- report
python3 - "$results" "$tar_size" "$steward_size" "$borg_size" "$restic_size" "$check_ms" "$idle_cpu_pct" "$idle_rss_kb" <<'PY'
import sys
check_ms = float(sys.argv[6])
idle_cpu, idle_rss = float(sys.argv[7]), int(sys.argv[8]) / 1024
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
r = {n: (float(w), int(k)) for n, w, k, _ in rows}
cpu = {n: float(c) for n, _, _, c in rows}
tar_size, st_size, borg_size, restic_size = map(int, sys.argv[2:6])
size = {"tar|zstd -T0 -3": tar_size, "steward backup (first, verified)": st_size,
        "borg create (first)": borg_size, "restic backup (first)": restic_size}
print(f"{'run':42} {'wall s':>8} {'CPU core-s':>11} {'peak RSS MiB':>13} {'size MiB':>10}")
for n, (w, k) in r.items():
    s = f"{size[n] / 2**20:10.1f}" if n in size else f"{'':10}"
    print(f"{n:42} {w:8.2f} {cpu[n]:11.2f} {k / 1024:13.1f} {s}")
def ratio(a, b):
    return r[a][0] / r[b][0] if r[b][0] > 0 else float("inf")
print()
checks = []
x = ratio("steward backup (first, verified)", "tar|zstd -T0 -3")
checks.append(("first verified backup / tar|zstd -T0 -3 wall", x, "<= 1.30", x <= 1.30))
x = cpu["steward backup (first, verified)"] / cpu["tar|zstd -T0 -3"]
checks.append(("first verified backup / tar|zstd CPU core-s", x, "(info)", True))
x = ratio("steward backup (first, verified)", "tar|zstd|tee|sha256sum")
checks.append(("first verified backup / tar|zstd|tee|sha256sum wall", x, "(info)", True))
small = [n for n in r if n.startswith("steward backup (") and "small files" in n]
if small:
    peer = small[0].replace("steward backup", "tar|zstd")
    x = ratio(small[0], peer)
    checks.append((f"small files: steward backup / tar|zstd wall", x, "<= 1.50", x <= 1.50))
x = ratio("steward restore --to (verified)", "zstd -dc | tar -x")
checks.append(("verified restore / zstd -dc | tar -x wall", x, "<= 1.30", x <= 1.30))
x = ratio("steward drill", "zstd -dc | tar -x")
checks.append(("restore drill / zstd -dc | tar -x wall", x, "(info)", True))
x = ratio("steward drill", "steward restore --to (verified)")
checks.append(("restore drill / steward restore --to wall", x, "(info)", True))
x = ratio("steward backup (unchanged)", "borg create (unchanged)")
checks.append(("unchanged re-run / borg unchanged re-run", x, "<= 1.00", x <= 1.00))
x = ratio("steward backup (unchanged)", "restic backup (unchanged)")
checks.append(("unchanged re-run / restic unchanged re-run", x, "(info)", True))
x = ratio("steward verify --all", "zstd -t")
checks.append(("verify --all / zstd -t wall", x, "(info)", True))
x = ratio("steward verify --all", "borg check --verify-data")
checks.append(("verify --all / borg check --verify-data", x, "(info)", True))
x = ratio("steward verify --all", "restic check --read-data")
checks.append(("verify --all / restic check --read-data", x, "(info)", True))
rss = max(k for n, (w, k) in r.items() if n.startswith("steward")) / 1024
checks.append(("steward peak RSS MiB (all runs)", rss, "<= 64", rss <= 64))
checks.append(("check cycle CPU ms (user+sys)", check_ms, "<= 50", check_ms <= 50))
checks.append(("idle daemon CPU % over 60 s", idle_cpu, "< 0.1", idle_cpu < 0.1))
checks.append(("idle daemon peak RSS MiB", idle_rss, "<= 20", idle_rss <= 20))
x = st_size / tar_size
checks.append(("archive size / tar|zstd -3 size", x, "within 2%", abs(x - 1) <= 0.02))
print(f"{'target':48} {'value':>8}  {'goal':10} ok")
for name, v, goal, ok in checks:
    print(f"{name:48} {v:8.3f}  {goal:10} {'yes' if ok else 'NO'}")
PY
