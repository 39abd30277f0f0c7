//! The source tree's layers only look down: a module in one top-level folder of `src/` imports
//! only from the folders below it (the order of the README's architecture table), so no circle of
//! imports runs between folders. Read from the source text (`crate::<folder>` paths outside
//! comments), as a reviewer would check it.

use std::path::{Path, PathBuf};

/// Top to bottom; `cli` and `commands` sit above them all and may use any.
const LAYERS: [&str; 9] = [
    "host", "up", "verify", "provider", "services", "sync", "cluster", "model", "edges",
];

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

/// The top-level folders a file's code names through `crate::<folder>`.
fn imported_layers(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let name: &str = rest
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
                .unwrap_or_default();
            if let Some(layer) = LAYERS.iter().find(|l| **l == name) {
                out.push(*layer);
            }
        }
    }
    out
}

#[test]
fn every_folder_imports_only_from_the_folders_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for (rank, layer) in LAYERS.iter().enumerate() {
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "src/{layer} holds no Rust file");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for target in imported_layers(&text) {
                let target_rank = LAYERS.iter().position(|l| *l == target).unwrap();
                if target_rank < rank {
                    wrong.push(format!(
                        "{} imports `crate::{target}`, a layer above `{layer}`",
                        file.strip_prefix(&src).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_an_import_and_not_a_comment() {
    assert_eq!(
        imported_layers("use crate::up::steps; // crate::host\n/// [`crate::sync`]\n"),
        ["up"]
    );
}
