//! The kernel's view of a handshake from the first bytes of each transfer: when it is
//! over (the server's OK or ERR; a TLS connection's budget spent) and when the client
//! starts TLS. Pure, so that it is unit-tested here; both capture tiers call it (a
//! syscall's bytes, a packet's). Userspace follows the same rule in full
//! (`protocol::starts_client_hello`): a ClientHello only after an SSLRequest; a login
//! of exactly 0x0316 bytes, whose header `16 03 00 01` looks like a TLS record, is a login.
use crate::{end, CONN_SSL_HEADER, CONN_SSL_REQUESTED, CONN_TLS, TLS_BUDGET};

/// Bytes of each transfer the rule looks at, from its start.
pub const FIRST_BYTES: usize = 6;

/// A TLS record header where a MySQL packet would be: content type handshake, version 3.x.
const TLS_HANDSHAKE: u8 = 0x16;
const TLS_MAJOR: u8 = 0x03;
/// A MySQL packet: payload length (3 bytes), sequence number (1), then the payload,
/// whose first byte marks an OK or an ERR.
const MYSQL_SEQ: usize = 3;
const MYSQL_FIRST: usize = 4;
const MYSQL_OK: u8 = 0x00;
const MYSQL_ERR: u8 = 0xff;
/// Greeting 0, login 1: the server's reply to the login has sequence 2 or more.
const LOGIN_REPLY_SEQ: u8 = 2;
/// An SSLRequest's header: a 32-byte payload (a login's fixed part), sequence id 1.
const SSL_REQUEST_HEADER: [u8; 4] = [32, 0, 0, 1];
/// CLIENT_SSL (0x800) in the capability flags' second byte (the payload's byte 1).
const CLIENT_SSL_IN_BYTE_1: u8 = 0x08;

/// The handshake state (`flags`, `tls_budget`) after `captured` bytes starting with
/// `first` went out (`write`, the server's) or came in (the client's): 0, or why
/// tracing ends here (an [`end`] code). Bytes of `first` past `captured` are not
/// looked at.
#[inline(always)]
pub fn handshake_end(flags: &mut u32, tls_budget: &mut u16, write: bool, captured: u32, first: [u8; FIRST_BYTES]) -> u64 {
    if *flags & CONN_TLS != 0 {
        if *tls_budget <= 1 {
            return end::TLS_BUDGET;
        }
        *tls_budget -= 1;
        return 0;
    }
    if !write {
        client_bytes(flags, tls_budget, captured, first);
        return 0;
    }
    // After an SSLRequest the server's TLS record (its ServerHello) starts TLS too: the
    // client's hello may have come in the same transfer as the SSLRequest (a packet of
    // the socket tier holding both). Its MySQL ERR instead (1043, after bytes that were
    // not TLS) starts with a length, never `16 03`.
    if *flags & CONN_SSL_REQUESTED != 0 && is_tls_handshake(captured, first) {
        start_tls(flags, tls_budget);
        return 0;
    }
    if captured > MYSQL_FIRST as u32 {
        let (seq, kind) = (first[MYSQL_SEQ], first[MYSQL_FIRST]);
        // ERR at any point, or OK after the login, ends the handshake.
        if kind == MYSQL_ERR || (kind == MYSQL_OK && seq >= LOGIN_REPLY_SEQ) {
            return end::REPLY;
        }
    }
    0
}

/// The client's bytes: an SSLRequest (its header and body in one transfer, or the
/// header alone and the body next, as a server reads them), then the ClientHello it
/// announced. Without an SSLRequest no bytes start TLS: the server reads them as MySQL
/// packets and answers (or refuses) in MySQL packets, which end the handshake.
#[inline(always)]
fn client_bytes(flags: &mut u32, tls_budget: &mut u16, captured: u32, first: [u8; FIRST_BYTES]) {
    let header_before = *flags & CONN_SSL_HEADER != 0;
    *flags &= !CONN_SSL_HEADER;
    if *flags & CONN_SSL_REQUESTED != 0 {
        if is_tls_handshake(captured, first) {
            start_tls(flags, tls_budget);
        }
        return;
    }
    if captured >= 4 && first[0] == SSL_REQUEST_HEADER[0] && first[1] == 0 && first[2] == 0 && first[3] == SSL_REQUEST_HEADER[3] {
        if captured >= 6 {
            if first[5] & CLIENT_SSL_IN_BYTE_1 != 0 {
                *flags |= CONN_SSL_REQUESTED;
            }
        } else {
            *flags |= CONN_SSL_HEADER;
        }
    } else if header_before && captured >= 2 && first[1] & CLIENT_SSL_IN_BYTE_1 != 0 {
        *flags |= CONN_SSL_REQUESTED;
    }
}

/// Do the captured bytes start a TLS handshake record (type 0x16, version 3.x)?
#[inline(always)]
fn is_tls_handshake(captured: u32, first: [u8; FIRST_BYTES]) -> bool {
    captured >= 2 && first[0] == TLS_HANDSHAKE && first[1] == TLS_MAJOR
}

