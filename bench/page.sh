#!/usr/bin/env bash
# The status page's cost (issue 29): the time `steward serve` takes to render `/`, and
# `/health` and `/metrics`, on a catalog of 10,000 backups, a year of 5-minute disk
# samples on two disks and a year of check runs, beside `steward status --json` on the
# same catalog (the same gathering, printed); then the idle RSS of the daemon with
# `[serve]` against the daemon alone.
#
#   bench/page.sh [--work DIR] [--reps 20]
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
work=/tmp/steward-page-bench
reps=20
while [ $# -gt 0 ]; do
  case "$1" in
    --work) work="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
. "$here/bench/tools.sh"
ensure_tools time bc
command -v curl >/dev/null || { echo "bench/page.sh needs curl" >&2; exit 1; }

(cd "$here" && cargo build --release --locked -q)
steward="$here/target/release/steward"
rm -rf "$work"
mkdir -p "$work/data" "$work/home"
echo hello > "$work/data/notes.txt"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
config() {
  cat > "$work/steward.toml" <<EOF
[state]
dir = "$work/state"
[backup]
destination = "$work/backups"
$(for i in $(seq 1 10); do printf '[[backup.set]]\nname = "set%s"\npaths = ["%s/data"]\n' "$i" "$work"; done)
[checks.disk]
paths = ["/", "$work"]
[schedule]
check = "*/5 * * * *"
backup = "0 3 * * *"
catch-up = false
$1
EOF
}
config ""
export HOME="$work/home"
"$steward" --config "$work/steward.toml" backup >/dev/null 2>&1

python3 - "$work/state/state.db" <<'EOF'
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1])
now = int(time.time())
year = 365 * 86400
row = db.execute("SELECT * FROM backups LIMIT 1").fetchone()
cols = [d[0] for d in db.execute("SELECT * FROM backups LIMIT 1").description]
i_id, i_set, i_created = cols.index("id"), cols.index("set_name"), cols.index("created_at")
rows = []
for n in range(10_000):
    r = list(row)
    s = f"set{n % 10 + 1}"
    t = now - year + n * (year // 10_000)
    r[i_id], r[i_set], r[i_created] = f"{s}-bench{n:05d}", s, t
    rows.append(r)
db.executemany(f"INSERT OR REPLACE INTO backups ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})", rows)
for path in ["/", sys.argv[1].rsplit("/state/", 1)[0]]:
    db.executemany("INSERT INTO disk_samples (path, at, used, free) VALUES (?, ?, ?, ?)",
                   [(path, now - year + k * 300, (300 << 30) + k * (1 << 20), (700 << 30) - k * (1 << 20))
                    for k in range(year // 300)])
db.executemany("INSERT INTO runs (job, started_at, finished_at, status, scheduled) VALUES ('check', ?, ?, 'ok', 1)",
               [(now - year + k * 300, now - year + k * 300 + 2) for k in range(year // 300)])
for k in range(30):
    db.execute("INSERT OR REPLACE INTO check_states (name, state, since, history, value, threshold) VALUES (?, 'O', ?, 'O', 'v', 't')",
               (f"check {k}", now - 3600))
db.commit()
print("catalog:", db.execute("SELECT count(*) FROM backups").fetchone()[0], "backups,",
      db.execute("SELECT count(*) FROM disk_samples").fetchone()[0], "disk samples,",
      db.execute("SELECT count(*) FROM runs").fetchone()[0], "runs", file=sys.stderr)
EOF

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

"$steward" --config "$work/steward.toml" serve --listen "127.0.0.1:$port" >/dev/null 2>&1 &
serve=$!
trap 'kill $serve 2>/dev/null || true; kill ${daemon:-0} 2>/dev/null || true' EXIT
until curl -fs -o /dev/null "http://127.0.0.1:$port/health"; do sleep 0.1; done
serve_idle=$(rss_kib $serve)
time_of() { for _ in $(seq "$reps"); do curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$port$1"; done | median; }
page=$(time_of /)
health=$(time_of /health)
metrics=$(time_of /metrics)
size=$(curl -s "http://127.0.0.1:$port/" | wc -c)
serve_busy=$(rss_kib $serve)
kill $serve; wait $serve 2>/dev/null || true
status=$(for _ in $(seq "$reps"); do
  /usr/bin/env time -f %e "$steward" --config "$work/steward.toml" status --json 2>&1 >/dev/null | tail -1
done | median)

# The daemon alone, then with [serve], each idle for 3 s after it is up (with [serve]:
# also after $reps page requests).
daemon_rss() {
  "$steward" --config "$work/steward.toml" daemon >/dev/null 2>&1 &
  daemon=$!
  sleep 3
  printf '%s ' "$(rss_kib $daemon)"
  if [ "${1:-}" = hit ]; then
    for _ in $(seq "$reps"); do curl -s -o /dev/null "http://127.0.0.1:$port/"; done
    sleep 1
  fi
  rss_kib $daemon
  kill $daemon; wait $daemon 2>/dev/null || true
}
read -r alone _ < <(daemon_rss)
config "[serve]
listen = \"127.0.0.1:$port\""
read -r with with_busy < <(daemon_rss hit)

printf '%-44s %10s\n' "what" "value"
printf '%-44s %8.1f ms\n' "GET / (median of $reps)" "$(echo "$page * 1000" | bc -l)"
printf '%-44s %8.1f ms\n' "GET /health" "$(echo "$health * 1000" | bc -l)"
printf '%-44s %8.1f ms\n' "GET /metrics" "$(echo "$metrics * 1000" | bc -l)"
printf '%-44s %8.1f ms\n' "steward status --json (whole process)" "$(echo "$status * 1000" | bc -l)"
printf '%-44s %8.2f x\n' "GET / against status --json" "$(echo "$page / $status" | bc -l)"
printf '%-44s %8d bytes\n' "page size" "$size"
printf '%-44s %8.1f MiB\n' "steward serve idle RSS" "$(echo "$serve_idle / 1024" | bc -l)"
printf '%-44s %8.1f MiB\n' "steward serve RSS after the requests" "$(echo "$serve_busy / 1024" | bc -l)"
printf '%-44s %8.1f MiB\n' "daemon idle RSS" "$(echo "$alone / 1024" | bc -l)"
printf '%-44s %8.1f MiB\n' "daemon with [serve] idle RSS" "$(echo "$with / 1024" | bc -l)"
printf '%-44s %8.1f MiB\n' "daemon with [serve] after the requests" "$(echo "$with_busy / 1024" | bc -l)"
printf '%-44s %8.1f MiB\n' "[serve] adds to the idle daemon" "$(echo "($with - $alone) / 1024" | bc -l)"
printf '%-44s %8.1f MiB\n' "... and after the requests" "$(echo "($with_busy - $alone) / 1024" | bc -l)"
