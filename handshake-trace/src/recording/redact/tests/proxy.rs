//! A PROXY protocol header (HAProxy `send-proxy`, `send-proxy-v2`) before the login:
//! the redactor keeps it (a v2 header's TLVs zeroed), then still finds and zeroes the
//! login's secrets after it, however the server read it.
use super::*;
use crate::protocol::proxy::{v1_header, v2_header};

/// A v2 TLV (PP2_TYPE_UNIQUE_ID, 0x05) of 12 bytes: nothing the decoder needs.
const TLV: [u8; 15] = [0x05, 0x00, 0x0c, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0xaa, 0xbb, 0xcc];

/// A proxied login as MariaDB reads it: the greeting, the header in `header_reads`
/// (sizes), the login's header and body, OK. Returns the records and the client
/// stream's secrets.
fn proxied(header: &[u8], header_reads: &[usize], tlv_at: Option<usize>) -> (Vec<Vec<u8>>, Ranges) {
    let (g, _) = greeting();
    let (l, auth) = login(LOGIN_CAPS, &AUTH_RESPONSE, 0);
    let lf = frame(1, &l);
    let mut recs = vec![accept_rec(GEN), write(GEN + 10, &frame(0, &g))];
    let mut at = 0;
    for (i, &n) in header_reads.iter().chain(std::iter::repeat(&1)).enumerate() {
        if at == header.len() {
            break;
        }
        let n = n.min(header.len() - at);
        recs.push(read(GEN + 20 + i as u64, &header[at..at + n]));
        at += n;
    }
    recs.extend([read(GEN + 500, &lf[..4]), read(GEN + 510, &lf[4..]), write(GEN + 520, &frame(2, &ok_body()))]);
    let mut secrets = vec![header.len() + 4 + auth.start..header.len() + 4 + auth.end];
    if let Some(t) = tlv_at {
        secrets.push(t..t + TLV.len());
    }
    (recs, secrets)
}

