//! Dataset roots as absolute paths.
//!
//! A relative dataset path that only works from one directory is a classic bug. kiln resolves every
//! root once, up front, to a canonical absolute path, by these rules:
//!
//! 1. `~` and `~/…` expand to the home directory (`$HOME`).
//! 2. An absolute path is used as is.
//! 3. A relative path is relative to a **base**: the folder of the config file it was written in
//!    ([`DatasetRoot::resolve_from`]), or the current directory for a command-line argument
//!    ([`DatasetRoot::resolve`]).
//! 4. If that does not exist and the environment variable `KILN_DATA` is set, the relative path is
//!    also looked up under `$KILN_DATA` (a shared data folder, like torchvision's `root`).
//!
//! A missing root is an error that shows the path as given, every place looked at, and the current
//! directory.

use std::path::{Path, PathBuf};

use crate::DataError;

/// The environment variable naming a base folder for relative dataset paths.
pub const KILN_DATA_ENV: &str = "KILN_DATA";

/// A dataset root directory that exists, held as a canonical absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRoot {
    given: PathBuf,
    path: PathBuf,
}

impl DatasetRoot {
    /// Resolves `given` against the current directory (rules in the [module docs](self)).
    ///
    /// # Errors
    ///
    /// [`DataError::RootNotFound`] with the path as given, as resolved and the current directory
    /// when it does not exist or is not a directory; [`DataError::Io`] when the current directory
    /// cannot be read.
    pub fn resolve(given: impl AsRef<Path>) -> Result<Self, DataError> {
        let cwd = current_dir()?;
        Self::resolve_in(
            given.as_ref(),
            &cwd,
            "relative paths are relative to the current directory",
        )
    }

    /// Resolves `given` as written in a config file that lives in `config_dir`: a relative path is
    /// relative to the config file's folder, not to wherever the program was started.
    ///
    /// # Errors
    ///
    /// As [`DatasetRoot::resolve`].
    pub fn resolve_from(given: impl AsRef<Path>, config_dir: &Path) -> Result<Self, DataError> {
        let base = if config_dir.is_absolute() {
            config_dir.to_path_buf()
        } else {
            current_dir()?.join(config_dir)
        };
        let hint = format!(
            "relative paths in a config file are relative to its folder ({})",
            base.display()
        );
        Self::resolve_in(given.as_ref(), &base, &hint)
    }

    fn resolve_in(given: &Path, base: &Path, hint: &str) -> Result<Self, DataError> {
        let cwd = current_dir()?;
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let kiln_data = std::env::var_os(KILN_DATA_ENV).map(PathBuf::from);
        let candidates = candidates(given, base, home.as_deref(), kiln_data.as_deref());
        for candidate in &candidates {
            // Canonicalise (removes `..` and symlinks); keep the joined form for the error.
            if let Ok(path) = std::fs::canonicalize(candidate)
                && path.is_dir()
            {
                return Ok(Self {
                    given: given.to_path_buf(),
                    path,
                });
            }
        }
        let mut candidates = candidates.into_iter();
        let resolved = candidates.next().unwrap_or_else(|| given.to_path_buf());
        Err(DataError::RootNotFound {
            given: given.to_path_buf(),
            resolved,
            also_tried: candidates.collect(),
            cwd,
            hint: format!("{hint}; pass an absolute path, or set {KILN_DATA_ENV} to a data folder"),
        })
    }

    /// The absolute path of the root.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path exactly as the user gave it.
    pub fn given(&self) -> &Path {
        &self.given
    }

    /// Joins a file name onto the root.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

fn current_dir() -> Result<PathBuf, DataError> {
    std::env::current_dir().map_err(|source| DataError::Io {
        path: PathBuf::from("."),
        source,
    })
}

/// The places `given` may mean, in the order they are tried.
fn candidates(given: &Path, base: &Path, home: Option<&Path>, kiln_data: Option<&Path>) -> Vec<PathBuf> {
    let mut parts = given.components();
    if parts.next().is_some_and(|c| c.as_os_str() == "~")
        && let Some(home) = home
    {
        return vec![home.join(parts.as_path())];
    }
    if given.is_absolute() {
        return vec![given.to_path_buf()];
    }
    let mut out = vec![base.join(given)];
    if let Some(data) = kiln_data {
        out.push(data.join(given));
    }
    out
}

/// Reads a whole file that a user named or a dataset lists, refusing anything that is not a
/// regular file **before opening it**: opening a FIFO waits for a writer forever (a named pipe
/// called `cat.png` in an image folder would hang the run), and a device or socket is never an
/// image or a dataset file. Symlinks are followed.
///
/// # Errors
///
/// [`DataError::Io`] naming `path` for a missing or unreadable file (permissions: "Permission
/// denied"), or for a FIFO, socket, device or directory, saying which it is.
pub fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    let io = |source: std::io::Error| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        let kind = file_kind(&meta.file_type());
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is a {kind}, not a regular file"),
        )));
    }
    std::fs::read(path).map_err(io)
}

