//! What a long command is doing, on standard error: a progress bar (indicatif) while stderr
//! is a terminal, nothing when it is not (a script reading stdout or a log of stderr gets no
//! noise), and plain lines when `--progress always` asks for them anyway. Standard output is
//! never touched: it stays the command's answer.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
use std::io::{IsTerminal, Write};

/// `--progress`: when to show progress on standard error.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum When {
    /// While standard error is a terminal.
    #[default]
    Auto,
    /// Always; as plain lines when standard error is not a terminal.
    Always,
    /// Never.
    Never,
}

/// How often a forced progress (not a terminal) writes a line: often enough to see a job
/// move, rarely enough not to flood a log.
const LINES_PER_SECOND: u8 = 1;

/// One job's progress: `done / len` items, and what it is on now.
pub struct Progress(ProgressBar);

impl Progress {
    /// `len` items of `what` (shown as the bar's prefix), or hidden as `when` says.
    pub fn new(when: When, len: u64, what: &str) -> Self {
        Self::with_target(when, std::io::stderr().is_terminal(), len, what)
    }

    fn with_target(when: When, terminal: bool, len: u64, what: &str) -> Self {
        let target = match (when, terminal) {
            (When::Never, _) | (When::Auto, false) => ProgressDrawTarget::hidden(),
            (_, true) => ProgressDrawTarget::stderr(),
            (When::Always, false) => ProgressDrawTarget::term_like_with_hz(Box::new(Lines), LINES_PER_SECOND),
        };
        let bar = ProgressBar::with_draw_target(Some(len), target);
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed} {msg}")
            .expect("a valid template")
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(what.to_string());
        Progress(bar)
    }

    /// Whether anything is shown (a job may skip work done only for the progress).
    pub fn is_shown(&self) -> bool {
        !self.0.is_hidden()
    }

    pub fn set_length(&self, len: u64) {
        self.0.set_length(len);
    }

    pub fn set_position(&self, done: u64) {
        self.0.set_position(done);
    }

    /// One more item done; `now` says what it was.
    pub fn step(&self, now: impl Into<String>) {
        self.0.set_message(now.into());
        self.0.inc(1);
    }

    /// Prints a line of the command's output (stdout) without tearing the bar: around it
    /// when both are on one terminal; straight out when stdout goes elsewhere (hiding and
    /// redrawing the bar for each line would cost more than the job).
    pub fn println(&self, line: impl AsRef<str>) {
        match self.is_shown() && std::io::stdout().is_terminal() {
            true => self.0.suspend(|| println!("{}", line.as_ref())),
            false => println!("{}", line.as_ref()),
        }
    }

    pub fn finish(self) {
        self.0.finish_and_clear();
    }
}

/// A "terminal" that is a log: each redraw becomes one line on stderr, cursor moves are
/// dropped.
#[derive(Debug)]
struct Lines;

impl TermLike for Lines {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, line: &str) -> std::io::Result<()> {
        match line.trim().is_empty() {
            true => Ok(()),
            false => writeln!(std::io::stderr(), "{}", line.trim_end()),
        }
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.write_line(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_unless_a_terminal_or_asked() {
        assert!(!Progress::with_target(When::Auto, false, 3, "x").is_shown());
        assert!(!Progress::with_target(When::Never, true, 3, "x").is_shown());
        assert!(Progress::with_target(When::Always, false, 3, "x").is_shown());
    }
}
