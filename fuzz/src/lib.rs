//! What the fuzz targets share: the input format of the decoder and redactor targets
//! (kernel records, each after its 2-byte little-endian length; `cargo xtask fuzz`
//! writes the fixtures' sessions in it), and a source of choices drawn from the input.

/// The records of a fuzz input: each a 2-byte little-endian length, then that many
/// bytes (the last one cut short when the input ends).
pub fn records(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let n = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        let body = &rest[2..];
        let n = n.min(body.len());
        out.push(&body[..n]);
        rest = &body[n..];
    }
    out
}

/// Choices taken from the input's bytes, zero once they run out.
pub struct Choices<'a> {
    bytes: &'a [u8],
}

impl<'a> Choices<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Choices { bytes }
    }

    pub fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.bytes.split_first() else { return 0 };
        self.bytes = rest;
        b
    }

    /// Below `n` (0 for 0).
    pub fn below(&mut self, n: usize) -> usize {
        let v = usize::from(u16::from_le_bytes([self.byte(), self.byte()]));
        v % n.max(1)
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.bytes.split_at(n.min(self.bytes.len()));
        self.bytes = rest;
        head
    }
}
