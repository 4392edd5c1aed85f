//! Socket addresses as text, as std writes them, without std's cost for IPv4: std
//! formats each octet and the port through the integer formatter (seven `write_str`
//! calls, each escaped separately when the text goes into a JSON string); here an IPv4
//! address is put together on the stack and written once. Output is byte-identical.
use std::{fmt, net::SocketAddr};

/// An address, or "?" when it is not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr(pub Option<SocketAddr>);

/// Decimal digits of `v` at the end of `buf[..end]`; where they start.
fn digits_before(buf: &mut [u8], end: usize, mut v: u32) -> usize {
    let mut i = end;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return i;
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.pad("?"),
            // Width or precision asked for: std's own padding rules.
            Some(a) if f.width().is_some() || f.precision().is_some() => fmt::Display::fmt(&a, f),
            Some(SocketAddr::V4(a)) => {
                // "255.255.255.255:65535" is 21 bytes; written back to front.
                let mut buf = [0u8; 21];
                let mut i = digits_before(&mut buf, 21, u32::from(a.port()));
                i -= 1;
                buf[i] = b':';
                for (n, octet) in a.ip().octets().iter().rev().enumerate() {
                    if n > 0 {
                        i -= 1;
                        buf[i] = b'.';
                    }
                    i = digits_before(&mut buf, i, u32::from(*octet));
                }
                // Only ASCII digits, dots and a colon were written.
                f.write_str(std::str::from_utf8(&buf[i..]).map_err(|_| fmt::Error)?)
            }
            Some(a) => fmt::Display::fmt(&a, f),
        }
    }
}

/// JSON: the text as a string (null is the caller's `Option`).
impl serde::Serialize for Addr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_address_as_std_does() {
        let addrs = [
            "0.0.0.0:0",
            "127.0.0.1:3306",
            "255.255.255.255:65535",
            "10.0.20.100:9",
            "1.22.133.4:10000",
            "[::1]:3306",
            "[::ffff:127.0.0.1]:51234",
            "[fe80::1%2]:80",
        ];
        for s in addrs {
            let a: SocketAddr = s.parse().unwrap();
            assert_eq!(Addr(Some(a)).to_string(), a.to_string(), "{s}");
            assert_eq!(
                format!(
                    "{:>25}|{:<24}|{:^23}",
                    Addr(Some(a)),
                    Addr(Some(a)),
                    Addr(Some(a))
                ),
                format!("{a:>25}|{a:<24}|{a:^23}")
            );
            assert_eq!(
                serde_json::to_string(&Addr(Some(a))).unwrap(),
                serde_json::to_string(&a.to_string()).unwrap()
            );
        }
        assert_eq!(Addr(None).to_string(), "?");
        assert_eq!(format!("{:>3}", Addr(None)), "  ?");
    }

    #[test]
    fn every_ipv4_octet_and_port_digit_count() {
        for (o, port) in [
            (0u8, 0u16),
            (9, 9),
            (10, 10),
            (99, 99),
            (100, 100),
            (199, 999),
            (200, 1000),
            (255, 65535),
            (7, 12345),
        ] {
            let a = SocketAddr::from(([o, 255 - o, o / 2, 1], port));
            assert_eq!(Addr(Some(a)).to_string(), a.to_string());
        }
    }
}
