//! The PROXY protocol header (HAProxy's; v1 text, v2 binary) that a proxy sends first on
//! its connection to the server, before any MySQL byte, to name the client it relays
//! (MariaDB `proxy_protocol_networks`). [`ProxySniffer`] sits in front of the client's
//! packet stream: it takes the header's bytes out, whatever transfers they come in
//! (MariaDB reads the 4 bytes of a packet header, then the rest of a v1 header one byte
//! at a time), and hands everything after it to the MySQL framing.
//!
//! Bounded: at most [`V1_MAX`] bytes of a v1 header, and of a v2 header its 16 fixed
//! bytes and a TCP6 address block are kept; TLVs and longer address blocks are skipped
//! by count. Bytes held while undecided are always a prefix of one of the two
//! signatures (constants, never client data).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// "PROXY " starts every v1 header.
const V1_SIG: &[u8] = b"PROXY ";
/// The 12 bytes that start every v2 header.
const V2_SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header's longest form, "\r\n" included (the specification's 107 bytes).
pub const V1_MAX: usize = 107;
/// The fixed part of a v2 header: signature, version and command, family, length.
const V2_FIXED: usize = 16;
/// The longest address block kept (TCP6: two addresses and two ports).
const V2_ADDR_KEEP: usize = 36;

/// A decoded PROXY header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    /// 1 (text) or 2 (binary).
    pub version: u8,
    /// The client and the address it connected to, as the proxy names them. None for a
    /// v1 `UNKNOWN`, a v2 `LOCAL` (the proxy's own health check) or a family without
    /// ports (v2 UNIX, UNSPEC): the server then keeps the proxy's address.
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    /// The header's length on the wire.
    pub len: usize,
}

/// What the sniffer found at the start of the client's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyFound {
    Header(ProxyHeader),
    /// It started like a PROXY header and is not a valid one (`version` of the
    /// signature seen), or its bytes went by uncaptured: the MySQL framing after it is
    /// lost.
    Malformed { version: u8 },
    /// The server read the first bytes of a header (MariaDB reads 4, a packet header's
    /// worth, then refuses one from an untrusted address without reading on) and no
    /// more: which client it names was never read.
    Unfinished { version: u8 },
}

/// One transfer as the sniffer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Taken {
    /// Bytes held back from earlier transfers as a possible signature that turned out
    /// not to be one: the packet stream gets them before this transfer's.
    pub replay: &'static [u8],
    /// Bytes of this transfer (captured ones first, then uncaptured) that belong to the header.
    pub header: usize,
}

