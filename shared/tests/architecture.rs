//! The shape of `shared/src`, checked: the pure domain imports no HTTP, AWS
//! or storage code, the top-level modules import each other without a
//! cycle, and no source file grows past what a reader takes in at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const SOURCE_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
/// "About 500 lines": past this a file holds more than one job.
const MAX_FILE_LINES: usize = 520;

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

fn sources() -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(Path::new(SOURCE_ROOT), &mut files);
    files.sort();
    assert!(files.len() > 20, "found only {} files", files.len());
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(SOURCE_ROOT)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (rel, fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// The code of a file without its comments (doc links name modules too).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Everything named `crate::x` or `crate::{x, y}` in `code`.
fn crate_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found
}

fn top_module(rel: &str) -> &str {
    let first = rel.split('/').next().unwrap_or(rel);
    first.strip_suffix(".rs").unwrap_or(first)
}

#[test]
fn the_domain_imports_no_http_aws_or_storage_code() {
    // aws-lc-rs is allowed: pure crypto primitives (the webhook HMAC), no I/O
    // and no AWS service code.
    let forbidden = [
        "lambda_http",
        "lambda_runtime",
        "aws_sdk",
        "aws_config",
        "aws_smithy",
        "aws_lambda",
        "hyper",
        "jsonwebtoken",
        "tokio",
        "http::",
    ];
    let mut offences = Vec::new();
    for (rel, text) in sources().iter().filter(|(r, _)| r.starts_with("domain/")) {
        // aws-lc-rs is pure crypto (the webhook HMAC), no AWS service code.
        let code = code(text).replace("aws_lc_rs::", "");
        for name in forbidden {
            if code.contains(name) {
                offences.push(format!("{rel} names {name}"));
            }
        }
        for module in crate_modules(&code) {
            if module != "domain" {
                offences.push(format!("{rel} imports crate::{module}"));
            }
        }
    }
    assert!(offences.is_empty(), "{offences:#?}");
}

#[test]
fn the_top_level_modules_import_each_other_without_a_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in sources() {
        let top = top_module(&rel).to_string();
        if top == "lib" || rel.ends_with("tests.rs") || rel.contains("/tests/") {
            continue;
        }
        // Unit tests may reach anywhere; the cycle rule is about the code.
        let code = code(&text);
        let code = code.split("#[cfg(test)]").next().unwrap_or_default();
        let uses = graph.entry(top.clone()).or_default();
        uses.extend(crate_modules(code).into_iter().filter(|m| *m != top));
    }
    assert!(graph.len() >= 10, "{graph:?}");
    // Depth-first search for a back edge, reporting the cycle it closes.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if !done.insert(node.to_string()) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        let cycle = visit(node, &graph, &mut Vec::new(), &mut done);
        assert!(cycle.is_none(), "modules import in a circle: {cycle:?}");
    }
}

#[test]
fn the_cycle_check_sees_imports() {
    let found = crate_modules("use crate::storage::{Store};\nuse crate::{api, error::ApiError};");
    let expected: BTreeSet<String> = ["storage", "api", "error"].map(String::from).into();
    assert_eq!(found, expected);
    assert_eq!(code("let a = 1; // crate::http"), "let a = 1; ");
}

#[test]
fn no_source_file_is_over_about_500_lines() {
    let long: Vec<String> = sources()
        .iter()
        .filter(|(_, text)| text.lines().count() > MAX_FILE_LINES)
        .map(|(rel, text)| format!("{rel}: {} lines", text.lines().count()))
        .collect();
    assert!(long.is_empty(), "split these by subject: {long:#?}");
}
