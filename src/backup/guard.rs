//! The change guard: what a new backup looks like next to the set's last good one. A
//! backup of damage (a database overwritten, most files deleted or encrypted) is still
//! written and verified, since it may hold the only copy of new data, but it is recorded
//! as *suspect* with the reasons, so retention never lets it push out the last good backup.
//!
//! Per file the guard keeps 16 bytes (the XXH3 of its archive path, its size and two
//! flags: SQLite database, high-entropy start) in `<state>/facts/<id>`, written as the
//! backup is taken; the next backup compares against the facts of the last good one with
//! a bitset, so memory stays at 16 bytes per file of the baseline.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::config::GuardConfig;
use xxhash_rust::xxh3::xxh3_64;

/// What the guard measured, recorded in `backup.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuardReport {
    /// The last good backup compared against (none for a set's first backup).
    pub baseline: Option<String>,
    pub removed_files_pct: f64,
    pub removed_bytes_pct: f64,
    pub became_random_pct: f64,
    /// Why the backup is suspect; empty when it is not.
    pub reasons: Vec<String>,
}

/// How many bytes from a file's start are judged for entropy: enough to tell text and
/// structured data (4-6 bits per byte) from compressed or encrypted data (7.9+; the
/// estimate of truly random bytes is biased low by only ~0.05 at this size), and cheap,
/// since on a tree of small files the sample is most of every byte read.
pub const SAMPLE: usize = 4096;
/// Fewer bytes than this say nothing about entropy.
const MIN_SAMPLE: usize = 1024;
/// Bits per byte at or above which a sample looks compressed or encrypted.
const HIGH_ENTROPY: f64 = 7.5;

const FLAG_SQLITE: u64 = 1;
const FLAG_RANDOM: u64 = 2;

/// A byte histogram of a file's first [`SAMPLE`] bytes.
pub struct Sampler {
    counts: [u32; 256],
    seen: usize,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler {
            counts: [0; 256],
            seen: 0,
        }
    }
}

impl Sampler {
    /// Takes the part of `buf` that still falls within the sample.
    pub fn feed(&mut self, buf: &[u8]) {
        if self.seen >= SAMPLE {
            return;
        }
        let take = &buf[..buf.len().min(SAMPLE - self.seen)];
        for &b in take {
            self.counts[b as usize] += 1;
        }
        self.seen += take.len();
    }

    /// Whether the sample looks compressed or encrypted (too small a sample: no).
    pub fn high_entropy(&self) -> bool {
        if self.seen < MIN_SAMPLE {
            return false;
        }
        let n = self.seen as f64;
        let bits: f64 = self
            .counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = f64::from(c) / n;
                -p * p.log2()
            })
            .sum();
        bits >= HIGH_ENTROPY
    }
}

/// A reader that shows what passes through it to a [`Sampler`].
pub struct Sampled<'a, R> {
    pub inner: R,
    /// None: the guard is off.
    pub sampler: Option<&'a mut Sampler>,
}

impl<R: Read> Read for Sampled<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(s) = &mut self.sampler {
            s.feed(&buf[..n]);
        }
        Ok(n)
    }
}

/// Where the facts of backup `id` are kept.
pub fn facts_path(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("facts").join(id)
}

/// One file's facts: path hash, then size and flags in one word.
type Fact = (u64, u64);

fn pack(size: u64, sqlite: bool, random: bool) -> u64 {
    (size.min(u64::MAX >> 2) << 2)
        | if sqlite { FLAG_SQLITE } else { 0 }
        | if random { FLAG_RANDOM } else { 0 }
}

/// Reads a facts file, sorted by path hash; `None` when it is missing or damaged.
fn load(path: &Path) -> Option<Vec<Fact>> {
    let mut r = BufReader::new(File::open(path).ok()?);
    let mut out = Vec::new();
    let mut rec = [0u8; 16];
    loop {
        match r.read_exact(&mut rec) {
            Ok(()) => out.push((
                u64::from_le_bytes(rec[..8].try_into().ok()?),
                u64::from_le_bytes(rec[8..].try_into().ok()?),
            )),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(_) => return None,
        }
    }
    out.sort_unstable();
    Some(out)
}