#[derive(Debug, Clone)]
enum State {
    /// `have` bytes matched the start of `sig` (None before the first byte: the two
    /// signatures differ in their first, 'P' and '\r').
    Start { have: usize, sig: Option<&'static [u8]> },
    V1 { buf: [u8; V1_MAX], have: usize },
    /// `whole`: the header's length (the fixed part's until its length field is read).
    V2 { buf: [u8; V2_FIXED + V2_ADDR_KEEP], have: usize, whole: usize },
    Done,
}

/// Finds and takes out a PROXY header at the start of a client's byte stream.
#[derive(Debug, Clone)]
pub struct ProxySniffer {
    state: State,
    found: Option<ProxyFound>,
    /// A v2 header's family byte, once read.
    v2_family: Option<u8>,
}

impl Default for ProxySniffer {
    fn default() -> Self {
        ProxySniffer { state: State::Start { have: 0, sig: None }, found: None, v2_family: None }
    }
}

impl ProxySniffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decided: the header is whole (or malformed), or there is none.
    pub fn decided(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// A v2 header's bytes before its TLVs (fixed part and address block), once its
    /// family is read: the rest (TLVs: TLS details, unique ids, a cloud's endpoint
    /// ids) is nothing the decoder needs. None for v1 (text: addresses only).
    pub fn v2_public_len(&self) -> Option<usize> {
        let addr = match self.v2_family? {
            0x11 | 0x12 => 12,
            0x21 | 0x22 => 36,
            0x31 | 0x32 => 216,
            _ => 0,
        };
        Some(V2_FIXED + addr)
    }

    /// A header begun and not finished: at least a packet header's worth (4 bytes) of a
    /// signature matched, or more of the header read. Its version.
    pub fn unfinished(&self) -> Option<u8> {
        match self.state {
            State::Start { have, sig: Some(sig) } if have >= 4 => Some(if sig == V1_SIG { 1 } else { 2 }),
            State::V1 { .. } => Some(1),
            State::V2 { .. } => Some(2),
            _ => None,
        }
    }

    /// The header found, once decided.
    pub fn found(&self) -> Option<&ProxyFound> {
        self.found.as_ref()
    }

    /// One transfer of the client's stream: `captured` bytes we have, of `total` moved.
    pub fn take(&mut self, captured: &[u8], total: usize) -> Taken {
        let known = &captured[..captured.len().min(total)];
        // Signature bytes held from earlier transfers.
        let held = match self.state {
            State::Start { have, sig: Some(sig) } => &sig[..have],
            _ => &[],
        };
        let mut i = 0;
        loop {
            match &mut self.state {
                State::Done => return Taken { replay: &[], header: i },
                State::Start { have, sig } => {
                    if i == total {
                        // Held: a signature's start so far.
                        return Taken { replay: &[], header: i };
                    }
                    let candidate = match (*sig, known.get(i)) {
                        (Some(s), Some(&b)) if s[*have] == b => Some(s),
                        (None, Some(b'P')) => Some(V1_SIG),
                        (None, Some(b'\r')) => Some(V2_SIG),
                        // Another byte, or one that went by uncaptured: no header (an
                        // uncaptured header loses the framing after it either way).
                        _ => None,
                    };
                    let Some(s) = candidate else {
                        self.state = State::Done;
                        return Taken { replay: held, header: 0 };
                    };
                    *sig = Some(s);
                    *have += 1;
                    i += 1;
                    if *have < s.len() {
                        continue;
                    }
                    self.state = if s == V1_SIG {
                        let mut buf = [0; V1_MAX];
                        buf[..s.len()].copy_from_slice(s);
                        State::V1 { buf, have: s.len() }
                    } else {
                        let mut buf = [0; V2_FIXED + V2_ADDR_KEEP];
                        buf[..s.len()].copy_from_slice(s);
                        State::V2 { buf, have: s.len(), whole: V2_FIXED }
                    };
                }
                State::V1 { buf, have } => {
                    if i == total {
                        return Taken { replay: &[], header: i };
                    }
                    let Some(&b) = known.get(i) else { return self.malformed(total, 1) };
                    buf[*have] = b;
                    *have += 1;
                    i += 1;
                    if b == b'\n' {
                        let found = parse_v1(&buf[..*have]);
                        self.finish(found, 1);
                    } else if *have == V1_MAX {
                        return self.malformed(total, 1);
                    }
                }
                State::V2 { buf, have, whole } => {
                    if i == total {
                        return Taken { replay: &[], header: i };
                    }
                    let n = (*whole - *have).min(total - i);
                    // Keep what fits of the fixed part and the address block; skip the rest.
                    let room = buf.len().saturating_sub(*have);
                    let keep = n.min(room);
                    let avail = known.get(i..).unwrap_or(&[]);
                    let got = avail.len().min(keep);
                    if *have < V2_FIXED && got < (V2_FIXED - *have).min(n) {
                        // The length field went by uncaptured.
                        return self.malformed(total, 2);
                    }
                    // Address bytes uncaptured read as zeros: the length still says where it ends.
                    buf[*have..*have + got].copy_from_slice(&avail[..got]);
                    buf[*have + got..*have + keep].fill(0);
                    if *have <= 13 && *have + got > 13 {
                        self.v2_family = Some(buf[13]);
                    }
                    *have += n;
                    i += n;
                    if *have == V2_FIXED && *whole == V2_FIXED {
                        *whole = V2_FIXED + u16::from_be_bytes([buf[14], buf[15]]) as usize;
                    }
                    if *have == *whole {
                        let kept = (*have).min(buf.len());
                        let found = parse_v2(&buf[..kept], *whole);
                        self.finish(found, 2);
                    }
                }
            }
        }
    }

    fn finish(&mut self, header: Option<ProxyHeader>, version: u8) {
        self.found = Some(match header {
            Some(h) => ProxyFound::Header(h),
            None => ProxyFound::Malformed { version },
        });
        self.state = State::Done;
    }

    /// The header cannot be whole: the rest of the transfer is taken as its.
    fn malformed(&mut self, total: usize, version: u8) -> Taken {
        self.finish(None, version);
        Taken { replay: &[], header: total }
    }
}

/// "PROXY TCP4 src dst sport dport\r\n", "PROXY TCP6 …", or "PROXY UNKNOWN …\r\n".
fn parse_v1(line: &[u8]) -> Option<ProxyHeader> {
    let text = std::str::from_utf8(line.strip_suffix(b"\r\n")?).ok()?;
    let mut words = text.split(' ');
    let (_proxy, family) = (words.next()?, words.next()?);
    let header = |source, destination| Some(ProxyHeader { version: 1, source, destination, len: line.len() });
    let v6 = match family {
        "UNKNOWN" => return header(None, None),
        "TCP4" => false,
        "TCP6" => true,
        _ => return None,
    };
    let ip = |w: Option<&str>| -> Option<IpAddr> {
        let ip: IpAddr = w?.parse().ok()?;
        (ip.is_ipv6() == v6).then_some(ip)
    };
    let port = |w: Option<&str>| -> Option<u16> {
        let w = w?;
        // Decimal, no sign, no leading zero (the specification's form).
        (!w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()) && (w == "0" || !w.starts_with('0'))).then(|| w.parse().ok())?
    };
    let (src, dst) = (ip(words.next())?, ip(words.next())?);
    let (sport, dport) = (port(words.next())?, port(words.next())?);
    if words.next().is_some() {
        return None;
    }
    header(Some(SocketAddr::new(src, sport)), Some(SocketAddr::new(dst, dport)))
}

