//! Which event types a subscriber or route wants: comma-separated globs over type names
//! (`infrahub/*`, `idem/idem-*`), matched with globset so `*` also crosses `/`.

use globset::{Glob, GlobSet, GlobSetBuilder};

#[derive(Debug, Clone)]
pub struct TypePattern {
    source: String,
    set: GlobSet,
}

impl TypePattern {
    /// Parses `a,b,c`; an empty string means every type.
    pub fn parse(patterns: &str) -> Result<Self, globset::Error> {
        let mut b = GlobSetBuilder::new();
        let mut any = false;
        for p in patterns.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            b.add(Glob::new(p)?);
            any = true;
        }
        if !any {
            b.add(Glob::new("*")?);
        }
        Ok(Self { source: patterns.to_string(), set: b.build()? })
    }

    pub fn matches(&self, type_name: &str) -> bool {
        self.set.is_match(type_name)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::TypePattern;

    #[test]
    fn globs_cross_family_separators() {
        let p = TypePattern::parse("infrahub/*, idem/idem-s*").unwrap();
        assert!(p.matches("infrahub/response/git.file.get"));
        assert!(p.matches("idem/idem-state"));
        assert!(!p.matches("idem/idem-low"));
        assert!(TypePattern::parse("").unwrap().matches("fixinventory/collect"));
    }
}
