//! The per-trial result store: `<results dir>/trials/<trial id>.json`, one file per finished
//! trial, each written atomically (temporary file, fsync, rename).
//!
//! A trial's id is a hash of everything that defines it (see `clef_experiment::protocol`), so a
//! file's presence means "this exact trial finished". Re-running a config skips those trials; a
//! sweep killed at any instant resumes with nothing lost (every finished trial is on disk) and
//! nothing run twice (no finished trial runs again). Several processes may write one store at
//! once (shards on a shared file system): they write different files, or the same content.
//! `results.jsonl` and `summary.md` are views regenerated from the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::results::{write_atomic, ResultsError, TrialRecord};

/// Directory name of the store inside a results directory.
pub const TRIALS_DIR: &str = "trials";

/// A directory of per-trial records.
#[derive(Debug, Clone)]
pub struct TrialStore {
    dir: PathBuf,
}

/// What [`TrialStore::merge_from`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Records copied into the store.
    pub added: usize,
    /// Records the store already had.
    pub already_present: usize,
}

fn io_err(path: &Path, cause: std::io::Error) -> ResultsError {
    ResultsError {
        path: path.to_path_buf(),
        cause,
    }
}

impl TrialStore {
    /// Opens (creating if needed) the store of results directory `results_dir`.
    pub fn open(results_dir: &Path) -> Result<Self, ResultsError> {
        let dir = results_dir.join(TRIALS_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        Ok(TrialStore { dir })
    }

    /// Opens the store of `results_dir` only if it exists.
    pub fn existing(results_dir: &Path) -> Option<Self> {
        let dir = results_dir.join(TRIALS_DIR);
        dir.is_dir().then_some(TrialStore { dir })
    }

    /// The `trials/` directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where trial `id` keeps its checkpoint while it runs: `<results dir>/checkpoints/<id>.ckpt`
    /// (removed once its record is stored).
    pub fn checkpoint_path(&self, id: &str) -> PathBuf {
        self.dir
            .parent()
            .unwrap_or(&self.dir)
            .join("checkpoints")
            .join(format!("{id}.ckpt"))
    }

    fn file_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// True if trial `id` finished (its record is stored).
    pub fn contains(&self, id: &str) -> bool {
        self.file_of(id).is_file()
    }

    /// Stores a finished trial's record (atomically; replaces an existing one).
    pub fn put(&self, record: &TrialRecord) -> Result<(), ResultsError> {
        let path = self.file_of(&record.trial_id);
        let mut text = serde_json::to_vec_pretty(record).map_err(|e| io_err(&path, e.into()))?;
        text.push(b'\n');
        write_atomic(&path, &text)
    }

    /// Ids of the stored trials, sorted. Temporary files of interrupted writes are ignored.
    pub fn ids(&self) -> Result<Vec<String>, ResultsError> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| io_err(&self.dir, e))? {
            let entry = entry.map_err(|e| io_err(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if let Some(id) = name.strip_suffix(".json") {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Reads trial `id`. An unreadable file is an error naming it.
    pub fn get(&self, id: &str) -> anyhow::Result<TrialRecord> {
        let path = self.file_of(id);
        let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not a trial record: {e}", path.display()))
    }

    /// Every stored record, keyed by trial id.
    pub fn load_all(&self) -> anyhow::Result<BTreeMap<String, TrialRecord>> {
        let mut out = BTreeMap::new();
        for id in self.ids()? {
            let rec = self.get(&id)?;
            anyhow::ensure!(
                rec.trial_id == id,
                "{}: holds trial {} (file renamed?)",
                self.file_of(&id).display(),
                rec.trial_id
            );
            out.insert(id, rec);
        }
        Ok(out)
    }

    /// Copies every record of `other` that this store lacks. Records are identified by their
    /// trial id, which hashes everything that defines the trial, so two stores never hold
    /// different trials under one id; a record present in both is kept as it is.
    pub fn merge_from(&self, other: &TrialStore) -> anyhow::Result<MergeStats> {
        let mut stats = MergeStats::default();
        for id in other.ids()? {
            if self.contains(&id) {
                stats.already_present += 1;
                continue;
            }
            let rec = other.get(&id)?;
            self.put(&rec)?;
            stats.added += 1;
        }
        Ok(stats)
    }

    /// Removes temporary files left by writes that were killed (they are never read). Only
    /// files older than `min_age` go: another process sharing the store (a shard on a shared
    /// file system) may be writing a younger one right now.
    pub fn clean_temporaries(&self, min_age: std::time::Duration) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= min_age);
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::record;

    #[test]
    fn put_get_ids_and_temporaries_are_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let s = TrialStore::open(tmp.path()).unwrap();
        s.put(&record("a", 0, 0.5)).unwrap();
        s.put(&record("b", 1, 0.7)).unwrap();
        std::fs::write(s.path().join(".x.json.tmp-1"), b"torn").unwrap();
        assert_eq!(s.ids().unwrap(), vec!["a-0", "b-1"]);
        assert!(s.contains("a-0") && !s.contains("a-1"));
        assert_eq!(s.get("b-1").unwrap(), record("b", 1, 0.7));
        s.clean_temporaries(std::time::Duration::from_secs(3600));
        assert_eq!(
            std::fs::read_dir(s.path()).unwrap().count(),
            3,
            "a young one stays"
        );
        s.clean_temporaries(std::time::Duration::ZERO);
        assert_eq!(std::fs::read_dir(s.path()).unwrap().count(), 2);
    }

    #[test]
    fn merge_adds_missing_and_keeps_present() {
        let tmp = tempfile::tempdir().unwrap();
        let a = TrialStore::open(&tmp.path().join("a")).unwrap();
        let b = TrialStore::open(&tmp.path().join("b")).unwrap();
        a.put(&record("x", 0, 0.5)).unwrap();
        b.put(&record("x", 0, 0.5)).unwrap();
        b.put(&record("y", 0, 0.6)).unwrap();
        let st = a.merge_from(&b).unwrap();
        assert_eq!(
            st,
            MergeStats {
                added: 1,
                already_present: 1
            }
        );
        assert_eq!(a.load_all().unwrap().len(), 2);
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let s = TrialStore::open(tmp.path()).unwrap();
        std::fs::write(s.path().join("abc.json"), b"{").unwrap();
        let e = s.load_all().unwrap_err().to_string();
        assert!(
            e.contains("abc.json") && e.contains("not a trial record"),
            "{e}"
        );
    }
}
