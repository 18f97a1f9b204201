//! What each command does, on top of the pipeline in `engine`.

use super::output::{self, Style};
use super::{
    Cli, Command, DaemonArgs, InputArgs, PlanAction, PlanFormat, PreviewArgs, RenderFormat, RollbackArgs, SandboxArgs,
    SandboxCommand, TargetArgs, markdown, note, out, outln, shutdown_signal,
};
use crate::base::diagnostic::{Diagnostics, InvalidInput};
use crate::config::Config;
use crate::engine::{self, PlanError};
use crate::plan::Plan;
use crate::providers;
use crate::render::{RenderOptions, Rendered};
use crate::sandbox::{Sandbox, SandboxOptions};
use crate::source::git::{GitSource, RepoSpec};
use crate::source::{self, Snapshot};
use anyhow::Context;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use tracing::Level;

mod apply;
mod daemon;
mod plan;
mod render;
mod sandbox;
mod units;

use apply::{apply, rollback};
use daemon::{daemon, drive_daemon};
use plan::plan;
use render::{render, validate};
use sandbox::serve;

pub use super::{EXIT_CHANGES, EXIT_ERROR, EXIT_OK};

pub async fn run(cli: Cli) -> u8 {
    let err_style = Style::stderr(cli.color);
    let result = match cli.command {
        Command::Render { input, output } => render(&input, output, cli.color).await,
        Command::Validate { input } => validate(&input, cli.color).await,
        Command::Plan { action: Some(action), .. } => drive_daemon(action, cli.color).await,
        Command::Plan { action: None, input, target, detailed_exitcode, output, preview } => {
            match units::expand(&input) {
                Ok(Some(list)) => units::plan_each(list, &target, detailed_exitcode, output, &preview, cli.color).await,
                Ok(None) => plan(&input, &target, detailed_exitcode, output, &preview, cli.color).await,
                Err(e) => Err(e),
            }
        }
        Command::Daemon(args) => daemon(args).await,
        Command::Rollback(args) => rollback(args, cli.color).await,
        Command::Apply { input, target, yes, parallelism, allow_mass_delete } => match units::expand(&input) {
            Ok(Some(list)) => units::apply_each(list, &target, yes, parallelism, allow_mass_delete, cli.color).await,
            Ok(None) => apply(&input, &target, yes, parallelism, allow_mass_delete, cli.color).await,
            Err(e) => Err(e),
        },
        Command::Sandbox(SandboxCommand::Serve(args)) => serve(args).await,
        Command::Service(args) => super::service::run(args, cli.color).await,
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            // Into memory first: the generator panics when its writer fails (a closed pipe).
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut cmd, "capstan", &mut text);
            out(&String::from_utf8_lossy(&text)).map(|()| EXIT_OK).map_err(Into::into)
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut text = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut text)
                .and_then(|()| out(&String::from_utf8_lossy(&text)))
                .map(|()| EXIT_OK)
                .map_err(Into::into)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            report_error(&e, err_style);
            EXIT_ERROR
        }
    }
}

/// A command's error on stderr: invalid manifests as their diagnostics, anything else as one
/// message.
fn report_error(e: &anyhow::Error, err_style: Style) {
    if let Some(InvalidInput(diags)) = e.downcast_ref::<InvalidInput>() {
        print_diagnostics(diags, err_style);
        note(
            Level::ERROR,
            &format!("capstan: {} error(s) in the manifests; nothing was applied.", diags.errors().count()),
        );
    } else {
        // Whatever failed, a URL in the message is shown without its credentials.
        note(Level::ERROR, &crate::redact::url(&format!("{}: {e:#}", err_style.red("capstan: error"))));
    }
}

/// Said when a repository URL carries credentials (they are used, never shown or stored).
const CREDENTIALS_IN_URL: &str = "warning: the credentials in the repository URL are visible to other users of this machine (ps, shell history); prefer CAPSTAN_GIT_USERNAME/CAPSTAN_GIT_PASSWORD or a git credential helper";

/// The manifests to work on, the configuration that goes with them, and where state lives.
struct Input {
    snapshot: Snapshot,
    config: Config,
    state_dir: PathBuf,
    /// The repository and commit, when reading from git.
    git: Option<GitSource>,
    commit: Option<String>,
}

fn read_input(input: &InputArgs) -> anyhow::Result<Input> {
    let (snapshot, state_dir, git, commit) = match &input.repo {
        Some(location) => {
            let state_dir = input.state_dir.clone().unwrap_or_else(|| PathBuf::from(".capstan"));
            let spec = RepoSpec::new(location, input.git_ref.clone(), input.path.clone());
            if spec.credentials.is_some() {
                note(Level::WARN, CREDENTIALS_IN_URL);
            }
            let git = GitSource::open(spec, &state_dir)?;
            git.fetch()?;
            let commit = git.resolve()?;
            note(Level::INFO, &format!("Using commit {commit} of {}.", git.spec.location));
            (git.snapshot(&commit)?, state_dir, Some(git), Some(commit))
        }
        None => {
            let state_dir = input.state_dir.clone().unwrap_or_else(|| input.dir.join(".capstan"));
            (source::dir::snapshot(&input.dir)?, state_dir, None, None)
        }
    };
    let (mut config, config_path) = match (&input.config, &snapshot.config) {
        (Some(path), _) => (Config::load(path, true)?.0, Some((path.clone(), false))),
        (None, Some(file)) => {
            (Config::parse(&file.path, &file.text).map_err(InvalidInput)?, Some((file.path.clone(), git.is_some())))
        }
        (None, None) => (Config::default(), None),
    };
    // A relative ca_cert is next to capstan.yaml: on disk, or in the commit it came from.
    if let Some((path, from_git)) = config_path {
        let dir = path.parent().unwrap_or(std::path::Path::new(""));
        match (from_git, &git, &commit) {
            (true, Some(g), Some(c)) => config.read_ca_certs(dir, g.reader_at(c))?,
            _ => config.read_ca_certs(dir, |p| Ok(std::fs::read(p)?))?,
        }
    }
    Ok(Input { snapshot, config, state_dir, git, commit })
}

fn render_options(input: &InputArgs) -> RenderOptions {
    input.variables.render_options(false)
}

/// Render offline with the platform the configuration names.
fn render_offline(
    args: &InputArgs,
    input: &Input,
    keep_documents: bool,
) -> anyhow::Result<(Rendered, Box<dyn providers::Provider>)> {
    let platform = crate::target::platform_of(&input.config, None)?;
    let provider = providers::provider_for(&platform, None, input.config.owner())?;
    let opts = RenderOptions { keep_documents, ..render_options(args) };
    let rendered = engine::render(&input.snapshot, &input.config, &opts, provider.as_ref(), None)?;
    Ok((rendered, provider))
}

fn print_warnings(warnings: &Diagnostics, color: super::ColorChoice) {
    if !warnings.0.is_empty() {
        print_diagnostics(warnings, Style::stderr(color));
    }
}

/// On stderr: as text, or one JSON line per diagnostic.
fn print_diagnostics(diags: &Diagnostics, style: Style) {
    if !super::json_stderr() {
        return note(Level::INFO, &output::diagnostics_text(diags, style));
    }
    for d in &diags.0 {
        let level = match d.severity {
            crate::base::diagnostic::Severity::Error => Level::ERROR,
            crate::base::diagnostic::Severity::Warning => Level::WARN,
        };
        note(level, &output::diagnostic_text(d, style));
    }
}