/// The last good backup's facts and counts, and what the new backup found so far.
pub struct Guard {
    config: GuardConfig,
    baseline_id: Option<String>,
    /// The baseline's databases: live path to rows per table.
    baseline_tables: HashMap<String, BTreeMap<String, u64>>,
    baseline: Option<Vec<Fact>>,
    /// Files and bytes of the baseline, from the catalog (used when its facts are gone).
    baseline_files: u64,
    baseline_bytes: u64,
    seen: Vec<u64>,
    /// Baseline files that maintenance removed since (their archive-name hashes).
    expected: std::collections::HashSet<u64>,
    common: u64,
    became_random: u64,
    files: u64,
    bytes: u64,
    reasons: Vec<String>,
    out: Option<(PathBuf, BufWriter<File>)>,
}

/// The last good backup a new one is compared with.
pub struct Baseline<'a> {
    pub id: &'a str,
    pub files: u64,
    pub bytes: u64,
    /// When it was taken: maintenance's removals since then are expected.
    pub created_at: i64,
}

/// steward's own maintenance removes files (a log compressed to `x.log.zst`, an old log or
/// scratch file deleted): they are recorded here, so the next backup does not count them
/// as lost and cry wolf. One JSON line per file, `{"at": unix, "path": "/abs/path"}`.
fn ledger_path(state_dir: &Path) -> PathBuf {
    state_dir.join("maintained.jsonl")
}

#[derive(Serialize, Deserialize)]
struct Maintained {
    at: i64,
    path: PathBuf,
}

/// How long the ledger remembers a removal (longer than any baseline stays the newest
/// good backup in practice).
const LEDGER_DAYS: i64 = 400;

/// Records that maintenance removed `paths` at `at`, forgetting entries older than
/// [`LEDGER_DAYS`]. Best effort: a ledger that cannot be written only risks a false alarm.
pub fn record_maintained(state_dir: &Path, paths: &[PathBuf], at: i64) -> io::Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let file = ledger_path(state_dir);
    let keep_from = at - LEDGER_DAYS * 86_400;
    let mut lines: Vec<String> = std::fs::read_to_string(&file)
        .unwrap_or_default()
        .lines()
        .filter(|l| serde_json::from_str::<Maintained>(l).is_ok_and(|m| m.at >= keep_from))
        .map(str::to_string)
        .collect();
    for p in paths {
        lines.push(
            serde_json::to_string(&Maintained {
                at,
                path: p.clone(),
            })
            .map_err(io::Error::other)?,
        );
    }
    let tmp = file.with_extension("jsonl.partial");
    std::fs::write(&tmp, lines.join("\n") + "\n")?;
    std::fs::rename(&tmp, &file)
}

/// The archive-name hashes of the files maintenance removed at or after `since`.
fn maintained_since(state_dir: &Path, since: i64) -> std::collections::HashSet<u64> {
    std::fs::read_to_string(ledger_path(state_dir))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Maintained>(l).ok())
        .filter(|m| m.at >= since)
        .filter_map(|m| {
            let rel = m.path.strip_prefix("/").ok()?.to_path_buf();
            Some(xxh3_64(std::os::unix::ffi::OsStrExt::as_bytes(
                rel.as_os_str(),
            )))
        })
        .collect()
}