/// From here on the connection is TLS: traced for [`TLS_BUDGET`] more transfers.
#[inline(always)]
fn start_tls(flags: &mut u32, tls_budget: &mut u16) {
    *flags |= CONN_TLS;
    *tls_budget = TLS_BUDGET;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(bytes: &[u8]) -> [u8; FIRST_BYTES] {
        let mut f = [0u8; FIRST_BYTES];
        let n = bytes.len().min(FIRST_BYTES);
        f[..n].copy_from_slice(&bytes[..n]);
        f
    }

    struct State {
        flags: u32,
        budget: u16,
    }

    impl State {
        fn new() -> Self {
            State { flags: 0, budget: 0 }
        }
        fn read(&mut self, bytes: &[u8]) -> u64 {
            handshake_end(&mut self.flags, &mut self.budget, false, bytes.len() as u32, first(bytes))
        }
        fn write(&mut self, bytes: &[u8]) -> u64 {
            handshake_end(&mut self.flags, &mut self.budget, true, bytes.len() as u32, first(bytes))
        }
        fn tls(&self) -> bool {
            self.flags & CONN_TLS != 0
        }
    }

    /// The SSLRequest's payload: capabilities with CLIENT_SSL (0x0000_0a0d ... | 0x800).
    const SSL_BODY: [u8; 6] = [0x05, 0xae, 0xff, 0x01, 0, 0];
    const OK: [u8; 11] = [7, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0];

    #[test]
    fn a_login_of_0x0316_bytes_is_not_tls_and_its_ok_ends_the_handshake() {
        let mut s = State::new();
        assert_eq!(s.read(&[0x16, 0x03, 0x00, 0x01]), 0);
        assert_eq!(s.read(&[0x85, 0xa6, 0xff, 0x01, 0, 0]), 0);
        assert!(!s.tls());
        assert_eq!(s.write(&OK), end::REPLY);
        // The same login in one transfer (a packet of the socket tier).
        let mut s = State::new();
        assert_eq!(s.read(&[0x16, 0x03, 0x00, 0x01, 0x85, 0xa6]), 0);
        assert!(!s.tls());
        assert_eq!(s.write(&OK), end::REPLY);
    }

    #[test]
    fn after_an_ssl_request_the_client_hello_starts_tls() {
        // Header and body in two reads (a server's way), then the hello.
        let mut s = State::new();
        s.read(&SSL_REQUEST_HEADER);
        s.read(&SSL_BODY);
        assert!(!s.tls());
        s.read(&[0x16, 0x03, 0x01, 0x02, 0x00]);
        assert!(s.tls());
        // The encrypted OK does not end it; the budget does.
        assert_eq!(s.write(&OK), 0);
        let ends = (0..TLS_BUDGET).map(|_| s.write(&[0x17, 0x03, 0x03, 0, 40])).position(|e| e == end::TLS_BUDGET);
        assert!(ends.is_some());
        // Header and body in one transfer (a packet).
        let mut s = State::new();
        let mut both = SSL_REQUEST_HEADER.to_vec();
        both.extend_from_slice(&SSL_BODY);
        s.read(&both);
        s.read(&[0x16, 0x03, 0x01, 0x02, 0x00]);
        assert!(s.tls());
    }

    #[test]
    fn a_32_byte_login_without_client_ssl_announces_nothing() {
        let mut s = State::new();
        s.read(&SSL_REQUEST_HEADER);
        s.read(&[0x05, 0xa6, 0xff, 0x01, 0, 0]);
        s.read(&[0x16, 0x03, 0x01, 0x02, 0x00]);
        assert!(!s.tls());
    }

    #[test]
    fn tls_unasked_is_not_tls_to_the_kernel_and_the_servers_err_ends_it() {
        let mut s = State::new();
        s.read(&[0x16, 0x03, 0x01, 0x00, 0x2e, 0x01]);
        assert!(!s.tls());
        let err = [0x21, 0, 0, 1, 0xff, 0x84];
        assert_eq!(s.write(&err), end::REPLY);
    }

    #[test]
    fn a_server_write_starts_tls_only_after_an_ssl_request() {
        let mut s = State::new();
        assert_eq!(s.write(&[0x16, 0x03, 0x00, 0x00, 0x0a, 0x35]), 0);
        assert!(!s.tls());
        // SSLRequest and ClientHello in one packet: the ServerHello starts TLS.
        let mut s = State::new();
        let mut both = SSL_REQUEST_HEADER.to_vec();
        both.extend_from_slice(&SSL_BODY);
        s.read(&both);
        assert_eq!(s.write(&[0x16, 0x03, 0x03, 0x00, 0x5a, 0x02]), 0);
        assert!(s.tls());
        // After an SSLRequest, the server's plaintext ERR 1043 (22 bytes) still ends it.
        let mut s = State::new();
        s.read(&both);
        assert_eq!(s.write(&[0x16, 0x00, 0x00, 0x02, 0xff, 0x13]), end::REPLY);
    }
}
