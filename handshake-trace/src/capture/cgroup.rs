//! Socket tier: where the packet programs (`cgroup_skb` ingress/egress) attach. A
//! program attached to a cgroup v2 directory runs for the packets of every socket
//! created in it or below it, so the deepest directory holding every target is enough:
//! other processes' packets no longer run it. When the targets change it moves, the
//! new links attached before the old ones go (a packet seen twice meanwhile is dropped
//! by the per-connection sequence check of the kernel side). A socket keeps the cgroup
//! it was created in: the kernel checks each new connection's socket against the
//! attached cgroup (`handshake-trace-ebpf/src/cgroup.rs`) and flags one outside it,
//! whose handshake is then `incomplete` and the programs move to the root.
use std::os::unix::fs::MetadataExt;

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{Array, MapData},
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType},
    Ebpf,
};
use handshake_trace_common::{CgroupOffsets, SkbCgroup};

use super::btf;

/// The packet programs and the direction each one sees.
pub const PROGRAMS: [(&str, CgroupSkbAttachType); 2] =
    [("cgroup_skb_ingress", CgroupSkbAttachType::Ingress), ("cgroup_skb_egress", CgroupSkbAttachType::Egress)];

/// Where the packet programs are attached, and why there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The deepest cgroup holding every target (a path below the cgroup2 mount, "/a/b").
    Targets(String),
    /// The root of the hierarchy: every process's packets run the programs.
    Root(RootWhy),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootWhy {
    /// A target runs in the root cgroup (or targets share no deeper one).
    TargetsThere,
    /// A target's /proc/PID/cgroup has no cgroup v2 line (or is unreadable).
    Unknown(u32),
    /// A connection's socket was outside the cgroup first chosen (a server moved after
    /// it listened): from then on the root, for good.
    Moved,
    /// This kernel's BTF does not say where a socket's cgroup is kept, so a connection
    /// outside a deeper cgroup could not be told: the root, where nothing is outside.
    NoCheck(String),
    /// The targets' cgroup could not be attached to (gone meanwhile?): the error.
    Failed(String),
}

/// The cgroup v2 path of a process from its /proc/PID/cgroup text (the `0::` line).
/// None for a path outside the reader's cgroup namespace ("/../.."): not below the mount.
pub fn v2_path(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim_end)
        .filter(|p| p.starts_with('/') && !p.split('/').any(|c| c == ".."))
}

/// Process `pid`'s cgroup v2 path, from /proc/PID/cgroup.
pub fn cgroup_of(pid: u32) -> Option<String> {
    v2_path(&std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?).map(String::from)
}

/// The deepest cgroup holding all of `paths` ("/" for none in common); None without any.
pub fn common_ancestor<'a>(paths: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut common: Option<Vec<&str>> = None;
    for p in paths {
        let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
        common = Some(match common {
            None => parts,
            Some(c) => c.iter().zip(&parts).take_while(|(a, b)| a == b).map(|(a, _)| *a).collect(),
        });
    }
    common.map(|c| format!("/{}", c.join("/")))
}

/// Where the programs go for targets whose cgroup paths are `paths` (pid, path or None).
pub fn place_for(paths: &[(u32, Option<String>)]) -> Option<Place> {
    if let Some((pid, _)) = paths.iter().find(|(_, p)| p.is_none()) {
        return Some(Place::Root(RootWhy::Unknown(*pid)));
    }
    let common = common_ancestor(paths.iter().filter_map(|(_, p)| p.as_deref()))?;
    Some(if common == "/" { Place::Root(RootWhy::TargetsThere) } else { Place::Targets(common) })
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on hybrid machines), from /proc/self/mountinfo.
pub fn cgroup2_root() -> Result<std::path::PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    cgroup2_in_mountinfo(&info).ok_or_else(|| anyhow!("no cgroup v2 hierarchy mounted (/proc/self/mountinfo)"))
}

/// The first cgroup2 mount point in a mountinfo text.
fn cgroup2_in_mountinfo(info: &str) -> Option<std::path::PathBuf> {
    info.lines().find_map(|line| {
        // "36 25 0:31 / /sys/fs/cgroup/unified rw,... shared:10 - cgroup2 cgroup2 rw,..."
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2").then(|| left.split_whitespace().nth(4).map(Into::into))?
    })
}

