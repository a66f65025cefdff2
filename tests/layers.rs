//! The modules' floors (STYLE.md: lower floors never import higher ones, no import cycles),
//! checked from the source: every `crate::<module>` a module names must sit on a lower floor.
//! A new module must be given its floor here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Floor of every top-level module of `src/`: leaves at 0, the broker's entry points on top.
const FLOORS: &[(&str, u32)] = &[
    ("clock", 0),
    ("config", 0),
    ("mesh", 0),
    ("protocol", 0),
    ("record", 0),
    ("client", 0),
    ("metadata", 1),
    ("group", 1),
    ("storage", 1),
    ("shard", 2),
    ("server", 3),
    ("metrics", 3),
    ("cluster", 4),
    ("bench", 4),
    ("broker", 5),
    ("cli", 6),
];

fn floor(module: &str) -> u32 {
    FLOORS
        .iter()
        .find(|(name, _)| *name == module)
        .unwrap_or_else(|| panic!("module '{module}' has no floor in tests/layers.rs"))
        .1
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read src") {
            rust_files(&entry.expect("entry").path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The `crate::<module>` names in `text`.
fn named_modules(text: &str) -> BTreeSet<String> {
    text.match_indices("crate::")
        .map(|(at, _)| {
            text[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

#[test]
fn lower_floors_never_import_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for entry in std::fs::read_dir(&src).expect("read src") {
        let path = entry.expect("entry").path();
        let Some(module) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if matches!(module, "lib" | "main") {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&path, &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read source");
            for named in named_modules(&text) {
                if named != module && floor(&named) >= floor(module) {
                    violations.push(format!(
                        "{} ({module}, floor {}) names crate::{named} (floor {})",
                        file.strip_prefix(&src).unwrap_or(&file).display(),
                        floor(module),
                        floor(&named)
                    ));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}
