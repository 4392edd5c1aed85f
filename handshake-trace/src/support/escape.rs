//! Strings that come from the wire (user names, databases, plugins, versions, error
//! messages) or from /proc and trace files (process names) are written to terminals
//! through [`Escaped`]: an unauthenticated client must not be able to move the
//! cursor, retitle the window or forge output lines.
use std::fmt;

/// Displays its string with control characters escaped: C0 (incl. newline, carriage
/// return, tab, ESC), DEL, C1, and the Unicode format characters that reorder or
/// hide text (bidi overrides and isolates, zero-width marks). A backslash is doubled,
/// so an escape in the output cannot be confused with one in the input.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

/// Invisible characters that change how the text around them is shown.
fn is_format_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        // The common case, nothing to escape: one write.
        if !s.chars().any(|c| c == '\\' || c.is_control() || is_format_control(c)) {
            return f.write_str(s);
        }
        for c in s.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if (c as u32) < 0x100 && c.is_control() => write!(f, "\\x{:02x}", c as u32)?,
                c if c.is_control() || is_format_control(c) => write!(f, "\\u{{{:04x}}}", c as u32)?,
                c => write!(f, "{c}")?,
            }
        }
        Ok(())
    }
}

/// The escaped form as a String.
pub fn escaped(s: &str) -> String {
    Escaped(s).to_string()
}

/// Characters JSON may carry raw but a reader's terminal or editor would act on: DEL,
/// C1 (U+0080–U+009F; U+009B is CSI), the format controls above, and the line and
/// paragraph separators. serde_json escapes only C0, `"` and `\`.
fn needs_json_escape(c: char) -> bool {
    matches!(c, '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}') || is_format_control(c)
}

/// The JSON writer of every JSON the tool prints or serves (`-j`, the abnormal log,
/// /top, roll-ups): serde_json's compact output, with [`needs_json_escape`] characters
/// written as `\uXXXX` as well. A JSON reader gets the same strings back.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonEscaping;

impl serde_json::ser::Formatter for JsonEscaping {
    fn write_string_fragment<W: ?Sized + std::io::Write>(&mut self, w: &mut W, fragment: &str) -> std::io::Result<()> {
        let mut from = 0;
        for (i, c) in fragment.char_indices().filter(|&(_, c)| needs_json_escape(c)) {
            w.write_all(&fragment.as_bytes()[from..i])?;
            write!(w, "\\u{:04x}", c as u32)?;
            from = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[from..])
    }
}

/// `value` as one line of JSON (see [`JsonEscaping`]) into `w`.
pub fn json_to_writer<W: std::io::Write, T: serde::Serialize + ?Sized>(w: W, value: &T) -> serde_json::Result<()> {
    value.serialize(&mut serde_json::Serializer::with_formatter(w, JsonEscaping))
}

/// `value` as one line of JSON (see [`JsonEscaping`]).
pub fn json_to_vec<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    json_to_writer(&mut out, value)?;
    Ok(out)
}

/// `value` as one line of JSON (see [`JsonEscaping`]).
pub fn json_to_string<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    // Valid UTF-8: serde_json writes str fragments and ASCII, and so do the escapes.
    json_to_vec(value).map(|v| String::from_utf8(v).expect("JSON is UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_unchanged() {
        for s in ["lab", "app_user@10.1.2.3", "5.5.5-10.11.19-MariaDB-0+deb12u1", "Zoë 東京 'quoted' \"too\"", ""] {
            assert_eq!(escaped(s), s);
        }
    }

    #[test]
    fn a_terminal_attack_in_a_user_name_is_shown_not_run() {
        let user = "\x1b]0;PWNED\x07\x1b[1;31mEVIL\x1b[0m\rroot";
        let shown = escaped(user);
        assert_eq!(shown, "\\x1b]0;PWNED\\x07\\x1b[1;31mEVIL\\x1b[0m\\rroot");
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
    }

    #[test]
    fn line_breaks_c1_and_bidi_controls_are_escaped() {
        assert_eq!(escaped("a\nb\tc"), "a\\nb\\tc");
        assert_eq!(escaped("\u{9b}31m"), "\\x9b31m");
        assert_eq!(escaped("\u{7f}"), "\\x7f");
        assert_eq!(escaped("admin\u{202e}toor"), "admin\\u{202e}toor");
        assert_eq!(escaped("a\u{200b}b"), "a\\u{200b}b");
    }

    #[test]
    fn json_escapes_c1_del_and_bidi_controls_and_reads_back_the_same() {
        let user = "admin\u{202e}toor\u{9b}31m\u{7f}\u{200e}\u{2066}x\u{2069}\u{61c}\u{80}\u{2028}";
        let json = json_to_string(&serde_json::json!({ "user": user, "k\u{202d}": 1 })).unwrap();
        assert_eq!(
            json,
            r#"{"k\u202d":1,"user":"admin\u202etoor\u009b31m\u007f\u200e\u2066x\u2069\u061c\u0080\u2028"}"#
        );
        assert!(!json.chars().any(|c| c.is_control() || is_format_control(c)), "{json}");
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["user"], user);
    }

    #[test]
    fn json_of_plain_text_is_serde_jsons_own() {
        let v = serde_json::json!({ "user": "Zoë 東京 \"q\" \\ \n\u{1b}", "n": [1, 2.5, null] });
        assert_eq!(json_to_string(&v).unwrap(), serde_json::to_string(&v).unwrap());
    }

    #[test]
    fn a_backslash_is_doubled_so_escapes_stay_unambiguous() {
        assert_eq!(escaped("\\x1b"), "\\\\x1b");
        assert_ne!(escaped("\\x1b"), escaped("\x1b"));
    }
}
