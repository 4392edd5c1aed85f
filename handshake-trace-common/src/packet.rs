//! Where a packet's TCP payload starts (socket tier, `cgroup_skb`): the IPv4 header
//! with its options (IHL), or the IPv6 header and its chain of extension headers
//! (hop-by-hop, routing, destination options, AH), walked a bounded number of steps.
//! Pure: the bytes come through [`PacketBytes`], the packet in the kernel and a byte
//! slice in the tests.

/// Reads a packet's bytes (network order), `None` past its end.
pub trait PacketBytes {
    fn u8_at(&self, off: u32) -> Option<u8>;
    fn u16_at(&self, off: u32) -> Option<u16>;
    fn u32_at(&self, off: u32) -> Option<u32>;
}

/// The TCP payload of a packet: its offset, its length, and the segment's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPayload {
    /// Where the TCP header starts.
    pub tcp: u32,
    pub offset: u32,
    pub len: u32,
    pub seq: u32,
}

const IPPROTO_TCP: u8 = 6;
const IPV6_HEADER: u32 = 40;
/// IPv6 extension headers this walk steps over (RFC 8200 order), by next-header value.
const EXT_HOP_BY_HOP: u8 = 0;
const EXT_ROUTING: u8 = 43;
const EXT_FRAGMENT: u8 = 44;
const EXT_AH: u8 = 51;
const EXT_DEST_OPTS: u8 = 60;
/// Extension headers stepped over at most: RFC 8200 recommends each at most once
/// (destination options twice); a longer chain is not followed (the packet is skipped).
pub const MAX_IPV6_EXT: usize = 6;

/// The TCP payload of an IPv4 or IPv6 packet, or `None` (not TCP, a fragment, a chain
/// of extension headers longer than [`MAX_IPV6_EXT`], or cut short).
#[inline(always)]
pub fn tcp_payload<P: PacketBytes>(p: &P) -> Option<TcpPayload> {
    let first = p.u8_at(0)?;
    let (ip_len, total) = match first >> 4 {
        4 => {
            if p.u8_at(9)? != IPPROTO_TCP {
                return None;
            }
            // IHL counts 32-bit words, options included.
            let ihl = (first as u32 & 0x0f) * 4;
            if ihl < 20 {
                return None;
            }
            (ihl, p.u16_at(2)? as u32)
        }
        6 => (ipv6_tcp_offset(p)?, IPV6_HEADER + p.u16_at(4)? as u32),
        _ => return None,
    };
    let seq = p.u32_at(ip_len + 4)?;
    let tcp_len = (p.u8_at(ip_len + 12)? as u32 >> 4) * 4;
    let offset = ip_len + tcp_len;
    Some(TcpPayload { tcp: ip_len, offset, len: total.saturating_sub(offset), seq })
}

/// The sender of a TCP segment: its address (IPv6; IPv4 v4-mapped, as the socket
/// tier's peer keys hold it) and port (host order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSource {
    pub addr: [u8; 16],
    pub port: u16,
}

/// The source address and port of a packet whose TCP header starts at `tcp_offset`
/// ([`TcpPayload::tcp`]).
#[inline(always)]
pub fn tcp_source<P: PacketBytes>(p: &P, tcp_offset: u32) -> Option<TcpSource> {
    let mut addr = [0u8; 16];
    match p.u8_at(0)? >> 4 {
        4 => {
            addr[10] = 0xff;
            addr[11] = 0xff;
            addr[12..].copy_from_slice(&p.u32_at(12)?.to_be_bytes());
        }
        6 => {
            let mut i = 0;
            while i < 4 {
                let w = p.u32_at(8 + i as u32 * 4)?.to_be_bytes();
                addr[i * 4..i * 4 + 4].copy_from_slice(&w);
                i += 1;
            }
        }
        _ => return None,
    }
    Some(TcpSource { addr, port: p.u16_at(tcp_offset)? })
}

