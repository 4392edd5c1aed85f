//! MySQL/MariaDB wire protocol for the connection phase: the one implementation the
//! decoder, the redactor (`crate::recording::redact`) and the lab's server and client use.
//!
//! - [`reader`]: the byte reader (bounds-checked, lenient for cut captures).
//! - [`framing`]: packet headers, [`Framer`] and [`PacketStream`] (reassembly from
//!   traced syscall buffers), strict splitting and framing for the lab.
//! - [`capabilities`], [`errors`]: CLIENT_* flags and server error codes, with names.
//! - [`walk`], [`layout`]: where each field of a handshake packet lies, and what each
//!   byte is to a redactor, from the bytes captured so far.
//! - [`packets`]: the decoded packets and [`decode_server`] / [`decode_client`].
//! - [`builders`]: payloads for the lab and the tests.
//!
//! Pure and total: no I/O, and every decoder accepts arbitrary bytes without
//! panicking. Secrets (the greeting's scramble, the login's auth response,
//! AuthSwitchRequest plugin data, AuthMoreData) are never copied into decoded
//! values: only their lengths are kept.
mod attrs;
pub mod builders;
pub mod capabilities;
pub mod errors;
pub mod framing;
pub mod layout;
pub mod packets;
pub mod reader;
pub mod proxy;
mod tls;
pub mod walk;

#[cfg(test)]
pub(crate) mod samples;
#[cfg(test)]
mod tests;

pub use capabilities::*;
pub use errors::{error_name, is_auth_error};
pub use framing::{
    frame, push_packet, split_packets, Framer, Header, Packet, PacketStream, Payload, Piece, Skipped, HEADER_LEN,
    MAX_PAYLOAD, PAYLOAD_KEPT,
};
pub use layout::{client_kind, client_roles, server_kind, server_roles, ClientKind, ServerKind, PROTOCOL_V10};
pub use packets::{
    decode_client, decode_server, Attrs, AuthSwitch, ClientPacket, ErrPacket, Greeting, Login, OkPacket, ServerPacket,
    SslRequest, SERVER_STATUS_AUTOCOMMIT,
};
pub use reader::Reader;
pub use proxy::{ProxyFound, ProxyHeader, ProxySniffer};
pub use tls::{is_tls_application_data, is_tls_handshake_record, starts_client_hello};
pub use walk::{Role, Roles, Span, Text};
