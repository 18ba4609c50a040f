//! The one shape of a refused setting, shared by every config section: `key: message`,
//! the key as the user wrote it (`route[2].retry.max_ms`, `plugin[0] (echo).limits`).
//!
//! Each part of the router owns its config section (its type, defaults and checks) next
//! to its code; `crate::config` composes the sections and adds the checks that span
//! several. This module sits at the bottom so that every section can answer in this shape
//! without importing the composition above it.

use std::fmt::Display;

/// A setting that parses but cannot work, named by its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into() }
    }
}

/// `v` must be greater than 0 (counts, sizes, queue lengths).
pub fn positive(key: impl Into<String>, v: u64) -> Result<(), Invalid> {
    match v {
        0 => Err(Invalid::new(key, "must be greater than 0")),
        _ => Ok(()),
    }
}

/// `v` must not exceed `max`: values past it would overflow the router's time and count
/// arithmetic (a deadline in epoch ticks, a delay added to the clock, a hop count in a
/// `u8`), so they are refused by name instead of wrapping at run time.
pub fn at_most<T: PartialOrd + Display>(key: impl Into<String>, v: T, max: T) -> Result<(), Invalid> {
    match v > max {
        true => Err(Invalid::new(key, format!("{v} is more than the largest allowed, {max}"))),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_key_and_say_why() {
        assert_eq!(positive("pipeline.queue", 0).unwrap_err().to_string(), "pipeline.queue: must be greater than 0");
        assert!(positive("pipeline.queue", 1).is_ok());
        let e = at_most("pipeline.hop_limit", 65u8, 64).unwrap_err();
        assert_eq!(e.to_string(), "pipeline.hop_limit: 65 is more than the largest allowed, 64");
        assert!(at_most("pipeline.hop_limit", 64u8, 64).is_ok());
    }
}