/// Writes `path` atomically: `write` fills a temporary file next to it (`.<name>.<pid>.tmp`),
/// which is synced and renamed over `path`. On any error the temporary is removed and `path` is
/// untouched, so a full disk never destroys the previous good file. Every file kiln writes for
/// a user goes through here.
///
/// # Errors
///
/// [`DataError::Write`] naming `path` and what failed.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), DataError> {
    let fail = |reason: String| DataError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(fail(format!("the folder {} does not exist", dir.display())));
    }
    let name = path
        .file_name()
        .ok_or_else(|| fail("the path has no file name".into()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = write(&tmp).and_then(|()| {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&tmp)
            .map_err(|e| e.to_string())?;
        file.sync_all()
            .map_err(|e| format!("cannot flush to disk: {e}"))?;
        std::fs::rename(&tmp, path).map_err(|e| e.to_string())?;
        // Make the rename itself durable (best effort: not every filesystem allows it).
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(fail)
}

/// [`write_atomically`] of `bytes`.
///
/// # Errors
///
/// As [`write_atomically`].
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    write_atomically(path, |tmp| std::fs::write(tmp, bytes).map_err(|e| e.to_string()))
}

/// `path` for a message: as `Path::display`, except that bytes that are not UTF-8 are written as
/// `\xFF` escapes instead of `�`, so a file with such a name can still be found.
pub fn shown(path: &Path) -> String {
    let mut out = String::new();
    for chunk in path.as_os_str().as_encoded_bytes().utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

/// What a non-regular file is, in words.
pub(crate) fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "FIFO (named pipe; reading it would wait for a writer)";
        }
        if t.is_socket() {
            return "socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "device";
        }
    }
    if t.is_dir() {
        "directory"
    } else if t.is_file() {
        "regular file"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[cfg(unix)]
    #[test]
    fn a_name_that_is_not_utf8_is_shown_with_escapes() {
        use std::os::unix::ffi::OsStrExt;
        let p = Path::new(std::ffi::OsStr::from_bytes(b"data/a/\xff\xfe.png"));
        assert_eq!(shown(p), r"data/a/\xFF\xFE.png");
        assert_eq!(shown(Path::new("caf\u{e9}.png")), "caf\u{e9}.png");
    }

    #[test]
    fn read_file_refuses_fifos_and_folders_before_opening_them() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("cat.png");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        // Opening it would block this test forever; the check comes first.
        let msg = read_file(&fifo).unwrap_err().to_string();
        assert!(msg.contains("cat.png") && msg.contains("FIFO"), "{msg}");
        let sub = dir.path().join("dog.jpg");
        std::fs::create_dir(&sub).unwrap();
        let msg = read_file(&sub).unwrap_err().to_string();
        assert!(msg.contains("dog.jpg") && msg.contains("a directory"), "{msg}");
        let msg = read_file(&dir.path().join("none.png")).unwrap_err().to_string();
        assert!(msg.contains("none.png") && msg.contains("No such file"), "{msg}");
        std::fs::write(dir.path().join("ok.bin"), b"abc").unwrap();
        assert_eq!(read_file(&dir.path().join("ok.bin")).unwrap(), b"abc");
    }

    #[test]
    fn existing_relative_root_becomes_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let root = DatasetRoot::resolve(dir.path()).unwrap();
        assert!(root.path().is_absolute());
        assert_eq!(root.given(), dir.path());
    }

    #[test]
    fn missing_root_error_shows_given_resolved_and_cwd() {
        let err = DatasetRoot::resolve("surely/not/here-kiln").unwrap_err();
        let cwd = std::env::current_dir().unwrap();
        let msg = err.to_string();
        assert!(msg.contains("surely/not/here-kiln (as given)"), "{msg}");
        assert!(
            msg.contains(&cwd.join("surely/not/here-kiln").display().to_string()),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("current directory: {}", cwd.display())),
            "{msg}"
        );
        match err {
            DataError::RootNotFound { resolved, .. } => assert!(resolved.is_absolute()),
            other => panic!("wrong error {other:?}"),
        }
    }

    #[test]
    fn a_file_is_not_a_root() {
        let file = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(
            DatasetRoot::resolve(file.path()),
            Err(DataError::RootNotFound { .. })
        ));
    }

    #[test]
    fn config_relative_paths_resolve_against_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("configs/data/cifar")).unwrap();
        let root = DatasetRoot::resolve_from("data/cifar", &dir.path().join("configs")).unwrap();
        assert_eq!(
            root.path(),
            dir.path().join("configs/data/cifar").canonicalize().unwrap()
        );
        // `..` is fine and canonicalised away.
        let up = DatasetRoot::resolve_from("../data/cifar", &dir.path().join("configs/data")).unwrap();
        assert_eq!(up.path(), root.path());
        let msg = DatasetRoot::resolve_from("nope", &dir.path().join("configs"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("relative to its folder"), "{msg}");
        assert!(
            msg.contains(&dir.path().join("configs/nope").display().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn candidates_expand_home_and_fall_back_to_kiln_data() {
        let home = Path::new("/home/ana");
        let data = Path::new("/srv/data");
        let base = Path::new("/work");
        assert_eq!(
            candidates(Path::new("~/datasets/cifar"), base, Some(home), Some(data)),
            vec![PathBuf::from("/home/ana/datasets/cifar")]
        );
        assert_eq!(
            candidates(Path::new("~"), base, Some(home), None),
            vec![PathBuf::from("/home/ana")]
        );
        // "~user" is not expanded (no user database lookups), it is a relative name.
        assert_eq!(
            candidates(Path::new("~bob/x"), base, Some(home), None),
            vec![PathBuf::from("/work/~bob/x")]
        );
        assert_eq!(
            candidates(Path::new("cifar"), base, Some(home), Some(data)),
            vec![PathBuf::from("/work/cifar"), PathBuf::from("/srv/data/cifar")]
        );
        assert_eq!(
            candidates(Path::new("/abs/cifar"), base, Some(home), Some(data)),
            vec![PathBuf::from("/abs/cifar")]
        );
    }
}
