//! Byte offsets of struct members in the kernel's raw BTF (`/sys/kernel/btf/vmlinux`):
//! what the socket tier's fexit programs read behind the pointers they get. aya parses
//! BTF but keeps its type walk private; this reads only what is needed. Pure.
use anyhow::{bail, ensure, Context, Result};

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;

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

/// The byte offset of `member` in `struct name` (a direct member, not a bitfield).
pub fn member_offset(btf: &[u8], name: &str, member: &str) -> Result<u32> {
    ensure!(btf.len() >= 24 && u16::from_le_bytes([btf[0], btf[1]]) == MAGIC, "not little-endian BTF");
    let hdr_len = u32_at(btf, 4)? as usize;
    let (type_off, type_len) = (u32_at(btf, 8)? as usize, u32_at(btf, 12)? as usize);
    let (str_off, str_len) = (u32_at(btf, 16)? as usize, u32_at(btf, 20)? as usize);
    let types = btf.get(hdr_len + type_off..hdr_len + type_off + type_len).context("BTF type section out of bounds")?;
    let strings = btf.get(hdr_len + str_off..hdr_len + str_off + str_len).context("BTF string section out of bounds")?;
    let mut at = 0;
    while at < types.len() {
        let (name_off, info) = (u32_at(types, at)?, u32_at(types, at + 4)?);
        let (kind, vlen, kflag) = ((info >> 24) & 0x1f, (info & 0xffff) as usize, info >> 31 == 1);
        let members = at + 12;
        at = members + extra_bytes(kind, vlen)?;
        if kind != KIND_STRUCT || name_at(strings, name_off) != name.as_bytes() {
            continue;
        }
        for m in (0..vlen).map(|i| members + 12 * i) {
            if name_at(strings, u32_at(types, m)?) != member.as_bytes() {
                continue;
            }
            let raw = u32_at(types, m + 8)?;
            // With kflag the top 8 bits are a bitfield's size; a plain member has 0 there.
            let bits = if kflag { raw & 0x00ff_ffff } else { raw };
            ensure!(bits % 8 == 0 && (!kflag || raw >> 24 == 0), "struct {name}.{member} is a bitfield");
            return Ok(bits / 8);
        }
        bail!("struct {name} has no member {member} in this kernel's BTF");
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
        let strings = b"\0int\0sk\0socket\0state\0flags\0sock_fake\0";
        let s = |n: &str| -> u32 { (strings.windows(n.len() + 1).position(|w| &w[..n.len()] == n.as_bytes() && w[n.len()] == 0).unwrap()) as u32 };
        let mut t: Vec<u32> = vec![s("int"), 1 << 24, 4, 32]; // INT
        t.extend([0, (KIND_STRUCT << 24) | 1, 8, s("sk"), 1, 0]); // anonymous struct
        t.extend([s("sock_fake"), (KIND_STRUCT << 24) | 1, 16, s("sk"), 1, 64]);
        t.extend([s("socket"), (1 << 31) | (KIND_STRUCT << 24) | 3, 32, s("state"), 1, 0, s("flags"), 1, (1 << 24) | 32, s("sk"), 1, 192]);
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
    }
}
