//! What became of an accepted event: what each plugin emitted, which calls failed for
//! good, which filters dropped it; capped ([`Outcome::bounded`]) before it is kept.

use super::json;
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

    /// Appends the outcome's JSON, the same bytes serde writes. The usual outcome (what was
    /// emitted, nothing failed or dropped) is written by hand: one goes into the log for
    /// every finished event, and serde's escaping of its ids and names was the largest part
    /// of finishing a run.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        if !self.failed.is_empty() || !self.dropped.is_empty() {
            serde_json::to_writer(out, self).expect("outcomes serialise");
            return;
        }
        out.extend_from_slice(br#"{"emitted":["#);
        for (i, e) in self.emitted.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(br#"{"plugin":"#);
            json::write_str(out, &e.plugin);
            out.extend_from_slice(br#","type":"#);
            json::write_str(out, &e.type_name);
            out.extend_from_slice(br#","id":"#);
            json::write_str(out, &e.id);
            out.push(b'}');
        }
        out.extend_from_slice(br#"],"failed":[]}"#);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn emission(plugin: &str, type_name: &str, id: &str) -> Emission {
        Emission { plugin: Name::intern(plugin), type_name: Name::intern(type_name), id: id.into() }
    }

    #[test]
    fn written_by_hand_is_what_serde_writes() {
        let failed = FailureNote { plugin: "q".into(), kind: "trap".into(), message: "m\n".into(), attempts: 2 };
        let cases = [
            Outcome::default(),
            Outcome {
                emitted: vec![emission("echo", "infrahub/response/send.echo.request", "0192-ab")],
                ..Default::default()
            },
            Outcome {
                emitted: vec![emission("p\"q", "t/y", "e\\1"), emission("p", "t/z", "e2"), emission("p", "t/z", "")],
                ..Default::default()
            },
            Outcome { failed: vec![failed.clone()], ..Default::default() },
            Outcome { emitted: vec![emission("p", "t/y", "e1")], failed: vec![failed], dropped: vec![] },
            Outcome { dropped: vec![("f".into(), "why".into())], ..Default::default() },
        ];
        for outcome in &cases {
            let mut ours = Vec::new();
            outcome.write_json(&mut ours);
            assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(outcome).unwrap());
        }
    }
}
