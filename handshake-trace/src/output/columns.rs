//! The per-handshake line as fixed columns under a header row (TIME VERDICT CLIENT USER
//! MS DETAIL), fitted to the terminal: a field too long for its column is cut with an
//! ellipsis, the detail gets what is left of the width, prose lines are folded at word
//! boundaries with an indent. Nothing written through here wraps on a terminal of the
//! width given. Without a width (a pipe, a file) lines are whole. Verdicts in colour
//! when asked for.
//!
//! Without a width nothing is cut: values wider than their column push the rest of
//! the line right, so a file or a pipe keeps every character.
use std::time::SystemTime;

use super::names;
use crate::{
    support::clock::{format_date_time, format_time_of_day},
    verdict::Verdict,
};

/// How the text output looks: the width to fit, colour, the date in times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Terminal {
    /// Fit lines to this many columns (the terminal's width); None = whole lines.
    pub width: Option<usize>,
    /// Verdicts in colour (ANSI SGR).
    pub color: bool,
    /// Times with the date (`--date`): "2026-11-30 22:33:22.820".
    pub date: bool,
}

const VERDICT_W: usize = 14;
const CLIENT_W: usize = 21;
const USER_W: usize = 10;
const MS_W: usize = 8;
/// Below this many columns the client, user and duration columns narrow, so DETAIL
/// (the reason of a `--brief` line) keeps 18 columns at 80.
const NARROW_BELOW: usize = 100;
const NARROW_CLIENT_W: usize = 15;
const NARROW_USER_W: usize = 8;
const NARROW_MS_W: usize = 6;

impl Terminal {
    /// A time as the lines show it.
    pub fn time(&self, t: SystemTime) -> String {
        if self.date { format_date_time(t) } else { format_time_of_day(t) }
    }

    fn time_w(&self) -> usize {
        if self.date { 23 } else { 12 }
    }

    /// (client, user, duration) column widths: narrower on a narrow terminal (an IPv4
    /// client "127.0.0.1:48222" still fits; a longer one keeps its end, the port).
    fn widths(&self) -> (usize, usize, usize) {
        match self.room() {
            Some(room) if room < NARROW_BELOW => (NARROW_CLIENT_W, NARROW_USER_W, NARROW_MS_W),
            _ => (CLIENT_W, USER_W, MS_W),
        }
    }

    /// The columns a line may fill: one less than the terminal, whose last column makes
    /// some terminals wrap.
    fn room(&self) -> Option<usize> {
        self.width.map(|w| w.saturating_sub(1).max(20))
    }

    /// The columns DETAIL gets on a line (None: whole lines).
    pub fn detail_room(&self) -> Option<usize> {
        let (cw, uw, mw) = self.widths();
        let fixed = self.time_w() + 1 + VERDICT_W + 1 + cw + 1 + uw + 1 + mw + 2;
        self.room().map(|room| room.saturating_sub(fixed))
    }

    /// A line fitted to the width: cut with an ellipsis when longer.
    pub fn line(&self, s: &str) -> String {
        match self.room() {
            Some(room) => fit(s, room),
            None => s.to_string(),
        }
    }

    /// Prose fitted to the width: folded at spaces, continuation lines indented by `indent`.
    pub fn fold(&self, s: &str, indent: usize) -> String {
        let Some(room) = self.room() else { return s.to_string() };
        fold(s, room, indent).join("\n")
    }
}

/// One handshake's line in columns.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub time: String,
    pub verdict: Option<Verdict>,
    /// Verdict in capitals: the first line of a timeline.
    pub shout: bool,
    pub client: String,
    pub user: String,
    pub ms: f64,
    pub detail: String,
}

/// The header row above the lines.
pub fn header(term: &Terminal) -> String {
    let (cw, uw, mw) = term.widths();
    let fixed = format!(
        "{:tw$} {:VERDICT_W$} {:cw$} {:uw$} {:>mw$}  DETAIL",
        "TIME",
        "VERDICT",
        "CLIENT",
        "USER",
        "MS",
        tw = term.time_w()
    );
    term.line(&fixed)
}

