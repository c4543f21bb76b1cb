//! The registration token: a random secret in `<data-dir>/token`, readable only by its owner,
//! that `up` hands to every process it starts and the CLI presents to the control plane.

use std::path::{Path, PathBuf};

use rand::RngCore;

/// The token file's path.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("token")
}

/// Reads the token, if the data dir has one.
pub fn read(data_dir: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path(data_dir)) {
        Ok(text) => Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Reads the token, creating one (mode 0600) if there is none yet.
pub fn ensure(data_dir: &Path) -> std::io::Result<String> {
    if let Some(token) = read(data_dir)? {
        return Ok(token);
    }
    std::fs::create_dir_all(data_dir)?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    flotilla::data_dir::create_private(&path(data_dir), token.as_bytes())?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn created_once_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let token = ensure(dir.path()).unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(ensure(dir.path()).unwrap(), token);
        let mode = std::fs::metadata(path(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
