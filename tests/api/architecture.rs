//! The shape of the house, checked on the source itself (issue 14's "Done when"): no import
//! cycle between files in src/, and no file over the line budget outside its test module.
//!
//! A file depends on another when it names it: a `use crate::…`, `use super::…`, `use self::…`
//! (or of a child module it declares), grouped or nested, or such a path written inline in code.
//! A path resolves to the file of the deepest module it walks through (`crate::actors::engine::
//! Engine` is src/actors/engine.rs, `crate::store::Store` is src/store/mod.rs) — unless the item
//! it names there is only imported by that file: then it resolves to where the import leads, so
//! `crate::actors::Engine`, re-exported by src/actors/mod.rs, is src/actors/engine.rs too.
//! A re-export (`pub use`, in any form) is no dependency of the file that writes it: it presents
//! an item, and whoever names the item through it depends on the item's own file. This is what
//! lets a folder's `mod.rs` list its parts while the parts use what `mod.rs` defines, without
//! hiding a cycle that runs through the re-export. A file's `#[cfg(test)]` modules are not read,
//! and neither are `macro_rules!` bodies (their `super::` means the caller's). Items named by
//! their bare name after a `pub use` in the same file are not seen (rare, and only hides an edge
//! from a file to what it re-exports).
//!
//! The checker is plain text work (comments and literals blanked, then paths read), so it is
//! unit-tested below on small files held in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Lines a file in src/ may have before its test module.
const MAX_FILE_LINES: usize = 700;
/// How many of the largest files the check prints.
const LARGEST_SHOWN: usize = 10;

/// One file's dependency on another: the path as written and the line it is on (1-based).
#[derive(Clone, Debug, PartialEq)]
struct Edge {
    to: String,
    path: String,
    line: usize,
}

/// Every `.rs` file under `src/`, by path relative to the crate (`src/actors/engine.rs`).
fn read_sources() -> BTreeMap<String, String> {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("a source folder") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                walk(&path, base, out);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let relative = path.strip_prefix(base).expect("under the crate");
                let relative = relative.to_string_lossy().replace('\\', "/");
                let text = std::fs::read_to_string(&path).expect("a readable source file");
                out.insert(relative, text);
            }
        }
    }
    let base = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = BTreeMap::new();
    walk(&base.join("src"), base, &mut out);
    out
}

// ---- Reading a file. ----

