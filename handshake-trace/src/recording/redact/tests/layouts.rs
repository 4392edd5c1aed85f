//! Every login layout, random auth bytes (zeros included), split anyhow across
//! records: no auth byte survives redaction, and the decoder never shows auth bytes as
//! a user, database, plugin or attribute (issue 17: a NUL-terminated response with a
//! zero byte kept 15 of its 20 bytes, decoded as the database).
use super::*;

const DB: &str = "shop";
const PLUGIN: &str = "mysql_native_password";

/// Random bytes, about one in four of them zero.
fn auth_bytes(rng: &mut XorShift) -> Vec<u8> {
    let n = rng.below(41);
    (0..n).map(|_| if rng.below(4) == 0 { 0 } else { 1 + rng.below(255) as u8 }).collect()
}

/// The framed login split at random points into reads.
fn split_reads(rng: &mut XorShift, frame: &[u8]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = (0..rng.below(4)).map(|_| rng.below(frame.len())).collect();
    cuts.extend([0, frame.len()]);
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2).enumerate().map(|(i, w)| read(GEN + 2 + i as u64, &frame[w[0]..w[1]])).collect()
}

fn assert_shows_no_auth_bytes(l: &Login) {
    assert_eq!(l.user, "lab");
    assert!(l.database.as_deref().is_none_or(|d| d == DB), "database {:?}", l.database);
    assert!(l.auth_plugin.as_deref().is_none_or(|p| p == PLUGIN), "plugin {:?}", l.auth_plugin);
    for (k, v) in l.attrs.iter() {
        assert_eq!((k, v), ("_client_name", "libmariadb"));
    }
}

#[test]
fn no_auth_byte_survives_any_login_layout() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let (g, _) = greeting();
    for round in 0..20_000 {
        let protocol41 = rng.below(4) != 0;
        let optional = builders::LOGIN_LAYOUT_FLAGS.iter().filter(|_| rng.below(2) == 0).fold(0, |a, f| a | f);
        let auth = auth_bytes(&mut rng);
        let (body, range) = builders::login_of_layout(protocol41, optional, &auth);
        let lf = frame(1, &body);
        let mut recs = vec![accept_rec(GEN), write(GEN + 1, &frame(0, &g))];
        recs.extend(split_reads(&mut rng, &lf));
        let red = redact_all(&recs);
        let after = stream(&red, true);
        let what = format!("round {round}: 4.1 {protocol41}, flags {optional:#x}, auth {auth:02x?}");
        for i in range.clone() {
            let b = after[4 + i];
            assert!(b == 0 || b == FILLER, "{what}: auth byte {} kept as {b:#04x}", i - range.start);
        }
        // The decoder, live (unredacted) and on replay, shows the same and no auth byte.
        let (live, replayed) = (replay(&recs), replay(&red));
        assert_eq!(live, replayed, "{what}");
        let Some(ClientPacket::Login(l)) = live.client.first() else { panic!("{what}: no login in {live:?}") };
        assert_shows_no_auth_bytes(l);
    }
}

/// Found by the `redactor` fuzz target (2026-12-01, 1.78 M runs): a 250-byte auth
/// response holding `16 03 00 00 2b` (a TLS record header's look) where a read begins,
/// mid-login. It was taken for a ClientHello: the next read's first 5 bytes, auth bytes,
/// were kept as a "record header". A ClientHello only starts where a packet would.
#[test]
fn auth_bytes_that_look_like_a_tls_record_inside_a_login_stay_secret() {
    let mut auth = vec![0u8; 250];
    auth[25..30].copy_from_slice(&[0x16, 0x03, 0x00, 0x00, 0x2b]);
    auth[55..60].copy_from_slice(&[0x16, 0x03, 0x00, 0x00, 0x2b]);
    let (body, range) = builders::login_of_layout(true, CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH, &auth);
    let lf = frame(1, &body);
    let (g, _) = greeting();
    // Reads that begin on the look-alike headers (body offsets 4 + range.start + 25, + 55).
    let cuts = [0, 4 + range.start + 25, 4 + range.start + 55, lf.len()];
    let mut recs = vec![accept_rec(GEN), write(GEN + 1, &frame(0, &g))];
    recs.extend(cuts.windows(2).enumerate().map(|(i, w)| read(GEN + 2 + i as u64, &lf[w[0]..w[1]])));
    let red = redact_all(&recs);
    let after = stream(&red, true);
    for i in range.clone() {
        assert!(after[4 + i] == 0, "auth byte {} kept as {:#04x}", i - range.start, after[4 + i]);
    }
    assert_eq!(replay(&red), replay(&recs));
    assert_eq!(correlate(&recs), correlate(&red));
    assert!(!correlate(&recs).contains("TLS"), "no TLS inside a login: {}", correlate(&recs));
}
