//! The command line itself: shell completions, the man page, the CI examples' command lines
//! against the CLI definition, and when output is coloured.

mod common;
use capstan::cli::{Cli, Command, PlanFormat};
use clap::Parser;
use common::*;
use std::process::Stdio;

#[test]
fn completions_for_bash_zsh_and_fish_name_capstan_and_its_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run_in(&repo_root(), &["completions", shell]);
        out.ok();
        assert!(out.stdout.contains("capstan"), "{shell}: {}", out.stdout);
        for sub in ["apply", "plan", "validate", "sandbox"] {
            assert!(out.stdout.contains(sub), "{shell} completions lack {sub}");
        }
        assert!(out.stdout.contains("allow-mass-delete"), "{shell} completions lack apply's options");
    }
    let out = run_in(&repo_root(), &["completions", "tcsh"]);
    out.code(2);
    assert!(out.stderr.contains("invalid value 'tcsh'"), "{}", out.stderr);
}

#[test]
fn the_man_page_is_roff_with_every_subcommand() {
    let out = run_in(&repo_root(), &["man"]);
    out.ok();
    // `.TH` comes first, after only the quote-character definitions clap_mangen puts before it.
    let head: Vec<&str> = out.stdout.lines().take_while(|l| !l.starts_with(".TH")).collect();
    assert!(head.iter().all(|l| l.starts_with(".ie ") || l.starts_with(".el ")), "{head:?}");
    assert!(out.stdout.lines().nth(head.len()).unwrap().starts_with(".TH capstan 1 "), "{}", out.stdout);
    assert!(out.stdout.contains(".SH NAME") && out.stdout.contains(".SH SUBCOMMANDS"), "{}", out.stdout);
    for sub in ["capstan\\-apply", "capstan\\-plan", "capstan\\-daemon", "capstan\\-rollback"] {
        assert!(out.stdout.contains(sub), "the man page lacks {sub}");
    }
}

/// The shell scripts of a CI file: GitHub Actions' `run` and GitLab CI's `script`,
/// `before_script` and `after_script` (one string, or a list of them).
fn scripts(v: &serde_yaml::Value, out: &mut Vec<String>) {
    match v {
        serde_yaml::Value::Sequence(items) => items.iter().for_each(|i| scripts(i, out)),
        serde_yaml::Value::Mapping(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    (Some("run" | "script" | "before_script" | "after_script"), serde_yaml::Value::String(s)) => {
                        out.push(s.clone())
                    }
                    (Some("script" | "before_script" | "after_script"), serde_yaml::Value::Sequence(lines)) => {
                        out.extend(lines.iter().filter_map(|l| l.as_str().map(str::to_string)))
                    }
                    _ => scripts(v, out),
                }
            }
        }
        _ => {}
    }
}

/// The words of a shell command line, as a POSIX shell splits them (quotes removed; `$VAR` and
/// `${{ expr }}` kept literally, as CI fills them before capstan sees them).
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut in_word) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (None, '"' | '\'') => (quote, in_word) = (Some(c), true),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    assert!(quote.is_none(), "unbalanced quotes in {line:?}");
    if in_word {
        words.push(word);
    }
    words
}

/// The `capstan ...` command lines of a script: continuation lines joined, output redirection
/// dropped.
fn capstan_lines(script: &str) -> Vec<Vec<String>> {
    let joined = script.replace("\\\n", " ");
    joined
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("capstan "))
        .map(|l| shell_words(l.split(" > ").next().unwrap()))
        .collect()
}

#[test]
fn every_capstan_command_in_the_ci_examples_is_accepted_by_the_cli() {
    let mut files: Vec<_> = std::fs::read_dir(repo_root().join("examples/ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", file.display()));
        let mut all = Vec::new();
        scripts(&doc, &mut all);
        let commands: Vec<Vec<String>> = all.iter().flat_map(|s| capstan_lines(s)).collect();
        let mut previews = 0;
        for words in &commands {
            let cli = Cli::try_parse_from(words)
                .unwrap_or_else(|e| panic!("{}: `{}` is not accepted:\n{e}", file.display(), words.join(" ")));
            if let Command::Plan { output, preview, detailed_exitcode, input, target, .. } = &cli.command {
                // The whole continued line was read: its last options too.
                assert_eq!(*output, PlanFormat::Markdown);
                assert!(
                    *detailed_exitcode && preview.base.is_some() && preview.head.is_some() && preview.title.is_some()
                );
                assert_eq!((input.repo.as_deref(), input.path.as_str()), (Some("."), "deploy"));
                assert_eq!(target.target.as_deref(), Some("production"));
                previews += 1;
            }
        }
        assert_eq!(commands.len(), 2, "{}: validate and plan: {commands:?}", file.display());
        assert_eq!(previews, 1, "{}", file.display());
    }
}

#[test]
fn plan_output_is_coloured_with_color_always_and_plain_through_a_pipe_with_no_color_or_never() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.target(&sb.url);
    w.write("m.yaml", "jobs:\n  job::/c::web: {}\n");
    let plan = |args: &[&str], no_color: bool| {
        let mut cmd = std::process::Command::new(capstan_bin());
        cmd.args(["plan", "."]).args(args).current_dir(w.path()).stdin(Stdio::null());
        if no_color {
            cmd.env("NO_COLOR", "1");
        } else {
            cmd.env_remove("NO_COLOR");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    // Asked for: both streams, even through a pipe and with NO_COLOR set.
    for no_color in [false, true] {
        let (out, err) = plan(&["--color", "always"], no_color);
        assert!(out.contains("\x1b[32m+\x1b[0m \x1b[1mjob::/c::web\x1b[0m"), "{out:?}");
        assert!(err.contains("\x1b[2mPlanning against"), "{err:?}");
    }
    // Not asked for: a pipe is not a terminal, so none; nor with NO_COLOR or --color never.
    for (args, no_color) in [(&[][..], false), (&[][..], true), (&["--color", "never"][..], false)] {
        let (out, err) = plan(args, no_color);
        assert!(out.contains("+ job::/c::web"), "{out}");
        assert!(!out.contains('\x1b') && !err.contains('\x1b'), "{args:?} NO_COLOR={no_color}: {out:?} {err:?}");
    }
}
