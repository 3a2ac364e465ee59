//! Dataset roots as absolute paths.
//!
//! A relative dataset path that only works from one directory is a classic bug; kiln resolves every
//! root against the current directory once, up front, and reports both forms when it is missing.

use std::path::{Path, PathBuf};

use crate::DataError;

/// A dataset root directory that exists, held as an absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRoot {
    given: PathBuf,
    path: PathBuf,
}

impl DatasetRoot {
    /// Resolves `given` against the current directory and checks that it is a directory.
    ///
    /// # Errors
    ///
    /// [`DataError::RootNotFound`] with the path as given, as resolved and the current directory
    /// when it does not exist or is not a directory; [`DataError::Io`] when the current directory
    /// cannot be read.
    pub fn resolve(given: impl AsRef<Path>) -> Result<Self, DataError> {
        let given = given.as_ref().to_path_buf();
        let cwd = std::env::current_dir().map_err(|source| DataError::Io {
            path: PathBuf::from("."),
            source,
        })?;
        let joined = if given.is_absolute() {
            given.clone()
        } else {
            cwd.join(&given)
        };
        // Canonicalise when possible (removes `..` and symlinks); keep the joined form otherwise so
        // the error can show where we looked.
        match std::fs::canonicalize(&joined) {
            Ok(path) if path.is_dir() => Ok(Self { given, path }),
            _ => Err(DataError::RootNotFound {
                given,
                resolved: joined,
                cwd,
            }),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
