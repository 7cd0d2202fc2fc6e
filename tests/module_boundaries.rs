//! The modules' dependency rules (docs/architecture.md), checked on the source text so that a
//! new `use` that breaks them fails the suite.
//!
//! - `config` is the composition root: it reads the file and builds the runtime settings, so only
//!   `main.rs`, the commands in `ops/` and config itself import it.
//! - Data flows one way, source → route → sink, joined by the relay: none of `config`, `settings`,
//!   `source`, `route`, `sink`, `checkpoint` or `pg` imports the relay (config builds the relay's
//!   settings, which are values in `settings`).
//! - The checkpoint values are a leaf: `checkpoint.rs` imports nothing of the pipeline.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// Whether the code of `line` names the crate's module `module`: `crate::module`,
/// `outboxd::module` (the binary's path to the library) or a grouped `crate::{.., module, ..}`.
/// Comments are prose, not dependencies.
fn names_module(line: &str, module: &str) -> bool {
    if line.trim_start().starts_with("//") {
        return false;
    }
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let direct = ["crate::", "outboxd::"].iter().any(|root| {
        let needle = format!("{root}{module}");
        line.match_indices(&needle).any(|(at, _)| {
            !line[at + needle.len()..].starts_with(is_ident) && !line[..at].ends_with(is_ident)
        })
    });
    let grouped = ["crate::{", "outboxd::{"].iter().any(|root| {
        line.split_once(root).is_some_and(|(_, rest)| {
            rest.split(|c: char| !is_ident(c))
                .any(|word| word == module)
        })
    });
    direct || grouped
}

/// `(file relative to src/, line)` of every line under `src/` that names `module`.
fn imports_of(module: &str) -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&src);
    assert!(!files.is_empty(), "no source files under {}", src.display());
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read source");
        let relative = file
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .into_owned();
        for line in text.lines().filter(|line| names_module(line, module)) {
            found.push((relative.clone(), line.trim().to_owned()));
        }
    }
    found
}

#[test]
fn only_main_and_ops_import_config() {
    let offending: Vec<_> = imports_of("config")
        .into_iter()
        .filter(|(file, _)| {
            !(file == "main.rs" || file.starts_with("ops/") || file.starts_with("config/"))
        })
        .collect();
    assert!(offending.is_empty(), "config imported by {offending:#?}");
}

#[test]
fn the_pipeline_does_not_import_the_relay() {
    let offending: Vec<_> = imports_of("relay")
        .into_iter()
        .filter(|(file, _)| {
            [
                "config/",
                "settings.rs",
                "source/",
                "route/",
                "sink/",
                "pg/",
                "checkpoint.rs",
            ]
            .iter()
            .any(|prefix| file.starts_with(prefix))
        })
        .collect();
    assert!(offending.is_empty(), "relay imported by {offending:#?}");
}

#[test]
fn checkpoint_values_are_a_leaf() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/checkpoint.rs");
    let text = std::fs::read_to_string(src).expect("read checkpoint.rs");
    let offending: Vec<_> = text
        .lines()
        .filter(|line| line.contains("crate::") && !line.contains("crate::pg"))
        .collect();
    assert!(offending.is_empty(), "checkpoint.rs imports {offending:#?}");
}

#[test]
fn every_spelling_of_an_import_is_seen() {
    assert!(names_module("use crate::relay::RelayConfig;", "relay"));
    assert!(names_module("use outboxd::config::Settings;", "config"));
    assert!(names_module("use crate::{config, pg};", "config"));
    assert!(!names_module("use crate::relay_state::X;", "relay"));
    assert!(!names_module("use crate::pg::config::X;", "config"));
    assert!(!names_module(
        "/// directives (`info,outboxd::relay=debug`)",
        "relay"
    ));
}

#[test]
fn the_rules_see_the_imports_they_police() {
    // A check that finds nothing could be looking in the wrong place: the known imports show up.
    assert!(imports_of("config")
        .iter()
        .any(|(file, _)| file == "main.rs"));
    assert!(imports_of("relay")
        .iter()
        .any(|(file, _)| file.starts_with("ops/")));
    assert!(imports_of("settings")
        .iter()
        .any(|(file, _)| file.starts_with("config/")));
}
