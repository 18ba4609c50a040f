//! Why one plugin call failed: the kinds the dead letters, statuses and `/metrics` name.

use super::text;
use serde::Serialize;

/// Why one plugin call failed; the dead letters and `/metrics` use these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The guest trapped (panic, unreachable, bad memory access).
    Trap,
    /// The guest recursed past the Wasm stack limit.
    StackOverflow,
    /// The call ran past its deadline (epoch interruption).
    Deadline,
    /// The guest tried to grow memory past its cap.
    Memory,
    /// The guest used up its fuel budget.
    Fuel,
    /// Emitted a type its manifest does not list.
    EmitDenied,
    /// Emitted an event that fails its schema (or is not JSON).
    EmitInvalid,
    /// Emitted more events or bytes than one call may.
    EmitBudget,
    /// Called a host import its manifest does not grant.
    CapabilityDenied,
    /// The handler returned an error.
    HandlerError,
    /// A filter's replacement event is invalid.
    BadOutput,
    /// The plugin's circuit breaker is open; the call was not made.
    CircuitOpen,
    /// A fresh instance could not be created.
    Instantiate,
    /// An emitted event went past the hop limit (plugins emitting at each other).
    HopLimit,
    /// The accepted event's work, all hops and retries together, went past
    /// `pipeline.root_budget` (calls, emitted events or bytes); the rest of it is skipped.
    RootBudget,
    /// A sink could not deliver: its destination is down, unreachable or did not confirm
    /// in time. Retryable: it may be back by the next attempt.
    SinkUnavailable,
    /// A sink's destination refused the event (a broker's negative confirm, or no queue
    /// to route it to). Retryable: the destination's topology may be fixed meanwhile.
    SinkRefused,
}

impl FailureKind {
    pub const ALL: [FailureKind; 17] = [
        FailureKind::Trap,
        FailureKind::StackOverflow,
        FailureKind::Deadline,
        FailureKind::Memory,
        FailureKind::Fuel,
        FailureKind::EmitDenied,
        FailureKind::EmitInvalid,
        FailureKind::EmitBudget,
        FailureKind::CapabilityDenied,
        FailureKind::HandlerError,
        FailureKind::BadOutput,
        FailureKind::CircuitOpen,
        FailureKind::Instantiate,
        FailureKind::HopLimit,
        FailureKind::RootBudget,
        FailureKind::SinkUnavailable,
        FailureKind::SinkRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::StackOverflow => "stack_overflow",
            FailureKind::Deadline => "deadline",
            FailureKind::Memory => "memory",
            FailureKind::Fuel => "fuel",
            FailureKind::EmitDenied => "emit_denied",
            FailureKind::EmitInvalid => "emit_invalid",
            FailureKind::EmitBudget => "emit_budget",
            FailureKind::CapabilityDenied => "capability_denied",
            FailureKind::HandlerError => "handler_error",
            FailureKind::BadOutput => "bad_output",
            FailureKind::CircuitOpen => "circuit_open",
            FailureKind::Instantiate => "instantiate",
            FailureKind::HopLimit => "hop_limit",
            FailureKind::RootBudget => "root_budget",
            FailureKind::SinkUnavailable => "sink_unavailable",
            FailureKind::SinkRefused => "sink_refused",
        }
    }
}

/// A failed plugin call.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
    /// Whether a retry may help (a handler said so, or a deadline).
    pub retryable: bool,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        // A deadline or a failed output may pass on another try (a slow moment, a transient
        // bug); traps, limits and denials will not.
        let retryable = matches!(
            kind,
            FailureKind::Deadline
                | FailureKind::EmitInvalid
                | FailureKind::EmitBudget
                | FailureKind::SinkUnavailable
                | FailureKind::SinkRefused
        );
        Self::with_retry(kind, message, retryable)
    }

    /// A failure whose message may carry plugin text (an error message, a type name it
    /// sent): capped at [`text::MAX_PLUGIN_MESSAGE_BYTES`] and cleaned of control
    /// characters here, once, so the dead letters, the log and the status views never hold
    /// more than that or a forged line.
    pub fn with_retry(kind: FailureKind, message: impl Into<String>, retryable: bool) -> Self {
        let message = text::clean_owned(message.into(), text::MAX_PLUGIN_MESSAGE_BYTES);
        Self { kind, message, retryable }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_deadline_a_failed_output_or_a_failed_delivery_is_retryable_by_default() {
        for kind in FailureKind::ALL {
            use FailureKind::*;
            let expected = [Deadline, EmitInvalid, EmitBudget, SinkUnavailable, SinkRefused].contains(&kind);
            assert_eq!(Failure::new(kind, "x").retryable, expected, "{kind:?}");
        }
    }

    #[test]
    fn with_retry_keeps_the_flag_it_is_given() {
        for kind in FailureKind::ALL {
            for retryable in [false, true] {
                let f = Failure::with_retry(kind, "boom", retryable);
                assert_eq!((f.kind, f.message.as_str(), f.retryable), (kind, "boom", retryable));
            }
        }
    }

    #[test]
    fn a_message_is_cleaned_of_control_characters_and_capped() {
        let f = Failure::new(FailureKind::HandlerError, "line one\nFAKE LOG LINE\x1b[31m");
        assert!(!f.message.chars().any(char::is_control), "{:?}", f.message);
        assert!(f.message.starts_with("line one"), "{:?}", f.message);
        assert!(!f.message.contains('\n'));

        let huge = "é".repeat(text::MAX_PLUGIN_MESSAGE_BYTES);
        let f = Failure::with_retry(FailureKind::HandlerError, huge, true);
        assert!(f.message.len() <= text::MAX_PLUGIN_MESSAGE_BYTES, "{}", f.message.len());
        assert!(f.message.contains("more bytes cut"), "says it was cut");

        let clean = "a plain message";
        assert_eq!(Failure::new(FailureKind::Trap, clean).message, clean, "clean text is kept as it is");
    }

    #[test]
    fn every_kind_has_a_unique_snake_case_name_matching_its_serde_name() {
        let mut seen = std::collections::HashSet::new();
        for kind in FailureKind::ALL {
            let name = kind.as_str();
            assert!(seen.insert(name), "{name} named twice");
            assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{name}");
            assert!(!name.starts_with('_') && !name.ends_with('_') && !name.contains("__"), "{name}");
            assert_eq!(serde_json::to_value(kind).unwrap(), name, "dead letters and /metrics say the same");
            assert_eq!(serde_json::from_value::<FailureKind>(name.into()).unwrap(), kind);
        }
        assert_eq!(seen.len(), FailureKind::ALL.len());
    }
}