/// A v2 header: `kept` its first bytes (fixed part and up to a TCP6 address block),
/// `whole` its length.
fn parse_v2(kept: &[u8], whole: usize) -> Option<ProxyHeader> {
    let (ver_cmd, family) = (kept[12], kept[13]);
    if ver_cmd >> 4 != 2 {
        return None;
    }
    let header = |source, destination| Some(ProxyHeader { version: 2, source, destination, len: whole });
    match ver_cmd & 0x0f {
        // LOCAL: the proxy speaking for itself; the address block is ignored.
        0 => return header(None, None),
        1 => {}
        _ => return None,
    }
    let addr = &kept[V2_FIXED..];
    let len = whole - V2_FIXED;
    let port = |at: usize| u16::from_be_bytes([addr[at], addr[at + 1]]);
    match family {
        // TCP4, UDP4: 4 + 4 + 2 + 2.
        0x11 | 0x12 if len >= 12 => {
            let ip = |at: usize| IpAddr::V4(Ipv4Addr::new(addr[at], addr[at + 1], addr[at + 2], addr[at + 3]));
            header(Some(SocketAddr::new(ip(0), port(8))), Some(SocketAddr::new(ip(4), port(10))))
        }
        // TCP6, UDP6: 16 + 16 + 2 + 2.
        0x21 | 0x22 if len >= 36 => {
            let ip = |at: usize| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&addr[at..at + 16]).expect("16 bytes")));
            header(Some(SocketAddr::new(ip(0), port(32))), Some(SocketAddr::new(ip(16), port(34))))
        }
        // UNSPEC, UNIX (no ports): the server keeps the proxy's address.
        0x00 | 0x31 | 0x32 => header(None, None),
        _ => None,
    }
}

