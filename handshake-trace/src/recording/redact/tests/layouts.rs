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
    for (k, v) in &l.attrs {
        assert_eq!((k.as_str(), v.as_str()), ("_client_name", "libmariadb"));
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
