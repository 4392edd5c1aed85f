//! Byte offsets of struct members in the kernel's raw BTF (`/sys/kernel/btf/vmlinux`):
//! what the socket tier's fexit programs read behind the pointers they get. aya parses
//! BTF but keeps its type walk private; this reads only what is needed. Pure.
use anyhow::{bail, ensure, Context, Result};

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

fn u32_at(b: &[u8], off: usize) -> Result<u32> {
    let bytes = b.get(off..off + 4).context("BTF ends early")?;
    Ok(u32::from_le_bytes(bytes.try_into().unwrap()))
}

/// Bytes after a type's 12-byte header, by kind (the kernel's `btf_type` layout).
fn extra_bytes(kind: u32, vlen: usize) -> Result<usize> {
    Ok(match kind {
        1 | 14 | 17 => 4,                  // INT, VAR, DECL_TAG
        2 | 7..=12 | 16 | 18 => 0,         // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
        3 => 12,                           // ARRAY
        4 | 5 | 15 | 19 => 12 * vlen,      // STRUCT, UNION, DATASEC, ENUM64
        6 | 13 => 8 * vlen,                // ENUM, FUNC_PROTO
        other => bail!("unknown BTF kind {other}"),
    })
}

/// The NUL-terminated name at `off` of the string section.
fn name_at(strings: &[u8], off: u32) -> &[u8] {
    let s = strings.get(off as usize..).unwrap_or_default();
    &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())]
}

/// The type section, its strings, and where each type id's record starts.
struct Types<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Byte offset of type id `i + 1` (id 0 is void).
    starts: Vec<usize>,
}

impl<'a> Types<'a> {
    fn parse(btf: &'a [u8]) -> Result<Self> {
        ensure!(btf.len() >= 24 && u16::from_le_bytes([btf[0], btf[1]]) == MAGIC, "not little-endian BTF");
        let hdr_len = u32_at(btf, 4)? as usize;
        let (type_off, type_len) = (u32_at(btf, 8)? as usize, u32_at(btf, 12)? as usize);
        let (str_off, str_len) = (u32_at(btf, 16)? as usize, u32_at(btf, 20)? as usize);
        let types = btf.get(hdr_len + type_off..hdr_len + type_off + type_len).context("BTF type section out of bounds")?;
        let strings = btf.get(hdr_len + str_off..hdr_len + str_off + str_len).context("BTF string section out of bounds")?;
        let mut starts = Vec::new();
        let mut at = 0;
        while at < types.len() {
            starts.push(at);
            let info = u32_at(types, at + 4)?;
            at += 12 + extra_bytes((info >> 24) & 0x1f, (info & 0xffff) as usize)?;
        }
        Ok(Self { types, strings, starts })
    }

    /// (name offset, kind, vlen, kflag) of the type at byte `at`.
    fn header(&self, at: usize) -> Result<(u32, u32, usize, bool)> {
        let (name_off, info) = (u32_at(self.types, at)?, u32_at(self.types, at + 4)?);
        Ok((name_off, (info >> 24) & 0x1f, (info & 0xffff) as usize, info >> 31 == 1))
    }

    /// The byte offset of `member` in the struct or union at byte `at`, looking into
    /// anonymous struct/union members too (`skc_daddr` sits in one); `None` if absent.
    fn find(&self, at: usize, member: &str, depth: u32) -> Result<Option<u32>> {
        let (name_off, _, vlen, kflag) = self.header(at)?;
        for m in (0..vlen).map(|i| at + 12 + 12 * i) {
            let (m_name, m_type, raw) = (u32_at(self.types, m)?, u32_at(self.types, m + 4)?, u32_at(self.types, m + 8)?);
            // With kflag the top 8 bits are a bitfield's size; a plain member has 0 there.
            let bits = if kflag { raw & 0x00ff_ffff } else { raw };
            let name = name_at(self.strings, m_name);
            if name == member.as_bytes() {
                ensure!(bits % 8 == 0 && (!kflag || raw >> 24 == 0), "{}.{member} is a bitfield", String::from_utf8_lossy(name_at(self.strings, name_off)));
                return Ok(Some(bits / 8));
            }
            let Some(&inner) = self.starts.get((m_type as usize).wrapping_sub(1)) else { continue };
            let (_, inner_kind, _, _) = self.header(inner)?;
            if name.is_empty() && matches!(inner_kind, KIND_STRUCT | KIND_UNION) && depth < 4 && bits % 8 == 0 {
                if let Some(off) = self.find(inner, member, depth + 1)? {
                    return Ok(Some(bits / 8 + off));
                }
            }
        }
        Ok(None)
    }
}