/// A row in the columns, fitted to the terminal.
pub fn row(r: &Row, term: &Terminal) -> String {
    let verdict = names::verdict_or_unknown(r.verdict);
    let verdict = if r.shout { verdict.to_uppercase() } else { verdict.to_string() };
    // Cut to the column only when fitting to a terminal.
    let cut = |s: &str, w: usize, left: bool| match (term.width, left) {
        (None, _) => s.to_string(),
        (Some(_), true) => fit_left(s, w),
        (Some(_), false) => fit(s, w),
    };
    let verdict = pad(&cut(&verdict, VERDICT_W, false), VERDICT_W);
    let (cw, uw, mw) = term.widths();
    let fixed = format!(
        "{} {} {} {} {:>mw$}",
        pad(&r.time, term.time_w()),
        verdict,
        pad(&cut(&r.client, cw, true), cw),
        pad(&cut(&r.user, uw, false), uw),
        format!("{:.1}", r.ms),
    );
    let detail = match term.room() {
        Some(room) => fit(&r.detail, room.saturating_sub(width(&fixed) + 2)),
        None => r.detail.clone(),
    };
    let line = if detail.is_empty() { fixed } else { format!("{fixed}  {detail}") };
    // The fixed columns alone may be too wide (dates on a narrow terminal).
    let mut line = term.line(&line);
    if term.color {
        // Painted after fitting: the escape codes take no columns.
        let start = term.time_w() + 1;
        let painted = paint(r.verdict, r.shout, &line[start..start + verdict.len()]);
        line.replace_range(start..start + verdict.len(), &painted);
    }
    line
}

/// The start of DETAIL: why, in a few words (`long`, else `terse` where room is short),
/// and whose side (`blame`), then `rest` (who, then where: cut first). In `room`
/// columns the blame is always whole: the reason gives way to it.
pub fn lead(long: &str, terse: &str, blame: Option<&str>, rest: &str, room: Option<usize>) -> String {
    let join = |head: String| if rest.is_empty() { head } else if head.is_empty() { rest.to_string() } else { format!("{head}  {rest}") };
    let Some(b) = blame else { return join(long.to_string()) };
    let tagged = |reason: &str, tag: &str| if reason.is_empty() { tag.to_string() } else { format!("{reason} {tag}") };
    let (full_tag, short_tag) = (format!("[blame: {b}]"), format!("[{b}]"));
    let Some(room) = room else { return join(tagged(long, &full_tag)) };
    for (reason, tag) in [(long, &full_tag), (terse, &full_tag), (terse, &short_tag)] {
        let head = tagged(reason, tag);
        if width(&head) <= room {
            return join(head);
        }
    }
    let reason = fit(terse, room.saturating_sub(width(&short_tag) + 1));
    tagged(&reason, &short_tag)
}

/// The ANSI colour of a verdict: green ok, red refusals, yellow timeouts and closes by
/// the server, magenta the client's doing, cyan not known.
fn paint(v: Option<Verdict>, bold: bool, text: &str) -> String {
    let colour = match v {
        Some(Verdict::Ok) => "32",
        Some(Verdict::AuthFailed | Verdict::ServerError) => "31",
        Some(Verdict::ServerTimeout | Verdict::ServerClosed) => "33",
        Some(Verdict::ClientClosed | Verdict::ClientReset) => "35",
        Some(Verdict::Incomplete) | None => "36",
    };
    let trimmed = text.trim_end();
    let spaces = &text[trimmed.len()..];
    format!("\x1b[{}{colour}m{trimmed}\x1b[0m{spaces}", if bold { "1;" } else { "" })
}

/// Columns a character takes: East Asian wide and emoji 2, combining marks 0, else 1.
fn char_width(c: char) -> usize {
    match c as u32 {
        0x0300..=0x036F | 0x200B..=0x200F => 0,
        0x1100..=0x115F | 0x2E80..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF | 0xFE30..=0xFE4F | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6 | 0x1F300..=0x1F64F | 0x1F900..=0x1F9FF | 0x20000..=0x3FFFD => 2,
        _ => 1,
    }
}

/// Columns a string takes on a terminal.
pub fn width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// `s` padded with spaces to `w` columns.
fn pad(s: &str, w: usize) -> String {
    format!("{s}{}", " ".repeat(w.saturating_sub(width(s))))
}

/// `s` in at most `w` columns: its start and an ellipsis when it is longer.
pub fn fit(s: &str, w: usize) -> String {
    if width(s) <= w {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        if used + char_width(c) + 1 > w {
            break;
        }
        used += char_width(c);
        out.push(c);
    }
    if w > 0 {
        out.push('…');
    }
    out
}

/// `s` in at most `w` columns: an ellipsis and its end (addresses and paths: the port and
/// the file name are what tell them apart).
pub fn fit_left(s: &str, w: usize) -> String {
    if width(s) <= w {
        return s.to_string();
    }
    let mut tail: Vec<char> = Vec::new();
    let mut used = 0;
    for c in s.chars().rev() {
        if used + char_width(c) + 1 > w {
            break;
        }
        used += char_width(c);
        tail.push(c);
    }
    let mut out = if w > 0 { String::from('…') } else { String::new() };
    out.extend(tail.iter().rev());
    out
}

