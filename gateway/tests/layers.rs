//! The modules of each crate import one way down: no file reaches, through the modules it
//! names (`crate::...`, `super::...`, a child module), back to itself. A circle means the data
//! path can no longer be read from the top down (STYLE.md, "Layers, one way down"); this test
//! names the files of any circle and the names that tie them.
//!
//! A file's test module (from `#[cfg(test)]` on) is left out: tests may look anywhere.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates' source folders, from this crate's folder.
const CRATES: &[&str] = &["src", "h1/src", "../health/src", "../config/src"];

/// A module's path (`["fast", "upstream"]`), by file.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut found = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] {
                parts.clear();
            }
            // `src/bin/x.rs` and the like are crates of their own.
            if parts.first().is_some_and(|p| p == "bin") {
                continue;
            }
            found.insert(parts, path);
        }
    }
    found
}

/// The code of a file before its test module, without comments, and without visibilities
/// (`pub(super)` names who may use an item, not a module it uses).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .map(|l| l.replace("pub(super)", "pub").replace("pub(crate)", "pub"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a file names: each `crate::`, `super::` or `self::` path, and each `use` of a
/// child module, as its segments, a `{...}` list expanded one level.
fn paths(code: &str, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        // The start of a word.
        if !ident(chars[i]) || (i > 0 && (ident(chars[i - 1]) || chars[i - 1] == ':')) {
            i += 1;
            continue;
        }
        let mut j = i;
        let mut segments: Vec<String> = Vec::new();
        loop {
            let start = j;
            while j < chars.len() && ident(chars[j]) {
                j += 1;
            }
            segments.push(chars[start..j].iter().collect());
            if chars.get(j) == Some(&':') && chars.get(j + 1) == Some(&':') {
                j += 2;
                if chars.get(j) == Some(&'{') {
                    let end = chars[j..]
                        .iter()
                        .position(|&c| c == '}')
                        .map_or(j, |p| j + p);
                    let list: String = chars[j + 1..end].iter().collect();
                    for item in list.split(',') {
                        let item = item.split(" as ").next().unwrap_or_default();
                        let item: Vec<String> = item
                            .split("::")
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty() && s != "self")
                            .collect();
                        if !item.is_empty() {
                            let mut p = segments.clone();
                            p.extend(item);
                            out.push(p);
                        }
                    }
                    segments.clear();
                    j = end;
                    break;
                }
                if j < chars.len() && ident(chars[j]) {
                    continue;
                }
            }
            break;
        }
        let head = segments.first().map(String::as_str);
        let rooted = matches!(head, Some("crate" | "super" | "self"));
        let child = head.is_some_and(|h| children.contains(h)) && segments.len() > 1;
        if rooted || child {
            out.push(segments);
        }
        i = j.max(i + 1);
    }
    out
}

/// The module a path names, from module `at`: the deepest known module along it.
fn resolve(
    at: &[String],
    path: &[String],
    known: &BTreeMap<Vec<String>, PathBuf>,
) -> Option<Vec<String>> {
    let mut module: Vec<String> = at.to_vec();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            module.clear();
            rest = &path[1..];
        }
        Some("self") => rest = &path[1..],
        Some("super") => {
            while rest.first().is_some_and(|s| s == "super") {
                module.pop();
                rest = &rest[1..];
            }
        }
        _ => {}
    }
    for segment in rest {
        let mut deeper = module.clone();
        deeper.push(segment.clone());
        if !known.contains_key(&deeper) {
            break;
        }
        module = deeper;
    }
    (!module.is_empty() && module != at).then_some(module)
}

/// The circles of one crate: each a set of files that reach one another, with the edges.
fn circles(src: &Path) -> Vec<Vec<String>> {
    let known = modules(src);
    let mut edges: BTreeMap<Vec<String>, BTreeMap<Vec<String>, BTreeSet<String>>> = BTreeMap::new();
    for (module, file) in &known {
        if module.is_empty() {
            continue;
        }
        let children: BTreeSet<String> = known
            .keys()
            .filter(|k| k.len() == module.len() + 1 && k.starts_with(module))
            .filter_map(|k| k.last().cloned())
            .collect();
        for path in paths(&code(file), &children) {
            if let Some(to) = resolve(module, &path, &known) {
                let name = path.last().cloned().unwrap_or_default();
                edges
                    .entry(module.clone())
                    .or_default()
                    .entry(to)
                    .or_default()
                    .insert(name);
            }
        }
    }
    // Which modules each reaches.
    let reach = |from: &Vec<String>| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(m) = stack.pop() {
            for next in edges.get(&m).into_iter().flat_map(|e| e.keys()) {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let mut found: Vec<Vec<String>> = Vec::new();
    let mut placed = BTreeSet::new();
    for module in edges.keys() {
        if placed.contains(module) || !reach(module).contains(module) {
            continue;
        }
        let circle: Vec<Vec<String>> = edges
            .keys()
            .filter(|m| reach(module).contains(*m) && reach(m).contains(module))
            .cloned()
            .collect();
        let mut lines = Vec::new();
        for from in &circle {
            placed.insert(from.clone());
            for (to, names) in &edges[from] {
                if circle.contains(to) {
                    let names: Vec<_> = names.iter().cloned().collect();
                    lines.push(format!(
                        "{} -> {}: {}",
                        from.join("::"),
                        to.join("::"),
                        names.join(", ")
                    ));
                }
            }
        }
        found.push(lines);
    }
    found
}

#[test]
fn every_crate_imports_one_way_down() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    for src in CRATES {
        for circle in circles(&here.join(src)) {
            problems.push(format!("a circle in {src}:\n  {}", circle.join("\n  ")));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checker itself finds a circle, and reads `{...}` lists and `super::`; a child's
/// `pub(super)` is no edge to its parent.
#[test]
fn a_circle_is_found() {
    let dir = std::env::temp_dir().join(format!("holdfast-layers-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\nmod d;\n").unwrap();
    std::fs::write(src.join("d/mod.rs"), "mod e;\nuse e::h;\n").unwrap();
    std::fs::write(
        src.join("d/e.rs"),
        "pub(super) fn h() {}\npub(crate) fn k() {}\n",
    )
    .unwrap();
    std::fs::write(
        src.join("a/mod.rs"),
        "mod inner;\nuse crate::{b, c::Thing};\n",
    )
    .unwrap();
    std::fs::write(src.join("a/inner.rs"), "use super::super::c;\n").unwrap();
    std::fs::write(
        src.join("b.rs"),
        "// use crate::a; in a comment is no edge\n",
    )
    .unwrap();
    std::fs::write(
        src.join("c.rs"),
        "use crate::a::Top;\npub struct Thing;\nfn f() { crate::a::inner::g(); }\n#[cfg(test)]\nuse crate::b;\n",
    )
    .unwrap();
    let found = circles(&src);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(found.len(), 1, "{found:?}");
    let text = found[0].join("\n");
    assert!(text.contains("a -> c: Thing"), "{text}");
    assert!(text.contains("c -> a: Top"), "{text}");
    assert!(text.contains("c -> a::inner: g"), "{text}");
    assert!(text.contains("a::inner -> c: c"), "{text}");
    assert!(!text.contains("-> b"), "{text}");
    assert!(!text.contains("d"), "{text}");
}