/// A v1 header for `source` → `destination` (same family), for the lab and the tests.
pub fn v1_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!("PROXY {family} {} {} {} {}\r\n", source.ip(), destination.ip(), source.port(), destination.port()).into_bytes()
}

/// A v2 PROXY header for `source` → `destination` (same family) with `tlv` bytes after
/// the addresses, for the lab and the tests.
pub fn v2_header(source: SocketAddr, destination: SocketAddr, tlv: &[u8]) -> Vec<u8> {
    let mut addr = Vec::new();
    let family = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            addr.extend_from_slice(&s.octets());
            addr.extend_from_slice(&d.octets());
            0x11
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            addr.extend_from_slice(&v6(s).octets());
            addr.extend_from_slice(&v6(d).octets());
            0x21
        }
    };
    addr.extend_from_slice(&source.port().to_be_bytes());
    addr.extend_from_slice(&destination.port().to_be_bytes());
    addr.extend_from_slice(tlv);
    let mut h = V2_SIG.to_vec();
    h.push(0x21);
    h.push(family);
    h.extend_from_slice(&(addr.len() as u16).to_be_bytes());
    h.extend_from_slice(&addr);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// The stream after the header (replayed bytes and the rest), and what was found,
    /// feeding `bytes` in transfers of the given sizes.
    fn run(bytes: &[u8], sizes: &[usize]) -> (Vec<u8>, Option<ProxyFound>) {
        let mut s = ProxySniffer::new();
        let mut rest = Vec::new();
        let mut at = 0;
        for &n in sizes.iter().chain(std::iter::repeat(&1usize)) {
            if at >= bytes.len() {
                break;
            }
            let chunk = &bytes[at..(at + n).min(bytes.len())];
            let t = s.take(chunk, chunk.len());
            rest.extend_from_slice(t.replay);
            rest.extend_from_slice(&chunk[t.header..]);
            at += chunk.len();
        }
        (rest, s.found().cloned())
    }

    const LOGIN: &[u8] = b"\x20\x00\x00\x01login-bytes";

    #[test]
    fn v1_in_one_transfer_and_byte_by_byte() {
        let h = v1_header(a("127.0.0.31:40000"), a("127.0.0.1:3306"));
        let whole = [h.as_slice(), LOGIN].concat();
        let want = ProxyFound::Header(ProxyHeader {
            version: 1,
            source: Some(a("127.0.0.31:40000")),
            destination: Some(a("127.0.0.1:3306")),
            len: h.len(),
        });
        for sizes in [&[whole.len()][..], &[4][..], &[1][..], &[3, 100][..]] {
            let (rest, found) = run(&whole, sizes);
            assert_eq!(found.as_ref(), Some(&want), "{sizes:?}");
            assert_eq!(rest, LOGIN, "{sizes:?}");
        }
    }

    #[test]
    fn v1_tcp6_and_unknown() {
        let h = v1_header(a("[2001:db8::1]:5000"), a("[::1]:3306"));
        let (_, found) = run(&h, &[h.len()]);
        let Some(ProxyFound::Header(p)) = found else { panic!("{found:?}") };
        assert_eq!(p.source, Some(a("[2001:db8::1]:5000")));
        let (rest, found) = run(b"PROXY UNKNOWN\r\nX", &[4]);
        assert_eq!(found, Some(ProxyFound::Header(ProxyHeader { version: 1, source: None, destination: None, len: 15 })));
        assert_eq!(rest, b"X");
    }

    #[test]
    fn v1_malformed_and_too_long() {
        for bad in [&b"PROXY TCP4 garbage\r\n"[..], b"PROXY TCP4 127.0.0.1 127.0.0.1 01 2\r\n", b"PROXY TCP4 ::1 127.0.0.1 1 2\r\n", b"PROXY TCP4 1.2.3.4 1.2.3.4 70000 1\r\n"] {
            assert_eq!(run(bad, &[bad.len()]).1, Some(ProxyFound::Malformed { version: 1 }), "{:?}", String::from_utf8_lossy(bad));
        }
        // No end of line within 107 bytes: given up there, the rest is not framed.
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        let mut s = ProxySniffer::new();
        let t = s.take(&long, long.len());
        assert_eq!(t.header, long.len());
        assert_eq!(s.found(), Some(&ProxyFound::Malformed { version: 1 }));
    }

    #[test]
    fn v2_with_tlvs_skipped_in_any_split() {
        let tlv = [0x04u8, 0x00, 0x05, 1, 2, 3, 4, 5]; // PP2_TYPE_NOOP, 5 bytes
        let h = v2_header(a("127.0.0.31:40001"), a("127.0.0.1:3306"), &tlv);
        assert_eq!(h.len(), 16 + 12 + tlv.len());
        let whole = [h.as_slice(), LOGIN].concat();
        for sizes in [&[whole.len()][..], &[4][..], &[1][..], &[13, 2, 40][..]] {
            let (rest, found) = run(&whole, sizes);
            let Some(ProxyFound::Header(p)) = found else { panic!("{sizes:?}: {found:?}") };
            assert_eq!((p.version, p.source, p.len), (2, Some(a("127.0.0.31:40001")), h.len()), "{sizes:?}");
            assert_eq!(rest, LOGIN, "{sizes:?}");
        }
        let h6 = v2_header(a("[2001:db8::7]:1"), a("[::1]:3306"), &[]);
        let Some(ProxyFound::Header(p)) = run(&h6, &[100]).1 else { panic!() };
        assert_eq!(p.source, Some(a("[2001:db8::7]:1")));
    }

    #[test]
    fn v2_tlvs_past_the_capture_are_skipped_by_count() {
        let h = v2_header(a("127.0.0.31:40001"), a("127.0.0.1:3306"), &[0u8; 300]);
        let mut s = ProxySniffer::new();
        // 256 bytes captured of the header and 10 bytes after it.
        let t = s.take(&h[..256], h.len() + 10);
        assert_eq!(t.header, h.len());
        assert!(matches!(s.found(), Some(ProxyFound::Header(p)) if p.source == Some(a("127.0.0.31:40001"))));
    }

    #[test]
    fn v2_local_and_bad_version() {
        let mut local = v2_header(a("127.0.0.1:1"), a("127.0.0.1:2"), &[]);
        local[12] = 0x20;
        assert!(matches!(run(&local, &[64]).1, Some(ProxyFound::Header(ProxyHeader { source: None, .. }))));
        let mut bad = local.clone();
        bad[12] = 0x11;
        assert_eq!(run(&bad, &[64]).1, Some(ProxyFound::Malformed { version: 2 }));
    }

    #[test]
    fn a_header_read_no_further_than_its_first_bytes_is_unfinished() {
        let mut s = ProxySniffer::new();
        s.take(b"PRO", 3);
        assert_eq!(s.unfinished(), None, "3 bytes: not yet a packet header's worth");
        s.take(b"X", 1);
        assert_eq!(s.unfinished(), Some(1));
        let mut s = ProxySniffer::new();
        s.take(&V2_SIG[..4], 4);
        assert_eq!(s.unfinished(), Some(2));
        let whole = v1_header(a("127.0.0.31:1"), a("127.0.0.1:2"));
        let mut s = ProxySniffer::new();
        s.take(&whole, whole.len());
        assert_eq!(s.unfinished(), None, "finished");
    }

    #[test]
    fn no_header_gives_back_every_byte() {
        // A login's header, and bytes that start like a signature then differ.
        for (stream, sizes) in [(LOGIN, &[4][..]), (b"PROXz-not-one".as_slice(), &[2, 1, 1][..]), (b"\r\n\r\nX".as_slice(), &[1][..])] {
            let (rest, found) = run(stream, sizes);
            assert_eq!(rest, stream, "{:?}", String::from_utf8_lossy(stream));
            assert_eq!(found, None);
        }
        // The first byte uncaptured: no header, nothing taken.
        let mut s = ProxySniffer::new();
        assert_eq!(s.take(&[], 10), Taken::default());
        assert!(s.decided());
    }
}
