//! Crash-safe file writes: every file Kiln writes for keeps (checkpoints, the `checkpoint` state file,
//! weights files, packed `.kiln` models) goes through [`write_atomic`], so a reader sees either the old file
//! or the whole new one, never a torn one, whenever the writer is killed.

use std::io::Write;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// A write that failed, with the path it was for.
#[derive(Debug, Error)]
#[error("{path}: {source}")]
pub struct WriteError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The temporary name [`write_atomic`] uses for `path`: `.<name>.tmp-<pid>` in the same directory.
fn temporary(dir: &Path, path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dir.join(format!(".{name}.tmp-{}", std::process::id()))
}

/// The directory `path` is in (`.` for a bare file name).
fn parent(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync of the file, rename
/// over `path`, fsync of the directory (so the rename itself survives a power cut). On failure the
/// temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let dir = parent(path);
    let tmp = temporary(dir, path);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        WriteError { path: path.to_path_buf(), source }
    })
}

/// Deletes the temporary files that killed writes left in `dir` (`.<name>.tmp-<pid>` of another process).
/// Only for a directory with one writer at a time (a checkpoint directory), where any such file is garbage
/// — up to 184 MB for the VGG.
pub fn remove_stale_temporaries(dir: &Path) {
    let ours = format!(".tmp-{}", std::process::id());
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(".tmp-") && !name.ends_with(&ours) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-fs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = scratch("replace");
        let path = dir.join("a.bin");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["a.bin"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_names_the_path_and_keeps_nothing() {
        let dir = scratch("fail");
        // The target is a directory: the rename fails after the temporary was written.
        let path = dir.join("taken");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"x").unwrap();
        let err = write_atomic(&path, b"bytes").unwrap_err();
        assert_eq!(err.path, path);
        assert!(err.to_string().starts_with(&format!("{}: ", path.display())), "{err}");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["taken"], "the temporary file is removed");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_temporaries_of_other_processes_are_removed() {
        let dir = scratch("stale");
        std::fs::write(dir.join(".fc3-5.safetensors.tmp-1"), b"killed").unwrap();
        let ours = temporary(&dir, &dir.join("fc3-6.safetensors"));
        std::fs::write(&ours, b"in flight").unwrap();
        std::fs::write(dir.join("fc3-4.safetensors"), b"kept").unwrap();
        remove_stale_temporaries(&dir);
        let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        assert_eq!(names, [ours, dir.join("fc3-4.safetensors")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
