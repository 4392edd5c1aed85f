//! Opening the files the agent writes (the abnormal log, flight traces) so that a local
//! user who can write to their folder cannot make the agent — root — write elsewhere:
//! never through a symbolic link (`O_NOFOLLOW`), only a regular file of the agent's
//! own with one name, created 0600 in folders created 0700, whatever the umask.
use std::{
    fs::{DirBuilder, File, OpenOptions},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

use anyhow::{Context, Result};

/// A file refused for what it is (a link, not regular, not ours): the caller counts it.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Whether an error from this module is a refusal (not a plain I/O error).
pub fn is_refusal(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<Refused>().is_some())
}

const FLAGS: i32 = libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;

/// Create `dir` (and its parents) 0700 when missing; it must then be a real folder.
pub fn private_dir(dir: &Path) -> Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir).with_context(|| format!("create {}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir).with_context(|| format!("stat {}", dir.display()))?;
    if !meta.is_dir() {
        return Err(Refused(format!("{} is not a folder (a symbolic link?): refused", dir.display()))).map_err(Into::into);
    }
    Ok(())
}

/// Check an opened file: a regular file, one name, owned by us; then make it 0600.
fn checked(file: File, path: &Path) -> Result<File> {
    let meta = file.metadata().with_context(|| format!("stat {}", path.display()))?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let why = if !meta.file_type().is_file() {
        Some("not a regular file")
    } else if meta.uid() != euid {
        Some("owned by another user")
    } else if meta.nlink() > 1 {
        Some("a hard link to another name")
    } else {
        None
    };
    if let Some(why) = why {
        return Err(Refused(format!("{}: {why}: refused", path.display())).into());
    }
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).with_context(|| format!("chmod 0600 {}", path.display()))?;
    }
    Ok(file)
}

fn opened(r: std::io::Result<File>, path: &Path) -> Result<File> {
    match r {
        Ok(f) => checked(f, path),
        // O_NOFOLLOW on a symbolic link.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(Refused(format!("{} is a symbolic link: refused", path.display())).into()),
        Err(e) => Err(e).with_context(|| format!("open {}", path.display())),
    }
}

/// Open `path` to append, created 0600 when missing.
pub fn open_append(path: &Path) -> Result<File> {
    opened(OpenOptions::new().create(true).append(true).mode(0o600).custom_flags(FLAGS).open(path), path)
}

/// Create `path`, which must not exist (not even as a link), 0600.
pub fn create_new(path: &Path) -> Result<File> {
    let r = OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(FLAGS).open(path);
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            if link {
                return Err(Refused(format!("{} is a symbolic link: refused", path.display())).into());
            }
            Err(e).with_context(|| format!("create {}", path.display()))
        }
        r => opened(r, path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("handshake-trace-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn files_and_folders_are_private_whatever_the_umask() {
        let dir = temp("private").join("a").join("b");
        private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let log = dir.join("log");
        open_append(&log).unwrap();
        assert_eq!(std::fs::metadata(&log).unwrap().mode() & 0o777, 0o600);
        // An existing file left 0644 by an older version is made 0600.
        let old = dir.join("old");
        std::fs::write(&old, b"x").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        open_append(&old).unwrap();
        assert_eq!(std::fs::metadata(&old).unwrap().mode() & 0o777, 0o600);
        let new = dir.join("new");
        create_new(&new).unwrap();
        assert_eq!(std::fs::metadata(&new).unwrap().mode() & 0o777, 0o600);
        assert!(create_new(&new).is_err(), "create_new never reuses a file");
        std::fs::remove_dir_all(dir.parent().unwrap().parent().unwrap()).unwrap();
    }

    #[test]
    fn a_symbolic_link_is_refused_and_its_target_untouched() {
        let dir = temp("link");
        private_dir(&dir).unwrap();
        let target = dir.join("target");
        std::fs::write(&target, b"root:x:0:0\n").unwrap();
        let link = dir.join("log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = open_append(&link).unwrap_err();
        assert!(is_refusal(&e), "{e:#}");
        let e = create_new(&link).unwrap_err();
        assert!(is_refusal(&e), "{e:#}");
        // A dangling link too (create would otherwise make its target).
        let dangling = dir.join("dangling");
        std::os::unix::fs::symlink(dir.join("made-by-link"), &dangling).unwrap();
        assert!(is_refusal(&open_append(&dangling).unwrap_err()));
        assert!(!dir.join("made-by-link").exists());
        assert_eq!(std::fs::read(&target).unwrap(), b"root:x:0:0\n");
        // A folder given as a link is refused too.
        let dir_link = temp("link-dir");
        std::os::unix::fs::symlink(&dir, &dir_link).unwrap();
        assert!(is_refusal(&private_dir(&dir_link).unwrap_err()));
        std::fs::remove_file(&dir_link).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_hard_link_and_a_fifo_are_refused() {
        let dir = temp("kinds");
        private_dir(&dir).unwrap();
        let target = dir.join("target");
        std::fs::write(&target, b"x").unwrap();
        std::fs::hard_link(&target, dir.join("log")).unwrap();
        assert!(is_refusal(&open_append(&dir.join("log")).unwrap_err()));
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(open_append(&fifo).is_err(), "a FIFO is refused (or fails: no reader) without blocking");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
