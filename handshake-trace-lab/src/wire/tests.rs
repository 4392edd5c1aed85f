//! The lab's wire code: SHA-1 and native passwords against reference values, its
//! greeting and login byte for byte, the strict parsers on every cut and on garbage.
use handshake_trace::protocol::builders::{self, push_cstr, push_lenenc_bytes};
use handshake_trace::protocol::{Reader, CLIENT_CONNECT_ATTRS, CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA, CLIENT_SSL};

use super::*;
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Tiny deterministic PRNG for the fuzz tests.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn byte(&mut self) -> u8 {
        (self.next() >> 24) as u8
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SCRAMBLE: [u8; 20] = *b"abcdefgh!#$%&()*+,-.";

/// Payload (header stripped) of a single packet.
fn only_payload(pkt: &[u8]) -> Vec<u8> {
    let mut p = split_packets(pkt).unwrap();
    assert_eq!(p.len(), 1);
    p.remove(0).1
}

/// A login's fixed part (max packet 16 MiB, charset 45) and the user.
fn base_login(caps: u32, user: &str) -> Vec<u8> {
    let mut p = builders::ssl_request(caps, 0x0100_0000, 45, 0);
    push_cstr(&mut p, user);
    p
}

#[test]
fn sha1_fips_vectors() {
    assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    assert_eq!(hex(&sha1(b"abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
    let nist448 = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    assert_eq!(nist448.len() * 8, 448);
    assert_eq!(hex(&sha1(nist448)), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    assert_eq!(hex(&sha1(&vec![b'a'; 1_000_000])), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
}

#[test]
fn sha1_padding_boundaries() {
    // Lengths around 55/56/64 take the one- vs two-block padding paths;
    // a bug there gives equal digests for different inputs or panics.
    let digests: Vec<_> = (50..=70).map(|n| sha1(&vec![b'x'; n])).collect();
    for (i, a) in digests.iter().enumerate() {
        for b in &digests[i + 1..] {
            assert_ne!(a, b);
        }
    }
    // 64 bytes of 'a': a known value from a reference implementation.
    assert_eq!(hex(&sha1(&[b'a'; 64])), "0098ba824b5c16427bd7a1122a5a442a25ec644d");
}

#[test]
fn native_password_stage2_matches_mysql_password_hash() {
    let stage2 = sha1(&sha1(b"secret"));
    assert_eq!(hex(&stage2).to_uppercase(), "14E65567ABDB5135D0CFD9A70B3032C179A49EE7");
}

#[test]
fn native_password_round_trip_and_rejections() {
    let resp = native_password_response("secret", &SCRAMBLE);
    assert_eq!(resp.len(), 20);
    assert!(native_password_check("secret", &SCRAMBLE, &resp));
    assert!(!native_password_check("Secret", &SCRAMBLE, &resp));
    assert!(!native_password_check("", &SCRAMBLE, &resp));
    for i in 0..resp.len() {
        let mut bad = resp.clone();
        bad[i] ^= 0x01;
        assert!(!native_password_check("secret", &SCRAMBLE, &bad), "byte {i}");
    }
    assert!(!native_password_check("secret", &SCRAMBLE, &resp[..19]));
    // Another scramble gives another response.
    let mut other = SCRAMBLE;
    other[19] ^= 0x01;
    assert_ne!(native_password_response("secret", &other), resp);
    assert!(!native_password_check("secret", &other, &resp));
    // The XOR undoes: response XOR SHA1(scramble ++ stage2) is SHA1(password).
    let mut salted = SCRAMBLE.to_vec();
    salted.extend_from_slice(&sha1(&sha1(b"secret")));
    let unmasked: Vec<u8> = resp.iter().zip(sha1(&salted)).map(|(r, m)| r ^ m).collect();
    assert_eq!(unmasked, sha1(b"secret"));
}

#[test]
fn native_password_empty_rules() {
    assert!(native_password_response("", &SCRAMBLE).is_empty());
    assert!(native_password_check("", &SCRAMBLE, &[]));
    assert!(!native_password_check("", &SCRAMBLE, &[0]));
    assert!(!native_password_check("secret", &SCRAMBLE, &[]));
}

#[test]
fn random_scramble_is_printable() {
    let a = random_scramble().unwrap();
    let b = random_scramble().unwrap();
    assert!(a.iter().chain(&b).all(|c| (0x21..=0x7e).contains(c)));
    assert_ne!(a, b, "two 20-byte draws should differ");
}

#[test]
fn server_capabilities_value() {
    assert_eq!(SERVER_CAPABILITIES, 0x000a_a20f);
    assert_eq!(SERVER_CAPABILITIES & (CLIENT_SSL | CLIENT_CONNECT_ATTRS), 0);
}

#[test]
fn greeting_layout() {
    let pkt = greeting_packet(&ServerHello { version: "8.0.0-lab", connection_id: 0x0102_0304, scramble: &SCRAMBLE });
    let len = u32::from_le_bytes([pkt[0], pkt[1], pkt[2], 0]) as usize;
    assert_eq!(len, pkt.len() - 4);
    assert_eq!(pkt[3], 0, "seq");
    let p = &pkt[4..];
    assert_eq!(greeting_scramble(p), Some(SCRAMBLE));
    assert_eq!(p[0], 10);
    assert_eq!(&p[1..11], b"8.0.0-lab\0");
    let r = &p[11..];
    assert_eq!(&r[..4], &[0x04, 0x03, 0x02, 0x01]);
    assert_eq!(&r[4..12], &SCRAMBLE[..8]);
    assert_eq!(r[12], 0);
    assert_eq!(u16::from_le_bytes([r[13], r[14]]), 0xa20f);
    assert_eq!(r[15], 33);
    assert_eq!(u16::from_le_bytes([r[16], r[17]]), 0x0002);
    assert_eq!(u16::from_le_bytes([r[18], r[19]]), 0x000a);
    assert_eq!(r[20], 21);
    assert_eq!(&r[21..31], &[0; 10]);
    assert_eq!(&r[31..43], &SCRAMBLE[8..]);
    assert_eq!(r[43], 0);
    assert_eq!(&r[44..], b"mysql_native_password\0");
}

#[test]
fn greeting_scramble_rejects_malformed() {
    let pkt = greeting_packet(&ServerHello { version: "v", connection_id: 7, scramble: &SCRAMBLE });
    let p = &pkt[4..];
    // Everything up to the end of scramble part 2 is required.
    let needed = 1 + 2 + 4 + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10 + 12;
    for n in 0..p.len() {
        assert_eq!(greeting_scramble(&p[..n]).is_some(), n >= needed, "prefix {n}");
    }
    let err = err_packet(0, 1129, "HY000", "Host is blocked");
    assert_eq!(greeting_scramble(&err[4..]), None);
    let mut no_secure = p.to_vec();
    no_secure[1 + 2 + 4 + 8 + 1 + 1] &= !((CLIENT_SECURE_CONNECTION >> 8) as u8);
    assert_eq!(greeting_scramble(&no_secure), None);
}

#[test]
fn login_packet_round_trip() {
    let pkt = login_packet("lab", "secret", &SCRAMBLE, Some("test"));
    let len = u32::from_le_bytes([pkt[0], pkt[1], pkt[2], 0]) as usize;
    assert_eq!(len, pkt.len() - 4);
    assert_eq!(pkt[3], 1, "seq");
    let req = parse_login(&pkt[4..]).unwrap();
    assert_eq!(req.login.user, "lab");
    assert_eq!(req.login.database.as_deref(), Some("test"));
    assert_eq!(req.login.auth_plugin.as_deref(), Some(NATIVE_PASSWORD_PLUGIN));
    assert_eq!(req.login.capabilities, LAB_CLIENT_CAPABILITIES | CLIENT_CONNECT_WITH_DB);
    assert!(native_password_check("secret", &SCRAMBLE, &req.auth_response));
    assert!(!native_password_check("other", &SCRAMBLE, &req.auth_response));
    assert_eq!(&pkt[8..12], &0x0100_0000u32.to_le_bytes(), "max packet 16 MiB");
    assert_eq!(pkt[12], 33);
    assert!(!format!("{req:?}").contains(&format!("{:?}", req.auth_response)));

    let req = parse_login(&only_payload(&login_packet("root", "", &SCRAMBLE, None))).unwrap();
    assert_eq!(req.login.user, "root");
    assert_eq!(req.login.database, None);
    assert_eq!(req.login.capabilities & CLIENT_CONNECT_WITH_DB, 0);
    assert!(req.auth_response.is_empty());
    assert!(native_password_check("", &SCRAMBLE, &req.auth_response));
}

#[test]
fn parse_login_lenenc_auth_with_attributes() {
    let caps = CLIENT_PROTOCOL_41
        | CLIENT_SECURE_CONNECTION
        | CLIENT_PLUGIN_AUTH
        | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CLIENT_CONNECT_WITH_DB
        | CLIENT_CONNECT_ATTRS;
    // 300 bytes: a 1-byte length reader would misparse this.
    let auth: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    let mut p = base_login(caps, "alice");
    p.extend_from_slice(&[0xfc, 0x2c, 0x01]);
    p.extend_from_slice(&auth);
    p.extend_from_slice(b"shop\0caching_sha2_password\0");
    // Connection attributes: total length, then key/value lenenc strings.
    let mut attrs = Vec::new();
    for s in ["_client_name", "libmariadb", "_pid", "4242"] {
        push_lenenc_bytes(&mut attrs, s.as_bytes());
    }
    push_lenenc_bytes(&mut p, &attrs);
    let req = parse_login(&p).unwrap();
    assert_eq!(req.login.user, "alice");
    assert_eq!(req.auth_response, auth);
    assert_eq!(req.login.database.as_deref(), Some("shop"));
    assert_eq!(req.login.auth_plugin.as_deref(), Some("caching_sha2_password"));
    assert_eq!(req.login.capabilities, caps);

    // PyMySQL's shape: LENENC flag set, 20-byte response, no attributes sent.
    let resp = native_password_response("pw", &SCRAMBLE);
    let mut p = base_login(caps, "bob");
    p.push(20);
    p.extend_from_slice(&resp);
    p.extend_from_slice(b"\0mysql_native_password\0");
    let req = parse_login(&p).unwrap();
    assert_eq!(req.login.database, None, "empty database means none");
    assert!(native_password_check("pw", &SCRAMBLE, &req.auth_response));
    assert_eq!(req.login.auth_plugin.as_deref(), Some(NATIVE_PASSWORD_PLUGIN));
}

#[test]
fn parse_login_other_encodings() {
    // SECURE_CONNECTION without database.
    let caps = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH;
    let mut p = base_login(caps, "carol");
    p.push(3);
    p.extend_from_slice(&[0, 1, 2]); // NULs inside a length-prefixed response are data
    p.extend_from_slice(b"mysql_native_password\0");
    let req = parse_login(&p).unwrap();
    assert_eq!(req.auth_response, vec![0, 1, 2]);
    assert_eq!(req.login.database, None);
    assert_eq!(req.login.auth_plugin.as_deref(), Some(NATIVE_PASSWORD_PLUGIN));

    // Pre-SECURE_CONNECTION: NUL-terminated response, no plugin.
    let caps = CLIENT_PROTOCOL_41 | CLIENT_CONNECT_WITH_DB;
    let mut p = base_login(caps, "dave");
    p.extend_from_slice(b"xyz\0db1\0");
    let req = parse_login(&p).unwrap();
    assert_eq!(req.auth_response, b"xyz");
    assert_eq!(req.login.database.as_deref(), Some("db1"));
    assert_eq!(req.login.auth_plugin, None);

    // No PROTOCOL_41.
    let mut p = base_login(CLIENT_SECURE_CONNECTION, "eve");
    p.push(0);
    assert_eq!(parse_login(&p), None);

    // Auth length beyond the packet; lenenc 0xfb/0xff are not lengths.
    let mut p = base_login(CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION, "f");
    p.extend_from_slice(&[20, 1, 2, 3]);
    assert_eq!(parse_login(&p), None);
    for bad in [0xfb, 0xff] {
        let mut p = base_login(CLIENT_PROTOCOL_41 | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA, "g");
        p.push(bad);
        assert_eq!(parse_login(&p), None);
    }
    let mut p = base_login(CLIENT_PROTOCOL_41 | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA, "h");
    p.push(0xfe);
    p.extend_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(parse_login(&p), None);
}

#[test]
fn parse_login_every_truncation() {
    let full = only_payload(&login_packet("lab", "secret", &SCRAMBLE, Some("test")));
    let whole = parse_login(&full).unwrap();
    let without_plugin = full.len() - NATIVE_PASSWORD_PLUGIN.len() - 1;
    for n in 0..full.len() {
        match parse_login(&full[..n]) {
            // Only the packet that ends exactly before the plugin name is complete.
            Some(req) => {
                assert_eq!(n, without_plugin, "prefix {n} parsed");
                assert_eq!(
                    req,
                    LoginRequest { login: Login { auth_plugin: None, ..whole.login.clone() }, ..whole.clone() }
                );
            }
            None => assert_ne!(n, without_plugin, "prefix {n} rejected"),
        }
    }
}

#[test]
fn parsers_survive_fuzz() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let valid = only_payload(&login_packet("lab", "secret", &SCRAMBLE, Some("test")));
    let greeting = greeting_packet(&ServerHello { version: "v", connection_id: 1, scramble: &SCRAMBLE });
    let mut parsed = 0;
    for round in 0..20_000 {
        let input: Vec<u8> = match round % 4 {
            0 => (0..rng.below(300)).map(|_| rng.byte()).collect(),
            1 => {
                // Random tail behind a PROTOCOL_41 header, to get past the first checks.
                let mut v = valid[..32].to_vec();
                v[0] = rng.byte();
                v[2] = rng.byte();
                v[1] |= 0x02;
                v.extend((0..rng.below(80)).map(|_| rng.byte()));
                v
            }
            2 => {
                let mut v = valid.clone();
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(v.len());
                    v[i] = rng.byte();
                }
                v
            }
            _ => {
                let mut v = greeting.clone();
                let i = rng.below(v.len());
                v[i] = rng.byte();
                v.truncate(rng.below(v.len() + 1));
                v
            }
        };
        if parse_login(&input).is_some() {
            parsed += 1;
        }
        let _ = is_ssl_request(&input);
        let _ = greeting_scramble(&input);
        let _ = greeting_scramble(input.get(4..).unwrap_or(&[]));
        let _ = split_packets(&input);
    }
    // The mutation rounds must actually reach the success path sometimes.
    assert!(parsed > 100, "only {parsed} fuzz inputs parsed");
}

#[test]
fn ssl_request_detection() {
    // An SSLRequest is just the 32-byte fixed part of a login.
    let mut p = base_login(CLIENT_PROTOCOL_41 | CLIENT_SSL, "");
    p.truncate(32);
    assert!(is_ssl_request(&p));
    assert!(!is_ssl_request(&p[..31]));
    let mut no_ssl = p.clone();
    no_ssl[1] &= !0x08;
    assert!(!is_ssl_request(&no_ssl));
    let login = only_payload(&login_packet("lab", "x", &SCRAMBLE, None));
    assert!(!is_ssl_request(&login));
    assert_eq!(parse_login(&p), None);
}

#[test]
fn ok_and_err_exact_bytes() {
    assert_eq!(ok_packet(2), vec![7, 0, 0, 2, 0x00, 0, 0, 0x02, 0x00, 0, 0]);
    let mut expected = vec![22, 0, 0, 2, 0xff, 0x15, 0x04, b'#'];
    expected.extend_from_slice(b"28000");
    expected.extend_from_slice(b"Access denied");
    assert_eq!(err_packet(2, 1045, "28000", "Access denied"), expected);
    // A malformed state falls back to HY000 so the packet stays well-formed.
    let e = err_packet(0, 1, "bad", "m");
    assert_eq!(&e[8..13], b"HY000");
}

#[test]
fn result_set_packets() {
    let long = "x".repeat(300);
    let rows = vec![Some("1".to_string()), None, Some(long.clone()), Some(String::new())];
    let buf = result_set(1, "@@version_comment", &rows);
    let pkts = split_packets(&buf).unwrap();
    assert_eq!(pkts.len(), 1 + 1 + 1 + rows.len() + 1);
    for (i, (seq, _)) in pkts.iter().enumerate() {
        assert_eq!(usize::from(*seq), 1 + i, "seq of packet {i}");
    }
    assert_eq!(pkts[0].1, vec![1]);

    let mut d = Reader::new(&pkts[1].1);
    let mut lenenc_str = || d.lenenc_bytes().unwrap().to_vec();
    assert_eq!(lenenc_str(), b"def");
    for _ in 0..3 {
        assert_eq!(lenenc_str(), b"");
    }
    assert_eq!(lenenc_str(), b"@@version_comment");
    assert_eq!(lenenc_str(), b"@@version_comment");
    assert_eq!(d.rest(), &[0x0c, 33, 0, 255, 0, 0, 0, 0xfd, 0, 0, 0, 0, 0]);

    let eof = vec![0xfe, 0, 0, 0x02, 0];
    assert_eq!(pkts[2].1, eof);
    assert_eq!(pkts[3].1, b"\x011");
    assert_eq!(pkts[4].1, vec![0xfb]);
    let mut long_row = vec![0xfc, 0x2c, 0x01];
    long_row.extend_from_slice(long.as_bytes());
    assert_eq!(pkts[5].1, long_row);
    assert_eq!(pkts[6].1, vec![0]);
    assert_eq!(pkts[7].1, eof);

    // Sequence ids wrap like a real server's.
    let pkts = split_packets(&result_set(254, "c", &[])).unwrap();
    let seqs: Vec<u8> = pkts.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![254, 255, 0, 1]);
}
