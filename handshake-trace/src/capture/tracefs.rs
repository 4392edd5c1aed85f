//! tracefs: where it is mounted, which tracepoints exist, and the field layout
//! each tracepoint's `format` file declares.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context, Result};

const CANDIDATES: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs mount point, if any (one with an `events` directory).
pub fn find() -> Option<PathBuf> {
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// Where tracefs is mounted, from /proc/self/mountinfo: readable by anyone, unlike
/// tracefs itself (mode 0700), so an unprivileged `doctor` can tell "mounted but not
/// readable" from "not mounted".
pub fn mounted_at() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    tracefs_mount_point(&info)
}

/// The mount point of the first tracefs in a mountinfo text (preferring the usual paths).
fn tracefs_mount_point(mountinfo: &str) -> Option<PathBuf> {
    // "36 25 0:12 / /sys/kernel/tracing rw,nosuid,nodev,noexec,relatime shared:16 - tracefs tracefs rw"
    let points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "tracefs").then(|| left.split_whitespace().nth(4)).flatten()
        })
        .collect();
    CANDIDATES
        .iter()
        .find(|c| points.contains(c))
        .copied()
        .or_else(|| points.first().copied())
        .map(PathBuf::from)
}

/// Mount tracefs at /sys/kernel/tracing (needs root).
pub fn mount() -> Result<PathBuf> {
    let target = Path::new(CANDIDATES[0]);
    // The mount(2) call itself: no external program to find on PATH, wait for or trust.
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL in a constant");
    let dir = std::ffi::CString::new(target.as_os_str().as_encoded_bytes()).context("tracefs path")?;
    let (source, fstype) = (c("nodev"), c("tracefs"));
    // SAFETY: NUL-terminated strings that outlive the call; no data argument.
    let rc = unsafe { libc::mount(source.as_ptr(), dir.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        bail!("mount -t tracefs nodev {} failed: {}", target.display(), std::io::Error::last_os_error());
    }
    Ok(target.to_path_buf())
}

/// The tracefs mount point, mounting it when missing.
pub fn find_or_mount() -> Result<PathBuf> {
    if let Some(p) = find() {
        return Ok(p);
    }
    if let Some(why) = withheld(super::socket_io::lockdown().as_deref()) {
        bail!("{why}; {WITHHELD_FIX}");
    }
    mount().context("tracefs is not mounted and mounting it failed")
}

/// Why tracefs has no tracepoints whatever is mounted, from the kernel's lockdown mode:
/// "confidentiality" withholds tracefs's files (checked on Ubuntu's 5.15), so neither
/// capture tier can trace and mounting again only fails with EBUSY.
pub fn withheld(lockdown: Option<&str>) -> Option<&'static str> {
    (lockdown == Some("confidentiality")).then_some("kernel lockdown \"confidentiality\" withholds tracefs (no tracepoints for any capture tier)")
}

/// The fix for a tracefs withheld by lockdown.
pub const WITHHELD_FIX: &str = "boot without lockdown=confidentiality";

/// One `field:` line of a format file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// Parse the text of a tracepoint `format` file into its fields.
pub fn parse_format(text: &str) -> Vec<Field> {
    text.lines().filter_map(parse_field_line).collect()
}

// "\tfield:int fd;\toffset:16;\tsize:8;\tsigned:0;"
fn parse_field_line(line: &str) -> Option<Field> {
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    for part in line.trim().split(';') {
        let part = part.trim();
        if let Some(d) = part.strip_prefix("field:") {
            decl = Some(d.trim());
        } else if let Some(o) = part.strip_prefix("offset:") {
            offset = o.trim().parse().ok();
        } else if let Some(s) = part.strip_prefix("size:") {
            size = s.trim().parse().ok();
        }
    }
    let decl = decl?;
    // The name is the last identifier of the declaration, before any array suffix.
    let decl = decl.split('[').next().unwrap_or(decl);
    let name = decl.rsplit(|c: char| c.is_whitespace() || c == '*').next()?.to_string();
    Some(Field { name, offset: offset?, size: size? })
}