/// The text with comments and the insides of string and char literals replaced by spaces
/// (newlines kept, so offsets and line numbers still match the file).
fn blank_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out: Vec<char> = chars.clone();
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            let end = (i..chars.len())
                .find(|&j| chars[j] == '\n')
                .unwrap_or(chars.len());
            blank(&mut out, i, end);
            i = end;
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            let mut j = i;
            while j < chars.len() {
                if chars[j] == '/' && chars.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if chars[j] == '*' && chars.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if (c == 'r' || (c == 'b' && next == Some('r')))
            && (i == 0 || !is_ident(chars[i - 1]))
            && {
                let start = if c == 'b' { i + 2 } else { i + 1 };
                let hashes = chars[start..].iter().take_while(|&&h| h == '#').count();
                chars.get(start + hashes) == Some(&'"')
            }
        {
            // A raw string: r"…", r#"…"#, br"…".
            let start = if c == 'b' { i + 2 } else { i + 1 };
            let hashes = chars[start..].iter().take_while(|&&h| h == '#').count();
            let body = start + hashes + 1;
            let mut j = body;
            while j < chars.len() {
                if chars[j] == '"'
                    && chars[j + 1..].iter().take_while(|&&h| h == '#').count() >= hashes
                {
                    break;
                }
                j += 1;
            }
            blank(&mut out, body, j);
            i = j + 1 + hashes;
        } else if c == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            blank(&mut out, i + 1, j.min(chars.len()));
            i = j + 1;
        } else if c == '\'' {
            // A char literal ('a', '\n', '\u{1F600}'), or else a lifetime ('a) left as it is.
            if next == Some('\\') {
                let mut j = i + 3;
                while j < chars.len() && chars[j] != '\'' {
                    j += 1;
                }
                blank(&mut out, i + 1, j);
                i = j + 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                blank(&mut out, i + 1, i + 2);
                i += 3;
            } else {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out.into_iter().collect()
}

/// Replaces `chars[from..to]` by spaces, newlines kept (so lines still count the same).
fn blank(chars: &mut [char], from: usize, to: usize) {
    for c in chars.iter_mut().take(to).skip(from) {
        if *c != '\n' {
            *c = ' ';
        }
    }
}

/// Where the bracket at `open` (`{`, `(` or `[`, at that char offset) is closed.
fn matching_bracket(chars: &[char], open: usize) -> usize {
    let (opening, closing) = match chars[open] {
        '(' => ('(', ')'),
        '[' => ('[', ']'),
        _ => ('{', '}'),
    };
    let mut depth = 0usize;
    for (j, &c) in chars.iter().enumerate().skip(open) {
        if c == opening {
            depth += 1;
        } else if c == closing {
            depth -= 1;
            if depth == 0 {
                return j;
            }
        }
    }
    chars.len()
}

fn skip_space(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

fn read_ident(chars: &[char], i: usize) -> (String, usize) {
    let mut j = i;
    while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
        j += 1;
    }
    (chars[i..j].iter().collect(), j)
}

/// A file's code as the checks read it: comments and literals blanked, and its test modules and
/// `macro_rules!` bodies blanked too; the 0-based line its first test module starts on; and the
/// test modules it declares in files of their own (`#[cfg(test)] mod tests;`).
struct Code {
    text: String,
    test_module_line: Option<usize>,
    test_files: Vec<String>,
}

fn read_code(text: &str) -> Code {
    let blanked = blank_comments_and_literals(text);
    let mut chars: Vec<char> = blanked.chars().collect();
    let mut test_module_line = None;
    let mut test_files = Vec::new();
    let attribute: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i + attribute.len() <= chars.len() {
        if chars[i..i + attribute.len()] != attribute[..] {
            i += 1;
            continue;
        }
        // Further attributes and a visibility may come between it and `mod`.
        let mut j = skip_space(&chars, i + attribute.len());
        while chars.get(j) == Some(&'#') {
            let close = (j..chars.len())
                .find(|&k| chars[k] == ']')
                .unwrap_or(chars.len());
            j = skip_space(&chars, close + 1);
        }
        let (mut word, mut after) = read_ident(&chars, j);
        if word == "pub" {
            j = skip_space(&chars, after);
            if chars.get(j) == Some(&'(') {
                j = (j..chars.len())
                    .find(|&k| chars[k] == ')')
                    .unwrap_or(chars.len())
                    + 1;
            }
            (word, after) = read_ident(&chars, skip_space(&chars, j));
        }
        if word != "mod" {
            i += attribute.len();
            continue;
        }
        let (name, after_name) = read_ident(&chars, skip_space(&chars, after));
        let end = skip_space(&chars, after_name);
        if test_module_line.is_none() {
            test_module_line = Some(chars[..i].iter().filter(|&&c| c == '\n').count());
        }
        match chars.get(end) {
            Some('{') => {
                let close = matching_bracket(&chars, end);
                blank(&mut chars, i, close + 1);
                i = close + 1;
            }
            _ => {
                test_files.push(name);
                i = end;
            }
        }
    }
    // `macro_rules! name { … }`: paths inside mean what they mean where the macro is used.
    let marker: Vec<char> = "macro_rules!".chars().collect();
    let mut i = 0;
    while i + marker.len() <= chars.len() {
        if chars[i..i + marker.len()] == marker[..]
            && let Some(open) = (i..chars.len()).find(|&k| matches!(chars[k], '{' | '(' | '['))
        {
            let close = matching_bracket(&chars, open);
            blank(&mut chars, i, close + 1);
            i = close + 1;
            continue;
        }
        i += 1;
    }
    Code {
        text: chars.into_iter().collect(),
        test_module_line,
        test_files,
    }
}

/// Lines of `text` before its first `#[cfg(test)]` module (all of them when it has none).
fn lines_outside_tests(text: &str) -> usize {
    read_code(text)
        .test_module_line
        .unwrap_or_else(|| text.lines().count())
}

/// The child modules a file declares in files of their own (`mod x;`, `pub mod x;`).
fn declared_children(code: &str) -> BTreeSet<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut children = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if starts_word && chars[i..].starts_with(&['m', 'o', 'd']) {
            let (word, after) = read_ident(&chars, i);
            if word == "mod" {
                let (name, after_name) = read_ident(&chars, skip_space(&chars, after));
                if !name.is_empty() && chars.get(skip_space(&chars, after_name)) == Some(&';') {
                    children.insert(name);
                }
                i = after;
                continue;
            }
        }
        i += 1;
    }
    children
}

/// One path a `use` tree names, and the name it binds (none for a glob or `as _`).
type UsePath = (Vec<String>, Option<String>);