impl Guard {
    /// A guard for a new backup, writing its facts to `facts` (a partial name the caller
    /// renames once the backup is published).
    pub fn new(
        config: &GuardConfig,
        state_dir: &Path,
        baseline: Option<Baseline<'_>>,
        facts: &Path,
    ) -> Guard {
        let baseline = baseline.filter(|_| config.enabled);
        let loaded = baseline
            .as_ref()
            .and_then(|b| load(&facts_path(state_dir, b.id)));
        let seen = vec![0u64; loaded.as_ref().map_or(0, |v| v.len().div_ceil(64))];
        let expected = baseline
            .as_ref()
            .map(|b| maintained_since(state_dir, b.created_at))
            .unwrap_or_default();
        let out = Some(facts)
            .filter(|_| config.enabled)
            .and_then(|f| f.parent())
            .and_then(|d| std::fs::create_dir_all(d).ok())
            .and_then(|()| File::create(facts).ok())
            .map(|f| (facts.to_path_buf(), BufWriter::new(f)));
        Guard {
            config: config.clone(),
            baseline_id: baseline.as_ref().map(|b| b.id.to_string()),
            baseline_tables: HashMap::new(),
            baseline_files: baseline.as_ref().map_or(0, |b| b.files),
            baseline_bytes: baseline.as_ref().map_or(0, |b| b.bytes),
            baseline: loaded,
            seen,
            expected,
            common: 0,
            became_random: 0,
            files: 0,
            bytes: 0,
            reasons: Vec::new(),
            out,
        }
    }

    /// Whether the change guard runs (files are sampled and recorded).
    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Records one archived regular file.
    pub fn file(&mut self, name: &[u8], size: u64, sqlite: bool, random: bool) {
        if !self.config.enabled {
            return;
        }
        let hash = xxh3_64(name);
        let packed = pack(size, sqlite, random);
        self.files += 1;
        self.bytes += size;
        if let Some((_, w)) = &mut self.out {
            let mut rec = [0u8; 16];
            rec[..8].copy_from_slice(&hash.to_le_bytes());
            rec[8..].copy_from_slice(&packed.to_le_bytes());
            if w.write_all(&rec).is_err() {
                self.out = None;
            }
        }
        let Some(base) = &self.baseline else { return };
        if let Ok(i) = base.binary_search_by_key(&hash, |f| f.0) {
            self.seen[i / 64] |= 1 << (i % 64);
            self.common += 1;
            if random && base[i].1 & FLAG_RANDOM == 0 {
                self.became_random += 1;
            }
        }
    }

    /// Records a problem found while archiving (a database that fails its check, one that
    /// is no longer a database).
    pub fn suspect(&mut self, reason: String) {
        self.reasons.push(reason);
    }

    /// The row counts per table of the baseline's databases (by live path).
    pub fn baseline_tables(&mut self, tables: HashMap<String, BTreeMap<String, u64>>) {
        self.baseline_tables = tables;
    }

    /// Compares one archived database's row counts with the baseline's: a table that lost
    /// more than the limit's share of at least `min-rows` rows, or vanished, makes the
    /// backup suspect (a bad migration leaves a valid database of about the same size).
    pub fn tables(&mut self, path: &str, now: &BTreeMap<String, u64>) {
        if !self.config.enabled || now.is_empty() {
            return;
        }
        let Some(before) = self.baseline_tables.get(path) else {
            return;
        };
        let base = self.baseline_id.clone().unwrap_or_default();
        for (table, &was) in before {
            if was < self.config.min_rows {
                continue;
            }
            let is = now.get(table).copied();
            let kept = is.unwrap_or(0);
            let lost = was.saturating_sub(kept) as f64 * 100.0 / was as f64;
            // At the limit counts: "half of the table" must not slip by a rounding.
            if lost >= self.config.removed_rows && kept < was {
                let what = match is {
                    Some(n) => format!("has {n} rows"),
                    None => "is gone".into(),
                };
                self.reasons.push(format!(
                    "{path}: table {table} {what}, {was} in {base} ({lost:.0} % gone, limit {} %)",
                    self.config.removed_rows
                ));
            }
        }
    }

    /// Whether databases are checked.
    pub fn sqlite_check(&self) -> bool {
        self.config.sqlite_check
    }

