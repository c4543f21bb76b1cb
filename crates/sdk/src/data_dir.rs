//! The data directory, private to its owner: databases, signing keys, secrets and logs live
//! there, so no other local user may read any of it. New files are made private whatever the
//! umask the process was started with, and a directory that others can enter is refused at
//! start, as PostgreSQL refuses a group- or world-accessible data directory.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Others may enter or read it.
    #[error(
        "the data directory {path} is open to other users (mode {mode:04o}); it holds keys, \
         secrets and personal data, so it must be its owner's only: run `chmod -R go-rwx {path}`"
    )]
    NotPrivate {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It could not be created or inspected.
    #[error("the data directory {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Makes every file and directory this process creates from now on private to its owner
/// (umask 077): SQLite's database, journal and WAL files, logs and keys alike. Processes it
/// starts inherit it. Call it first thing in `main`.
pub fn restrict_new_files() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// Creates `path` (and its missing parents) with mode 0700, or checks that an existing one
/// is closed to group and others; returns it made absolute.
pub fn ensure_private(path: &Path) -> Result<PathBuf, DataDirError> {
    let io = |source| DataDirError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io)?;
    let path = std::fs::canonicalize(path).map_err(io)?;
    let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(DataDirError::NotPrivate { path, mode });
    }
    Ok(path)
}

/// Writes `bytes` to a new file at `path`, readable by its owner only, durably; fails if the
/// file exists (a key or token made twice would leave what the first sealed unopenable).
pub fn create_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_with(std::fs::OpenOptions::new().write(true).create_new(true), path, bytes)
}

/// Writes `bytes` to `path`, readable by its owner only, durably, replacing what was there.
pub fn replace_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_with(
        std::fs::OpenOptions::new().write(true).create(true).truncate(true),
        path,
        bytes,
    )
}

fn write_with(options: &mut std::fs::OpenOptions, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = options.mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Takes group and other permissions off every file and directory under `path` (files left
/// readable by an earlier version, or copied in); symbolic links are not followed. Returns how
/// many were changed.
pub fn seal(path: &Path) -> Result<usize, DataDirError> {
    let io = |at: &Path, source| DataDirError::Io {
        path: at.to_path_buf(),
        source,
    };
    let mut changed = 0;
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let entry = entry.map_err(|e| io(&dir, e))?;
            let at = entry.path();
            let meta = match std::fs::symlink_metadata(&at) {
                Ok(meta) => meta,
                // Gone meanwhile (a WAL file checkpointed away).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&at, e)),
            };
            if meta.file_type().is_symlink() {
                continue;
            }
            if meta.is_dir() {
                pending.push(at.clone());
            }
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&at, std::fs::Permissions::from_mode(mode & !0o077 & 0o7777))
                    .map_err(|e| io(&at, e))?;
                changed += 1;
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_directory_is_private_and_an_open_one_is_refused_with_the_fix() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        let made = ensure_private(&dir).unwrap();
        assert_eq!(mode(&made), 0o700);
        assert_eq!(mode(&root.path().join("a")), 0o700, "parents too");
        std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o755)).unwrap();
        let refused = ensure_private(&dir).unwrap_err().to_string();
        assert!(
            refused.contains("0755") && refused.contains("chmod -R go-rwx"),
            "{refused}"
        );
    }

    #[test]
    fn sealing_closes_every_file_and_directory_below() {
        let root = tempfile::tempdir().unwrap();
        let sub = root.path().join("orders");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
        let db = sub.join("orders.db");
        std::fs::write(&db, b"x").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let private = root.path().join("token");
        std::fs::write(&private, b"x").unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(seal(root.path()).unwrap(), 2);
        assert_eq!((mode(&sub), mode(&db), mode(&private)), (0o700, 0o600, 0o600));
        assert_eq!(seal(root.path()).unwrap(), 0);
    }
}
