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
    fn a_backslash_is_doubled_so_escapes_stay_unambiguous() {
        assert_eq!(escaped("\\x1b"), "\\\\x1b");
        assert_ne!(escaped("\\x1b"), escaped("\x1b"));
    }
}