/// The byte offset of `member` in `struct name` (a direct member, or one inside an
/// anonymous struct or union member; not a bitfield).
pub fn member_offset(btf: &[u8], name: &str, member: &str) -> Result<u32> {
    let t = Types::parse(btf)?;
    for &at in &t.starts {
        let (name_off, kind, _, _) = t.header(at)?;
        if kind != KIND_STRUCT || name_at(t.strings, name_off) != name.as_bytes() {
            continue;
        }
        return t.find(at, member, 0)?.with_context(|| format!("struct {name} has no member {member} in this kernel's BTF"));
    }
    bail!("no struct {name} in this kernel's BTF")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob: an int, an anonymous struct with `sk`, `struct sock_fake` with `sk`
    /// at byte 8, and `struct socket` {state: int @0, flags (bitfield, kflag) @32 bits,
    /// sk @24 bytes}.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0sk\0socket\0state\0flags\0sock_fake\0outer\0";
        let s = |n: &str| -> u32 { (strings.windows(n.len() + 1).position(|w| &w[..n.len()] == n.as_bytes() && w[n.len()] == 0).unwrap()) as u32 };
        let mut t: Vec<u32> = vec![s("int"), 1 << 24, 4, 32]; // INT
        t.extend([0, (KIND_STRUCT << 24) | 1, 8, s("sk"), 1, 0]); // anonymous struct
        t.extend([s("sock_fake"), (KIND_STRUCT << 24) | 1, 16, s("sk"), 1, 64]);
        t.extend([s("socket"), (1 << 31) | (KIND_STRUCT << 24) | 3, 32, s("state"), 1, 0, s("flags"), 1, (1 << 24) | 32, s("sk"), 1, 192]);
        // struct outer { int state; union { struct { int sk; }; } @ byte 12 } (types 5, 6).
        t.extend([s("outer"), (KIND_STRUCT << 24) | 2, 20, s("state"), 1, 0, 0, 6, 96]);
        t.extend([0, (KIND_UNION << 24) | 1, 8, 0, 2, 0]);
        let types: Vec<u8> = t.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut b = vec![0x9f, 0xeb, 1, 0];
        for v in [24, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            b.extend(v.to_le_bytes());
        }
        b.extend(types);
        b.extend(strings);
        b
    }

    #[test]
    fn member_offsets_come_from_the_named_struct() {
        let b = blob();
        assert_eq!(member_offset(&b, "socket", "sk").unwrap(), 24);
        assert_eq!(member_offset(&b, "socket", "state").unwrap(), 0);
        assert_eq!(member_offset(&b, "sock_fake", "sk").unwrap(), 8);
        // Inside an anonymous struct inside an anonymous union at byte 12.
        assert_eq!(member_offset(&b, "outer", "sk").unwrap(), 12);
        assert!(member_offset(&b, "outer", "flags").is_err());
    }

    #[test]
    fn bitfields_missing_members_and_bad_blobs_are_errors() {
        let b = blob();
        assert!(format!("{:#}", member_offset(&b, "socket", "flags").unwrap_err()).contains("bitfield"));
        assert!(format!("{:#}", member_offset(&b, "socket", "ops").unwrap_err()).contains("no member ops"));
        assert!(format!("{:#}", member_offset(&b, "msghdr", "msg_flags").unwrap_err()).contains("no struct msghdr"));
        assert!(member_offset(&b[..30], "socket", "sk").is_err());
        assert!(member_offset(b"not btf at all, not at all....", "socket", "sk").is_err());
    }

    #[test]
    fn this_kernels_socket_keeps_sk_after_state_type_flags_and_file() {
        let Ok(b) = std::fs::read("/sys/kernel/btf/vmlinux") else { return };
        // state (4), type (2, padded), flags (8), file (8): sk at 24 on every 64-bit kernel since 2.6.
        assert_eq!(member_offset(&b, "socket", "sk").unwrap(), 24);
        assert!(member_offset(&b, "msghdr", "msg_flags").unwrap() > 16);
        // skc_portpair: skc_daddr, skc_rcv_saddr (in anonymous members), skc_hash first.
        assert_eq!(member_offset(&b, "sock_common", "skc_portpair").unwrap(), 12);
        assert_eq!(member_offset(&b, "sock_common", "skc_rcv_saddr").unwrap(), 4);
    }
}
