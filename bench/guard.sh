#!/usr/bin/env bash
# The change guard's cost: `steward backup --force` on the shared 2 GB dataset with the
# guard on (comparing with the previous backup's facts) and off, 3 reps alternating, warm
# cache, in one run.   bench/guard.sh [--work DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
W=/tmp/steward-bench
[ "${1:-}" = "--work" ] && W="$2"
. "$here/bench/lib.sh"
for g in on off; do
  rm -rf $W/g-$g; mkdir -p $W/g-$g
  en=$([ $g = on ] && echo true || echo false)
  cat > $W/g-$g/c.toml <<C
[state]
dir = "$W/g-$g/state"
[backup]
destination = "$W/g-$g/dest"
[backup.guard]
enabled = $en
[[backup.set]]
name = "ds"
paths = ["$W/ds"]
C
  $S --config $W/g-$g/c.toml backup >/dev/null 2>&1   # baseline
done
tar -cf - -C $W/ds . | cat > /dev/null
for i in 1 2 3; do
  for g in on off; do
    t0=$(date +%s.%N)
    $S --config $W/g-$g/c.toml backup --force >/dev/null 2>&1
    t1=$(date +%s.%N)
    echo "rep $i guard $g: $(echo "$t1-$t0" | bc) s"
    # keep only the baseline and the newest
    ls -1 $W/g-$g/dest/ds/*.tar.zst | head -n -2 | while read f; do rm -f "$f" "$f.sha256"; done
  done
done
echo "facts per backup: $(ls -l $W/g-on/state/facts | awk 'NR==2{print $5}') bytes for $(find $W/ds -type f | wc -l) files"
rm -rf $W/g-on $W/g-off
