//! What became of an accepted event: what each plugin emitted, which calls failed for
//! good, which filters dropped it; capped ([`Outcome::bounded`]) before it is kept.

use crate::name::Name;
use serde::{Deserialize, Serialize};

/// Longest text of an outcome (a failure's message, a drop reason) kept in the log: the
/// rest is cut at a character boundary and marked. Why: a plugin's error text is the
/// plugin's to choose; the log keeps what an operator needs, not what an attacker sends.
pub const MAX_OUTCOME_TEXT_BYTES: usize = 4096;

/// Most entries of each list of an outcome (emissions, failures, drops) kept in the log;
/// the per-root work budget keeps real outcomes far below this.
pub const MAX_OUTCOME_ENTRIES: usize = 10_000;

/// `text` cut to at most `max` bytes at a character boundary, marked when cut.
pub fn cut_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    const MARK: &str = "…[cut]";
    let mut end = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

impl Outcome {
    /// Whether the outcome is what [`Outcome::bounded`] would make of it (nearly all are),
    /// so that it can be written as it is, without a copy.
    pub fn is_bounded(&self) -> bool {
        let (n, t) = (MAX_OUTCOME_ENTRIES, MAX_OUTCOME_TEXT_BYTES);
        self.emitted.len() <= n
            && self.failed.len() <= n
            && self.dropped.len() <= n
            && self.failed.iter().all(|f| f.message.len() <= t)
            && self.dropped.iter().all(|(_, r)| r.len() <= t)
    }

    /// The outcome as the log keeps it: texts and lists capped
    /// ([`MAX_OUTCOME_TEXT_BYTES`], [`MAX_OUTCOME_ENTRIES`]), so a `Done` record always fits
    /// in a frame.
    pub fn bounded(&self) -> Outcome {
        let text = |t: &str| cut_text(t, MAX_OUTCOME_TEXT_BYTES);
        Outcome {
            emitted: self.emitted.iter().take(MAX_OUTCOME_ENTRIES).cloned().collect(),
            failed: self
                .failed
                .iter()
                .take(MAX_OUTCOME_ENTRIES)
                .map(|f| FailureNote { message: text(&f.message), ..f.clone() })
                .collect(),
            dropped: self.dropped.iter().take(MAX_OUTCOME_ENTRIES).map(|(p, r)| (p.clone(), text(r))).collect(),
        }
    }
}

/// What became of an event: what each plugin emitted and which calls failed for good.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    pub emitted: Vec<Emission>,
    pub failed: Vec<FailureNote>,
    /// Filters that dropped it, with their reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Emission {
    /// Shared with the plugin and the event type (no copy per emitted event).
    pub plugin: Name,
    #[serde(rename = "type")]
    pub type_name: Name,
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailureNote {
    pub plugin: String,
    pub kind: String,
    pub message: String,
    pub attempts: u32,
}
