//! Where MySQL meets TLS: after an SSLRequest the client starts a TLS handshake.
//! [`starts_client_hello`] is the one rule of where that may happen, for the decoder
//! (`correlate`) and the redactor alike: were they to disagree, the redactor would
//! keep bytes the decoder reads as secrets, or the replay would not show what the live
//! run did. The kernel's copy of the rule is `handshake_trace_common::handshake_end`.
use super::framing::HEADER_LEN;

/// TLS record type of a handshake message (ClientHello, ServerHello, ...).
const TLS_HANDSHAKE: u8 = 0x16;
/// TLS record type of application data (everything after the TLS handshake).
const TLS_APPLICATION_DATA: u8 = 0x17;
/// Major version byte of every TLS record (SSL 3.0 .. TLS 1.3).
const TLS_MAJOR: u8 = 0x03;
/// The login's sequence id (it answers the greeting, 0).
const LOGIN_SEQ: u8 = 1;

/// Do these bytes start a TLS handshake record (type 0x16, version 3.x)? Alone this
/// says nothing: a MySQL packet of 0x0316 bytes starts the same way (see
/// [`starts_client_hello`]).
pub fn is_tls_handshake_record(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == TLS_HANDSHAKE && bytes[1] == TLS_MAJOR
}

/// Do these bytes start a TLS application-data record?
pub fn is_tls_application_data(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == TLS_APPLICATION_DATA && bytes[1] == TLS_MAJOR
}

/// Do the client's `bytes` (one transfer, from its start) begin a TLS ClientHello?
/// Only where the protocol allows one, and only at a packet boundary (`at_boundary`:
/// inside a packet, auth bytes may look like a record header):
/// - after an SSLRequest (`ssl_requested`): the ClientHello it announced;
/// - with no SSLRequest, where the login is awaited (`login_expected`), only when the
///   server cannot take the bytes for a packet header in order: read as one (length
///   `03 16 xx`, sequence id the fourth byte) with sequence id 1 they are a login to
///   the server (one of exactly 0x0316 bytes starts `16 03 00 01`), which it reads
///   and answers; any other id is a client speaking TLS unasked, which MariaDB refuses
///   with a plaintext ERR 1156 (packets out of order). Fewer than 4 bytes: a header's
///   start, not yet known.
pub fn starts_client_hello(bytes: &[u8], at_boundary: bool, ssl_requested: bool, login_expected: bool) -> bool {
    if !at_boundary || !is_tls_handshake_record(bytes) {
        return false;
    }
    if ssl_requested {
        return true;
    }
    login_expected && bytes.len() >= HEADER_LEN && bytes[3] != LOGIN_SEQ
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: [u8; 6] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01];
    /// The header of a 0x0316-byte login: sequence id 1.
    const LOOKALIKE_LOGIN: [u8; 6] = [0x16, 0x03, 0x00, 0x01, 0x85, 0xa6];

    #[test]
    fn after_an_ssl_request_a_record_at_a_packet_boundary_is_the_client_hello() {
        assert!(starts_client_hello(&HELLO, true, true, false));
        assert!(starts_client_hello(&LOOKALIKE_LOGIN, true, true, false), "after an SSLRequest the server reads TLS");
        assert!(!starts_client_hello(&HELLO, false, true, false), "never inside a packet");
        assert!(!starts_client_hello(&[0x17, 0x03, 0x03], true, true, false));
    }

    #[test]
    fn a_login_of_0x0316_bytes_is_a_login() {
        assert!(!starts_client_hello(&LOOKALIKE_LOGIN, true, false, true));
        assert!(!starts_client_hello(&LOOKALIKE_LOGIN[..2], true, false, true), "a header's first bytes only");
    }

    #[test]
    fn tls_unasked_is_a_client_hello_only_where_the_login_is_awaited_and_out_of_order() {
        assert!(starts_client_hello(&HELLO, true, false, true));
        assert!(!starts_client_hello(&HELLO, true, false, false), "after the login: auth data");
        assert!(!starts_client_hello(&HELLO, false, false, true), "inside a packet");
    }
}
