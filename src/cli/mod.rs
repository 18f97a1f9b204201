//! The command line: `capstan render | validate | plan | apply | sandbox serve`.
//!
//! Conventions follow terraform and kubectl: `plan` previews and `apply` asks before changing
//! anything (refusing without `--yes` when nobody can be asked); `--detailed-exitcode` makes
//! `plan` exit 0 for no changes, 2 for changes, 1 for errors; `--output json` is for programs;
//! colour only on a terminal; logs on stderr, filtered by `RUST_LOG`.

mod commands;
pub mod output;

use clap::{Args, Parser, Subcommand, ValueEnum};
use output::ColorChoice;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "capstan", version, about = "A declarative GitOps reconciler for PaaS REST APIs", long_about = None)]
pub struct Cli {
    /// When to colour output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    pub color: ColorChoice,

    /// Log line format on stderr (filter with RUST_LOG, e.g. RUST_LOG=capstan=debug).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the merged manifest after variable and default-namespace expansion.
    Render {
        #[command(flatten)]
        input: InputArgs,
        #[arg(long, short, value_enum, default_value_t = RenderFormat::Yaml)]
        output: RenderFormat,
    },
    /// Check the manifests (syntax, schema, expansion, identities) without contacting a target.
    Validate {
        #[command(flatten)]
        input: InputArgs,
    },
    /// Show what apply would change, reading the live state but changing nothing.
    Plan {
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        target: TargetArgs,
        /// Exit 0 when there are no changes, 2 when there are, 1 on error.
        #[arg(long)]
        detailed_exitcode: bool,
        #[arg(long, short, value_enum, default_value_t = PlanFormat::Text)]
        output: PlanFormat,
    },
    /// Make the platform match the manifests.
    Apply {
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        target: TargetArgs,
        /// Apply without asking for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        /// How many steps may run at once.
        #[arg(long, default_value_t = 8)]
        parallelism: usize,
    },
    /// Serve a faithful emulation of a platform's API on loopback.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
}

#[derive(Subcommand, Debug)]
pub enum SandboxCommand {
    /// Serve until interrupted; prints its URL once it accepts connections.
    Serve(SandboxArgs),
}

#[derive(Args, Debug)]
pub struct SandboxArgs {
    #[arg(long, default_value = "apcera")]
    pub platform: String,
    /// Address to listen on (loopback; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// File that keeps the platform's state across restarts.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Milliseconds added to every API response.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Milliseconds asynchronous work (job starts, tasks) takes.
    #[arg(long, default_value_t = 0)]
    pub rollout_ms: u64,
    /// Require this bearer token on every API request.
    #[arg(long)]
    pub token: Option<String>,
}

/// Where the manifests are and how to render them.
#[derive(Args, Debug, Clone)]
pub struct InputArgs {
    /// The manifest directory (ignored with --repo).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Read the manifests from this git repository (a path, or a file://, http:// or https://
    /// URL) at one commit, straight from its objects.
    #[arg(long)]
    pub repo: Option<String>,
    /// Branch, tag or commit of --repo (default: HEAD of a local repository, the remote's
    /// default branch otherwise).
    #[arg(long = "ref", requires = "repo")]
    pub git_ref: Option<String>,
    /// Directory of the manifests inside --repo.
    #[arg(long, requires = "repo", default_value = "")]
    pub path: String,
    /// Where capstan keeps its state: fetched repositories, the embedded sandbox's state
    /// (default: .capstan in the manifest directory, or in the current directory with --repo).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// capstan.yaml to use instead of the one at the manifest directory's root.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Set a variable (highest precedence); repeatable.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// Default namespace, overriding capstan.yaml's and the files'.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Let unresolved variables become empty with a warning, as the platform's server does.
    #[arg(long)]
    pub allow_missing_vars: bool,
}

#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
    /// Target from capstan.yaml (default: default_target, else the embedded sandbox).
    #[arg(long, short)]
    pub target: Option<String>,
    /// Delete resources this owner created that are no longer declared.
    #[arg(long)]
    pub prune: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RenderFormat {
    Yaml,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))?;
    if k.is_empty() {
        return Err(format!("expected NAME=VALUE, got {s:?}"));
    }
    Ok((k.to_string(), v.to_string()))
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("capstan: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(commands::run(cli));
    ExitCode::from(code)
}
