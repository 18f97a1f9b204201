//! `capstan plan|apply` over several deployment units: a pattern (`capstan plan 'clusters/*'`,
//! or `--repo R --path 'clusters/*'`) names every matching directory that holds its own
//! capstan.yaml, as `capstan daemon --path` does. Each unit is planned (or applied) on its own,
//! against its own target, under a heading of its name (`--output json`: a list of objects,
//! each with its `unit`); one unit's error never stops the others, and the exit code is the
//! worst of theirs (an error over changes over none). A plain directory is planned exactly as
//! it always was.

use super::*;
use crate::daemon::{is_pattern, path_matches, unit_name};

/// How deep a pattern's directories are looked into, and how many units there may be.
const DEPTH: usize = 16;
const MAX_UNITS: usize = 10_000;

/// The units a pattern names, each with the input that reads it; None when the input names one
/// directory (planned as it always was).
pub(super) fn expand(input: &InputArgs) -> anyhow::Result<Option<Vec<(String, InputArgs)>>> {
    match &input.repo {
        Some(location) if is_pattern(&input.path) => {
            let state_dir = input.state_dir.clone().unwrap_or_else(|| PathBuf::from(".capstan"));
            let git = GitSource::open(RepoSpec::new(location, input.git_ref.clone(), String::new()), &state_dir)?;
            git.fetch()?;
            let commit = git.resolve()?;
            let dirs = git.directories_with(&commit, "capstan.yaml", DEPTH, MAX_UNITS)?;
            let mut units: Vec<(String, InputArgs)> = dirs
                .into_iter()
                .filter(|d| path_matches(&input.path, &unit_name(d)))
                .map(|d| {
                    let mut one = input.clone();
                    one.path = d.clone();
                    // The commit the units were found at, for every unit alike.
                    one.git_ref = Some(commit.clone());
                    (unit_name(&d), one)
                })
                .collect();
            units.sort_by(|a, b| a.0.cmp(&b.0));
            none_is_an_error(units, &input.path)
        }
        None if input.dir.to_str().is_some_and(is_pattern) => {
            let pattern = input.dir.to_str().unwrap_or_default();
            let mut units: Vec<(String, InputArgs)> = matching_dirs(pattern)?
                .into_iter()
                .map(|d| {
                    let mut one = input.clone();
                    one.dir = PathBuf::from(&d);
                    (d, one)
                })
                .collect();
            units.sort_by(|a, b| a.0.cmp(&b.0));
            none_is_an_error(units, pattern)
        }
        _ => Ok(None),
    }
}

fn none_is_an_error(
    units: Vec<(String, InputArgs)>,
    pattern: &str,
) -> anyhow::Result<Option<Vec<(String, InputArgs)>>> {
    if units.is_empty() {
        anyhow::bail!("no directory matching {pattern:?} holds a capstan.yaml: there is no unit to work on");
    }
    Ok(Some(units))
}

/// The directories on disk that match `pattern` component by component and hold a
/// capstan.yaml (hidden ones are not looked into), as the pattern spells them.
fn matching_dirs(pattern: &str) -> anyhow::Result<Vec<String>> {
    let absolute = pattern.starts_with('/');
    let parts: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    anyhow::ensure!(parts.len() <= DEPTH, "{pattern:?} is deeper than {DEPTH} directories");
    let mut current: Vec<String> = vec![if absolute { "/".to_string() } else { String::new() }];
    for part in parts {
        let mut next = Vec::new();
        for dir in &current {
            let join = |name: &str| {
                if dir.is_empty() || dir == "/" { format!("{dir}{name}") } else { format!("{dir}/{name}") }
            };
            if !is_pattern(part) {
                if std::path::Path::new(&join(part)).is_dir() {
                    next.push(join(part));
                }
                continue;
            }
            let base = if dir.is_empty() { "." } else { dir.as_str() };
            let entries = std::fs::read_dir(base).with_context(|| format!("cannot list {base}"))?;
            for entry in entries {
                let entry = entry?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
                if !name.starts_with('.') && entry.file_type()?.is_dir() && path_matches(part, &name) {
                    next.push(join(&name));
                }
            }
        }
        anyhow::ensure!(next.len() <= MAX_UNITS, "{pattern:?} matches more than {MAX_UNITS} directories");
        current = next;
    }
    Ok(current.into_iter().filter(|d| std::path::Path::new(d).join("capstan.yaml").is_file()).collect())
}

/// Which of two exit codes says more: an error, then changes, then none.
fn worst(a: u8, b: u8) -> u8 {
    let rank = |c: u8| match c {
        EXIT_OK => 0,
        EXIT_CHANGES => 1,
        _ => 2,
    };
    if rank(b) > rank(a) { b } else { a }
}

