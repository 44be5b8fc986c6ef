//! The direction of dependencies: every `crate::...` path under `src/` names a module of a
//! lower layer than its own (`coding_swarm::LAYERS`), and the README's design notes show the
//! same table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The top-level module a file under `src/` belongs to (`None` for `lib.rs` and the binary
/// with its own modules).
fn module_of(path: &Path, src: &Path) -> Option<String> {
    let rel = path.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main" | "remote" | "otel")).then(|| name.to_string())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a file refers to through `crate::`, with the line of each: plain
/// paths (`crate::store::Store`) and grouped imports (`use crate::{a, b::c}`).
fn crate_references(text: &str) -> Vec<(usize, String)> {
    let mut refs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        refs.push((i + 1, name));
                    }
                }
            } else {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    refs.push((i + 1, name));
                }
            }
            rest = after;
        }
    }
    refs
}

fn layer_of() -> HashMap<&'static str, usize> {
    coding_swarm::LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, (_, modules))| modules.iter().map(move |m| (*m, i)))
        .collect()
}

/// Every violation of the rule in the files under `src`.
fn violations(src: &Path) -> Vec<String> {
    let layers = layer_of();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut found = Vec::new();
    for file in files {
        let Some(module) = module_of(&file, src) else {
            continue;
        };
        let Some(&own) = layers.get(module.as_str()) else {
            found.push(format!(
                "{}: module {module} is in no layer of coding_swarm::LAYERS",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, target) in crate_references(&text) {
            if target == module {
                continue;
            }
            match layers.get(target.as_str()) {
                Some(&layer) if layer < own => {}
                Some(&layer) => found.push(format!(
                    "{}:{line}: {module} (layer {own}, {}) uses {target} (layer {layer}, {}), which is not below it",
                    file.display(),
                    coding_swarm::LAYERS[own].0,
                    coding_swarm::LAYERS[layer].0
                )),
                None => found.push(format!(
                    "{}:{line}: {module} uses crate::{target}, which is in no layer",
                    file.display()
                )),
            }
        }
    }
    found
}

#[test]
fn no_module_imports_one_of_its_own_or_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_check_catches_an_upward_import() {
    // A copy of the tree where the store reaches up into the engine, and the runtime and the
    // worker (one layer) into each other: each is reported.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("src");
    copy_tree(&src, &copy);
    let append = |file: &str, text: &str| {
        let path = copy.join(file);
        let mut content = std::fs::read_to_string(&path).unwrap();
        content.push_str(text);
        std::fs::write(path, content).unwrap();
    };
    append("store/mod.rs", "\nuse crate::engine::Engine;\n");
    append("runtime/mod.rs", "\nfn x() { crate::worker::run_job; }\n");
    append("model/mod.rs", "use crate::{spec, store::Store};\n");
    let found = violations(&copy);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[..]
        .iter()
        .any(|v| v.contains("store (layer") && v.contains("uses engine")));
    assert!(found
        .iter()
        .any(|v| v.contains("runtime (layer") && v.contains("uses worker")));
    assert!(found
        .iter()
        .any(|v| v.contains("model (layer") && v.contains("uses store")));
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

#[test]
fn the_readme_shows_the_layers_as_the_code_has_them() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("<!-- layers -->")
        .expect("README.md marks its layer table with <!-- layers -->");
    let table = &readme[start..];
    let table = &table[..table.find("<!-- /layers -->").expect("and ends it")];
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| layer") && !l.starts_with("|--"))
        .collect();
    assert_eq!(rows.len(), coding_swarm::LAYERS.len(), "{table}");
    for (row, (what, modules)) in rows.iter().zip(coding_swarm::LAYERS) {
        let expected = modules
            .iter()
            .map(|m| format!("`{m}`"))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(
            row.contains(&expected) && row.contains(what),
            "README row {row:?} should name {expected} ({what})"
        );
    }
}
