//! Trial checkpoints at task boundaries: everything a trial needs to continue after its last
//! finished task and end with exactly the result of an uninterrupted run.
//!
//! A checkpoint holds the network's parameters, the optimizer's state slots and step count,
//! the strategy RNG's position, the trainer's step counter, the strategy's private state (its
//! `save_state` bytes) and the measurements so far (accuracy-matrix rows, online accuracies,
//! losses, timings, strategy metrics, diagnostics). It names the trial it belongs to (`key`),
//! so a checkpoint of another trial or config is never resumed.
//!
//! # File format
//!
//! ```text
//! "CLEFCKPT" | u32 version | u64 n | n bytes of JSON metadata
//! | u64 count, then per tensor: u64 len + len f32     (parameters)
//! | u64 slots, then per slot: u64 len + name, then a tensor list as above (optimizer state)
//! | u64 len + strategy state bytes
//! | u64 FNV-1a of every byte before it
//! ```
//!
//! Little-endian throughout. Every length is checked against the bytes left before anything is
//! allocated, and the trailing checksum catches torn or corrupted files, so a bad checkpoint is
//! an error naming the file, never a panic or a wrong resume. Files are written to a temporary
//! name, synced and renamed, so a kill while writing leaves the previous checkpoint intact.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::measurements::Measurements;
use clef_data::seed::fnv1a;

const MAGIC: &[u8; 8] = b"CLEFCKPT";
const VERSION: u32 = 1;

/// The measurements and counters of a trial after `tasks_done` tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Which trial (a hash of everything that defines it).
    pub key: String,
    /// Tasks trained and evaluated.
    pub tasks_done: usize,
    /// Position of the strategy RNG (ChaCha word position), as a decimal string (u128).
    pub rng_word_pos: String,
    /// Steps of the optimizer since its last reset.
    pub optimizer_steps: u64,
    /// What the trial measured so far (its `steps` is the trainer's step counter).
    #[serde(flatten)]
    pub measured: Measurements,
}

/// A whole checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Counters and measurements.
    pub progress: Progress,
    /// Parameter values, in the network's parameter order.
    pub params: Vec<Vec<f32>>,
    /// Optimizer state: `(slot name, one tensor per parameter)`.
    pub optimizer: Vec<(String, Vec<Vec<f32>>)>,
    /// The strategy's `save_state` bytes.
    pub strategy_state: Vec<u8>,
}

/// A checkpoint that cannot be written or read.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint {path}: {message}")]
pub struct CheckpointError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_tensors(b: &mut Vec<u8>, ts: &[Vec<f32>]) {
    put_u64(b, ts.len() as u64);
    for t in ts {
        put_u64(b, t.len() as u64);
        b.reserve(4 * t.len());
        for v in t {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Serialises a checkpoint (see the module docs for the layout).
pub fn encode(c: &Checkpoint) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    // Serialising plain data to JSON cannot fail.
    let meta = serde_json::to_vec(&c.progress).unwrap_or_default();
    put_u64(&mut b, meta.len() as u64);
    b.extend_from_slice(&meta);
    put_tensors(&mut b, &c.params);
    put_u64(&mut b, c.optimizer.len() as u64);
    for (name, ts) in &c.optimizer {
        put_u64(&mut b, name.len() as u64);
        b.extend_from_slice(name.as_bytes());
        put_tensors(&mut b, ts);
    }
    put_u64(&mut b, c.strategy_state.len() as u64);
    b.extend_from_slice(&c.strategy_state);
    let sum = fnv1a(&b);
    put_u64(&mut b, sum);
    b
}

struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err(format!(
                "truncated: {what} needs {n} bytes, {} left",
                self.rest.len()
            ));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A length that must fit in what is left (each unit at least `unit` bytes).
    fn len(&mut self, unit: usize, what: &str) -> Result<usize, String> {
        let n = self.u64(what)?;
        let max = (self.rest.len() / unit.max(1)) as u64;
        if n > max {
            return Err(format!(
                "corrupt: {what} announces {n} entries, at most {max} fit"
            ));
        }
        Ok(n as usize)
    }

    fn tensors(&mut self, what: &str) -> Result<Vec<Vec<f32>>, String> {
        let count = self.len(8, what)?;
        (0..count)
            .map(|_| {
                let n = self.len(4, what)?;
                let raw = self.take(4 * n, what)?;
                Ok(raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect())
            })
            .collect()
    }
}

/// Parses [`encode`]'s output; `path` names the file in errors.
pub fn decode(bytes: &[u8], path: &Path) -> Result<Checkpoint, CheckpointError> {
    let fail = |message: String| CheckpointError {
        path: path.to_path_buf(),
        message,
    };
    if bytes.len() < MAGIC.len() + 4 + 8 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(fail(
            "not a clef checkpoint (bad magic or too short)".into(),
        ));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    let mut s = [0u8; 8];
    s.copy_from_slice(sum);
    if fnv1a(body) != u64::from_le_bytes(s) {
        return Err(fail(
            "checksum mismatch: the file is torn or corrupted".into(),
        ));
    }
    let mut c = Cursor {
        rest: &body[MAGIC.len()..],
    };
    let mut v = [0u8; 4];
    v.copy_from_slice(c.take(4, "version").map_err(fail)?);
    let version = u32::from_le_bytes(v);
    if version != VERSION {
        return Err(fail(format!(
            "format version {version}; this clef reads version {VERSION}"
        )));
    }
    let n = c.len(1, "metadata").map_err(fail)?;
    let meta = c.take(n, "metadata").map_err(fail)?;
    let progress: Progress =
        serde_json::from_slice(meta).map_err(|e| fail(format!("metadata: {e}")))?;
    let params = c.tensors("parameters").map_err(fail)?;
    let slots = c.len(16, "optimizer slots").map_err(fail)?;
    let mut optimizer = Vec::with_capacity(slots);
    for _ in 0..slots {
        let n = c.len(1, "slot name").map_err(fail)?;
        let name = String::from_utf8(c.take(n, "slot name").map_err(fail)?.to_vec())
            .map_err(|_| fail("slot name is not UTF-8".into()))?;
        optimizer.push((name, c.tensors("optimizer state").map_err(fail)?));
    }
    let n = c.len(1, "strategy state").map_err(fail)?;
    let strategy_state = c.take(n, "strategy state").map_err(fail)?.to_vec();
    if !c.rest.is_empty() {
        return Err(fail(format!("{} unexpected trailing bytes", c.rest.len())));
    }
    Ok(Checkpoint {
        progress,
        params,
        optimizer,
        strategy_state,
    })
}

/// Writes `c` to `path` atomically (temporary file in the same directory, fsync, rename).
pub fn save(c: &Checkpoint, path: &Path) -> Result<(), CheckpointError> {
    let fail = |e: std::io::Error| CheckpointError {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&encode(c))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        // Best effort: the temporary file is garbage either way.
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}

/// Reads the checkpoint at `path` if there is one: `Ok(None)` when the file does not exist,
/// an error when it exists but is unreadable, corrupt, or belongs to another trial than `key`.
pub fn load(path: &Path, key: &str) -> Result<Option<Checkpoint>, CheckpointError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CheckpointError {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
        }
    };
    let c = decode(&bytes, path)?;
    if c.progress.key != key {
        return Err(CheckpointError {
            path: path.to_path_buf(),
            message: format!(
                "belongs to trial {}, not {key} (remove it to start the trial afresh)",
                c.progress.key
            ),
        });
    }
    Ok(Some(c))
}

