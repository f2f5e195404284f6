#!/usr/bin/env python3
"""The growth benchmark's data: a tree shaped like the Mac Mini host, and its days.

  growth.py init DEST [--mb 600]   the day-0 tree
  growth.py day DEST N             day N's changes (deterministic in N):
      about 1 % new and 0.5 % updated rows in the SQLite database,
      2-3 of the 120 vector-store segment files rewritten,
      about 2 MB of log lines and one rotation (app.log -> app.log.1 -> ... .7),
      a few new conversation files; the models unchanged.

Layout (shares of --mb): models/ 50 % (incompressible blobs), vector_stores/ 30 % (120
float32 segments), data/app.db 12 % (SQLite, WAL), conversations/ 4 %, logs/ 4 %.
Standard library only.
"""
import argparse
import os
import random
import sqlite3
import sys

WORDS = (
    "invoice order shipment quote customer pricing urgent review contract renewal meeting "
    "schedule deployment server backup restore alert disk memory model vector query "
    "report weekly monthly status update escalation ticket resolved pending approval"
).split()
SEGMENTS = 120
ROTATIONS = 7


def words(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def float_bytes(rng, n):
    """n bytes that look like little-endian float32 values in (-1, 1)."""
    n -= n % 4
    buf = bytearray(rng.randbytes(n))
    buf[3::4] = bytes(rng.choice((0x3E, 0x3F, 0xBE, 0xBF)) for _ in range(n // 4))
    return bytes(buf)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def segment_size(mb):
    return max(4096, int(mb * 0.30 * 1e6 / SEGMENTS))


def log_lines(rng, n_bytes, day):
    out, size = [], 0
    while size < n_bytes:
        line = "2026-01-%02d INFO %s\n" % (1 + day % 28, words(rng, 12))
        out.append(line)
        size += len(line)
    return "".join(out).encode()


def init(dest, mb):
    rng = random.Random(1)
    blob = int(mb * 0.50 * 1e6 / 4)
    for i in range(4):
        write(os.path.join(dest, "models", "blobs", "sha256-%02d" % i), rng.randbytes(blob))
    seg = segment_size(mb)
    for i in range(SEGMENTS):
        write(os.path.join(dest, "vector_stores", "proj", "seg-%03d.bin" % i), float_bytes(rng, seg))
    os.makedirs(os.path.join(dest, "data"), exist_ok=True)
    db = sqlite3.connect(os.path.join(dest, "data", "app.db"))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE mail (id INTEGER PRIMARY KEY, subject TEXT, body TEXT, state TEXT)")
    db.execute("CREATE INDEX mail_state ON mail(state)")
    rows = int(mb * 0.12 * 1e6 / 400)
    db.executemany(
        "INSERT INTO mail (subject, body, state) VALUES (?, ?, ?)",
        ((words(rng, 6), words(rng, 50), "new") for _ in range(rows)),
    )
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    conv = int(mb * 0.04 * 1e6 / 4000)
    for i in range(conv):
        write(os.path.join(dest, "conversations", "c-%05d.json" % i), ('{"text": "%s"}' % words(rng, 600)).encode())
    logs = os.path.join(dest, "logs")
    per = int(mb * 0.04 * 1e6 / (ROTATIONS + 1))
    write(os.path.join(logs, "app.log"), log_lines(rng, per, 0))
    for r in range(1, ROTATIONS + 1):
        write(os.path.join(logs, "app.log.%d" % r), log_lines(rng, per, r))


def day(dest, n, mb):
    rng = random.Random(1000 + n)
    # Database: 1 % new rows, 0.5 % updated.
    db = sqlite3.connect(os.path.join(dest, "data", "app.db"))
    count = db.execute("SELECT count(*) FROM mail").fetchone()[0]
    db.executemany(
        "INSERT INTO mail (subject, body, state) VALUES (?, ?, ?)",
        ((words(rng, 6), words(rng, 50), "new") for _ in range(count // 100)),
    )
    ids = [rng.randint(1, count) for _ in range(count // 200)]
    db.executemany("UPDATE mail SET state = 'done', body = ? WHERE id = ?", ((words(rng, 50), i) for i in ids))
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    # Vector store: 2 or 3 segments rewritten.
    seg = segment_size(mb)
    for i in rng.sample(range(SEGMENTS), 2 + n % 2):
        write(os.path.join(dest, "vector_stores", "proj", "seg-%03d.bin" % i), float_bytes(rng, seg))
    # Logs: the day's lines, then one rotation.
    logs = os.path.join(dest, "logs")
    with open(os.path.join(logs, "app.log"), "ab") as f:
        f.write(log_lines(rng, 2_000_000, n))
    oldest = os.path.join(logs, "app.log.%d" % ROTATIONS)
    if os.path.exists(oldest):
        os.remove(oldest)
    for r in range(ROTATIONS - 1, 0, -1):
        p = os.path.join(logs, "app.log.%d" % r)
        if os.path.exists(p):
            os.rename(p, os.path.join(logs, "app.log.%d" % (r + 1)))
    os.rename(os.path.join(logs, "app.log"), os.path.join(logs, "app.log.1"))
    write(os.path.join(logs, "app.log"), b"")
    # Conversations: a few new ones.
    for i in range(5):
        write(os.path.join(dest, "conversations", "d%03d-%d.json" % (n, i)), ('{"text": "%s"}' % words(rng, 600)).encode())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["init", "day"])
    ap.add_argument("dest")
    ap.add_argument("n", nargs="?", type=int, default=0)
    ap.add_argument("--mb", type=int, default=600)
    a = ap.parse_args()
    if a.what == "init":
        init(a.dest, a.mb)
    else:
        day(a.dest, a.n, a.mb)


if __name__ == "__main__":
    sys.exit(main())
