//! Walking a payload field by field while recording what each byte is to someone who
//! must not keep secrets.
//!
//! In a greeting, a login (4.1 or 3.20), an AuthSwitchRequest or AuthMoreData, every
//! byte's role is fixed by the bytes before it: lengths, flags and terminators come
//! first. So the walker marks a field's extent before it reads the field, and a walk
//! over the first bytes of a payload gives them the roles the whole payload would.
//! Where it cannot go on (a string whose NUL has not come yet, a length marker that is
//! no length), the bytes after have no role yet: [`Roles::role`] calls them secret.
use std::ops::Range;

use super::framing::Payload;
use super::reader::{lenenc_width, text, Reader};

/// A field's place in a payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn range(&self) -> Range<usize> {
        self.start..self.end
    }

    /// The field's bytes in the payload it was found in.
    pub fn of<'a>(&self, payload: &'a [u8]) -> &'a [u8] {
        &payload[self.range()]
    }
}

/// A NUL-terminated field as captured: its bytes (without the NUL) and whether the NUL came.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Text {
    pub span: Span,
    pub terminated: bool,
}

impl Text {
    pub fn string(&self, payload: &[u8]) -> String {
        text(self.span.of(payload))
    }
}

/// What a payload byte is to a redactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read and shown by the decoder: a name, a length, a flag, an error message.
    Public,
    /// A secret (scramble, auth response, plugin data), or a byte the decoder never reads.
    Secret,
    /// A secret whose NUL-ness the decoder looks at (a terminator it searches for).
    SecretNul,
    /// A secret whose NUL-ness the decoder looks at only when the captured payload ends
    /// with it (the greeting's scramble part 2, whose last byte may be its terminator).
    SecretNulAtEnd,
}

const MAX_RUNS: usize = 8;

/// The roles of a payload's bytes from offset 0, as consecutive runs. Bytes from
/// [`Roles::known`] on have no role yet: more of the payload must be seen to place them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// (end, role) of each run; a run starts where the one before ends.
    runs: [(usize, Role); MAX_RUNS],
    n: usize,
}

impl Default for Roles {
    fn default() -> Self {
        Roles { runs: [(0, Role::Secret); MAX_RUNS], n: 0 }
    }
}

impl Roles {
    /// Roles given as (end, role) runs.
    pub fn from_runs(runs: &[(usize, Role)]) -> Self {
        let mut r = Roles::default();
        for &(end, role) in runs {
            r.extend_to(end, role);
        }
        r
    }

    /// Bytes up to `end` that have no role yet get `role`.
    fn extend_to(&mut self, end: usize, role: Role) {
        if end <= self.known() {
            return;
        }
        if self.n > 0 && self.runs[self.n - 1].1 == role {
            self.runs[self.n - 1].0 = end;
        } else if self.n < MAX_RUNS {
            self.runs[self.n] = (end, role);
            self.n += 1;
        }
        // No packet has more runs than MAX_RUNS; were one to, the rest stays unknown (secret).
    }

    /// Offset of the first byte with no role yet.
    pub fn known(&self) -> usize {
        self.n.checked_sub(1).map_or(0, |last| self.runs[last].0)
    }

    /// The role of the byte at `at`; Secret when it has none yet.
    pub fn role(&self, at: usize) -> Role {
        self.runs[..self.n].iter().find(|(end, _)| at < *end).map_or(Role::Secret, |&(_, role)| role)
    }

    /// The runs as ranges.
    pub fn runs(&self) -> impl Iterator<Item = (Range<usize>, Role)> + '_ {
        let starts = std::iter::once(0).chain(self.runs[..self.n].iter().map(|r| r.0));
        starts.zip(&self.runs[..self.n]).map(|(start, &(end, role))| (start..end, role))
    }
}

/// Reads a payload (or its first bytes) and marks each field's role as it goes.
pub(super) struct Walker<'a> {
    r: Reader<'a>,
    /// Declared payload length.
    len: usize,
    cut: bool,
    roles: Roles,
    /// A field of unknown extent ran to the end of the bytes: nothing after it can be placed.
    stuck: bool,
}

impl<'a> Walker<'a> {
    pub(super) fn new(p: Payload<'a>) -> Self {
        Walker { r: Reader::new(p.bytes), len: p.len as usize, cut: p.cut, roles: Roles::default(), stuck: false }
    }

    pub(super) fn roles(&self) -> Roles {
        self.roles
    }

    pub(super) fn pos(&self) -> usize {
        self.r.pos()
    }

    /// Declared payload length.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The capture stopped before the payload's end.
    pub(super) fn is_cut(&self) -> bool {
        self.cut
    }

    /// Bytes from here up to offset `end` have `role`.
    pub(super) fn mark_to(&mut self, end: usize, role: Role) {
        if !self.stuck {
            self.roles.extend_to(end.min(self.len), role);
        }
    }

