//! The AgentId: a GUID created once and kept in the data directory (a volume in the
//! deployment manifest), so that every message of this device carries the same AgentId across
//! restarts and updates of the module. [`load_or_create`] never fails on the file's content
//! (a bad one is replaced, logged as E-AGENTID-BAD), only on a data directory it cannot read
//! or write (E-DATADIR in main). What it creates is private (directory 0700, file 0600) and
//! never written through a symlink.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;
use uuid::Uuid;

/// The file in the data directory.
pub const FILE: &str = "agent_id";
/// The temporary file the AgentId is written to before the rename.
pub const TMP_FILE: &str = "agent_id.tmp";
/// The most of the file that is read: a GUID with a line end is 37 bytes; anything longer
/// than this is not one, and a huge file is never read whole.
pub const MAX_FILE_BYTES: u64 = 4096;

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

/// What the AgentId file holds.
#[derive(Debug, PartialEq)]
enum Found {
    Id(Uuid),
    Missing,
    /// Not a GUID: why.
    Bad(String),
}

/// The AgentId kept in `dir`, created (a random GUID) when there is none. A file holding a
/// GUID (surrounding whitespace allowed) is the AgentId; one that is no GUID (not UTF-8, over
/// [`MAX_FILE_BYTES`], a symlink, any other text) is logged once as E-AGENTID-BAD and replaced
/// by a new AgentId, kept from then on. An existing directory or file that grants more than
/// 0700/0600 (an earlier version's 0755/0644) is tightened to that.
pub fn load_or_create(dir: &Path) -> Result<Uuid, AgentIdError> {
    let path = dir.join(FILE);
    match read(&path).map_err(|source| AgentIdError::Read {
        path: path.clone(),
        source,
    })? {
        Found::Id(id) => {
            // Kept by an earlier version (0644 in a 0755 directory): made private now.
            tighten(dir, 0o700);
            tighten(&path, 0o600);
            return Ok(id);
        }
        Found::Missing => {}
        Found::Bad(why) => tracing::error!(
            error_id = "E-AGENTID-BAD",
            path = %path.display(),
            error = %why,
            "the AgentId file does not hold a GUID: making a new AgentId"
        ),
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| AgentIdError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
    tighten(dir, 0o700);
    let id = Uuid::new_v4();
    write(dir, &path, id).map_err(|source| AgentIdError::Write {
        path: path.clone(),
        source,
    })?;
    tracing::info!(agent_id = %id, path = %path.display(), "created the AgentId");
    Ok(id)
}

/// Takes away what `path` grants beyond `mode` (group and other bits). A data directory
/// that cannot be changed (read-only) keeps its mode: that is no reason to stop.
fn tighten(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return;
    };
    let now = m.permissions().mode() & 0o7777;
    if m.file_type().is_symlink() || now & !mode == 0 {
        return;
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(now & mode)) {
        Ok(()) => {
            tracing::info!(path = %path.display(), from = format!("{now:o}"), to = format!("{:o}", now & mode), "made private")
        }
        Err(e) => tracing::debug!(path = %path.display(), error = %e, "cannot make private"),
    }
}

/// Reads at most [`MAX_FILE_BYTES`] (+1, to tell a longer file) of `path`; only I/O
/// failures other than a missing file are errors.
fn read(path: &Path) -> std::io::Result<Found> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) => return Err(e),
        // Nothing in the data directory should point elsewhere; the rename replaces the
        // link itself.
        Ok(m) if m.file_type().is_symlink() => {
            return Ok(Found::Bad("it is a symbolic link".to_string()));
        }
        Ok(_) => {}
    }
    let mut bytes = Vec::with_capacity(64);
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Ok(Found::Bad(format!(
            "it is longer than {MAX_FILE_BYTES} bytes"
        )));
    }
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Ok(Found::Bad("it is not UTF-8 text".to_string()));
    };
    Ok(match Uuid::parse_str(text.trim()) {
        Ok(id) => Found::Id(id),
        Err(e) => Found::Bad(e.to_string()),
    })
}

