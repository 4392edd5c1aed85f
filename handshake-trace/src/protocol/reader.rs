//! The one byte reader for MySQL payloads: little-endian integers, length-encoded
//! integers and strings, NUL-terminated strings.
//!
//! Every read is bounds-checked: a fixed-size read returns None instead of
//! overrunning (and consumes nothing), `take_up_to` and `cstr` return what there is.
//! That serves captures cut anywhere (the tracer) and strict parsers alike (the lab:
//! it turns a None or an unterminated string into "malformed").

/// A cursor over untrusted bytes. No `Debug`: the bytes may be secrets.
#[derive(Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Offset of the next byte.
    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Exactly `n` bytes, or None (nothing consumed) when fewer are left.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.remaining() {
            return None;
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Some(s)
    }

    /// Up to `n` bytes: fewer when the buffer ends first.
    pub fn take_up_to(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.remaining());
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        s
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take_up_to(usize::MAX)
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u24(&mut self) -> Option<u32> {
        self.take(3).map(|b| u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }

    /// Length-encoded integer; 0xfb (NULL) and 0xff are not integers.
    pub fn lenenc(&mut self) -> Option<u64> {
        let first = self.u8()?;
        match lenenc_width(first)? {
            0 => Some(u64::from(first)),
            2 => self.u16().map(u64::from),
            3 => self.u24().map(u64::from),
            _ => self.u64(),
        }
    }

    /// A length-encoded string, only if wholly present.
    pub fn lenenc_bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.lenenc()?).ok()?;
        self.take(n)
    }

    /// Bytes up to a NUL (consumed, not returned), or to the end; the flag says whether the NUL was found.
    pub fn cstr(&mut self) -> (&'a [u8], bool) {
        let rest = &self.buf[self.pos..];
        match rest.iter().position(|&b| b == 0) {
            Some(i) => {
                self.pos += i + 1;
                (&rest[..i], true)
            }
            None => {
                self.pos = self.buf.len();
                (rest, false)
            }
        }
    }
}

/// How many bytes follow a length-encoded integer's first byte (0: the byte is the
/// value); None for 0xfb (NULL) and 0xff, which are not integers.
pub fn lenenc_width(first: u8) -> Option<usize> {
    match first {
        0..=0xfa => Some(0),
        0xfc => Some(2),
        0xfd => Some(3),
        0xfe => Some(8),
        _ => None,
    }
}

/// Bytes shown as text (names, versions, messages): invalid UTF-8 is replaced, not refused.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_never_overrun() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u32(), None);
        assert_eq!(r.pos(), 0, "a failed fixed read consumes nothing");
        assert_eq!(r.u16(), Some(0x0201));
        assert_eq!(r.take_up_to(5), &[3]);
        assert!(r.is_empty());
        assert_eq!((r.u8(), r.rest()), (None, &[][..]));
        let mut r = Reader::new(b"ab\0cd");
        assert_eq!(r.cstr(), (&b"ab"[..], true));
        assert_eq!(r.cstr(), (&b"cd"[..], false));
        assert_eq!(r.cstr(), (&b""[..], false));
    }

    #[test]
    fn lenenc_forms() {
        let cases: [(&[u8], Option<u64>); 7] = [
            (&[0xfa], Some(250)),
            (&[0xfc, 0x10, 0x27], Some(10_000)),
            (&[0xfd, 0x01, 0x00, 0x01], Some(0x01_0001)),
            (&[0xfe, 1, 0, 0, 0, 0, 0, 0, 0x80], Some(0x8000_0000_0000_0001)),
            (&[0xfb], None),
            (&[0xff], None),
            (&[0xfc, 0x10], None),
        ];
        for (bytes, want) in cases {
            assert_eq!(Reader::new(bytes).lenenc(), want, "{bytes:?}");
        }
        let mut r = Reader::new(&[3, b'a', b'b', b'c', 5, b'x']);
        assert_eq!(r.lenenc_bytes(), Some(&b"abc"[..]));
        assert_eq!(r.lenenc_bytes(), None);
    }
}
