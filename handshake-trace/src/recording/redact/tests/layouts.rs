//! Every login layout, random auth bytes (zeros included), split anyhow across
//! records: no auth byte survives redaction, and the decoder never shows auth bytes as
//! a user, database, plugin or attribute (issue 17: a NUL-terminated response with a
//! zero byte kept 15 of its 20 bytes, decoded as the database).
use super::*;

/// The optional login fields whose presence changes the layout.
const FLAGS: [u32; 5] = [
    CLIENT_SECURE_CONNECTION,
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
    CLIENT_CONNECT_WITH_DB,
    CLIENT_PLUGIN_AUTH,
    CLIENT_CONNECT_ATTRS,
];

const DB: &str = "shop";
const PLUGIN: &str = "mysql_native_password";

/// A login of either form with `auth` as its response; returns the body and the auth range.
fn any_login(protocol41: bool, optional: u32, auth: &[u8]) -> (Vec<u8>, Range<usize>) {
    if protocol41 {
        let l = builders::login(&builders::LoginSpec {
            capabilities: CLIENT_PROTOCOL_41 | CLIENT_LONG_PASSWORD | optional,
            max_packet: 1 << 24,
            charset: 45,
            extended_capabilities: 0,
            user: "lab",
            auth_response: auth,
            database: DB,
            auth_plugin: PLUGIN,
            attrs: &ATTRS,
        });
        // The response follows the user's NUL and its length, if any.
        let end = 32 + 4 + auth.len() + usize::from(optional & (CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA) != 0);
        return (l, end - auth.len()..end);
    }
    // HandshakeResponse320: caps u16, max packet u24, user, response NUL-terminated, database.
    let caps = CLIENT_LONG_PASSWORD | (optional & CLIENT_CONNECT_WITH_DB);
    let mut b = (caps as u16).to_le_bytes().to_vec();
    b.extend_from_slice(&[0xff, 0xff, 0xff]);
    b.extend_from_slice(b"lab\0");
    let at = b.len();
    b.extend_from_slice(auth);
    b.push(0);
    if caps & CLIENT_CONNECT_WITH_DB != 0 {
        b.extend_from_slice(DB.as_bytes());
        b.push(0);
    }
    (b, at..at + auth.len())
}

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
        assert!(ATTRS.contains(&(k.as_str(), v.as_str())), "attribute {k:?}={v:?}");
    }
}

#[test]
fn no_auth_byte_survives_any_login_layout() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let (g, _) = greeting();
    for round in 0..20_000 {
        let protocol41 = rng.below(4) != 0;
        let optional = FLAGS.iter().filter(|_| rng.below(2) == 0).fold(0, |a, f| a | f);
        let auth = auth_bytes(&mut rng);
        let (body, range) = any_login(protocol41, optional, &auth);
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
