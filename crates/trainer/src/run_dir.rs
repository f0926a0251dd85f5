//! The run directory:
//!
//! ```text
//! <run>/config.json          the TrainConfig the run was started with
//! <run>/tokenizer.json       the tokenizer (built once, reused on resume)
//! <run>/metrics.jsonl        one line per step
//! <run>/checkpoints/step-00000100.ckpt ...   the newest `run.keep_checkpoints`
//! <run>/latest               the relative path of the newest complete checkpoint
//! ```
//!
//! A checkpoint is written atomically first, and only then does `latest` (itself replaced
//! atomically) name it; older checkpoints are deleted last. A crash at any instant therefore
//! leaves `latest` naming a complete file.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::TrainError;

/// Paths inside a run directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run directory at `root` (nothing is touched on disk).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.json")
    }

    /// `tokenizer.json`.
    pub fn tokenizer_path(&self) -> PathBuf {
        self.root.join("tokenizer.json")
    }

    /// `metrics.jsonl`.
    pub fn metrics_path(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    /// `checkpoints/`.
    pub fn checkpoints_dir(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// The checkpoint file of `step`.
    pub fn checkpoint_path(&self, step: u64) -> PathBuf {
        self.checkpoints_dir().join(format!("step-{step:08}.ckpt"))
    }

    fn latest_path(&self) -> PathBuf {
        self.root.join("latest")
    }

    /// Creates the directory and `checkpoints/`.
    pub fn create(&self) -> Result<(), TrainError> {
        let dir = self.checkpoints_dir();
        fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))
    }

    /// The checkpoint `latest` names, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>, TrainError> {
        let path = self.latest_path();
        match fs::read_to_string(&path) {
            Ok(name) => Ok(Some(self.root.join(name.trim()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TrainError::io(path, e)),
        }
    }

    /// Points `latest` at `checkpoint` (a file inside the run directory).
    pub fn set_latest(&self, checkpoint: &Path) -> Result<(), TrainError> {
        let rel = checkpoint.strip_prefix(&self.root).unwrap_or(checkpoint);
        let text = format!("{}\n", rel.display());
        write_atomically(&self.latest_path(), text.as_bytes())
    }

    /// Makes a just-written checkpoint the one `latest` names, then prunes to `keep`.
    pub fn publish(&self, checkpoint: &Path, keep: usize) -> Result<(), TrainError> {
        self.set_latest(checkpoint)?;
        self.prune(keep)
    }

    /// Reads the run's `config.json` as a `T` (a trainer's config).
    pub fn read_config<T: serde::de::DeserializeOwned>(&self) -> Result<T, TrainError> {
        let path = self.config_path();
        let text = fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| TrainError::Json { path, message: e.to_string() })
    }

    /// Deletes all but the newest `keep` checkpoints (never the one `latest` names) and any temp
    /// file a killed writer left behind.
    pub fn prune(&self, keep: usize) -> Result<(), TrainError> {
        let dir = self.checkpoints_dir();
        let latest = self.latest()?;
        let mut steps = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| TrainError::io(&dir, e))? {
            let entry = entry.map_err(|e| TrainError::io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tmp") {
                let _ = fs::remove_file(entry.path()); // a killed writer's leftover
            } else if let Some(step) = name.strip_prefix("step-").and_then(|s| s.strip_suffix(".ckpt"))
                && let Ok(step) = step.parse::<u64>()
            {
                steps.push(step);
            }
        }
        steps.sort_unstable();
        let old = steps.len().saturating_sub(keep);
        for &step in &steps[..old] {
            let path = self.checkpoint_path(step);
            if Some(&path) != latest.as_ref() {
                fs::remove_file(&path).map_err(|e| TrainError::io(&path, e))?;
            }
        }
        Ok(())
    }
}

/// Replaces `path` with `bytes` so that a reader or a crash sees the old file or the new one: a
/// synced temp file in the same directory, renamed over the target, then the directory synced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&temp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&temp, path)?;
        #[cfg(unix)]
        File::open(&dir)?.sync_all()?;
        Ok(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&temp);
        TrainError::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_and_prune_keep_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        run.create().unwrap();
        assert_eq!(run.latest().unwrap(), None);
        for step in [10, 20, 30] {
            fs::write(run.checkpoint_path(step), b"x").unwrap();
            run.set_latest(&run.checkpoint_path(step)).unwrap();
        }
        fs::write(run.checkpoints_dir().join(".step-00000040.ckpt.tmp-1-0"), b"torn").unwrap();
        run.prune(2).unwrap();
        assert_eq!(run.latest().unwrap(), Some(run.checkpoint_path(30)));
        let mut names: Vec<String> = fs::read_dir(run.checkpoints_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["step-00000020.ckpt", "step-00000030.ckpt"]);
        assert_eq!(
            fs::read_to_string(dir.path().join("latest")).unwrap(),
            "checkpoints/step-00000030.ckpt\n"
        );
    }
}
