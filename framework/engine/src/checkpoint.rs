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
//! [ version 2 only: the expert pool
//! | u64 n | n bytes of JSON pool metadata (`PoolMeta`: selected expert, routes, per expert
//!   its spec, loaded head, optimizer steps, frozen/base flags, stored heads' tasks)
//! | per expert: parameters, optimizer state, frozen copy, base head, stored heads
//!   (each a tensor list as above; optimizer state as above) ]
//! | u64 FNV-1a of every byte before it
//! ```
//!
//! A trial without an expert pool writes version 1, exactly the format before pools were
//! checkpointed; a trial whose strategy uses the pool writes version 2. Both are read.
//!
//! Little-endian throughout. Every length is checked against the bytes left before anything is
//! allocated, and the trailing checksum catches torn or corrupted files, so a bad checkpoint is
//! an error naming the file, never a panic or a wrong resume. Files are written to a temporary
//! name, synced and renamed, so a kill while writing leaves the previous checkpoint intact.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::experts::snapshot::{PoolMeta, PoolState, SlotTensors};
use crate::measurements::Measurements;
use clef_data::seed::fnv1a;

const MAGIC: &[u8; 8] = b"CLEFCKPT";
/// Named tensor lists: `(optimizer slot name, one tensor per parameter)`.
pub type NamedTensors = Vec<(String, Vec<Vec<f32>>)>;

/// The format without an expert pool.
const VERSION: u32 = 1;
/// The format with the expert pool after the strategy state.
const VERSION_POOL: u32 = 2;

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
    pub optimizer: NamedTensors,
    /// The strategy's `save_state` bytes.
    pub strategy_state: Vec<u8>,
    /// The expert pool, if the strategy uses one (`params` and `optimizer` are then its
    /// selected expert's).
    pub pool: Option<PoolState>,
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

