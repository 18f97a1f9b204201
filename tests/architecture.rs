//! The architecture's invariants, checked over the source tree: a platform is its folders and
//! one name in each registry; stages only reach earlier stages; providers and sandboxes are
//! two independent readings of an API; the daemon does not reach into the command line. And
//! `schemas/capstan.schema.json`'s `platform` enums list exactly the registered platforms.

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