/// This kernel's offsets for the check at a connection's start, from its BTF.
pub fn offsets() -> Result<CgroupOffsets> {
    let raw = std::fs::read("/sys/kernel/btf/vmlinux").context("read the kernel's BTF (/sys/kernel/btf/vmlinux)")?;
    Ok(CgroupOffsets {
        sock_cgroup: btf::member_offset(&raw, "sock", "sk_cgrp_data")? + btf::member_offset(&raw, "sock_cgroup_data", "cgroup")?,
        level: btf::member_offset(&raw, "cgroup", "level")?,
        ancestors: btf::member_offset(&raw, "cgroup", "ancestors")?,
        kn: btf::member_offset(&raw, "cgroup", "kn")?,
        kn_id: btf::member_offset(&raw, "kernfs_node", "id")?,
        _pad: 0,
    })
}

/// The packet programs (loaded), their links and where they are.
pub struct SkbAttach {
    mount: std::path::PathBuf,
    map: Array<MapData, SkbCgroup>,
    /// Why no connection can be checked (then only the root is used).
    no_check: Option<String>,
    at: Option<(Place, Vec<aya::programs::cgroup_skb::CgroupSkbLinkId>)>,
}

impl SkbAttach {
    /// Verify the packet programs; attach nothing yet (no target known).
    pub fn load(ebpf: &mut Ebpf, offsets: &Result<CgroupOffsets>) -> Result<Self> {
        for (name, _) in PROGRAMS {
            program(ebpf, name)?.load().with_context(|| format!("verify program {name}"))?;
        }
        let map = Array::try_from(ebpf.take_map("SKB_CGROUP").ok_or_else(|| anyhow!("map SKB_CGROUP missing from the embedded object"))?)?;
        let no_check = offsets.as_ref().err().map(|e| format!("{e:#}"));
        Ok(Self { mount: cgroup2_root()?, map, no_check, at: None })
    }

    /// Where the programs are (None before the first target).
    pub fn place(&self) -> Option<&Place> {
        self.at.as_ref().map(|(p, _)| p)
    }

    /// Follow the targets `pids`: move the programs when their cgroup changed. Once
    /// moved to the root for a socket outside, they stay there.
    pub fn follow(&mut self, ebpf: &mut Ebpf, pids: impl Iterator<Item = u32>) -> Result<()> {
        if matches!(self.place(), Some(Place::Root(RootWhy::Moved))) {
            return Ok(());
        }
        let paths: Vec<(u32, Option<String>)> = pids.map(|pid| (pid, cgroup_of(pid))).collect();
        let Some(mut place) = place_for(&paths) else {
            return Ok(());
        };
        if let (Some(why), Place::Targets(_)) = (&self.no_check, &place) {
            place = Place::Root(RootWhy::NoCheck(why.clone()));
        }
        let targets = matches!(place, Place::Targets(_));
        match self.attach(ebpf, place) {
            Err(e) if targets => self.attach(ebpf, Place::Root(RootWhy::Failed(format!("{e:#}")))),
            done => done,
        }
    }

    /// A connection's socket was outside the attached cgroup: the root from now on.
    pub fn widen(&mut self, ebpf: &mut Ebpf) -> Result<()> {
        self.attach(ebpf, Place::Root(RootWhy::Moved))
    }

    /// Attach at `place` (unless the programs are in that directory already), then tell
    /// the kernel's check where, then drop the old links.
    fn attach(&mut self, ebpf: &mut Ebpf, place: Place) -> Result<()> {
        let rel = match &place {
            Place::Targets(rel) => rel.as_str(),
            Place::Root(_) => "/",
        };
        let same_dir = |p: &Place| matches!((p, &place), (Place::Root(_), Place::Root(_))) || p == &place;
        if let Some((old, _)) = self.at.as_mut().filter(|(p, _)| same_dir(p)) {
            *old = place;
            return Ok(());
        }
        let dir = self.mount.join(rel.trim_start_matches('/'));
        let cgroup = std::fs::File::open(&dir).with_context(|| format!("open cgroup {}", dir.display()))?;
        let id = cgroup.metadata().with_context(|| format!("stat cgroup {}", dir.display()))?.ino();
        let mut links = Vec::new();
        for (name, kind) in PROGRAMS {
            // Single: with BPF links (5.7+) a link sits beside any other program on the
            // cgroup, and the kernel rejects the multi-attach flag for links.
            let link = program(ebpf, name)?
                .attach(&cgroup, kind, CgroupAttachMode::Single)
                .with_context(|| format!("attach {name} to cgroup {}", dir.display()))?;
            links.push(link);
        }
        let check = u32::from(matches!(place, Place::Targets(_)));
        self.map.set(0, SkbCgroup { id, check, _pad: 0 }, 0).context("write the attached cgroup map")?;
        if let Some((_, old)) = self.at.replace((place, links)) {
            detach(ebpf, old);
        }
        Ok(())
    }
}