/// Where the TCP header starts after the IPv6 header and its extension headers.
#[inline(always)]
fn ipv6_tcp_offset<P: PacketBytes>(p: &P) -> Option<u32> {
    let mut next = p.u8_at(6)?;
    let mut off = IPV6_HEADER;
    let mut i = 0;
    while i < MAX_IPV6_EXT {
        match next {
            IPPROTO_TCP => return Some(off),
            // Length in 8-octet units, not counting the first 8.
            EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DEST_OPTS => {
                let len = (p.u8_at(off + 1)? as u32 + 1) * 8;
                next = p.u8_at(off)?;
                off += len;
            }
            // Length in 4-octet units, minus 2.
            EXT_AH => {
                let len = (p.u8_at(off + 1)? as u32 + 2) * 4;
                next = p.u8_at(off)?;
                off += len;
            }
            // A fragment: the TCP header is in the first one only, and the socket sees
            // the reassembled packet anyway; never on a local TCP socket's path.
            EXT_FRAGMENT => return None,
            _ => return None,
        }
        i += 1;
    }
    (next == IPPROTO_TCP).then_some(off)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    impl PacketBytes for &[u8] {
        fn u8_at(&self, off: u32) -> Option<u8> {
            self.get(off as usize).copied()
        }
        fn u16_at(&self, off: u32) -> Option<u16> {
            Some(u16::from_be_bytes(self.get(off as usize..off as usize + 2)?.try_into().ok()?))
        }
        fn u32_at(&self, off: u32) -> Option<u32> {
            Some(u32::from_be_bytes(self.get(off as usize..off as usize + 4)?.try_into().ok()?))
        }
    }

    /// A 20-byte TCP header (data offset 5, or `words`) with sequence number `seq`.
    fn tcp(seq: u32, words: u8) -> Vec<u8> {
        let mut t = std::vec![0u8; words as usize * 4];
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[12] = words << 4;
        t
    }

    fn ipv4(options: usize, proto: u8, rest: &[u8]) -> Vec<u8> {
        let ihl = 20 + options;
        let mut p = std::vec![0u8; ihl];
        p[0] = 0x40 | (ihl / 4) as u8;
        p[2..4].copy_from_slice(&((ihl + rest.len()) as u16).to_be_bytes());
        p[9] = proto;
        p.extend_from_slice(rest);
        p
    }

    /// An IPv6 packet whose headers after the fixed one are `chain`: (next header of
    /// the fixed header, [(extension bytes)], then `rest`).
    fn ipv6(first_next: u8, exts: &[Vec<u8>], rest: &[u8]) -> Vec<u8> {
        let mut p = std::vec![0u8; 40];
        p[0] = 0x60;
        p[6] = first_next;
        for e in exts {
            p.extend_from_slice(e);
        }
        p.extend_from_slice(rest);
        let payload = (p.len() - 40) as u16;
        p[4..6].copy_from_slice(&payload.to_be_bytes());
        p
    }

    /// An 8-octet-unit extension header (hop-by-hop, routing, destination options) of
    /// `units` + 1 units, followed by `next`.
    fn ext(next: u8, units: u8) -> Vec<u8> {
        let mut e = std::vec![0u8; (units as usize + 1) * 8];
        e[0] = next;
        e[1] = units;
        e
    }

    fn parse(p: &[u8]) -> Option<TcpPayload> {
        tcp_payload(&p)
    }

    #[test]
    fn ipv4_with_and_without_options() {
        let mut seg = tcp(1000, 5);
        seg.extend_from_slice(b"hello");
        assert_eq!(parse(&ipv4(0, 6, &seg)), Some(TcpPayload { tcp: 20, offset: 40, len: 5, seq: 1000 }));
        // IHL 8 (12 bytes of options) and TCP options (data offset 8): the payload moves.
        let mut seg = tcp(7, 8);
        seg.extend_from_slice(b"abc");
        assert_eq!(parse(&ipv4(12, 6, &seg)), Some(TcpPayload { tcp: 32, offset: 32 + 32, len: 3, seq: 7 }));
        assert_eq!(parse(&ipv4(0, 17, &seg)), None, "UDP");
        let mut bad = ipv4(0, 6, &seg);
        bad[0] = 0x44;
        assert_eq!(parse(&bad), None, "IHL below 5");
    }

    #[test]
    fn ipv6_walks_its_extension_headers() {
        let mut seg = tcp(0xdead_beef, 5);
        seg.extend_from_slice(b"greeting");
        assert_eq!(parse(&ipv6(6, &[], &seg)), Some(TcpPayload { tcp: 40, offset: 60, len: 8, seq: 0xdead_beef }));
        // Hop-by-hop (8 bytes) → destination options (24 bytes) → TCP.
        let p = ipv6(EXT_HOP_BY_HOP, &[ext(EXT_DEST_OPTS, 0), ext(6, 2)], &seg);
        assert_eq!(parse(&p), Some(TcpPayload { tcp: 40 + 8 + 24, offset: 40 + 8 + 24 + 20, len: 8, seq: 0xdead_beef }));
        // Routing, then AH (payload length 4: (4 + 2) * 4 = 24 bytes) → TCP.
        let mut ah = std::vec![0u8; 24];
        ah[0] = 6;
        ah[1] = 4;
        let p = ipv6(EXT_ROUTING, &[ext(EXT_AH, 1), ah], &seg);
        assert_eq!(parse(&p), Some(TcpPayload { tcp: 40 + 16 + 24, offset: 40 + 16 + 24 + 20, len: 8, seq: 0xdead_beef }));
    }

    #[test]
    fn ipv6_fragments_long_chains_and_short_packets_are_skipped() {
        let seg = tcp(1, 5);
        let mut frag = std::vec![0u8; 8];
        frag[0] = 6;
        assert_eq!(parse(&ipv6(EXT_FRAGMENT, &[frag], &seg)), None);
        let chain: Vec<Vec<u8>> = (0..MAX_IPV6_EXT).map(|i| ext(if i + 1 == MAX_IPV6_EXT { 6 } else { EXT_DEST_OPTS }, 0)).collect();
        assert!(parse(&ipv6(EXT_DEST_OPTS, &chain, &seg)).is_some(), "{MAX_IPV6_EXT} headers are followed");
        let longer: Vec<Vec<u8>> = (0..=MAX_IPV6_EXT).map(|i| ext(if i == MAX_IPV6_EXT { 6 } else { EXT_DEST_OPTS }, 0)).collect();
        assert_eq!(parse(&ipv6(EXT_DEST_OPTS, &longer, &seg)), None, "one more is not");
        assert_eq!(parse(&ipv6(17, &[], &seg)), None, "UDP");
        let whole = ipv6(EXT_HOP_BY_HOP, &[ext(6, 0)], &seg);
        assert_eq!(parse(&whole[..50]), None, "cut inside the TCP header");
        assert_eq!(parse(&[]), None);
    }

    #[test]
    fn the_sender_of_a_segment_v4_mapped_or_v6() {
        let mut seg = tcp(5, 5);
        seg[0..2].copy_from_slice(&40123u16.to_be_bytes());
        let mut p = ipv4(0, 6, &seg);
        p[12..16].copy_from_slice(&[127, 0, 0, 31]);
        let at = parse(&p).unwrap().tcp;
        let src = tcp_source(&p.as_slice(), at).unwrap();
        assert_eq!(src.addr, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 31]);
        assert_eq!(src.port, 40123);
        let mut p6 = ipv6(6, &[], &seg);
        p6[8..24].copy_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
        let src = tcp_source(&p6.as_slice(), 40).unwrap();
        assert_eq!((src.addr[0], src.addr[15], src.port), (0x20, 7, 40123));
    }
}
