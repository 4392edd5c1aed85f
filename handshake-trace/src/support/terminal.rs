//! What the terminal behind stdout/stderr is: its width (to fit lines to it) and whether
//! colour is wanted (`--color`, `NO_COLOR`). The decisions are pure functions of what
//! the environment says; only `width_of` and `is_tty` ask the kernel.
use std::os::fd::RawFd;

/// `--color auto|always|never`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour when the output is a terminal and `NO_COLOR` is unset or empty.
    #[default]
    Auto,
    Always,
    Never,
}

/// Colour or not: `always` and `never` win; `auto` colours a terminal unless `NO_COLOR`
/// is set to a non-empty value (no-color.org).
pub fn use_color(choice: ColorChoice, no_color: Option<&str>, tty: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => tty && no_color.is_none_or(str::is_empty),
    }
}

/// The width to fit lines to: the terminal's when the output is one, else `COLUMNS`
/// when it holds a number, else none (a pipe or a file gets whole lines).
pub fn fit_width(tty_width: Option<usize>, columns_env: Option<&str>) -> Option<usize> {
    tty_width.filter(|w| *w > 0).or_else(|| columns_env?.trim().parse().ok().filter(|w: &usize| *w > 0))
}

/// Whether `fd` is a terminal.
pub fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty only reads the fd's state.
    unsafe { libc::isatty(fd) == 1 }
}

/// The width of the terminal `fd` is, if it is one.
pub fn width_of(fd: RawFd) -> Option<usize> {
    // SAFETY: winsize is plain old data; TIOCGWINSZ writes one into it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a winsize for TIOCGWINSZ.
    let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && is_tty(fd) && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

/// Width and colour for output written to `fd`, from the terminal and the environment.
pub fn detect(fd: RawFd, choice: ColorChoice) -> (Option<usize>, bool) {
    let columns = std::env::var("COLUMNS").ok();
    let no_color = std::env::var("NO_COLOR").ok();
    (fit_width(width_of(fd), columns.as_deref()), use_color(choice, no_color.as_deref(), is_tty(fd)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn color_rules() {
        use ColorChoice::*;
        assert!(use_color(Auto, None, true), "a terminal gets colour");
        assert!(!use_color(Auto, None, false), "a pipe does not");
        assert!(!use_color(Auto, Some("1"), true), "NO_COLOR turns it off");
        assert!(use_color(Auto, Some(""), true), "an empty NO_COLOR does not count");
        assert!(use_color(Always, Some("1"), false), "--color always wins over both");
        assert!(!use_color(Never, None, true), "--color never wins over a terminal");
    }

    #[test]
    fn width_from_the_terminal_then_columns() {
        assert_eq!(fit_width(Some(80), Some("200")), Some(80), "the terminal's own width first");
        assert_eq!(fit_width(None, Some("132")), Some(132));
        assert_eq!(fit_width(None, Some(" 100\n")), Some(100));
        assert_eq!(fit_width(None, Some("wide")), None);
        assert_eq!(fit_width(None, Some("0")), None);
        assert_eq!(fit_width(Some(0), None), None, "a terminal that reports 0 columns is not fitted");
        assert_eq!(fit_width(None, None), None, "a pipe gets whole lines");
    }

    #[test]
    fn a_pipe_is_not_a_terminal() {
        let mut fds = [0; 2];
        // SAFETY: a valid array of two fds.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        assert!(!is_tty(fds[1]));
        assert_eq!(width_of(fds[1]), None);
        // SAFETY: closing the fds just opened.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}
