//! Which event types a subscriber or route wants: comma-separated globs over type names
//! (`infrahub/*`, `idem/idem-*`), matched with globset so `*` also crosses `/`, or a regex.
//!
//! Idem consumers subscribe by profile (`idem-*`, as Idem's match plugins do): a glob
//! without `/`, and a regex, also match the type's name within its family, so `idem-*`
//! matches `idem/idem-state` and `^idem-(low|high)$` matches `idem/idem-low`.

use globset::{Glob, GlobSet, GlobSetBuilder};

/// Longest pattern (a regex, or a comma-separated glob list) a subscriber or route may give:
/// type names are short, so a longer pattern is a mistake or an attempt to make compiling
/// it expensive.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Memory a compiled regex may take (regex's `size_limit`; its default is 10 MiB per
/// regex). Matching type names needs a few KiB; a pattern built to blow up (`a{1000}{1000}`)
/// is refused at compile time instead.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Cache of a regex's lazy DFA (regex's `dfa_size_limit`, default 2 MiB), held for as long as
/// the subscriber or route lives.
pub const REGEX_DFA_SIZE_LIMIT: usize = 256 * 1024;

/// Why a pattern was refused.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("the pattern is {0} bytes; the limit is {MAX_PATTERN_LEN}")]
    TooLong(usize),
    #[error(transparent)]
    Regex(#[from] regex::Error),
}

/// Compiles a subscriber's or route's regex within [`MAX_PATTERN_LEN`],
/// [`REGEX_SIZE_LIMIT`] and [`REGEX_DFA_SIZE_LIMIT`].
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, PatternError> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(PatternError::TooLong(pattern.len()));
    }
    Ok(regex::RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).dfa_size_limit(REGEX_DFA_SIZE_LIMIT).build()?)
}

/// A route's or subscriber's choice of event types.
#[derive(Debug, Clone)]
pub enum Matcher {
    Glob(TypePattern),
    Regex(regex::Regex),
}

impl Matcher {
    pub fn matches(&self, type_name: &str) -> bool {
        match self {
            Matcher::Glob(g) => g.matches(type_name),
            Matcher::Regex(r) => r.is_match(type_name) || r.is_match(name_in_family(type_name)),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Matcher::Glob(g) => g.as_str(),
            Matcher::Regex(r) => r.as_str(),
        }
    }
}

/// `idem-state` for `idem/idem-state`, `response/git.file.get` for `infrahub/response/git.file.get`.
fn name_in_family(type_name: &str) -> &str {
    type_name.split_once('/').map_or(type_name, |(_, name)| name)
}

#[derive(Debug, Clone)]
pub struct TypePattern {
    source: String,
    /// Every glob, against the full type name.
    full: GlobSet,
    /// The globs without `/` (profile globs), against the name within the family.
    bare: GlobSet,
    /// Every pattern a plain type name (no glob syntax), as routes name their types most
    /// often: matched by comparing strings, not through globset (which builds a candidate,
    /// and ran twice per event on the plugin path).
    literals: Option<Box<[String]>>,
}

impl TypePattern {
    /// Parses `a,b,c`; an empty string means every type.
    pub fn parse(patterns: &str) -> Result<Self, globset::Error> {
        let (mut full, mut bare) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        let mut any = false;
        let mut literals = Some(Vec::new());
        for p in patterns.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if p.contains(['*', '?', '[', ']', '{', '}', '\\']) {
                literals = None;
            } else if let Some(l) = &mut literals {
                l.push(p.to_string());
            }
            full.add(Glob::new(p)?);
            if !p.contains('/') {
                bare.add(Glob::new(p)?);
            }
            any = true;
        }
        if !any {
            full.add(Glob::new("*")?);
            literals = None;
        }
        let literals = literals.map(Vec::into_boxed_slice);
        Ok(Self { source: patterns.to_string(), full: full.build()?, bare: bare.build()?, literals })
    }

    pub fn matches(&self, type_name: &str) -> bool {
        if let Some(literals) = &self.literals {
            // The same answers as the globs: a literal glob matches exactly its text, and one
            // without `/` also matches the name within the family.
            return literals.iter().any(|p| p == type_name || (!p.contains('/') && p == name_in_family(type_name)));
        }
        self.full.is_match(type_name) || (!self.bare.is_empty() && self.bare.is_match(name_in_family(type_name)))
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::TypePattern;

    #[test]
    fn plain_names_match_as_their_globs_do() {
        let types =
            ["infrahub/send.echo.request", "infrahub/response/send.echo.request", "idem/idem-state", "idem-state", "x"];
        let lists = [
            "infrahub/send.echo.request",
            "idem-state, x",
            "infrahub/response/send.echo.request,idem/idem-state",
            "send.echo.request",
        ];
        for patterns in lists {
            let p = TypePattern::parse(patterns).unwrap();
            assert!(p.literals.is_some(), "{patterns}");
            let globs = TypePattern { literals: None, ..p.clone() };
            for t in types {
                assert_eq!(p.matches(t), globs.matches(t), "{patterns} / {t}");
            }
        }
        assert!(TypePattern::parse("infrahub/*").unwrap().literals.is_none());
        assert!(TypePattern::parse("").unwrap().literals.is_none());
    }

    #[test]
    fn globs_cross_family_separators() {
        let p = TypePattern::parse("infrahub/*, idem/idem-s*").unwrap();
        assert!(p.matches("infrahub/response/git.file.get"));
        assert!(p.matches("idem/idem-state"));
        assert!(!p.matches("idem/idem-low"));
        assert!(TypePattern::parse("").unwrap().matches("fixinventory/collect"));
    }

    #[test]
    fn profile_globs_and_regexes_match_the_name_within_the_family() {
        use super::Matcher;
        let p = TypePattern::parse("idem-*").unwrap();
        assert!(p.matches("idem/idem-state") && p.matches("idem/idem-low"));
        assert!(!p.matches("fixinventory/collect"));
        assert!(TypePattern::parse("infrahub*").unwrap().matches("infrahub/git.file.get"), "full names still match");
        let r = Matcher::Regex(regex::Regex::new("^idem-(low|high)$").unwrap());
        assert!(r.matches("idem/idem-low") && r.matches("idem/idem-high") && !r.matches("idem/idem-state"));
        assert!(Matcher::Regex(regex::Regex::new("^infrahub/").unwrap()).matches("infrahub/git.file.get"));
    }

    #[test]
    fn regexes_are_compiled_within_their_limits() {
        use super::{compile_regex, PatternError, MAX_PATTERN_LEN};
        assert!(compile_regex("^idem-(low|high)$").unwrap().is_match("idem-low"));
        // Tiny to write, megabytes to compile: refused by the size limit, not compiled.
        assert!(matches!(compile_regex("a{1000}{1000}"), Err(PatternError::Regex(_))));
        assert!(matches!(compile_regex(&"a".repeat(MAX_PATTERN_LEN + 1)), Err(PatternError::TooLong(_))));
        assert!(compile_regex(&"a".repeat(MAX_PATTERN_LEN)).is_ok());
    }
}
