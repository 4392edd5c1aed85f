//! `record`: the live trace written to a file as it happens, secrets zeroed first.
use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use super::{
    format::{TargetInfo, TraceEnd, TraceHeader, TraceWriter},
    redact::Redactor,
};
use crate::{
    events::{AcceptAddrs, Counters, Event},
    support::clock::{format_rfc3339, Clock},
};

/// Writes what the pipeline saw to a trace file: events with their secrets zeroed,
/// the addresses used for each accept, exits, and the trailer.
pub struct Recorder {
    pub writer: TraceWriter<std::io::BufWriter<NamedFile>>,
    redactor: Redactor,
}

impl Recorder {
    /// A new trace file at `path`: an existing file is refused unless `overwrite`, and a
    /// symbolic link is never followed (a root tracer must not be steered into a file).
    pub fn create(path: &Path, overwrite: bool, clock: &Clock, targets: Vec<TargetInfo>, ringbuf_bytes: u32) -> Result<Self> {
        let file = NamedFile { file: open_new(path, overwrite)?, path: path.to_path_buf() };
        let header = header(clock, targets, ringbuf_bytes);
        let writer = TraceWriter::new(std::io::BufWriter::new(file), &header)?;
        Ok(Recorder { writer, redactor: Redactor::new() })
    }

    pub fn event(&mut self, raw: &[u8], ev: Option<&Event>, addrs: AcceptAddrs) -> Result<()> {
        let mut raw = raw.to_vec();
        self.redactor.redact(&mut raw);
        self.writer.event(&raw)?;
        if let Some(Event::Accept(_)) = ev {
            self.writer.addrs(addrs.server, addrs.client)?;
        }
        Ok(())
    }

    pub fn finish(self, counters: &Counters, undecodable: u64, stop_ns: u64) -> Result<()> {
        self.writer.end(&trailer(counters, undecodable, stop_ns))?;
        Ok(())
    }
}

/// The header of a trace file written now (records redacted).
pub fn header(clock: &Clock, targets: Vec<TargetInfo>, ringbuf_bytes: u32) -> TraceHeader {
    TraceHeader {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        started: format_rfc3339(std::time::SystemTime::now()),
        clock_offset_ns: clock.offset_ns(),
        targets,
        ringbuf_bytes,
        redacted: true,
        covers: None,
    }
}

/// The trailer of a trace file ending now.
pub fn trailer(counters: &Counters, undecodable: u64, stop_ns: u64) -> TraceEnd {
    TraceEnd {
        ended: format_rfc3339(std::time::SystemTime::now()),
        emitted: counters.emitted,
        lost_ringbuf: counters.lost_ringbuf,
        lost_mapfull: counters.lost_mapfull,
        undecodable,
        stop_ns,
    }
}

/// Refuses `path` before tracing starts: a symbolic link, or an existing file unless
/// `overwrite` (opening it refuses them again, atomically).
pub fn check_new(path: &Path, overwrite: bool) -> Result<()> {
    match path.symlink_metadata() {
        Ok(m) if m.file_type().is_symlink() => Err(symlink(path)),
        Ok(_) if !overwrite => Err(exists(path)),
        _ => Ok(()),
    }
}

fn symlink(path: &Path) -> anyhow::Error {
    anyhow::anyhow!("{} is a symbolic link: not followed (give the real path)", path.display())
}

fn exists(path: &Path) -> anyhow::Error {
    anyhow::anyhow!("{} exists: not overwritten (--force replaces it)", path.display())
}

/// Opens `path` for a new recording, without following a symbolic link.
fn open_new(path: &Path, overwrite: bool) -> Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).mode(0o600).custom_flags(libc::O_NOFOLLOW);
    if overwrite {
        o.create(true).truncate(true);
    } else {
        // O_CREAT | O_EXCL: fails on any existing name, a symbolic link included.
        o.create_new(true);
    }
    match o.open(path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(exists(path)),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(symlink(path)),
        Err(e) => Err(e).with_context(|| format!("create {}", path.display())),
    }
}

/// The trace file: every write error names it (a full disk says which file).
pub struct NamedFile {
    file: File,
    path: PathBuf,
}

impl NamedFile {
    fn named(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("write {}: {e}", self.path.display()))
    }
}

impl Write for NamedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf).map_err(|e| self.named(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush().map_err(|e| self.named(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(path: &Path, overwrite: bool) -> Result<Recorder> {
        Recorder::create(path, overwrite, &Clock::with_offset(0), Vec::new(), 4096)
    }

    #[test]
    fn an_existing_file_is_kept_unless_overwrite() {
        let dir = std::env::temp_dir().join(format!("ht-recorder-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.htrace");
        std::fs::write(&path, "keep me").unwrap();
        let e = create(&path, false).err().expect("refused").to_string();
        assert!(e.contains("exists") && e.contains("--force"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
        create(&path, true).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("{\"format\""));
        // A symbolic link is not followed, with --force or without.
        let target = dir.join("target");
        std::fs::write(&target, "precious").unwrap();
        let link = dir.join("link.htrace");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for overwrite in [false, true] {
            let e = create(&link, overwrite).err().expect("refused").to_string();
            assert!(e.contains("link.htrace"), "{e}");
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_disk_names_the_file() {
        let e = create(Path::new("/dev/full"), true).err().expect("no space on /dev/full");
        let msg = format!("{e:#}");
        assert!(msg.contains("/dev/full") && msg.contains("No space left"), "{msg}");
    }
}
