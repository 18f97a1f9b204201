//! The architecture's invariants, checked over the source tree: a platform is its folders and
//! one name in each registry; stages only reach earlier stages; providers and sandboxes are
//! two independent readings of an API; the daemon does not reach into the command line. And
//! `schemas/capstan.schema.json`'s `platform` enums list exactly the registered platforms.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every Rust file under `dir`, by its path relative to `src/` with `/` separators.
fn rust_files(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(src()).unwrap().to_string_lossy().replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

fn sources() -> Vec<(String, String)> {
    let mut out = Vec::new();
    rust_files(&src(), &mut out);
    out.sort();
    assert!(out.len() > 20, "the source tree was found");
    out
}

/// The code of a line: without its `//` comment (a `//` inside a string literal ends the line
/// early, which can only hide a name, never invent one).
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(i) if !line[..i].ends_with(':') => &line[..i],
        _ => line,
    }
}

fn names_word(line: &str, word: &str) -> bool {
    let lower = line.to_lowercase();
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    lower.match_indices(word).any(|(i, _)| {
        !lower[..i].chars().next_back().is_some_and(is_ident)
            && !lower[i + word.len()..].chars().next().is_some_and(is_ident)
    })
}

fn platforms() -> Vec<&'static str> {
    let mut names = capstan::providers::platform_names();
    names.extend(capstan::sandbox::EMULATORS.iter().map(|e| e.name));
    names.sort();
    names.dedup();
    names
}

/// The folder a file belongs to when it is one platform's: `providers/<p>/` or `sandbox/<p>/`.
fn platform_folder(rel: &str) -> Option<&str> {
    let rest = rel.strip_prefix("providers/").or_else(|| rel.strip_prefix("sandbox/"))?;
    let (folder, _) = rest.split_once('/')?;
    Some(folder)
}

/// The two registry lines are the only places outside a platform's folders that name it.
fn is_registry_line(rel: &str, line: &str) -> bool {
    (rel == "providers/mod.rs" && line.starts_with("platforms!("))
        || (rel == "sandbox/mod.rs" && line.starts_with("emulators!("))
}

