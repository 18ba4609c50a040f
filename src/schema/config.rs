//! `[schemas]`: where the catalogue comes from and which types accept unknown fields.

use crate::settings::Invalid;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaConfig {
    /// A directory of Markdown tables to generate the catalogue from, instead of the built-in one.
    pub source: Option<PathBuf>,
    /// A directory of `<family>/<name>.schema.json` files to load instead.
    pub dir: Option<PathBuf>,
    /// Globs of event types whose objects accept fields the schema does not list.
    pub allow_unknown_fields: Vec<String>,
}

impl SchemaConfig {
    pub fn check(&self) -> Result<(), Invalid> {
        match self.source.is_some() && self.dir.is_some() {
            true => Err(Invalid::new("schemas", "set `source` or `dir`, not both")),
            false => Ok(()),
        }
    }
}
