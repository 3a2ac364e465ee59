//! The run directory and its metrics log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Module;
use serde::Serialize;

use crate::{EpochRecord, TrainError};

/// A directory that holds one run's outputs: `config.json`, `metrics.jsonl`, `model.bpk`,
/// `summary.json`.
///
/// It is locked for as long as the value (or a clone) lives: an exclusive advisory lock on
/// `<run>/.kiln.lock` ([`LOCK_FILE`]), which the OS releases when the process ends however it
/// ends, so a stale lock file never blocks. A second run into the folder, or a `--resume` of a
/// run that is still training, is refused naming the process that holds it.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
    _lock: std::sync::Arc<File>,
}

/// The lock file inside a run folder (it holds the owning process id, for messages).
pub const LOCK_FILE: &str = ".kiln.lock";

impl RunDir {
    /// Creates `path` (and its parents) and claims it: the lock is taken first, then the folder
    /// must be empty (but for the lock file), so two runs started together never mix their
    /// files — one of them is refused.
    ///
    /// # Errors
    ///
    /// [`TrainError::RunInUse`] when another process holds the folder,
    /// [`TrainError::OutputExists`] for a non-empty directory, [`TrainError::Write`] when it
    /// cannot be created.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, TrainError> {
        let path = path.as_ref();
        let write_err = |e: std::io::Error| TrainError::Write {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(path).map_err(write_err)?;
        let lock = lock(path)?;
        // Under the lock: no other kiln process can be filling it now.
        for entry in std::fs::read_dir(path).map_err(write_err)? {
            if entry.map_err(write_err)?.file_name() != LOCK_FILE {
                return Err(TrainError::OutputExists {
                    path: path.to_path_buf(),
                    run_folder: path.join("config.json").is_file(),
                });
            }
        }
        let path = std::fs::canonicalize(path).map_err(write_err)?;
        Ok(Self {
            path,
            _lock: std::sync::Arc::new(lock),
        })
    }

    /// An existing run directory (one with a `config.json`), for `--resume`, locked.
    ///
    /// # Errors
    ///
    /// [`TrainError::Resume`] when it is missing or not a run directory,
    /// [`TrainError::RunInUse`] while another process trains in it.
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Self, TrainError> {
        let path = path.as_ref();
        if !path.join("config.json").is_file() {
            return Err(TrainError::Resume {
                path: path.to_path_buf(),
                reason: "not a run directory (no config.json)".into(),
            });
        }
        let lock = lock(path)?;
        let path = std::fs::canonicalize(path).map_err(|e| TrainError::Resume {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            path,
            _lock: std::sync::Arc::new(lock),
        })
    }

    /// The run's checkpoint folder, `<run>/checkpoints`.
    pub fn checkpoints(&self) -> PathBuf {
        self.path.join("checkpoints")
    }

    /// A fresh directory under `parent` named after the current UTC time (`run-20261128-161530`),
    /// with a numeric suffix if that name is taken.
    ///
    /// # Errors
    ///
    /// As [`RunDir::create`].
    pub fn timestamped(parent: impl AsRef<Path>) -> Result<Self, TrainError> {
        let parent = parent.as_ref();
        std::fs::create_dir_all(parent).map_err(|e| TrainError::Write {
            path: parent.to_path_buf(),
            reason: e.to_string(),
        })?;
        let stamp = utc_stamp(std::time::SystemTime::now());
        let base = format!("run-{stamp}");
        // `create_dir` claims a name atomically: two runs started in the same second get two.
        for n in 1..10_000 {
            let candidate = match n {
                1 => parent.join(&base),
                n => parent.join(format!("{base}-{n}")),
            };
            match std::fs::create_dir(&candidate) {
                Ok(()) => return Self::create(candidate),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(TrainError::Write {
                        path: candidate,
                        reason: e.to_string(),
                    });
                }
            }
        }
        Err(TrainError::OutputExists {
            path: parent.join(base),
            run_folder: false,
        })
    }

    /// The directory's absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `value` as pretty JSON to `name` inside the run directory.
    ///
    /// # Errors
    ///
    /// [`TrainError::Write`] on any I/O or serialisation failure.
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<PathBuf, TrainError> {
        let path = self.path.join(name);
        let err = |reason: String| TrainError::Write {
            path: path.clone(),
            reason,
        };
        let text = serde_json::to_string_pretty(value).map_err(|e| err(e.to_string()))? + "\n";
        write_file(&path, text.as_bytes())?;
        Ok(path)
    }

    /// Saves `model`'s weights as `<name>.bpk` (Burn's burnpack format), atomically.
    ///
    /// # Errors
    ///
    /// [`TrainError::Write`] when the file cannot be written.
    pub fn save_model<M: Module>(&self, model: &M, name: &str) -> Result<PathBuf, TrainError> {
        let path = self.path.join(format!("{name}.bpk"));
        // Atomic (temp file, fsync, rename): a crash mid-write keeps the previous file.
        kiln_models::weights::save_weights(model, &path, None).map_err(|e| TrainError::Write {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(path)
    }

    /// Opens `metrics.jsonl` for appending.
    ///
    /// # Errors
    ///
    /// [`TrainError::Write`] when it cannot be opened.
    pub fn metrics_log(&self) -> Result<MetricsLog, TrainError> {
        MetricsLog::open(self.path.join("metrics.jsonl"))
    }
}

/// `metrics.jsonl`: one JSON object per epoch, flushed as it is written, so a crashed run keeps
/// every finished epoch.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens (creating if needed) `path` for appending.
    ///
    /// # Errors
    ///
    /// [`TrainError::Write`] when it cannot be opened.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, TrainError> {
        let path = path.into();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::Write {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self { path, file })
    }

    /// Replaces `path`'s content with `records` (one line each) and opens it for appending: a
    /// resumed run's log then holds exactly the checkpoint's epochs before new ones are added.
    ///
    /// # Errors
    ///
    /// [`TrainError::Write`] when it cannot be written.
    pub fn rewrite(path: impl Into<PathBuf>, records: &[EpochRecord]) -> Result<Self, TrainError> {
        let path = path.into();
        let mut text = String::new();
        for r in records {
            let line = serde_json::to_string(r).map_err(|e| TrainError::Write {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            text.push_str(&line);
            text.push('\n');
        }
        write_file(&path, text.as_bytes())?;
        Self::open(path)
    }

    /// Appends one record as a line and flushes it.
    ///
    /// # Errors
    ///
    /// [`TrainError::Write`] on an I/O failure (a full disk, say).
    pub fn append(&mut self, record: &EpochRecord) -> Result<(), TrainError> {
        let err = |reason: String| TrainError::Write {
            path: self.path.clone(),
            reason,
        };
        let mut line = serde_json::to_string(record).map_err(|e| err(e.to_string()))?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| err(e.to_string()))?;
        self.file.flush().map_err(|e| err(e.to_string()))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the run folder's exclusive lock without waiting and writes this process's id into it.
fn lock(dir: &Path) -> Result<File, TrainError> {
    let path = dir.join(LOCK_FILE);
    let err = |e: std::io::Error| TrainError::Write {
        path: path.clone(),
        reason: e.to_string(),
    };
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            return Err(TrainError::RunInUse {
                path: dir.to_path_buf(),
                pid,
            });
        }
        // A filesystem without locks (some network mounts): the run goes on unlocked, as before.
        Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {}
        Err(std::fs::TryLockError::Error(e)) => return Err(err(e)),
    }
    file.set_len(0).map_err(err)?;
    writeln!(file, "{}", std::process::id()).map_err(err)?;
    file.flush().map_err(err)?;
    Ok(file)
}