/// The paths one `use` tree names (the text between `use` and `;`), each as its segments with
/// the name it binds: `crate::{a::X, b::{c, d as e}}` gives `crate::a::X` (X), `crate::b::c` (c),
/// `crate::b::d` (e); `super::{self, Y}` gives `super` and `super::Y`; `a::*` gives `a`.
fn expand_use_tree(tree: &str) -> Vec<UsePath> {
    fn tokens(tree: &str) -> Vec<String> {
        let chars: Vec<char> = tree.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
            } else if c == ':' && chars.get(i + 1) == Some(&':') {
                out.push("::".to_owned());
                i += 2;
            } else if c.is_alphanumeric() || c == '_' {
                let (word, after) = read_ident(&chars, i);
                out.push(word);
                i = after;
            } else {
                out.push(c.to_string());
                i += 1;
            }
        }
        out
    }
    /// Reads one tree at `tokens[*at]` under `prefix`, pushing its paths into `out`.
    fn tree_at(tokens: &[String], at: &mut usize, prefix: &[String], out: &mut Vec<UsePath>) {
        let mut path = prefix.to_vec();
        let mut bound = path.last().cloned();
        loop {
            match tokens.get(*at).map(String::as_str) {
                Some("{") => {
                    *at += 1;
                    while tokens.get(*at).is_some_and(|t| t != "}") {
                        tree_at(tokens, at, &path, out);
                        if tokens.get(*at).is_some_and(|t| t == ",") {
                            *at += 1;
                        }
                    }
                    *at += 1;
                    return;
                }
                Some("*") => {
                    *at += 1;
                    out.push((path, None));
                    return;
                }
                Some("self") if !path.is_empty() => {
                    *at += 1;
                }
                Some("::") => {
                    *at += 1;
                    if path.is_empty() {
                        // `::name`: an outside crate.
                        path.push("::".to_owned());
                    }
                }
                Some("as") => {
                    let alias = tokens.get(*at + 1).cloned().unwrap_or_default();
                    bound = Some(alias).filter(|alias| alias != "_");
                    *at += 2;
                }
                Some(word) if word.chars().all(|c| c.is_alphanumeric() || c == '_') => {
                    path.push(word.to_owned());
                    bound = Some(word.to_owned());
                    *at += 1;
                }
                _ => {
                    out.push((path, bound));
                    return;
                }
            }
        }
    }
    let tokens = tokens(tree);
    let mut out = Vec::new();
    let mut at = 0;
    tree_at(&tokens, &mut at, &[], &mut out);
    out.retain(|(path, _)| !path.is_empty());
    out
}

/// How a file names a path.
#[derive(Clone, Debug, PartialEq)]
enum Naming {
    /// A `use` that binds `name` (none for a glob); `reexport` when it is `pub` in any form.
    Use {
        name: Option<String>,
        reexport: bool,
    },
    /// Written in code: `crate::a::f(…)`, `super::x::Y`.
    Inline,
}

/// One path a file names, with the char offset where it is named.
#[derive(Clone, Debug)]
struct Named {
    path: Vec<String>,
    offset: usize,
    naming: Naming,
}

/// Whether the `use` at `at` is preceded by `pub` or `pub(…)`.
fn is_public_use(chars: &[char], at: usize) -> bool {
    let mut i = at;
    while i > 0 && chars[i - 1].is_whitespace() {
        i -= 1;
    }
    if i > 0 && chars[i - 1] == ')' {
        match (0..i - 1).rev().find(|&k| chars[k] == '(') {
            Some(open) => i = open,
            None => return false,
        }
        while i > 0 && chars[i - 1].is_whitespace() {
            i -= 1;
        }
    }
    i >= 3
        && chars[i - 3..i] == ['p', 'u', 'b']
        && (i == 3 || !(chars[i - 4].is_alphanumeric() || chars[i - 4] == '_'))
}

/// Every path in `code` that may name a file of this crate: the paths of its `use`
/// declarations (all of them: those into other crates resolve to nothing), and the paths
/// written inline that start with `crate`, `super`, `self` or one of `children`.
fn paths_in(code: &str, children: &BTreeSet<String>) -> Vec<Named> {
    let mut chars: Vec<char> = code.chars().collect();
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut found = Vec::new();
    // `use` declarations first, then blanked so their paths are not read twice.
    let mut i = 0;
    while i + 3 <= chars.len() {
        let starts_word = i == 0 || !(is_ident(chars[i - 1]) || chars[i - 1] == '#');
        if starts_word && chars[i..].starts_with(&['u', 's', 'e']) {
            let (word, after) = read_ident(&chars, i);
            if word == "use" && chars.get(after).is_some_and(|c| c.is_whitespace()) {
                let end = (after..chars.len())
                    .find(|&k| chars[k] == ';')
                    .unwrap_or(chars.len());
                let tree: String = chars[after..end].iter().collect();
                let reexport = is_public_use(&chars, i);
                for (path, name) in expand_use_tree(&tree) {
                    let naming = Naming::Use { name, reexport };
                    found.push(Named {
                        path,
                        offset: i,
                        naming,
                    });
                }
                blank(&mut chars, i, end);
                i = end;
                continue;
            }
        }
        i += 1;
    }
    // Inline paths: `crate::a::f(`, `super::x::Y`, `child::Z`.
    let mut i = 0;
    while i < chars.len() {
        if !is_ident(chars[i]) || (i > 0 && (is_ident(chars[i - 1]) || chars[i - 1] == '$')) {
            i += 1;
            continue;
        }
        let (first, after) = read_ident(&chars, i);
        let preceded_by_path = i >= 2 && chars[i - 2] == ':' && chars[i - 1] == ':';
        let rooted =
            matches!(first.as_str(), "crate" | "super" | "self") || children.contains(&first);
        if preceded_by_path || !rooted || !chars[after..].starts_with(&[':', ':']) {
            i = after;
            continue;
        }
        let mut path = vec![first];
        let mut j = after;
        while chars[j..].starts_with(&[':', ':']) {
            let (segment, next) = read_ident(&chars, j + 2);
            if segment.is_empty() {
                break;
            }
            path.push(segment);
            j = next;
        }
        found.push(Named {
            path,
            offset: i,
            naming: Naming::Inline,
        });
        i = j;
    }
    found
}

