//! Files at rest, made one way: readable by the router's user only, and replaced atomically.
//!
//! Why: the data directory holds producers' events, dead letters (with their events), the
//! config service's documents, uploaded plugins, subscriber lists and the admin token. None
//! of it is for other local users, so every file is created `0600` and every directory
//! `0700`, whatever the process umask says. Files replaced whole (documents, manifests,
//! compiled artifacts) go through [`write_atomic`]: a crash leaves the old or the new
//! file, never a torn one.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of every file the router writes: owner read/write only.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory the router makes: owner only.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` (and missing parents) owner-only; an existing `dir` is narrowed to
/// [`DIR_MODE`] too (a data directory made by an older version, or by hand).
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode != DIR_MODE {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Opens `path` for appending, creating it owner-only.
pub fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(FILE_MODE).open(path)
}

/// Creates `path`, which must not exist yet, owner-only.
pub fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(path)
}

/// Replaces `path` with `bytes` atomically and durably: written to a temporary name unique
/// to this process and call (several threads or routers may write the same path), synced,
/// renamed over `path`, and the directory synced so the rename survives a power loss.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp =
        path.with_file_name(format!(".{name}.{}-{}.tmp", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
    let written = (|| {
        let mut f = create_new(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    sync_parent(path)
}

/// Makes a change of `path`'s directory entry (a creation, a rename, a removal) durable.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_and_dirs_are_owner_only_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b");
        private_dir(&data).unwrap();
        assert_eq!(mode(&data), DIR_MODE);
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&data).unwrap();
        assert_eq!(mode(&data), DIR_MODE, "an existing directory is narrowed");
        let doc = data.join("doc.json");
        write_atomic(&doc, b"one").unwrap();
        write_atomic(&doc, b"two").unwrap();
        assert_eq!(std::fs::read(&doc).unwrap(), b"two");
        assert_eq!(mode(&doc), FILE_MODE);
        open_append(&data.join("log")).unwrap();
        assert_eq!(mode(&data.join("log")), FILE_MODE);
        let names: Vec<_> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no temporary file left behind: {names:?}");
    }
}