/// A file of its own, 0600, created exclusively: `O_EXCL` fails on any existing name,
/// a symlink (even a dangling one) included, so nothing is ever written through a link.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Writes `id` to the temporary file and renames it to `path`: a crash never leaves half a
/// GUID behind.
fn write(dir: &Path, path: &Path, id: Uuid) -> std::io::Result<()> {
    let tmp = dir.join(TMP_FILE);
    let mut f = match create_private(&tmp) {
        // Left by a crash between create and rename, or planted: unlinking removes the name
        // only (never what a symlink points to); then the exclusive create again.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp)?;
            create_private(&tmp)?
        }
        r => r?,
    };
    writeln!(f, "{}", id.hyphenated())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
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

    /// What the AgentId file holds now, as load_or_create's result would give it.
    fn kept(dir: &Path) -> Result<Uuid, String> {
        let text = std::fs::read_to_string(dir.join(FILE)).map_err(|e| e.to_string())?;
        Uuid::parse_str(text.trim()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_non_utf8_file_is_replaced_once_and_the_new_id_kept() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        // Synthetic: bytes that are not UTF-8 (a damaged file).
        std::fs::write(dir.join(FILE), b"\xff\xfe\x80agent\xc3").unwrap();
        let first = load_or_create(&dir).map_err(|e| e.to_string());
        assert_eq!(first, kept(&dir), "the replacement is written");
        // The next start finds it.
        assert_eq!(load_or_create(&dir).map_err(|e| e.to_string()), first);
    }

    #[test]
    fn the_file_is_read_bounded() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("data");
        let a = load_or_create(&dir).unwrap();
        // Synthetic: the GUID followed by more than MAX_FILE_BYTES of blanks. Read whole and
        // trimmed it would pass; only the first MAX_FILE_BYTES + 1 are read, so it is no
        // GUID file and is replaced.
        let mut text = format!("{}\n", a.hyphenated()).into_bytes();
        text.resize(usize::try_from(MAX_FILE_BYTES).unwrap() + 1, b' ');
        std::fs::write(dir.join(FILE), &text).unwrap();
        let b = load_or_create(&dir).unwrap();
        assert_ne!(a, b);
        assert_eq!(kept(&dir), Ok(b));
        assert_eq!(std::fs::metadata(dir.join(FILE)).unwrap().len(), 37);
    }

    #[test]
    fn the_directory_is_made_0700_and_the_file_0600() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("data");
        load_or_create(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(
            (mode(&dir), mode(&dir.join(FILE))),
            (0o700, 0o600),
            "data directory, AgentId file"
        );
        // A replacement is private too.
        std::fs::write(dir.join(FILE), "garbage").unwrap();
        std::fs::set_permissions(dir.join(FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        load_or_create(&dir).unwrap();
        assert_eq!(mode(&dir.join(FILE)), 0o600);
    }

    #[test]
    fn an_existing_directory_and_file_are_made_private_and_the_id_kept() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("data");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        // As an earlier version (or a volume made by the container engine) left them.
        std::fs::create_dir(&dir).unwrap();
        set(&dir, 0o755);
        let id = "0b7cd0a2-3a0b-4c5e-9d6f-1a2b3c4d5e6f";
        std::fs::write(dir.join(FILE), format!("{id}\n")).unwrap();
        set(&dir.join(FILE), 0o644);
        assert_eq!(load_or_create(&dir).unwrap().to_string(), id);
        assert_eq!((mode(&dir), mode(&dir.join(FILE))), (0o700, 0o600));
        // A directory without a file yet is made private when the file is created.
        let empty = d.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        set(&empty, 0o777);
        load_or_create(&empty).unwrap();
        assert_eq!(mode(&empty), 0o700);
    }

    #[test]
    fn a_symlink_at_the_temporary_path_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        let outside = d.path().join("outside");
        std::fs::write(&outside, "not the module's").unwrap();
        let dangling = d.path().join("nothing-here");
        for target in [&outside, &dangling] {
            let _ = std::fs::remove_file(dir.join(FILE));
            let _ = std::fs::remove_file(dir.join(TMP_FILE));
            std::os::unix::fs::symlink(target, dir.join(TMP_FILE)).unwrap();
            let id = load_or_create(&dir).map_err(|e| e.to_string());
            assert_eq!(id, kept(&dir), "through {}", target.display());
            assert_eq!(
                std::fs::read_to_string(&outside).map_err(|e| e.to_string()),
                Ok("not the module's".to_string())
            );
            assert!(
                !dangling.exists(),
                "a file was made outside the data directory"
            );
            let file = std::fs::symlink_metadata(dir.join(FILE)).unwrap();
            assert!(file.file_type().is_file(), "{:?}", file.file_type());
            assert!(!dir.join(TMP_FILE).exists());
        }
    }

    #[test]
    fn a_symlink_as_the_agent_id_file_is_replaced_not_written_through() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        let outside = d.path().join("outside");
        let theirs = Uuid::from_u128(7);
        std::fs::write(&outside, theirs.hyphenated().to_string()).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join(FILE)).unwrap();
        let id = load_or_create(&dir).unwrap();
        assert_ne!(id, theirs);
        assert_eq!(kept(&dir), Ok(id));
        assert_eq!(
            std::fs::read_to_string(&outside).unwrap(),
            theirs.hyphenated().to_string()
        );
        let file = std::fs::symlink_metadata(dir.join(FILE)).unwrap();
        assert!(file.file_type().is_file());
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