/// Removes the checkpoint at `path` (its trial's record is stored); a missing file is fine,
/// any other failure is logged (a stale checkpoint is ignored by a later run of another trial
/// and overwritten by the same trial).
pub fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), "cannot remove the checkpoint: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn sample() -> Checkpoint {
        let mut metrics = BTreeMap::new();
        metrics.insert("density.total".to_string(), 0.1);
        Checkpoint {
            progress: Progress {
                key: "abc123".into(),
                tasks_done: 2,
                rng_word_pos: (u128::from(u64::MAX) + 7).to_string(),
                optimizer_steps: 70,
                measured: Measurements {
                    accuracy_matrix: vec![vec![0.9, 0.1], vec![0.8, 0.95]],
                    random_init_accuracy: vec![0.1, 0.12],
                    online_accuracy: vec![0.7, 0.8],
                    mean_loss: vec![0.5, 0.4],
                    train_seconds: 1.5,
                    eval_seconds: 0.25,
                    samples_seen: 4480,
                    steps: 140,
                    strategy_metrics: vec![metrics, BTreeMap::new()],
                    diagnostics: Vec::new(),
                    collapsed: vec![false, true],
                },
            },
            params: vec![vec![1.0, -0.0, f32::MIN_POSITIVE], vec![], vec![3.5]],
            optimizer: vec![
                (
                    "exp_avg".into(),
                    vec![vec![0.1, 0.2, 0.3], vec![], vec![0.0]],
                ),
                (
                    "exp_avg_sq".into(),
                    vec![vec![1.0, 2.0, 3.0], vec![], vec![4.0]],
                ),
            ],
            strategy_state: b"plugin bytes".to_vec(),
        }
    }

    #[test]
    fn round_trip_is_exact() {
        let c = sample();
        let d = decode(&encode(&c), Path::new("x")).unwrap();
        assert_eq!(d, c);
        assert_eq!(d.params[0][1].to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn every_truncation_and_any_flipped_byte_is_an_error() {
        let bytes = encode(&sample());
        for cut in 0..bytes.len() {
            let e = decode(&bytes[..cut], Path::new("ck")).unwrap_err();
            assert!(e.to_string().starts_with("checkpoint ck:"), "{e}");
        }
        for i in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode(&b, Path::new("ck")).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn save_is_atomic_and_load_checks_the_trial() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("trial.ckpt");
        assert!(load(&path, "abc123").unwrap().is_none());
        let c = sample();
        save(&c, &path).unwrap();
        assert_eq!(load(&path, "abc123").unwrap(), Some(c.clone()));
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("trial.ckpt")]);
        let e = load(&path, "other").unwrap_err().to_string();
        assert!(e.contains("belongs to trial abc123"), "{e}");
        std::fs::write(&path, b"garbage").unwrap();
        let e = load(&path, "abc123").unwrap_err().to_string();
        assert!(e.contains("not a clef checkpoint"), "{e}");
    }
}
