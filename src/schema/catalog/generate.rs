//! `eventyard schemas generate`: write the catalogue's schemas to disk, or check that the
//! committed files are exactly what the tables generate.

use super::{Catalog, EventDef};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// How a committed schema file differs from what the tables generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// The file exists but its content differs.
    Changed(PathBuf),
    /// The tables generate this file but it is not there.
    Missing(PathBuf),
    /// A `*.schema.json` file that no table generates any more.
    Extra(PathBuf),
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Drift::Changed(p) => {
                write!(f, "{}: differs from what the tables generate", p.display())
            }
            Drift::Missing(p) => write!(f, "{}: missing (the tables generate it)", p.display()),
            Drift::Extra(p) => write!(f, "{}: no table generates it any more", p.display()),
        }
    }
}

/// The exact bytes of a generated file: pretty JSON with a trailing newline.
pub fn render(def: &EventDef) -> String {
    let mut s = serde_json::to_string_pretty(&def.schema).expect("a JSON value always serialises");
    s.push('\n');
    s
}

/// Writes every schema below `out`; returns the paths written.
pub fn write(catalog: &Catalog, out: &Path) -> std::io::Result<Vec<PathBuf>> {
    write_each(catalog, out, |_| {})
}

/// [`write()`], calling `done` with each file written (the CLI shows progress with it).
pub fn write_each(catalog: &Catalog, out: &Path, mut done: impl FnMut(&Path)) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for def in &catalog.events {
        let path = out.join(def.relative_path());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, render(def))?;
        done(&path);
        written.push(path);
    }
    for stale in extra_files(catalog, out)? {
        std::fs::remove_file(stale)?;
    }
    Ok(written)
}

/// Compares the files below `out` with what `catalog` generates.
pub fn check(catalog: &Catalog, out: &Path) -> std::io::Result<Vec<Drift>> {
    check_each(catalog, out, |_| {})
}

/// [`check`], calling `done` with each file compared.
pub fn check_each(catalog: &Catalog, out: &Path, mut done: impl FnMut(&Path)) -> std::io::Result<Vec<Drift>> {
    let mut drift = Vec::new();
    for def in &catalog.events {
        let path = out.join(def.relative_path());
        done(&path);
        match std::fs::read_to_string(&path) {
            Ok(text) if text == render(def) => {}
            Ok(_) => drift.push(Drift::Changed(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => drift.push(Drift::Missing(path)),
            Err(e) => return Err(e),
        }
    }
    drift.extend(extra_files(catalog, out)?.into_iter().map(Drift::Extra));
    Ok(drift)
}

/// `*.schema.json` files in the families' folders that the catalogue does not generate.
fn extra_files(catalog: &Catalog, out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let expected: BTreeSet<PathBuf> = catalog.events.iter().map(|d| out.join(d.relative_path())).collect();
    let mut extra = Vec::new();
    for family in &catalog.families {
        let dir = out.join(&family.name);
        if dir.is_dir() {
            extra.extend(schema_files(&dir)?.into_iter().filter(|p| !expected.contains(p)));
        }
    }
    Ok(extra)
}

/// Every `*.schema.json` file below `dir`, sorted.
pub fn schema_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let p = entry?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.to_string_lossy().ends_with(".schema.json") {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    Ok(out)
}