/// Drop links (both programs' links were made in [`PROGRAMS`] order).
fn detach(ebpf: &mut Ebpf, links: Vec<aya::programs::cgroup_skb::CgroupSkbLinkId>) {
    for ((name, _), link) in PROGRAMS.iter().zip(links) {
        if let Ok(p) = program(ebpf, name) {
            let _ = p.detach(link);
        }
    }
}

fn program<'e>(ebpf: &'e mut Ebpf, name: &str) -> Result<&'e mut CgroupSkb> {
    Ok(ebpf.program_mut(name).ok_or_else(|| anyhow!("program {name} missing from the embedded object"))?.try_into()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v2_line_of_proc_pid_cgroup_is_the_path() {
        let hybrid = "9:name=systemd:/\n4:memory:/x/y\n0::/system.slice/mariadb.service\n";
        assert_eq!(v2_path(hybrid), Some("/system.slice/mariadb.service"));
        assert_eq!(v2_path("0::/\n"), Some("/"));
        // Seen from a container's own cgroup namespace: not below its mount.
        assert_eq!(v2_path("0::/../../kubepods/pod1/abc\n"), None);
        assert_eq!(v2_path("4:memory:/x\n"), None);
        assert_eq!(v2_path(""), None);
    }

    #[test]
    fn the_common_ancestor_is_the_deepest_shared_directory() {
        assert_eq!(common_ancestor(["/a/b/c"]), Some("/a/b/c".into()));
        assert_eq!(common_ancestor(["/a/b/c", "/a/b/d"]), Some("/a/b".into()));
        assert_eq!(common_ancestor(["/a/bc", "/a/b"]), Some("/a".into()));
        assert_eq!(common_ancestor(["/a/b", "/x"]), Some("/".into()));
        assert_eq!(common_ancestor(["/a/b", "/"]), Some("/".into()));
        assert_eq!(common_ancestor([]), None);
    }

    #[test]
    fn a_target_in_the_root_or_unknown_puts_the_programs_on_the_root() {
        let p = |v: &[(u32, Option<&str>)]| place_for(&v.iter().map(|(pid, s)| (*pid, s.map(String::from))).collect::<Vec<_>>());
        assert_eq!(p(&[(1, Some("/svc/db"))]), Some(Place::Targets("/svc/db".into())));
        assert_eq!(p(&[(1, Some("/svc/db")), (2, Some("/svc/db2"))]), Some(Place::Targets("/svc".into())));
        assert_eq!(p(&[(1, Some("/svc/db")), (2, Some("/"))]), Some(Place::Root(RootWhy::TargetsThere)));
        assert_eq!(p(&[(1, Some("/svc/db")), (2, None)]), Some(Place::Root(RootWhy::Unknown(2))));
        assert_eq!(p(&[]), None);
    }

    #[test]
    fn the_cgroup_v2_root_is_found_in_mountinfo() {
        let hybrid = "25 1 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid shared:5 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup2_in_mountinfo(hybrid), Some("/sys/fs/cgroup/unified".into()));
        let unified = "30 1 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_in_mountinfo(unified), Some("/sys/fs/cgroup".into()));
        assert_eq!(cgroup2_in_mountinfo("31 25 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"), None);
    }

    #[test]
    fn this_kernels_btf_says_where_a_sockets_cgroup_is() {
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            return;
        }
        let o = offsets().unwrap();
        assert!(o.sock_cgroup > 0 && o.ancestors > o.level && o.kn > 0, "{o:?}");
    }
}