/// The fields of tracepoint `category:name`, read from its format file.
pub fn fields(tracefs: &Path, category: &str, name: &str) -> Result<Vec<Field>> {
    let path = format_path(tracefs, category, name);
    let text = fs::read_to_string(&path)
        .with_context(|| format!("the kernel lacks tracepoint {category}:{name} ({})", path.display()))?;
    Ok(parse_format(&text))
}

pub fn format_path(tracefs: &Path, category: &str, name: &str) -> PathBuf {
    tracefs.join("events").join(category).join(name).join("format")
}

/// The offset of `field`, checking it has the size the programs read.
pub fn offset_of(fields: &[Field], field: &str, size: u32) -> Result<u32> {
    let f = fields
        .iter()
        .find(|f| f.name == field)
        .ok_or_else(|| anyhow!("no field `{field}`"))?;
    if f.size != size {
        bail!("field `{field}` has size {} (expected {size})", f.size);
    }
    Ok(f.offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_confidentiality_lockdown_withholds_tracefs() {
        assert!(withheld(Some("confidentiality")).is_some_and(|w| w.contains("lockdown \"confidentiality\"")));
        assert_eq!(withheld(Some("integrity")), None);
        assert_eq!(withheld(None), None);
    }

    #[test]
    fn the_tracefs_mount_point_is_read_from_mountinfo() {
        let info = "24 1 0:21 / /proc rw,relatime shared:13 - proc proc rw
36 25 0:12 / /sys/kernel/debug/tracing rw,relatime shared:16 - tracefs tracefs rw
37 25 0:12 / /sys/kernel/tracing rw,nosuid,nodev,noexec,relatime shared:17 - tracefs tracefs rw
";
        assert_eq!(tracefs_mount_point(info), Some(PathBuf::from("/sys/kernel/tracing")));
        assert_eq!(tracefs_mount_point("24 1 0:21 / /proc rw - proc proc rw\n"), None);
    }

    const ACCEPT4: &str = "name: sys_enter_accept4
ID: 1611
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int fd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:struct sockaddr * upeer_sockaddr;\toffset:24;\tsize:8;\tsigned:0;
\tfield:int * upeer_addrlen;\toffset:32;\tsize:8;\tsigned:0;
\tfield:int flags;\toffset:40;\tsize:8;\tsigned:0;

print fmt: \"fd: 0x%08lx\", ((unsigned long)(REC->fd))
";

    #[test]
    fn parses_syscall_enter_format() {
        let f = parse_format(ACCEPT4);
        assert_eq!(f.len(), 9);
        assert_eq!(offset_of(&f, "fd", 8).unwrap(), 16);
        assert_eq!(offset_of(&f, "upeer_sockaddr", 8).unwrap(), 24);
        assert_eq!(offset_of(&f, "flags", 8).unwrap(), 40);
        assert_eq!(offset_of(&f, "common_pid", 4).unwrap(), 4);
    }

    #[test]
    fn shifted_layout_is_followed_not_assumed() {
        let shifted = ACCEPT4.replace("offset:16;", "offset:24;").replace(
            "upeer_sockaddr;\toffset:24;",
            "upeer_sockaddr;\toffset:32;",
        );
        let f = parse_format(&shifted);
        assert_eq!(offset_of(&f, "fd", 8).unwrap(), 24);
        assert_eq!(offset_of(&f, "upeer_sockaddr", 8).unwrap(), 32);
    }

    #[test]
    fn wrong_size_or_missing_field_is_an_error() {
        let f = parse_format(ACCEPT4);
        assert!(offset_of(&f, "fd", 4).unwrap_err().to_string().contains("size 8"));
        assert!(offset_of(&f, "ret", 8).is_err());
    }

    #[test]
    fn array_fields_keep_their_name() {
        let f = parse_format("\tfield:__u8 saddr[4];\toffset:28;\tsize:4;\tsigned:0;");
        assert_eq!(f, vec![Field { name: "saddr".into(), offset: 28, size: 4 }]);
    }
}
