//! The AgentId: a GUID created once and kept in the data directory, so that every message
//! of this device carries the same AgentId across restarts and updates of the module (the
//! data directory is a volume in the deployment manifest).

use std::io::Write;
use std::path::{Path, PathBuf};

use thiserror::Error;
use uuid::Uuid;

/// The file in the data directory.
pub const FILE: &str = "agent_id";

#[derive(Debug, Error)]
pub enum AgentIdError {
    #[error("cannot create the data directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the AgentId file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the AgentId file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The AgentId kept in `dir`, created (a random GUID) when there is none. A file that does
/// not hold a GUID is replaced, and the replacement is logged.
pub fn load_or_create(dir: &Path) -> Result<Uuid, AgentIdError> {
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => match Uuid::parse_str(text.trim()) {
            Ok(id) => return Ok(id),
            Err(e) => tracing::error!(
                error_id = "E-AGENTID-BAD",
                path = %path.display(),
                error = %e,
                "the AgentId file does not hold a GUID: making a new AgentId"
            ),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(AgentIdError::Read { path, source }),
    }
    std::fs::create_dir_all(dir).map_err(|source| AgentIdError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    let id = Uuid::new_v4();
    // Write to a temporary file and rename: a crash never leaves half a GUID behind.
    let tmp = dir.join(format!("{FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{}", id.hyphenated())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|source| AgentIdError::Write {
        path: path.clone(),
        source,
    })?;
    tracing::info!(agent_id = %id, path = %path.display(), "created the AgentId");
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_kept() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("data");
        let a = load_or_create(&dir).unwrap();
        assert_eq!(a.get_version_num(), 4);
        assert_eq!(load_or_create(&dir).unwrap(), a);
        std::fs::write(dir.join(FILE), "garbage").unwrap();
        let b = load_or_create(&dir).unwrap();
        assert_ne!(a, b);
        assert_eq!(load_or_create(&dir).unwrap(), b);
    }

    #[test]
    fn unwritable_directory_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        let e = load_or_create(&file.join("sub")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("not-a-dir/sub"), "{msg}");
        assert!(msg.contains("Not a directory"), "{msg}");
    }
}