// ---- Resolving a path to a file. ----

/// The module a file is: `src/lib.rs` is the crate, `src/a.rs` and `src/a/mod.rs` are `a`,
/// `src/a/b.rs` is `a::b`.
fn module_of(file: &str) -> Vec<String> {
    let inner = file.strip_prefix("src/").unwrap_or(file);
    let inner = inner.strip_suffix(".rs").unwrap_or(inner);
    let mut segments: Vec<String> = inner.split('/').map(str::to_owned).collect();
    if matches!(segments.last().map(String::as_str), Some("mod" | "lib")) {
        segments.pop();
    }
    segments
}

/// The file of a module, if the crate has one.
fn file_of(module: &[String], files: &BTreeSet<String>) -> Option<String> {
    if module.is_empty() {
        return Some("src/lib.rs".to_owned()).filter(|f| files.contains(f));
    }
    let joined = module.join("/");
    [format!("src/{joined}.rs"), format!("src/{joined}/mod.rs")]
        .into_iter()
        .find(|candidate| files.contains(candidate))
}

/// How many imports a path is followed through before giving up (a loop of `use`s).
const MAX_IMPORT_HOPS: usize = 16;

/// What resolving needs to know of the crate: its files, the child modules each declares, and
/// the names each imports (name → the path it was imported from).
#[derive(Default)]
struct CrateIndex {
    files: BTreeSet<String>,
    children: BTreeMap<String, BTreeSet<String>>,
    imports: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl CrateIndex {
    /// The file a path written in `file` names: the deepest module file it walks through, or,
    /// when the item it names there is imported by that file, the file the import leads to.
    /// `None` for a path into another crate.
    fn resolve(&self, file: &str, path: &[String]) -> Option<String> {
        self.resolve_from(file, path, 0)
    }

    fn resolve_from(&self, file: &str, path: &[String], hops: usize) -> Option<String> {
        let no_children = BTreeSet::new();
        let children = self.children.get(file).unwrap_or(&no_children);
        let here = module_of(file);
        let mut module = match path.first().map(String::as_str) {
            Some("crate") => Vec::new(),
            Some("self" | "super") => here,
            Some(first) if children.contains(first) => here,
            _ => return None,
        };
        let mut rest = path;
        if path[0] == "crate" {
            rest = &path[1..];
        } else {
            while let Some(first) = rest.first() {
                match first.as_str() {
                    "self" => {}
                    "super" => {
                        module.pop()?;
                    }
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
        let mut reached = file_of(&module, &self.files)?;
        while let Some(segment) = rest.first() {
            module.push(segment.clone());
            match file_of(&module, &self.files) {
                Some(file) => {
                    reached = file;
                    rest = &rest[1..];
                }
                None => break,
            }
        }
        let imported = rest
            .first()
            .and_then(|name| self.imports.get(&reached)?.get(name));
        match imported {
            Some(from) if hops < MAX_IMPORT_HOPS => {
                let mut onward = from.clone();
                onward.extend_from_slice(&rest[1..]);
                self.resolve_from(&reached, &onward, hops + 1)
            }
            _ => Some(reached),
        }
    }
}

/// Each file's dependencies on other files of the crate, by the rules in this module's doc.
/// The binary's root, `src/main.rs`, is a crate of its own (its `crate::` is not the library).
fn dependency_graph(sources: &BTreeMap<String, String>) -> BTreeMap<String, Vec<Edge>> {
    let codes: BTreeMap<&String, Code> = sources.iter().map(|(f, t)| (f, read_code(t))).collect();
    let all: BTreeSet<String> = sources.keys().cloned().collect();
    // Files that are test modules of another file.
    let mut test_only = BTreeSet::new();
    for (file, code) in &codes {
        for name in &code.test_files {
            let mut child = module_of(file);
            child.push(name.clone());
            if let Some(test_file) = file_of(&child, &all) {
                test_only.insert(test_file);
            }
        }
    }
    let mut index = CrateIndex {
        files: all
            .into_iter()
            .filter(|f| !test_only.contains(f) && f != "src/main.rs")
            .collect(),
        ..CrateIndex::default()
    };
    let mut named = BTreeMap::new();
    for file in &index.files {
        let code = &codes[file];
        let children = declared_children(&code.text);
        let paths = paths_in(&code.text, &children);
        let imports = paths
            .iter()
            .filter_map(|named| match &named.naming {
                Naming::Use {
                    name: Some(name), ..
                } => Some((name.clone(), named.path.clone())),
                _ => None,
            })
            .collect();
        index.imports.insert(file.clone(), imports);
        index.children.insert(file.clone(), children);
        named.insert(file.clone(), paths);
    }
    let mut graph = BTreeMap::new();
    for (file, paths) in named {
        let text = &codes[&file].text;
        let mut edges: Vec<Edge> = Vec::new();
        for named in paths {
            // A re-export only presents an item: who names it through the re-export depends on
            // the file it leads to, the re-exporting file on nothing.
            if matches!(named.naming, Naming::Use { reexport: true, .. }) {
                continue;
            }
            let Some(to) = index.resolve(&file, &named.path) else {
                continue;
            };
            if to == file || edges.iter().any(|e| e.to == to) {
                continue;
            }
            let line = text
                .chars()
                .take(named.offset)
                .filter(|&c| c == '\n')
                .count()
                + 1;
            edges.push(Edge {
                to,
                path: named.path.join("::"),
                line,
            });
        }
        graph.insert(file, edges);
    }
    graph
}

/// The strongly connected components of more than one node (Tarjan), each sorted, in order.
fn cycles(graph: &BTreeMap<String, Vec<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        graph: &'a BTreeMap<String, Vec<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, node: &'a str) {
            let next = self.index.len();
            self.index.insert(node, next);
            self.low.insert(node, next);
            self.stack.push(node);
            self.on_stack.insert(node);
            let graph = self.graph;
            for to in graph.get(node).into_iter().flatten() {
                let to = to.as_str();
                if !self.index.contains_key(to) {
                    self.visit(to);
                    let low = self.low[node].min(self.low[to]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(to) {
                    let low = self.low[node].min(self.index[to]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(top);
                    component.push(top.to_owned());
                    if top == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut tarjan = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !tarjan.index.contains_key(node.as_str()) {
            tarjan.visit(node);
        }
    }
    tarjan.found.sort();
    tarjan.found
}

/// An import cycle: its files, and each edge between them with the file it starts from.
type Cycle = (Vec<String>, Vec<(String, Edge)>);

/// The import cycles between files of `sources`, each with the edges that make it.
fn import_cycles(sources: &BTreeMap<String, String>) -> Vec<Cycle> {
    let graph = dependency_graph(sources);
    let plain: BTreeMap<String, Vec<String>> = graph
        .iter()
        .map(|(file, edges)| (file.clone(), edges.iter().map(|e| e.to.clone()).collect()))
        .collect();
    cycles(&plain)
        .into_iter()
        .map(|component| {
            let inside: Vec<(String, Edge)> = component
                .iter()
                .flat_map(|file| {
                    graph[file]
                        .iter()
                        .filter(|edge| component.contains(&edge.to))
                        .map(move |edge| (file.clone(), edge.clone()))
                })
                .collect();
            (component, inside)
        })
        .collect()
}

// ---- The whole crate. ----

#[test]
fn no_import_cycle_between_files_in_src() {
    let sources = read_sources();
    let found = import_cycles(&sources);
    let mut report = String::new();
    for (component, edges) in &found {
        report.push_str(&format!(
            "cycle of {} files: {}\n",
            component.len(),
            component.join(", ")
        ));
        for (from, edge) in edges {
            report.push_str(&format!(
                "  {from}:{} {} -> {}\n",
                edge.line, edge.path, edge.to
            ));
        }
    }
    println!("{report}");
    assert!(
        found.is_empty(),
        "import cycles between files in src/:\n{report}"
    );
}

#[test]
fn no_file_in_src_is_over_the_line_budget_outside_its_tests() {
    let sources = read_sources();
    let mut sizes: Vec<(usize, &String)> = sources
        .iter()
        .map(|(file, text)| (lines_outside_tests(text), file))
        .collect();
    sizes.sort_by(|a, b| b.cmp(a));
    println!("largest files in src/ (lines before the test module):");
    for (lines, file) in sizes.iter().take(LARGEST_SHOWN) {
        println!("  {lines:>5} {file}");
    }
    let over: Vec<String> = sizes
        .iter()
        .filter(|(lines, _)| *lines > MAX_FILE_LINES)
        .map(|(lines, file)| format!("{file} ({lines} lines)"))
        .collect();
    assert!(
        over.is_empty(),
        "over {MAX_FILE_LINES} lines: {}",
        over.join(", ")
    );
}

// ---- The checker itself, on small files in memory. ----

fn segments(path: &str) -> Vec<String> {
    path.split("::").map(str::to_owned).collect()
}

/// Sources in memory from `(file, text)` pairs.
fn sources(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(file, text)| ((*file).to_owned(), (*text).to_owned()))
        .collect()
}

#[test]
fn a_path_resolves_to_the_deepest_module_file_it_walks_through() {
    let index = CrateIndex {
        files: [
            "src/lib.rs",
            "src/actors/mod.rs",
            "src/actors/engine.rs",
            "src/actors/sessions/mod.rs",
            "src/actors/sessions/driver.rs",
            "src/store.rs",
            "src/store/orders.rs",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect(),
        children: [("src/actors/mod.rs".to_owned(), ["engine".to_owned()].into())].into(),
        ..CrateIndex::default()
    };
    let cases = [
        (
            "src/api.rs",
            "crate::actors::Engine",
            Some("src/actors/mod.rs"),
        ),
        (
            "src/api.rs",
            "crate::actors::engine::Engine",
            Some("src/actors/engine.rs"),
        ),
        (
            "src/api.rs",
            "crate::actors::engine::Engine::new",
            Some("src/actors/engine.rs"),
        ),
        ("src/api.rs", "crate::actors", Some("src/actors/mod.rs")),
        (
            "src/api.rs",
            "crate::store::orders::insert",
            Some("src/store/orders.rs"),
        ),
        ("src/api.rs", "crate::store::Store", Some("src/store.rs")),
        ("src/api.rs", "crate::Thing", Some("src/lib.rs")),
        (
            "src/actors/engine.rs",
            "super::EngineError",
            Some("src/actors/mod.rs"),
        ),
        (
            "src/actors/engine.rs",
            "super::sessions::driver::X",
            Some("src/actors/sessions/driver.rs"),
        ),
        (
            "src/actors/sessions/driver.rs",
            "super::super::engine::Engine",
            Some("src/actors/engine.rs"),
        ),
        (
            "src/actors/sessions/driver.rs",
            "super::Setup",
            Some("src/actors/sessions/mod.rs"),
        ),
        (
            "src/actors/sessions/mod.rs",
            "super::engine::Engine",
            Some("src/actors/engine.rs"),
        ),
        (
            "src/actors/sessions/mod.rs",
            "self::driver::DriverSession",
            Some("src/actors/sessions/driver.rs"),
        ),
        (
            "src/actors/mod.rs",
            "self::engine",
            Some("src/actors/engine.rs"),
        ),
        // A child module the file declares starts a path too.
        (
            "src/actors/mod.rs",
            "engine::Engine",
            Some("src/actors/engine.rs"),
        ),
        (
            "src/actors/mod.rs",
            "super::store::Store",
            Some("src/store.rs"),
        ),
        ("src/actors/engine.rs", "serde::Serialize", None),
        ("src/actors/engine.rs", "std::sync::Arc", None),
        ("src/lib.rs", "super::Nothing", None),
    ];
    for (file, path, expected) in cases {
        let found = index.resolve(file, &segments(path));
        assert_eq!(found.as_deref(), expected, "{path} in {file}");
    }
}

#[test]
fn a_path_through_an_import_resolves_to_the_file_the_import_leads_to() {
    let index = CrateIndex {
        files: [
            "src/lib.rs",
            "src/actors/mod.rs",
            "src/actors/engine.rs",
            "src/domain.rs",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect(),
        children: [("src/actors/mod.rs".to_owned(), ["engine".to_owned()].into())].into(),
        imports: [(
            "src/actors/mod.rs".to_owned(),
            [
                ("Engine".to_owned(), segments("engine::Engine")),
                ("Handle".to_owned(), segments("self::engine::Engine")),
                ("OrderId".to_owned(), segments("crate::domain::OrderId")),
                ("Arc".to_owned(), segments("std::sync::Arc")),
                ("Loop".to_owned(), segments("self::Loop")),
            ]
            .into(),
        )]
        .into(),
    };
    let cases = [
        (
            "src/lib.rs",
            "crate::actors::Engine",
            Some("src/actors/engine.rs"),
        ),
        (
            "src/lib.rs",
            "crate::actors::Handle::new",
            Some("src/actors/engine.rs"),
        ),
        (
            "src/actors/engine.rs",
            "super::OrderId",
            Some("src/domain.rs"),
        ),
        (
            "src/actors/engine.rs",
            "super::EngineError",
            Some("src/actors/mod.rs"),
        ),
        // An item from another crate, imported and named through this one: no file of ours.
        ("src/actors/engine.rs", "super::Arc", None),
        // An import of itself ends where the hops run out, not in a stack overflow.
        (
            "src/lib.rs",
            "crate::actors::Loop",
            Some("src/actors/mod.rs"),
        ),
    ];
    for (file, path, expected) in cases {
        let found = index.resolve(file, &segments(path));
        assert_eq!(found.as_deref(), expected, "{path} in {file}");
    }
}

#[test]
fn use_trees_expand_into_every_path_they_name() {
    let expand = |tree: &str| -> Vec<(String, Option<String>)> {
        expand_use_tree(tree)
            .into_iter()
            .map(|(path, name)| (path.join("::"), name))
            .collect()
    };
    let named = |pairs: &[(&str, Option<&str>)]| -> Vec<(String, Option<String>)> {
        pairs
            .iter()
            .map(|(path, name)| ((*path).to_owned(), name.map(str::to_owned)))
            .collect()
    };
    let cases = [
        (
            " crate::actors::Engine",
            named(&[("crate::actors::Engine", Some("Engine"))]),
        ),
        (
            " crate::{a::X, b::{c::Y, d as e}, f}",
            named(&[
                ("crate::a::X", Some("X")),
                ("crate::b::c::Y", Some("Y")),
                ("crate::b::d", Some("e")),
                ("crate::f", Some("f")),
            ]),
        ),
        (
            " super::{self, Y}",
            named(&[("super", Some("super")), ("super::Y", Some("Y"))]),
        ),
        (" super::*", named(&[("super", None)])),
        (" super::Trait as _", named(&[("super::Trait", None)])),
        (
            " super::remote::{self, Call}",
            named(&[
                ("super::remote", Some("remote")),
                ("super::remote::Call", Some("Call")),
            ]),
        ),
        (
            " super::driver::{\n    AnswerOffer,\n    DriverFeed,\n}",
            named(&[
                ("super::driver::AnswerOffer", Some("AnswerOffer")),
                ("super::driver::DriverFeed", Some("DriverFeed")),
            ]),
        ),
        (
            " ::geo::{Area, Point}",
            named(&[
                ("::::geo::Area", Some("Area")),
                ("::::geo::Point", Some("Point")),
            ]),
        ),
    ];
    for (tree, expected) in cases {
        assert_eq!(expand(tree), expected, "use{tree}");
    }
}

#[test]
fn paths_are_read_from_code_not_from_comments_strings_or_tests() {
    let text = r##"//! Uses [`crate::doc::Link`] in docs only.
use std::sync::Arc;
use crate::{a::X, b::{c::Y}};
use super::sibling;
mod child;
pub use child::Thing;

/* crate::block::Comment */
fn f() {
    let s = "crate::string::Literal";
    let r = r#"super::raw::String"#;
    let c = '"';
    let q = '\'';
    crate::inline::call(c);
    let v: Vec<super::typed::T> = Vec::new();
    child::helper();
    $crate::macro_path::No;
    other::not_ours::No;
}

macro_rules! m {
    () => { super::in_macro::No };
}

#[cfg(test)]
mod tests {
    use crate::only::InTests;
}
"##;
    let code = read_code(text);
    let children = declared_children(&code.text);
    assert_eq!(children, BTreeSet::from(["child".to_owned()]));
    let paths: Vec<(String, Naming)> = paths_in(&code.text, &children)
        .into_iter()
        .map(|named| (named.path.join("::"), named.naming))
        .collect();
    let used = |name: &str| Naming::Use {
        name: Some(name.to_owned()),
        reexport: false,
    };
    let expected = [
        ("std::sync::Arc", used("Arc")),
        ("crate::a::X", used("X")),
        ("crate::b::c::Y", used("Y")),
        ("super::sibling", used("sibling")),
        (
            "child::Thing",
            Naming::Use {
                name: Some("Thing".to_owned()),
                reexport: true,
            },
        ),
        ("crate::inline::call", Naming::Inline),
        ("super::typed::T", Naming::Inline),
        ("child::helper", Naming::Inline),
    ];
    let expected: Vec<(String, Naming)> = expected
        .into_iter()
        .map(|(path, naming)| (path.to_owned(), naming))
        .collect();
    assert_eq!(paths, expected);
    assert_eq!(code.test_module_line, Some(24));
    assert_eq!(lines_outside_tests(text), 24);
    assert_eq!(lines_outside_tests("fn a() {}\nfn b() {}\n"), 2);
}

#[test]
fn every_form_of_pub_makes_a_use_a_reexport() {
    let reexports = |code: &str| -> Vec<bool> {
        paths_in(code, &BTreeSet::new())
            .into_iter()
            .filter_map(|named| match named.naming {
                Naming::Use { reexport, .. } => Some(reexport),
                Naming::Inline => None,
            })
            .collect()
    };
    assert_eq!(reexports("pub use crate::a::X;"), [true]);
    assert_eq!(reexports("pub(crate) use crate::a::X;"), [true]);
    assert_eq!(reexports("pub(in crate::b) use crate::a::X;"), [true]);
    assert_eq!(reexports("use crate::a::X;"), [false]);
    assert_eq!(reexports("fn f() {}\nuse crate::a::X;"), [false]);
    assert_eq!(reexports("#[cfg(unix)]\nuse crate::a::X;"), [false]);
}

#[test]
fn a_test_module_in_its_own_file_is_not_read() {
    let code = read_code("#[cfg(test)]\nmod tests;\nfn f() {}\n");
    assert_eq!(code.test_files, ["tests"]);
    assert_eq!(code.test_module_line, Some(0));
}

#[test]
fn the_cycle_search_finds_every_component_of_more_than_one_file() {
    let graph = |edges: &[(&str, &str)]| {
        let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (from, to) in edges {
            graph
                .entry((*from).to_owned())
                .or_default()
                .push((*to).to_owned());
            graph.entry((*to).to_owned()).or_default();
        }
        graph
    };
    // A line has no cycle.
    assert!(cycles(&graph(&[("a", "b"), ("b", "c")])).is_empty());
    // Two cycles joined by a one-way edge stay two.
    let found = cycles(&graph(&[
        ("a", "b"),
        ("b", "a"),
        ("b", "c"),
        ("c", "d"),
        ("d", "e"),
        ("e", "c"),
        ("e", "f"),
    ]));
    assert_eq!(found, [vec!["a", "b"], vec!["c", "d", "e"]]);
    // A ring through every node is one component.
    let found = cycles(&graph(&[
        ("a", "b"),
        ("b", "c"),
        ("c", "d"),
        ("d", "a"),
        ("c", "a"),
    ]));
    assert_eq!(found, [vec!["a", "b", "c", "d"]]);
}

#[test]
fn import_cycles_are_found_between_files_in_memory() {
    let sources = sources(&[
        ("src/lib.rs", "pub mod actors;\npub mod api;\n"),
        (
            "src/actors/mod.rs",
            "mod driver;\nmod order;\npub use driver::Driver;\npub struct EngineError;\n",
        ),
        (
            "src/actors/driver.rs",
            "use super::order::Order;\npub struct Driver;\n",
        ),
        (
            "src/actors/order.rs",
            "pub struct Order;\nfn f() { super::driver::Driver::go(); }\n\
             #[cfg(test)]\nmod tests { use crate::api::X; }\n",
        ),
        (
            "src/api.rs",
            "use crate::actors::{Driver, EngineError};\npub struct X;\n",
        ),
    ]);
    let graph = dependency_graph(&sources);
    let targets = |file: &str| -> Vec<&str> { graph[file].iter().map(|e| e.to.as_str()).collect() };
    // Through the re-export to the file that defines `Driver`; the re-export itself is no edge.
    assert_eq!(
        targets("src/api.rs"),
        ["src/actors/driver.rs", "src/actors/mod.rs"]
    );
    assert!(targets("src/actors/mod.rs").is_empty());
    let found = import_cycles(&sources);
    assert_eq!(found.len(), 1, "{found:?}");
    let (component, edges) = &found[0];
    assert_eq!(component, &["src/actors/driver.rs", "src/actors/order.rs"]);
    let edge = |to: &str, path: &str, line| Edge {
        to: to.to_owned(),
        path: path.to_owned(),
        line,
    };
    assert_eq!(
        edges,
        &[
            (
                "src/actors/driver.rs".to_owned(),
                edge("src/actors/order.rs", "super::order::Order", 1)
            ),
            (
                "src/actors/order.rs".to_owned(),
                edge("src/actors/driver.rs", "super::driver::Driver::go", 2)
            ),
        ]
    );
}

#[test]
fn a_cycle_through_a_folder_facade_is_found_and_a_facade_alone_is_none() {
    // A folder whose mod.rs re-exports its parts, parts that use what mod.rs defines: no cycle.
    let facade = sources(&[
        ("src/lib.rs", "pub mod store;\n"),
        (
            "src/store/mod.rs",
            "mod orders;\npub use orders::OrderFilter;\npub struct Store;\n",
        ),
        (
            "src/store/orders.rs",
            "use super::Store;\npub struct OrderFilter;\n",
        ),
    ]);
    assert!(import_cycles(&facade).is_empty());
    // Naming a sibling through the folder's re-export still depends on the sibling.
    let through = sources(&[
        ("src/lib.rs", "pub mod actors;\npub mod cluster;\n"),
        (
            "src/actors/mod.rs",
            "mod engine;\npub use engine::Engine;\n",
        ),
        (
            "src/actors/engine.rs",
            "use crate::cluster::Router;\npub struct Engine;\n",
        ),
        (
            "src/cluster.rs",
            "use crate::actors::Engine;\npub struct Router;\n",
        ),
    ]);
    let found: Vec<Vec<String>> = import_cycles(&through)
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(found, [vec!["src/actors/engine.rs", "src/cluster.rs"]]);
}