fn check(header: &[u8], header_reads: &[usize], tlv_at: Option<usize>) {
    let (recs, secrets) = proxied(header, header_reads, tlv_at);
    let red = redact_all(&recs);
    assert_only_secrets_changed(&stream(&recs, true), &stream(&red, true), &secrets, &[]);
    let (before, after) = (correlate(&recs), correlate(&red));
    assert_eq!(before, after);
    assert!(after.contains(r#""client":"127.0.0.31:40000""#), "{after}");
    assert!(after.contains(r#""via":"127.0.0.1:51234""#), "{after}");
    assert!(after.contains(r#""user":"lab""#), "{after}");
    assert!(after.contains(r#""verdict":"ok""#), "{after}");
}

#[test]
fn v1_header_read_byte_by_byte_then_the_login() {
    // MariaDB reads a packet header's 4 bytes, then the rest of a v1 line one at a time.
    let h = v1_header("127.0.0.31:40000".parse().unwrap(), "127.0.0.1:3306".parse().unwrap());
    check(&h, &[4], None);
    // Or all at once (the socket tier's packet).
    check(&h, &[h.len()], None);
}

#[test]
fn v2_header_keeps_its_addresses_and_loses_its_tlvs() {
    let h = v2_header("127.0.0.31:40000".parse().unwrap(), "127.0.0.1:3306".parse().unwrap(), &TLV);
    let tlv_at = 16 + 12;
    check(&h, &[4, 12, h.len() - 16], Some(tlv_at));
    check(&h, &[h.len()], Some(tlv_at));
    check(&h, &[1], Some(tlv_at));
}

#[test]
fn header_and_login_in_one_read() {
    // A health check's segment: header and login together, read at once.
    let h = v1_header("127.0.0.31:40000".parse().unwrap(), "127.0.0.1:3306".parse().unwrap());
    let (recs, secrets) = proxied(&h, &[h.len()], None);
    // Merge the header read and the login's two reads into one.
    let client = stream(&recs[2..5], true);
    let merged = vec![recs[0].clone(), recs[1].clone(), read(GEN + 20, &client), recs[5].clone()];
    let red = redact_all(&merged);
    assert_only_secrets_changed(&stream(&merged, true), &stream(&red, true), &secrets, &[]);
    assert_eq!(correlate(&merged), correlate(&red));
    assert!(correlate(&red).contains(r#""user":"lab""#));
}

/// The greeting, a header, then the server's ERR (as MariaDB 10.11 sends it, seq 1,
/// before reading any login) and the server's close.
fn refused(header: &[u8], code: u16, message: &str) -> String {
    let (g, _) = greeting();
    let recs = vec![
        accept_rec(GEN),
        write(GEN + 10, &frame(0, &g)),
        read(GEN + 20, header),
        write(GEN + 30, &frame(1, &builders::err(code, "HY000", message))),
        sys_rec(GEN + 40, sys::CLOSE, 0, [FD as u64, 0, 0, 0]),
    ];
    let red = redact_all(&recs);
    assert_eq!(correlate(&recs), correlate(&red));
    correlate(&red)
}

#[test]
fn a_header_from_an_untrusted_proxy_is_refused_with_its_own_reason() {
    let h = v1_header("127.0.0.31:40000".parse().unwrap(), "127.0.0.1:3306".parse().unwrap());
    let out = refused(&h, 1130, "Proxy header is not accepted from 127.0.0.1");
    assert!(out.contains(r#""verdict":"server_error""#), "{out}");
    assert!(out.contains("the server refused the PROXY protocol header: ERR 1130"), "{out}");
    assert!(out.contains("proxy_protocol_networks"), "{out}");
    // ERR 1130 for the client host the header named (its account is not allowed from
    // there) is no refused header.
    let out = refused(&h, 1130, "Host '127.0.0.31' is not allowed to connect to this MariaDB server");
    assert!(out.contains("the server sent ERR 1130 ER_HOST_NOT_PRIVILEGED"), "{out}");
    assert!(!out.contains("PROXY protocol header:"), "{out}");
}

#[test]
fn a_header_refused_after_its_first_four_bytes_is_still_a_refused_header() {
    // The syscall tier sees what MariaDB reads: from an untrusted address, 4 bytes.
    let out = refused(b"PROX", 1130, "Proxy header is not accepted from 127.0.0.1");
    assert!(out.contains("the server refused the PROXY protocol header: ERR 1130"), "{out}");
    // Which client it named was never read: the connection's peer stays the client.
    assert!(out.contains(r#""client":"127.0.0.1:51234""#) && !out.contains(r#""via""#), "{out}");
}

#[test]
fn a_header_that_is_not_valid_is_refused_as_malformed() {
    let out = refused(b"PROXY TCP4 garbage\r\n", 1105, "Failed to parse proxy header");
    assert!(out.contains(r#""verdict":"server_error""#), "{out}");
    assert!(out.contains("the server could not parse the PROXY protocol header"), "{out}");
    assert!(out.contains("PROXY protocol v1 header that is not valid"), "{out}");
    // No `via`: the header named nobody.
    assert!(!out.contains(r#""via""#), "{out}");
}

/// The correlator's handshakes from the records.
fn handshakes(records: &[Vec<u8>]) -> Vec<crate::correlate::Handshake> {
    let mut c = Correlator::new(100);
    let mut out = Vec::new();
    for rec in records {
        if let Ok(ev) = decode(rec) {
            out.extend(c.push(&ev, None));
        }
    }
    out.extend(c.finish_all(u64::MAX / 2));
    out
}

#[test]
fn filters_and_groups_use_the_client_the_header_named() {
    use crate::pipeline::{
        groups::{ClientHost, GroupKey},
        select::Selection,
    };
    let h = v1_header("127.0.0.31:40000".parse().unwrap(), "127.0.0.1:3306".parse().unwrap());
    let (recs, _) = proxied(&h, &[4], None);
    let hs = handshakes(&recs);
    assert_eq!(hs.len(), 1);
    let client = |c: &str| Selection { clients: vec![c.parse().unwrap()], ..Default::default() };
    assert!(client("127.0.0.31").admits(&hs[0]), "--client of the relayed client");
    assert!(!client("127.0.0.1").admits(&hs[0]), "--client of the proxy");
    assert_eq!(GroupKey::of(&hs[0]).unwrap().host, ClientHost::Ip("127.0.0.31".parse().unwrap()));
    assert_eq!(hs[0].via, Some("127.0.0.1:51234".parse().unwrap()));
}

#[test]
fn reads_of_the_header_say_so() {
    // MariaDB's 4-byte read, then one byte at a time: each a step about the header.
    let h = v1_header("127.0.0.31:40000".parse().unwrap(), "127.0.0.1:3306".parse().unwrap());
    let (recs, _) = proxied(&h, &[4], None);
    let hs = handshakes(&recs);
    let clock = crate::support::clock::Clock::with_offset(0);
    let text = crate::output::handshake_timeline(&hs[0], &clock);
    let header_reads = text.lines().filter(|l| l.contains("recvfrom of the PROXY protocol header")).count();
    assert_eq!(header_reads, h.len() - 3, "{text}");
    assert!(text.contains("(16384 bytes) → 4 bytes; part of a PROXY protocol v1 header"), "{text}");
    assert!(text.contains("PROXY protocol v1 header: the proxy relays client 127.0.0.31:40000"), "{text}");
    assert!(text.contains("recvfrom of the login (16384 bytes) → 4 bytes\n"), "the login's header is the login's: {text}");
}