fn heading(name: &str, color: crate::cli::ColorChoice) -> anyhow::Result<()> {
    let style = Style::stdout(color);
    out(&format!("{}\n", style.bold(&format!("=== unit {name} ==="))))?;
    Ok(())
}

/// `capstan plan` for each unit.
pub(super) async fn plan_each(
    units: Vec<(String, InputArgs)>,
    target: &TargetArgs,
    detailed: bool,
    format: PlanFormat,
    preview: &PreviewArgs,
    color: crate::cli::ColorChoice,
) -> anyhow::Result<u8> {
    let mut code = EXIT_OK;
    let mut list: Vec<serde_json::Value> = Vec::new();
    for (name, input) in units {
        if format != PlanFormat::Json {
            heading(&name, color)?;
        }
        let mut collected = Vec::new();
        let sink = (format == PlanFormat::Json).then_some(&mut collected);
        let one = match super::plan::plan_into(&input, target, detailed, format, preview, color, sink).await {
            Ok(c) => c,
            Err(e) => {
                if format == PlanFormat::Json {
                    // Invalid manifests as their diagnostics (file:line:column), anything else
                    // as its message.
                    let errors: Vec<String> = match e.downcast_ref::<InvalidInput>() {
                        Some(InvalidInput(d)) => d.errors().map(ToString::to_string).collect(),
                        None => vec![crate::redact::url(&format!("{e:#}"))],
                    };
                    collected.push(serde_json::json!({ "errors": errors }));
                }
                report_error(&e, Style::stderr(color));
                EXIT_ERROR
            }
        };
        for mut v in collected {
            let mut object = serde_json::Map::new();
            object.insert("unit".into(), serde_json::json!(name));
            if let Some(map) = v.as_object_mut() {
                object.extend(std::mem::take(map));
            }
            list.push(serde_json::Value::Object(object));
        }
        code = worst(code, one);
    }
    if format == PlanFormat::Json {
        outln(&serde_json::to_string_pretty(&list)?)?;
    }
    Ok(code)
}

/// `capstan apply` for each unit, one after another.
pub(super) async fn apply_each(
    units: Vec<(String, InputArgs)>,
    target: &TargetArgs,
    yes: bool,
    parallelism: usize,
    allow_mass_delete: bool,
    color: crate::cli::ColorChoice,
) -> anyhow::Result<u8> {
    refuse_shared_owner(&units, target).await?;
    let mut code = EXIT_OK;
    for (name, input) in units {
        heading(&name, color)?;
        let one = match super::apply::apply(&input, target, yes, parallelism, allow_mass_delete, color).await {
            Ok(c) => c,
            Err(e) => {
                report_error(&e, Style::stderr(color));
                EXIT_ERROR
            }
        };
        code = worst(code, one);
    }
    Ok(code)
}

/// Two units that mark what they make with one owner on one target would each take the
/// other's resources for their own and prune what the other declares: refused before any unit
/// changes anything. A unit whose input cannot be read is left to report its own error.
async fn refuse_shared_owner(units: &[(String, InputArgs)], target: &TargetArgs) -> anyhow::Result<()> {
    // One server however it is spelled: a name and its address, a trailing slash.
    let mut seen: Vec<(crate::lock::TargetKey, String, &str)> = Vec::new();
    for (name, input) in units {
        let Ok(read) = read_input(input) else { continue };
        let Ok(Some(key)) = crate::target::key_of(&read.config, target.target.as_deref()).await else { continue };
        let owner = read.config.owner().to_string();
        if let Some((other_key, _, other)) = seen.iter().find(|(k, o, _)| *o == owner && k.overlaps(&key)) {
            let also = if other_key.name == key.name { String::new() } else { format!(" (as {})", other_key.name) };
            anyhow::bail!(
                "units {other} and {name} both apply to {}{also} with owner {owner:?}: each would prune what the other declares; give one of them its own `owner:` in capstan.yaml",
                crate::redact::url(&key.name)
            );
        }
        seen.push((key, owner, name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_worse_than_changes_and_changes_than_none() {
        assert_eq!(worst(EXIT_OK, EXIT_CHANGES), EXIT_CHANGES);
        assert_eq!(worst(EXIT_CHANGES, EXIT_ERROR), EXIT_ERROR);
        assert_eq!(worst(EXIT_ERROR, EXIT_CHANGES), EXIT_ERROR);
        assert_eq!(worst(EXIT_ERROR, EXIT_OK), EXIT_ERROR);
        assert_eq!(worst(EXIT_OK, EXIT_OK), EXIT_OK);
    }
}