/// Writes `bytes` to `path` atomically (a temporary file next to it, synced, then renamed): a
/// failed write (a full disk) leaves the previous file as it was, and no temporary behind.
///
/// # Errors
///
/// [`TrainError::Write`] naming `path` and the cause.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    kiln_data::paths::write_file(path, bytes).map_err(|e| TrainError::Write {
        path: path.to_path_buf(),
        reason: match e {
            kiln_data::DataError::Write { reason, .. } => reason,
            other => other.to_string(),
        },
    })
}

/// `YYYYmmdd-HHMMSS` in UTC (Howard Hinnant's civil-from-days algorithm).
fn utc_stamp(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn utc_stamp_matches_date() {
        // date -u -d @1795824000 +%Y%m%d-%H%M%S -> 20261128-000000
        assert_eq!(
            utc_stamp(UNIX_EPOCH + Duration::from_secs(1_795_824_000)),
            "20261128-000000"
        );
        assert_eq!(
            utc_stamp(UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661)),
            "20000229-010101"
        );
    }

    #[test]
    fn refuses_a_non_empty_directory_and_appends_lines() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path().join("a/b")).unwrap();
        let mut log = run.metrics_log().unwrap();
        let rec = EpochRecord {
            epoch: 1,
            train_loss: 0.5,
            val_loss: None,
            metrics: [("train_acc".to_string(), 0.8)].into(),
            lr: 0.1,
            train_images_per_s: 100.0,
            seconds: 1.0,
            verdict: None,
            step_losses: Vec::new(),
        };
        log.append(&rec).unwrap();
        log.append(&EpochRecord {
            epoch: 2,
            ..rec.clone()
        })
        .unwrap();
        let text = std::fs::read_to_string(log.path()).unwrap();
        let lines: Vec<EpochRecord> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.iter().map(|r| r.epoch).collect::<Vec<_>>(), vec![1, 2]);
        // While the run holds its folder, another claim is refused naming the holder (a lock is
        // per open file: a second open in this same process is refused too).
        let path = run.path().to_path_buf();
        let pid = std::process::id();
        assert!(matches!(
            RunDir::create(&path),
            Err(TrainError::RunInUse { pid: Some(p), .. }) if p == pid
        ));
        assert!(matches!(
            RunDir::open_existing(dir.path().join("a/b")),
            Err(TrainError::Resume { .. })
        ));
        drop(run);
        assert!(matches!(
            RunDir::create(&path),
            Err(TrainError::OutputExists {
                run_folder: false,
                ..
            })
        ));
    }

    #[test]
    fn a_stale_lock_file_never_blocks_and_timestamped_names_are_claimed_once() {
        let dir = tempfile::tempdir().unwrap();
        // What a killed run leaves: the lock file with a dead process id, no lock held.
        std::fs::create_dir(dir.path().join("x")).unwrap();
        std::fs::write(dir.path().join("x").join(LOCK_FILE), "999999999\n").unwrap();
        let run = RunDir::create(dir.path().join("x")).unwrap();
        let said = std::fs::read_to_string(run.path().join(LOCK_FILE)).unwrap();
        assert_eq!(said.trim(), std::process::id().to_string());
        // Two runs in the same second get two folders.
        let a = RunDir::timestamped(dir.path().join("runs")).unwrap();
        let b = RunDir::timestamped(dir.path().join("runs")).unwrap();
        assert_ne!(a.path(), b.path());
    }
}