fn put_named(b: &mut Vec<u8>, named: &[(String, Vec<Vec<f32>>)]) {
    put_u64(b, named.len() as u64);
    for (name, ts) in named {
        put_u64(b, name.len() as u64);
        b.extend_from_slice(name.as_bytes());
        put_tensors(b, ts);
    }
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
    let version = if c.pool.is_some() {
        VERSION_POOL
    } else {
        VERSION
    };
    b.extend_from_slice(&version.to_le_bytes());
    // Serialising plain data to JSON cannot fail.
    let meta = serde_json::to_vec(&c.progress).unwrap_or_default();
    put_u64(&mut b, meta.len() as u64);
    b.extend_from_slice(&meta);
    put_tensors(&mut b, &c.params);
    put_named(&mut b, &c.optimizer);
    put_u64(&mut b, c.strategy_state.len() as u64);
    b.extend_from_slice(&c.strategy_state);
    if let Some(pool) = &c.pool {
        let meta = serde_json::to_vec(&pool.meta).unwrap_or_default();
        put_u64(&mut b, meta.len() as u64);
        b.extend_from_slice(&meta);
        for s in &pool.slots {
            put_tensors(&mut b, &s.params);
            put_named(&mut b, &s.optimizer);
            put_tensors(&mut b, &s.frozen);
            put_tensors(&mut b, &s.base);
            put_tensors(&mut b, &s.heads);
        }
    }
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

    fn named(&mut self, what: &str) -> Result<NamedTensors, String> {
        let slots = self.len(16, what)?;
        let mut out = Vec::with_capacity(slots);
        for _ in 0..slots {
            let n = self.len(1, "slot name")?;
            let name = String::from_utf8(self.take(n, "slot name")?.to_vec())
                .map_err(|_| "slot name is not UTF-8".to_string())?;
            out.push((name, self.tensors(what)?));
        }
        Ok(out)
    }

    fn pool(&mut self) -> Result<PoolState, String> {
        let n = self.len(1, "pool metadata")?;
        let meta: PoolMeta = serde_json::from_slice(self.take(n, "pool metadata")?)
            .map_err(|e| format!("pool metadata: {e}"))?;
        let slots = (0..meta.slots.len())
            .map(|_| {
                Ok(SlotTensors {
                    params: self.tensors("expert parameters")?,
                    optimizer: self.named("expert optimizer state")?,
                    frozen: self.tensors("frozen expert body")?,
                    base: self.tensors("expert base head")?,
                    heads: self.tensors("expert heads")?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(PoolState { meta, slots })
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
    if version != VERSION && version != VERSION_POOL {
        return Err(fail(format!(
            "format version {version}; this clef reads versions {VERSION} and {VERSION_POOL}"
        )));
    }
    let n = c.len(1, "metadata").map_err(fail)?;
    let meta = c.take(n, "metadata").map_err(fail)?;
    let progress: Progress =
        serde_json::from_slice(meta).map_err(|e| fail(format!("metadata: {e}")))?;
    let params = c.tensors("parameters").map_err(fail)?;
    let optimizer = c.named("optimizer state").map_err(fail)?;
    let n = c.len(1, "strategy state").map_err(fail)?;
    let strategy_state = c.take(n, "strategy state").map_err(fail)?.to_vec();
    let pool = if version == VERSION_POOL {
        Some(c.pool().map_err(fail)?)
    } else {
        None
    };
    if !c.rest.is_empty() {
        return Err(fail(format!("{} unexpected trailing bytes", c.rest.len())));
    }
    Ok(Checkpoint {
        progress,
        params,
        optimizer,
        strategy_state,
        pool,
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
                    task_end_seconds: 0.5,
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
            pool: None,
        }
    }

    fn with_pool() -> Checkpoint {
        use crate::experts::snapshot::SlotMeta;
        let spec = clef_backend::MlpSpec {
            input: 2,
            hidden: vec![3],
            output: 2,
            activation: clef_backend::Activation::Relu,
            init: clef_backend::Init::KaimingUniform,
        };
        let meta = |loaded, frozen, base, heads: Vec<usize>| SlotMeta {
            spec: spec.clone().into(),
            loaded,
            optimizer_steps: 5,
            frozen,
            base,
            heads,
        };
        let mut c = sample();
        c.pool = Some(PoolState {
            meta: PoolMeta {
                active: 1,
                routes: vec![Some(1), Some(0)],
                slots: vec![
                    meta(Some(1), true, true, vec![]),
                    meta(Some(0), false, true, vec![]),
                ],
            },
            slots: vec![
                SlotTensors {
                    params: vec![vec![0.5; 6], vec![0.0; 3], vec![1.0; 6], vec![2.0; 2]],
                    optimizer: vec![(
                        "momentum".into(),
                        vec![vec![0.1; 6], vec![], vec![], vec![]],
                    )],
                    frozen: vec![vec![0.5; 6], vec![-0.0; 3]],
                    base: vec![vec![3.0; 6], vec![4.0; 2]],
                    heads: vec![],
                },
                SlotTensors {
                    base: vec![vec![7.0; 6], vec![8.0; 2]],
                    ..SlotTensors::default()
                },
            ],
        });
        c
    }

    #[test]
    fn round_trip_is_exact() {
        let c = sample();
        let d = decode(&encode(&c), Path::new("x")).unwrap();
        assert_eq!(d, c);
        assert_eq!(d.params[0][1].to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn a_pool_round_trips_exactly_and_only_pool_checkpoints_change_version() {
        let c = with_pool();
        let bytes = encode(&c);
        assert_eq!(&bytes[8..12], &2u32.to_le_bytes());
        assert_eq!(decode(&bytes, Path::new("x")).unwrap(), c);
        // Without a pool: version 1, byte for byte the format before pools.
        let plain = encode(&sample());
        assert_eq!(&plain[8..12], &1u32.to_le_bytes());
        for cut in (0..bytes.len()).step_by(5) {
            assert!(decode(&bytes[..cut], Path::new("ck")).is_err());
        }
    }

    #[test]
    fn an_unknown_version_names_the_versions_read() {
        let mut bytes = encode(&sample());
        bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
        let n = bytes.len() - 8;
        let sum = fnv1a(&bytes[..n]);
        bytes[n..].copy_from_slice(&sum.to_le_bytes());
        let e = decode(&bytes, Path::new("ck")).unwrap_err().to_string();
        assert!(
            e.contains("format version 3; this clef reads versions 1 and 2"),
            "{e}"
        );
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
