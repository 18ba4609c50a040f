//! Plugin text the router keeps: handler error messages, filter drop reasons, `log.write`
//! lines, captured stdout/stderr lines. All of it goes through [`clean`], which caps it at
//! a documented size and replaces control characters (newlines included), so a plugin can
//! neither bloat the dead letters and the log nor forge a line of the router's own log.

use std::borrow::Cow;

/// The most bytes of one piece of plugin text the router keeps (an error message, a drop
/// reason, one log line, one captured output line). Enough for any useful message and a
/// stack trace's head; past it the text is cut at a character boundary and says how much
/// was cut.
pub const MAX_PLUGIN_MESSAGE_BYTES: usize = 4 * 1024;

/// What stands in for each control character (C0, DEL, C1, and the Unicode line and
/// paragraph separators): visible, and never a line break.
pub const REPLACEMENT: char = '\u{FFFD}';

/// Whether `c` must not reach a log line as it is: it could end the line, move the cursor
/// or recolour a terminal.
fn is_unsafe(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// `c`, or [`REPLACEMENT`] when it is unsafe.
fn safe(c: char) -> char {
    if is_unsafe(c) {
        REPLACEMENT
    } else {
        c
    }
}

/// `text` capped at `max` bytes (the marker of a cut included) and with every control
/// character replaced by [`REPLACEMENT`]. Borrows when there is nothing to do (the common
/// case: one scan, no allocation); otherwise allocates at most about `max` bytes, whatever
/// the size of `text`.
pub fn clean(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max && !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let marker = |cut: usize| format!(" [{cut} more bytes cut]");
    // Room for the longest marker this text can need; a cap too small for any marker cuts
    // without one.
    let longest = marker(text.len()).len();
    let budget = if max > longest { max - longest } else { max };
    let mut out = String::with_capacity(max.min(text.len().saturating_mul(3)));
    for (i, c) in text.char_indices() {
        let c = safe(c);
        if out.len() + c.len_utf8() > budget {
            let rest: usize = text[i..].chars().map(|c| safe(c).len_utf8()).sum();
            if out.len() + rest <= max {
                out.extend(text[i..].chars().map(safe));
            } else if max > longest {
                out.push_str(&marker(text.len() - i));
            }
            return Cow::Owned(out);
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// [`clean`] for an owned string: returns it untouched when it is already clean.
pub fn clean_owned(text: String, max: usize) -> String {
    match clean(&text, max) {
        Cow::Borrowed(_) => text,
        Cow::Owned(s) => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_text_is_borrowed() {
        assert!(matches!(clean("plain text, ünïcode", 100), Cow::Borrowed(_)));
    }

    #[test]
    fn control_characters_and_line_breaks_are_replaced() {
        let forged = "ok\n2026-01-01T00:00:00Z ERROR eventyard: forged\r\u{1b}[2J\u{0}\u{85}\u{2028}";
        let out = clean(forged, 1000);
        assert!(!out.chars().any(is_unsafe), "{out:?}");
        assert_eq!(out.matches(REPLACEMENT).count(), 6);
        assert!(out.starts_with("ok\u{FFFD}2026"));
    }

    #[test]
    fn long_text_is_cut_to_the_cap_with_a_marker() {
        let text = "é".repeat(10_000); // 20 000 bytes, two per character
        let out = clean(&text, MAX_PLUGIN_MESSAGE_BYTES);
        assert!(out.len() <= MAX_PLUGIN_MESSAGE_BYTES, "{}", out.len());
        let kept = out.split(" [").next().unwrap().len();
        assert!(out.ends_with(&format!(" [{} more bytes cut]", 20_000 - kept)), "{}", &out[out.len() - 40..]);
        // 80 MiB of control characters: short and clean.
        let huge = "\u{1}".repeat(80 << 20);
        let out = clean(&huge, MAX_PLUGIN_MESSAGE_BYTES);
        assert!(out.len() <= MAX_PLUGIN_MESSAGE_BYTES);
        assert!(!out.chars().any(is_unsafe));
    }

    #[test]
    fn a_tiny_cap_never_panics() {
        for max in 0..40 {
            assert!(clean("\nabcdefghijklmnopqrstuvwxyz0123456789", max).len() <= max);
        }
    }
}