/// `s` folded into lines of at most `room` columns at spaces; the lines after the first
/// start with `indent` spaces. A word longer than a line is cut across lines.
pub fn fold(s: &str, room: usize, indent: usize) -> Vec<String> {
    let indent = if indent * 2 > room { 2.min(room / 2) } else { indent };
    let lead = s.len() - s.trim_start().len();
    let mut lines = Vec::new();
    let mut cur = s[..lead].to_string();
    let mut has_word = false;
    for word in s[lead..].split(' ') {
        let need = width(word) + usize::from(has_word);
        if has_word && width(&cur) + need > room {
            lines.push(std::mem::replace(&mut cur, " ".repeat(indent)));
            has_word = false;
        }
        if has_word {
            cur.push(' ');
        }
        let mut rest = word;
        // A word wider than a whole line: cut it.
        while width(&cur) + width(rest) > room {
            let take = room.saturating_sub(width(&cur)).max(1);
            let cut: String = rest.chars().take(take).collect();
            rest = &rest[cut.len()..];
            cur.push_str(&cut);
            lines.push(std::mem::replace(&mut cur, " ".repeat(indent)));
        }
        cur.push_str(rest);
        has_word = true;
    }
    if !cur.trim().is_empty() || lines.is_empty() {
        lines.push(cur);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(width: usize) -> Terminal {
        Terminal { width: Some(width), ..Terminal::default() }
    }

    fn sample() -> Row {
        Row {
            time: "22:33:22.820".into(),
            verdict: Some(Verdict::AuthFailed),
            shout: false,
            client: "[2001:db8:1234:5678::99]:50123".into(),
            user: "a_very_long_user_name".into(),
            ms: 13.25,
            detail: "ERR 1045 ER_ACCESS_DENIED_ERROR → 127.0.0.1:3306 pid 24654 fd 51".into(),
        }
    }

    #[test]
    fn the_lead_keeps_the_blame_whole_and_gives_way_with_the_reason() {
        let long = "ERR 1045 ER_ACCESS_DENIED_ERROR";
        let lead = |room| super::lead(long, "ERR 1045", Some("client"), "→ 127.0.0.1:3306 pid 7", room);
        assert_eq!(lead(None), "ERR 1045 ER_ACCESS_DENIED_ERROR [blame: client]  → 127.0.0.1:3306 pid 7");
        assert_eq!(lead(Some(60)), "ERR 1045 ER_ACCESS_DENIED_ERROR [blame: client]  → 127.0.0.1:3306 pid 7");
        assert_eq!(lead(Some(30)), "ERR 1045 [blame: client]  → 127.0.0.1:3306 pid 7");
        assert_eq!(lead(Some(18)), "ERR 1045 [client]  → 127.0.0.1:3306 pid 7");
        assert_eq!(lead(Some(12)), "ER… [client]");
        let ok = super::lead("greeting 0.1", "", None, "→ x", Some(18));
        assert_eq!(ok, "greeting 0.1  → x");
    }

    #[test]
    fn detail_room_is_what_a_row_leaves() {
        for w in [80, 120, 200] {
            let t = at(w);
            let r = Row { detail: "x".repeat(300), ..sample() };
            let line = row(&r, &t);
            let start = width(&line) - width(line.trim_start_matches(|c| c != 'x'));
            assert_eq!(t.detail_room(), Some(w - 1 - start), "at {w}: {line}");
        }
        assert_eq!(at(80).detail_room(), Some(18));
        assert_eq!(Terminal::default().detail_room(), None);
    }

    #[test]
    fn cuts_with_an_ellipsis() {
        assert_eq!(fit("short", 10), "short");
        assert_eq!(fit("exactly10!", 10), "exactly10!");
        assert_eq!(fit("a_very_long_user_name", 10), "a_very_lo…");
        assert_eq!(width(&fit("a_very_long_user_name", 10)), 10);
        assert_eq!(fit_left("/run/mysqld/mysqld.sock", 12), "…mysqld.sock");
        assert_eq!(fit("日本語のユーザー", 7), "日本語…", "wide characters count twice");
        assert_eq!(fit("abc", 0), "");
    }

    #[test]
    fn columns_line_up_and_fit_80() {
        let ok = Row { verdict: Some(Verdict::Ok), client: "127.0.0.1:33350".into(), user: "app".into(), ms: 0.3, ..sample() };
        let term = at(80);
        let lines = [header(&term), row(&sample(), &term), row(&ok, &term)];
        for l in &lines {
            assert!(width(l) < 80, "{} columns: {l}", width(l));
        }
        // Columns of a text in a line (not bytes: "…" is three).
        let col = |l: &str, pat: &str| width(&l[..l.find(pat).unwrap_or_else(|| panic!("{pat} not in {l}"))]);
        assert_eq!(col(&lines[0], "DETAIL"), col(&lines[1], "ERR 1"), "{lines:?}");
        assert_eq!(col(&lines[0], "DETAIL"), col(&lines[2], "ERR 1"), "{lines:?}");
        assert_eq!(col(&lines[0], "CLIENT"), col(&lines[2], "127.0.0.1"), "{lines:?}");
        assert_eq!(col(&lines[0], "CLIENT"), col(&lines[1], "…"), "{lines:?}");
        assert_eq!(col(&lines[0], "USER"), col(&lines[2], "app"), "{lines:?}");
        assert!(lines[1].contains(" …678::99]:50123 "), "the address keeps its port: {}", lines[1]);
        assert!(lines[1].contains(" a_very_… "), "{}", lines[1]);
        // Narrowed columns leave the detail (a brief line's reason) 18 columns.
        assert!(79 - col(&lines[0], "DETAIL") >= 18, "DETAIL gets {} columns at 80: {lines:?}", 79 - col(&lines[0], "DETAIL"));
        assert!(lines[1].ends_with('…'), "the detail is cut, not wrapped: {}", lines[1]);
        assert_eq!(lines[2].split_whitespace().nth(1), Some("ok"));
    }

    #[test]
    fn wide_terminals_keep_the_wide_columns() {
        let line = row(&sample(), &at(160));
        assert!(line.contains(" …1234:5678::99]:50123 "), "{line}");
        assert!(line.contains(" a_very_lo… "), "{line}");
    }

    #[test]
    fn whole_lines_without_a_width() {
        let l = row(&sample(), &Terminal::default());
        assert!(l.ends_with("pid 24654 fd 51"), "{l}");
        assert!(l.contains(" [2001:db8:1234:5678::99]:50123 a_very_long_user_name "), "nothing is cut for a pipe: {l}");
        assert!(!l.contains('…'), "{l}");
        let short = row(&Row { user: "app".into(), client: "10.0.0.1:5".into(), ..sample() }, &Terminal::default());
        assert_eq!(short.find("ERR 1045"), header(&Terminal::default()).find("DETAIL"), "short values still line up:\n{short}");
    }

    #[test]
    fn colour_only_when_asked_and_outside_the_width() {
        let plain = row(&sample(), &at(80));
        assert!(!plain.contains('\x1b'));
        let coloured = row(&sample(), &Terminal { color: true, ..at(80) });
        assert!(coloured.contains("\x1b[31mauth_failed\x1b[0m"), "{coloured:?}");
        let stripped = coloured.replace("\x1b[31m", "").replace("\x1b[0m", "");
        assert_eq!(stripped, plain, "colour changes no column");
    }

    #[test]
    fn dates_when_asked() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(Terminal::default().time(t).len(), 12);
        let full = Terminal { date: true, ..Terminal::default() }.time(t);
        assert_eq!(full.len(), 23, "{full}");
        assert!(full.starts_with("2023-11-1") && full.ends_with(".123"), "{full}");
        let r = Row { time: full, ..sample() };
        assert!(width(&row(&r, &Terminal { date: true, ..at(80) })) < 80);
        assert!(header(&Terminal { date: true, ..at(80) }).starts_with("TIME                    VERDICT"));
    }

    #[test]
    fn folds_prose_at_spaces_with_an_indent() {
        let text = "  why: the server waited 2002.1 ms for the login packet (poll, timeout 2000 ms), gave up and closed with a reset";
        let lines = fold(text, 40, 7);
        assert!(lines.len() > 2, "{lines:?}");
        for l in &lines {
            assert!(width(l) <= 40, "{l}");
        }
        assert!(lines[0].starts_with("  why: the server"));
        assert!(lines[1].starts_with("       ") && !lines[1].starts_with("        "), "{lines:?}");
        assert_eq!(lines.join(" ").split_whitespace().collect::<Vec<_>>(), text.split_whitespace().collect::<Vec<_>>(), "no word lost");
        let long = fold("x".repeat(100).as_str(), 30, 4);
        assert!(long.iter().all(|l| width(l) <= 30), "{long:?}");
        assert_eq!(long.concat().replace(' ', "").len(), 100);
        assert_eq!(Terminal::default().fold(text, 7), text, "no width, no folding");
    }
}