    /// Compares with the baseline and says why the backup is suspect, if it is. The
    /// facts file is complete (and synced) when this returns with `Some` path.
    pub fn finish(&mut self) -> (GuardReport, Option<PathBuf>) {
        let pct = |part: u64, whole: u64| {
            if whole == 0 {
                0.0
            } else {
                part as f64 * 100.0 / whole as f64
            }
        };
        let (removed_files, removed_bytes, became) = match &self.baseline {
            Some(base) => {
                let (mut files, mut bytes) = (0u64, 0u64);
                for (i, f) in base.iter().enumerate() {
                    // Gone because steward's own maintenance compressed or removed it.
                    if self.seen[i / 64] & (1 << (i % 64)) == 0 && !self.expected.contains(&f.0) {
                        files += 1;
                        bytes += f.1 >> 2;
                    }
                }
                let total: u64 = base.iter().map(|f| f.1 >> 2).sum();
                (
                    pct(files, base.len() as u64),
                    pct(bytes, total),
                    pct(self.became_random, self.common),
                )
            }
            // No facts for the baseline (a new host after reindex): counts only.
            None => (
                pct(
                    self.baseline_files.saturating_sub(self.files),
                    self.baseline_files,
                ),
                pct(
                    self.baseline_bytes.saturating_sub(self.bytes),
                    self.baseline_bytes,
                ),
                0.0,
            ),
        };
        if let Some(base) = &self.baseline_id {
            let c = &self.config;
            if removed_files > c.removed_files {
                self.reasons.push(format!(
                    "{removed_files:.0} % of the files of {base} are gone (limit {} %)",
                    c.removed_files
                ));
            }
            if removed_bytes > c.removed_bytes {
                self.reasons.push(format!(
                    "{removed_bytes:.0} % of the bytes of {base} are gone (limit {} %)",
                    c.removed_bytes
                ));
            }
            if became > c.became_random {
                self.reasons.push(format!(
                    "{became:.0} % of the files kept since {base} now look compressed or \
                     encrypted (limit {} %)",
                    c.became_random
                ));
            }
        }
        let facts = self.out.take().and_then(|(path, w)| {
            let f = w.into_inner().ok()?;
            f.sync_all().ok()?;
            Some(path)
        });
        (
            GuardReport {
                baseline: self.baseline_id.clone(),
                removed_files_pct: removed_files,
                removed_bytes_pct: removed_bytes,
                became_random_pct: became,
                reasons: std::mem::take(&mut self.reasons),
            },
            facts,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_low_and_random_bytes_are_high_entropy() {
        let mut s = Sampler::default();
        s.feed(&b"the quick brown fox jumps over the lazy dog. ".repeat(2000));
        assert!(!s.high_entropy());
        let mut s = Sampler::default();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let bytes: Vec<u8> = (0..SAMPLE)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        s.feed(&bytes);
        assert!(s.high_entropy());
        // Too little to judge.
        let mut s = Sampler::default();
        s.feed(&bytes[..100]);
        assert!(!s.high_entropy());
    }

    #[test]
    fn removed_and_randomised_shares_against_the_baseline() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = GuardConfig::default();
        let first = facts_path(dir.path(), "s-1");
        let mut g = Guard::new(&cfg, dir.path(), None, &first);
        for i in 0..10u32 {
            g.file(format!("f{i}").as_bytes(), 100, false, false);
        }
        let (r, path) = g.finish();
        assert!(r.reasons.is_empty() && path.is_some());
        let base = Baseline {
            id: "s-1",
            files: 10,
            bytes: 1000,
            created_at: 0,
        };
        let mut g = Guard::new(&cfg, dir.path(), Some(base), &facts_path(dir.path(), "s-2"));
        // 6 of 10 gone, 4 kept of which 2 turned random.
        for i in 0..4u32 {
            g.file(format!("f{i}").as_bytes(), 100, false, i < 2);
        }
        let (r, _) = g.finish();
        assert_eq!(r.removed_files_pct, 60.0);
        assert_eq!(r.became_random_pct, 50.0);
        assert_eq!(r.reasons.len(), 3, "{:?}", r.reasons);
        assert!(r.reasons[0].contains("60 % of the files of s-1"));
    }
}