#[test]
fn no_core_file_names_a_platform() {
    let names = platforms();
    let mut found = Vec::new();
    for (rel, text) in sources() {
        if platform_folder(&rel).is_some_and(|f| names.contains(&f)) {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            if is_registry_line(&rel, line) {
                continue;
            }
            for name in &names {
                if names_word(code(line), name) {
                    found.push(format!("src/{rel}:{}: names {name}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "a platform is its folders (src/providers/<p>/, src/sandbox/<p>/, schemas/<p>/) and one name in \
         each registry; core code must reach it through the registries:\n{}",
        found.join("\n")
    );
}

/// The `crate::` modules a file uses (`use crate::x`, `crate::x::...`, `super::` from a
/// top-level module's own folder is the module itself).
fn uses(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().map(code) {
        for (i, _) in line.match_indices("crate::") {
            let rest = &line[i + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
        // `use crate::{a, b::c}`
        if let Some(i) = line.find("crate::{") {
            let rest = &line[i + "crate::{".len()..];
            for part in rest.split([',', '}']) {
                let name: String = part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        }
    }
    out
}

/// The top-level module a file belongs to (`render/expand.rs` → `render`).
fn module_of(rel: &str) -> &str {
    rel.split('/').next().unwrap().trim_end_matches(".rs")
}

#[test]
fn dependencies_point_one_way() {
    // Stages in pipeline order: a stage may use earlier ones, never a later one.
    let stages = ["base", "source", "config", "render", "diff", "plan", "apply"];
    // (module, what it must not use, why)
    let mut rules: Vec<(&str, &str, &str)> = vec![
        ("providers", "sandbox", "a provider and its sandbox are independent readings of the API"),
        ("sandbox", "providers", "a provider and its sandbox are independent readings of the API"),
        ("daemon", "cli", "the daemon is not a command-line client"),
        ("render", "providers", "render reaches the platform through the interface it defines (Decode)"),
        ("diff", "providers", "diff reaches the platform through the interface it defines (Compare)"),
        ("plan", "providers", "plan knows no platform"),
        ("apply", "providers", "apply reaches the platform through the interface it defines (Drive)"),
        ("config", "render", "configuration is read before rendering"),
        ("base", "providers", "base knows no stage and no platform"),
    ];
    for (i, early) in stages.iter().enumerate() {
        for late in &stages[i + 1..] {
            rules.push((early, late, "a stage only uses the stages before it"));
        }
    }
    let mut found = Vec::new();
    for (rel, text) in sources() {
        let module = module_of(&rel);
        let text = match text.find("#[cfg(test)]") {
            Some(i) => &text[..i],
            None => &text,
        };
        for used in uses(text) {
            for (from, to, why) in &rules {
                if module == *from && used == *to {
                    found.push(format!("src/{rel} uses crate::{to}: {why}"));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    assert!(found.is_empty(), "dependencies that point the wrong way:\n{}", found.join("\n"));
}

#[test]
fn the_config_schema_lists_exactly_the_registered_platforms() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/capstan.schema.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    let enums =
        [&schema["properties"]["platform"]["enum"], &schema["$defs"]["target"]["properties"]["platform"]["enum"]];
    let registered: Vec<&str> = capstan::providers::platform_names();
    let shown = |v: &[&str]| format!("[{}]", v.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", "));
    let stale: Vec<String> = enums
        .iter()
        .filter(|e| {
            e.as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>()) != Some(registered.clone())
        })
        .map(|e| e.to_string())
        .collect();
    if stale.is_empty() {
        return;
    }
    if std::env::var_os("CAPSTAN_REGENERATE").is_some() {
        let mut text = text.clone();
        for old in &stale {
            let old: Vec<String> = serde_json::from_str(old).unwrap_or_default();
            let old: Vec<&str> = old.iter().map(String::as_str).collect();
            text = text.replace(&shown(&old), &shown(&registered));
        }
        std::fs::write(&path, text).unwrap();
        return;
    }
    panic!(
        "schemas/capstan.schema.json lists the platforms {} but the registry has {}; regenerate it with \
         `CAPSTAN_REGENERATE=1 cargo test --test architecture the_config_schema`",
        stale.join(" and "),
        shown(&registered)
    );
}

/// The most lines a file under `src/` may have. A file past it has always been doing several
/// jobs (the Marathon sandbox's `apps.rs` was validation, defaults, ports, views and handlers in
/// 1,193 lines, in an import loop with three of its siblings); 800 is what one reading holds,
/// and every file meets it with room (the longest, `sandbox/dcos/plan.rs`, is one state machine).
const MAX_LINES: usize = 800;

#[test]
fn no_source_file_is_longer_than_the_limit() {
    let mut found: Vec<String> = sources()
        .into_iter()
        .map(|(rel, text)| (rel, text.lines().count()))
        .filter(|(_, n)| *n > MAX_LINES)
        .map(|(rel, n)| format!("src/{rel}: {n} lines"))
        .collect();
    found.sort();
    assert!(
        found.is_empty(),
        "files longer than {MAX_LINES} lines: split them along their seams (see ARCHITECTURE.md):\n{}",
        found.join("\n")
    );
}

/// The module a file is (`sandbox/marathon/apps.rs` → `sandbox::marathon::apps`; a `mod.rs` is
/// its folder's module, `lib.rs` and `main.rs` the crate).
fn module_path(rel: &str) -> Vec<String> {
    let mut path: Vec<String> = rel.trim_end_matches(".rs").split('/').map(str::to_string).collect();
    if matches!(path.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        path.pop();
    }
    path
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The paths a use tree names from where `text` starts (after `crate::`, `super::` or `self::`):
/// `a::b`, `{a, b::{c, d}}`, `a::{self, b}`, each as its segments after `prefix`.
fn use_tree(text: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    let mut rest = text.trim_start();
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        use_tree(&group[start..i], &path, out);
                        return;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        use_tree(&group[start..i], &path, out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            return;
        }
        let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        if name.is_empty() {
            break;
        }
        path.push(name.clone());
        match rest[name.len()..].trim_start().strip_prefix("::") {
            Some(after) => rest = after.trim_start(),
            None => break,
        }
    }
    if path.len() > prefix.len() {
        out.push(path);
    }
}

/// Every module path a file's code names through `crate::`, `super::` or `self::` (in `use`
/// or inline), with the line it is on; test code (after `#[cfg(test)]`) and comments aside.
fn named_paths(rel: &str, text: &str) -> Vec<(Vec<String>, usize)> {
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    let code: Vec<&str> = text.lines().map(code).collect();
    let joined = code.join("\n");
    let own = module_path(rel);
    let mut out = Vec::new();
    let mut line = 1;
    let mut last = 0;
    for (i, _) in joined.match_indices("::") {
        let head: String = joined[..i].chars().rev().take_while(|c| is_ident(*c)).collect::<String>();
        let head: String = head.chars().rev().collect();
        let start = i - head.len();
        let before = joined[..start].chars().next_back();
        if before.is_some_and(|c| is_ident(c) || c == ':' || c == '$') {
            continue;
        }
        let mut base = match head.as_str() {
            "crate" => Vec::new(),
            "self" => own.clone(),
            "super" => own[..own.len().saturating_sub(1)].to_vec(),
            _ => continue,
        };
        let mut rest = &joined[i + 2..];
        while let Some(r) = rest.trim_start().strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        line += joined[last..start].matches('\n').count();
        last = start;
        let mut paths = Vec::new();
        use_tree(rest, &base, &mut paths);
        out.extend(paths.into_iter().map(|p| (p, line)));
    }
    out
}

/// Where an edge between two sibling modules was seen: `src/<file>:<line>`.
type Edges = BTreeMap<(String, String), String>;

/// For each folder (a module path), the edges between its child modules: `a → b` when code in
/// `a` (or below it) names something in `b` (or below it). A module naming its own parent's
/// items, or its children's, is no edge: only siblings count.
fn sibling_edges() -> (BTreeMap<Vec<String>, Edges>, BTreeMap<Vec<String>, String>) {
    let sources = sources();
    let mut files: BTreeMap<Vec<String>, String> = BTreeMap::new();
    let mut children: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
    for (rel, _) in &sources {
        let path = module_path(rel);
        if let Some((name, folder)) = path.split_last() {
            children.entry(folder.to_vec()).or_default().insert(name.clone());
            files.entry(path.clone()).or_insert_with(|| rel.clone());
        }
    }
    let mut edges: BTreeMap<Vec<String>, Edges> = BTreeMap::new();
    for (rel, text) in &sources {
        let from = module_path(rel);
        for (to, line) in named_paths(rel, text) {
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            let (Some(a), Some(b)) = (from.get(common), to.get(common)) else { continue };
            let folder = from[..common].to_vec();
            if children.get(&folder).is_some_and(|c| c.contains(b)) {
                edges.entry(folder).or_default().entry((a.clone(), b.clone())).or_insert(format!("src/{rel}:{line}"));
            }
        }
    }
    (edges, files)
}

/// A loop: its modules, and the steps of one way round.
type Loop = (BTreeSet<String>, Vec<(String, String)>);

/// The loops among a folder's modules: each set of modules that all reach each other (more than
/// one), with one path that goes round it from its first module.
fn cycles(edges: &Edges) -> Vec<Loop> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        next.entry(a).or_default().push(b);
    }
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(n) = todo.pop() {
            for m in next.get(n.as_str()).into_iter().flatten() {
                if seen.insert(m.to_string()) {
                    todo.push(m.to_string());
                }
            }
        }
        seen
    };
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    for start in next.keys() {
        if done.contains(*start) || !reach(start).contains(*start) {
            continue;
        }
        // The modules on a cycle through `start`: those it reaches that reach it back.
        let set: BTreeSet<String> = reach(start).into_iter().filter(|m| reach(m).contains(*start)).collect();
        done.extend(set.iter().cloned());
        // The shortest way round from `start`, breadth first within the set.
        let mut back: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = VecDeque::from([start.to_string()]);
        'search: while let Some(n) = queue.pop_front() {
            for m in next.get(n.as_str()).into_iter().flatten() {
                if *m == *start {
                    back.insert(format!("{start}#"), n.clone());
                    break 'search;
                }
                if set.contains(*m) && !back.contains_key(*m) {
                    back.insert(m.to_string(), n.clone());
                    queue.push_back(m.to_string());
                }
            }
        }
        let mut cycle = Vec::new();
        let mut at = format!("{start}#");
        while let Some(prev) = back.get(&at) {
            let to = at.trim_end_matches('#').to_string();
            cycle.push((prev.clone(), to));
            if *prev == **start {
                break;
            }
            at = prev.clone();
        }
        cycle.reverse();
        out.push((set, cycle));
    }
    out
}

#[test]
fn sibling_modules_form_no_import_loop() {
    let (edges, files) = sibling_edges();
    assert!(edges.contains_key(&vec!["sandbox".to_string(), "marathon".to_string()]), "edges were found");
    assert!(
        edges.get(&Vec::new()).is_some_and(|e| e.contains_key(&("daemon".to_string(), "converge".to_string()))),
        "edges among src/'s own modules were found"
    );
    let file = |folder: &[String], m: &str| {
        let mut path = folder.to_vec();
        path.push(m.to_string());
        files.get(&path).map(|f| format!("src/{f}")).unwrap_or_else(|| m.to_string())
    };
    let mut found = Vec::new();
    for (folder, edges) in &edges {
        let shown = if folder.is_empty() { "src/".to_string() } else { format!("src/{}/", folder.join("/")) };
        for (members, cycle) in cycles(edges) {
            let members: Vec<String> = members.iter().map(|m| file(folder, m)).collect();
            let steps: Vec<String> = cycle
                .iter()
                .map(|(a, b)| {
                    format!("  {} → {} ({})", file(folder, a), file(folder, b), edges[&(a.clone(), b.clone())])
                })
                .collect();
            found.push(format!(
                "in {shown}, {} use each other; one way round:\n{}",
                members.join(", "),
                steps.join("\n")
            ));
        }
    }
    assert!(
        found.is_empty(),
        "sibling modules that use each other in a loop: move what they share into a module both \
         use, below them (see ARCHITECTURE.md):\n{}",
        found.join("\n")
    );
}

/// One typed view: text and markdown are rendered from `crate::view`, redacted where the view
/// is built, so no renderer can redact differently or forget to: `cli/markdown.rs` names no
/// redactor outside its tests, and no `*_text` function of `cli/output.rs` takes one.
#[test]
fn text_and_markdown_render_from_the_view_and_take_no_redactor() {
    let read = |rel: &str| std::fs::read_to_string(src().join(rel)).unwrap();
    let outside_tests = |text: &str| text.split("#[cfg(test)]").next().unwrap().to_string();
    let mut found = Vec::new();
    let markdown = outside_tests(&read("cli/markdown.rs"));
    for (n, line) in markdown.lines().enumerate() {
        if names_word(code(line), "redactor") || names_word(code(line), "redact") {
            found.push(format!("src/cli/markdown.rs:{}: {}", n + 1, line.trim()));
        }
    }
    let output = outside_tests(&read("cli/output.rs"));
    let mut renderers = Vec::new();
    for (i, _) in output.match_indices("pub fn ") {
        let signature = &output[i..i + output[i..].find('{').unwrap()];
        let name = signature["pub fn ".len()..].split(['(', '<']).next().unwrap();
        if name.ends_with("_text") {
            renderers.push(name);
            if names_word(signature, "redactor") {
                found.push(format!("src/cli/output.rs: {name} takes a redactor: {}", signature.trim()));
            }
        }
    }
    for name in ["plan_text", "outcome_text", "checks_text", "preview_text", "daemon_plan_text"] {
        assert!(renderers.contains(&name), "src/cli/output.rs has no pub fn {name}: {renderers:?}");
    }
    assert!(
        found.is_empty(),
        "text and markdown render from the typed view (src/view.rs), which is redacted where it is \
         built; a renderer takes the view, never a Redactor:\n{}",
        found.join("\n")
    );
}