    /// The next `n` bytes have `role`.
    pub(super) fn mark(&mut self, n: usize, role: Role) {
        self.mark_to(self.pos().saturating_add(n), role);
    }

    /// Everything from here to the payload's end has `role`.
    pub(super) fn rest(&mut self, role: Role) {
        self.mark_to(self.len, role);
    }

    /// A public fixed-size field, if wholly captured.
    pub(super) fn public(&mut self, n: usize) -> Option<&'a [u8]> {
        self.mark(n, Role::Public);
        self.r.take(n)
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        self.public(1).map(|b| b[0])
    }

    pub(super) fn u16(&mut self) -> Option<u16> {
        self.public(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    pub(super) fn u24(&mut self) -> Option<u32> {
        self.public(3).map(|b| u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        self.public(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The captured part of the next `n` bytes (marked already, or by the caller).
    pub(super) fn span_up_to(&mut self, n: usize) -> Span {
        let start = self.pos();
        let got = self.r.take_up_to(n).len();
        Span { start, end: start + got }
    }

    /// A public length-encoded integer. A first byte that is no length marker (0xfb,
    /// 0xff) ends the walk: nothing after it can be placed, the rest is secret.
    pub(super) fn lenenc(&mut self) -> Option<u64> {
        self.mark(1, Role::Public);
        let Some(width) = lenenc_width(self.r.clone().u8()?) else {
            self.rest(Role::Secret);
            return None;
        };
        self.mark(1 + width, Role::Public);
        self.r.lenenc()
    }

    /// A NUL-terminated field with `role`, its NUL included. Unterminated, it runs to
    /// the end of the bytes, and nothing after it can be placed.
    pub(super) fn cstr(&mut self, role: Role) -> Text {
        let start = self.pos();
        let (bytes, terminated) = self.r.cstr();
        self.mark_to(self.pos(), role);
        self.stuck |= !terminated;
        Text { span: Span { start, end: start + bytes.len() }, terminated }
    }

    /// The decoders' public string field: None when nothing is left, or when it is
    /// unterminated at the end of a cut capture (a partial value). A string that runs
    /// to the end of a complete payload is accepted: servers accept a missing final NUL.
    pub(super) fn string_z(&mut self) -> Option<Text> {
        if self.r.is_empty() {
            self.stuck = true;
            return None;
        }
        let t = self.cstr(Role::Public);
        (t.terminated || !self.cut).then_some(t)
    }
}

/// `n` as usize, saturating (a declared length can exceed what the machine addresses).
pub(super) fn saturating_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_and_unknown_bytes_are_secret() {
        let r = Roles::from_runs(&[
            (2, Role::Public),
            (5, Role::Public),
            (9, Role::Secret),
            (9, Role::Public),
            (10, Role::SecretNul),
        ]);
        let runs: Vec<_> = r.runs().collect();
        assert_eq!(runs, vec![(0..5, Role::Public), (5..9, Role::Secret), (9..10, Role::SecretNul)]);
        assert_eq!(
            (r.known(), r.role(4), r.role(5), r.role(9), r.role(10), r.role(usize::MAX)),
            (10, Role::Public, Role::Secret, Role::SecretNul, Role::Secret, Role::Secret)
        );
        assert_eq!(Roles::default().role(0), Role::Secret);
    }

    #[test]
    fn marks_come_before_reads_and_stop_at_an_open_string() {
        // "ab" then a string whose NUL has not come yet, in a 20-byte payload.
        let bytes = b"ab\x05xyz";
        let mut w = Walker::new(Payload::prefix(bytes, 20));
        assert_eq!(w.u16(), Some(0x6261));
        assert_eq!(w.u8(), Some(5));
        assert_eq!(w.u32(), None, "only 3 bytes left");
        // The 4 bytes were marked before the read failed: their role does not depend on them.
        assert_eq!(w.roles().known(), 7);
        let mut w = Walker::new(Payload::prefix(bytes, 20));
        w.public(2);
        assert_eq!(w.string_z(), None, "unterminated in a cut capture");
        w.rest(Role::Secret);
        assert_eq!(w.roles().known(), 6, "nothing placed after an open string");
        // In a complete payload the same string is a value.
        let mut w = Walker::new(Payload::whole(bytes));
        w.public(2);
        assert_eq!(w.string_z(), Some(Text { span: Span { start: 2, end: 6 }, terminated: false }));
    }

    #[test]
    fn a_bad_length_marker_makes_the_rest_secret() {
        let mut w = Walker::new(Payload::prefix(&[0xfb, 1, 2], 10));
        assert_eq!(w.lenenc(), None);
        assert_eq!(w.roles().runs().collect::<Vec<_>>(), vec![(0..1, Role::Public), (1..10, Role::Secret)]);
        let mut w = Walker::new(Payload::prefix(&[0xfc, 1], 10));
        assert_eq!(w.lenenc(), None);
        assert_eq!(w.roles().runs().collect::<Vec<_>>(), vec![(0..3, Role::Public)], "a cut length is still a length");
    }
}
