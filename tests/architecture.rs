//! The folder tree is the architecture: each top-level module of `src/` sits in a layer and
//! imports only from layers below it (and from its own folder). This test reads the source
//! and fails on an import that goes up or sideways, naming the file and the import, so the
//! README's "Architecture" table cannot drift from the code.

use std::collections::BTreeMap;
use std::path::Path;

/// The layers, lowest first; a module may import any module of a lower layer. Within a
/// layer the listed `(from, to)` pairs are allowed too (the HTTP plumbing that the other
/// doors build on; the AMQP client pieces the AMQP source and sink share).
const LAYERS: &[&[&str]] = &[
    &["settings", "files", "name"],
    &["schema"],
    &["event"],
    &["metrics"],
    &["store", "wasm"],
    &["router"],
    &["http", "protocols", "admin", "sources", "sinks", "amqp"],
    &["config"],
    &["app"],
    &["cli"],
];
const SIDEWAYS: &[(&str, &str)] = &[("protocols", "http"), ("admin", "http"), ("sources", "amqp"), ("sinks", "amqp")];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// `crate::<module>` paths a file uses outside its `#[cfg(test)]` module (tests may reach
/// anywhere) and outside comments.
fn imports(text: &str) -> Vec<String> {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let re = regex::Regex::new(r"\bcrate::([a-z_]+)").unwrap();
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .flat_map(|l| re.captures_iter(l).map(|c| c[1].to_string()).collect::<Vec<_>>())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_imports_only_from_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = BTreeMap::new();
    let mut seen_modules = std::collections::BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        seen_modules.insert(module.clone());
        let mine = layer_of(&module).unwrap_or_else(|| panic!("src/{module} is in no layer of LAYERS"));
        for target in imports(&std::fs::read_to_string(file).unwrap()) {
            if target == module {
                continue;
            }
            let theirs =
                layer_of(&target).unwrap_or_else(|| panic!("{}: crate::{target} is in no layer", rel.display()));
            let allowed = theirs < mine || SIDEWAYS.contains(&(module.as_str(), target.as_str()));
            if !allowed {
                wrong.entry(rel.display().to_string()).or_insert_with(Vec::new).push(format!("crate::{target}"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports that go up or sideways (see LAYERS): {wrong:#?}");
    // Every layer names real modules, so the table is the tree.
    for module in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(seen_modules.contains(*module), "LAYERS names `{module}`, which src/ does not have");
    }
}
