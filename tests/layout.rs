//! The layout's rules, checked on the source itself (docs/architecture.md):
//! no crate of the workspace has an import circle between its top-level
//! modules.
//!
//! A crate's top-level module is a file `src/<name>.rs` or a folder
//! `src/<name>/`; `lib.rs` and `main.rs` are the crate's root. A module
//! imports another when its files name it through `crate::` (`use
//! crate::{a, b::c}`, `crate::a::f()`), directly or through an item the root
//! re-exports (`pub use a::Item;` then `crate::Item`). Two modules that need
//! each other are a circle: the piece both need belongs in a module of its
//! own. `super::` paths stay inside a module (inline `mod tests`, files of a
//! folder module) and are not followed.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Where one module names another: the file and line, for the report.
type Evidence = String;

#[test]
fn no_crate_has_an_import_circle_between_its_top_level_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut circles = Vec::new();
    for krate in crate_dirs(root) {
        let src = krate.join("src");
        if !src.is_dir() {
            continue;
        }
        let graph = module_graph(&src);
        for cycle in cycles(&graph) {
            let edges: Vec<String> = cycle
                .iter()
                .flat_map(|from| {
                    graph[from]
                        .iter()
                        .filter(|(to, _)| cycle.contains(*to))
                        .map(move |(to, at)| format!("    {from} → {to} ({at})"))
                })
                .collect();
            circles.push(format!(
                "{}: {}\n{}",
                krate.strip_prefix(root).unwrap_or(&krate).display(),
                cycle.iter().cloned().collect::<Vec<_>>().join(", "),
                edges.join("\n")
            ));
        }
    }
    assert!(
        circles.is_empty(),
        "import circles between top-level modules (give the shared piece a module of its own):\n{}",
        circles.join("\n")
    );
}

#[test]
fn a_circle_through_a_re_export_is_found() {
    let dir = std::env::temp_dir().join(format!("tributary-layout-{}", std::process::id()));
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("lib.rs"), "mod a;\nmod b;\npub use b::Thing;\n").unwrap();
    fs::write(src.join("a.rs"), "use crate::Thing;\n").unwrap();
    fs::write(
        src.join("b.rs"),
        "pub struct Thing;\nfn f() { crate::a::g(); }\n",
    )
    .unwrap();
    let found = cycles(&module_graph(&src));
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        found,
        vec![BTreeSet::from(["a".to_owned(), "b".to_owned()])]
    );
}

/// The workspace's crates: the root package and every `members` entry.
fn crate_dirs(root: &Path) -> Vec<PathBuf> {
    let manifest = fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let start = manifest
        .find("members = [")
        .expect("a workspace members list");
    let end = start + manifest[start..].find(']').unwrap();
    let mut dirs = vec![root.to_path_buf()];
    dirs.extend(
        manifest[start..end]
            .split('"')
            .skip(1)
            .step_by(2)
            .map(|member| root.join(member)),
    );
    dirs
}

/// Top-level module → the modules it names, with where.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeMap<String, Evidence>> {
    let mut files = Vec::new();
    collect_rs(src, &mut files);
    let module_of = |file: &Path| -> Option<String> {
        let relative = file.strip_prefix(src).ok()?;
        let first = relative.components().next()?.as_os_str().to_str()?;
        let name = first.strip_suffix(".rs").unwrap_or(first);
        (!matches!(name, "lib" | "main")).then(|| name.to_owned())
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    // Items the root re-exports, by the module they come from.
    let mut reexports = BTreeMap::new();
    for root_file in ["lib.rs", "main.rs"] {
        if let Ok(text) = fs::read_to_string(src.join(root_file)) {
            for statement in statements(&code_only(&text), "pub use ") {
                let Some((module, rest)) = statement.split_once("::") else {
                    continue;
                };
                if modules.contains(module) {
                    for name in leaf_names(rest) {
                        reexports.insert(name, module.to_owned());
                    }
                }
            }
        }
    }
    let mut graph: BTreeMap<String, BTreeMap<String, Evidence>> = modules
        .iter()
        .map(|m| (m.clone(), BTreeMap::new()))
        .collect();
    for file in &files {
        let Some(from) = module_of(file) else {
            continue;
        };
        let text = fs::read_to_string(file).unwrap();
        let code = code_only(&text);
        for (offset, name) in crate_paths(&code) {
            let to = if modules.contains(&name) {
                Some(name)
            } else {
                reexports.get(&name).cloned()
            };
            if let Some(to) = to.filter(|to| *to != from) {
                let line = code[..offset].matches('\n').count() + 1;
                let at = format!("{}:{line}", file.display());
                graph.get_mut(&from).unwrap().entry(to).or_insert(at);
            }
        }
    }
    graph
}

fn collect_rs(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rs(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The text with line comments blanked (doc comments name paths in prose).
fn code_only(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The statements that start with `prefix`, up to their `;`, on one line each.
fn statements(text: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let tail = &rest[at + prefix.len()..];
        let end = tail.find(';').unwrap_or(tail.len());
        found.push(tail[..end].split_whitespace().collect::<String>());
        rest = &tail[end..];
    }
    found
}

/// The names a use tree brings in: `{A, b::C, D as E}` → A, C, E.
fn leaf_names(tree: &str) -> Vec<String> {
    let tree = tree.trim_start_matches('{').trim_end_matches('}');
    tree.split(',')
        .filter(|item| !item.is_empty())
        .map(|item| {
            let item = item.rsplit("as").next().unwrap_or(item);
            item.rsplit("::")
                .next()
                .unwrap_or(item)
                .trim_matches(|c| c == '{' || c == '}')
                .to_owned()
        })
        .collect()
}

/// The first segment after each `crate::` (each top-level item of a
/// `crate::{…}` group, which may span lines), with the offset of the
/// `crate::`; `$crate::` is skipped.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let mut names = Vec::new();
    let mut searched = 0;
    while let Some(found) = code[searched..].find("crate::") {
        let at = searched + found;
        let before = code[..at].chars().next_back();
        let tail = &code[at + "crate::".len()..];
        searched = at + "crate::".len();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = tail.strip_prefix('{') {
            // Top-level items of the group, up to its closing brace.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.push((at, first_segment(&item)));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            names.push((at, first_segment(&item)));
        } else {
            names.push((at, first_segment(tail)));
        }
    }
    names.retain(|(_, n)| !n.is_empty() && n != "self");
    names
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeMap<String, Evidence>>) -> Vec<BTreeSet<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeMap<String, Evidence>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a str) {
        let next = state.index.len();
        state.index.insert(node, next);
        state.low.insert(node, next);
        state.stack.push(node);
        state.on_stack.insert(node);
        for to in state.graph[node].keys() {
            let to = to.as_str();
            if !state.graph.contains_key(to) {
                continue;
            }
            if !state.index.contains_key(to) {
                visit(state, to);
                let low = state.low[node].min(state.low[to]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(to) {
                let low = state.low[node].min(state.index[to]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = BTreeSet::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                component.insert(member.to_owned());
                if member == node {
                    break;
                }
            }
            if component.len() > 1 {
                state.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.found
}
