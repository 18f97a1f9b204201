//! The command line: `capstan render | validate | plan | apply | sandbox serve`.
//!
//! Conventions follow terraform and kubectl: `plan` previews and `apply` asks before changing
//! anything (refusing without `--yes` when nobody can be asked); `--detailed-exitcode` makes
//! `plan` exit 0 for no changes, 2 for changes, 1 for errors; `--output json` is for programs;
//! colour only on a terminal; logs on stderr, filtered by `RUST_LOG`.

mod commands;
pub mod markdown;
pub mod output;
mod service;

use clap::{Args, Parser, Subcommand, ValueEnum};
use output::ColorChoice;
use std::path::PathBuf;
use std::process::ExitCode;

/// The exit codes, as terraform's `plan -detailed-exitcode` has them: 0 nothing to do (or
/// done), 1 an error, 2 changes to make. Here, below `commands` and `service`, which both use them.
pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_CHANGES: u8 = 2;

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
    /// Show what apply would change, reading the live state but changing nothing; or drive a
    /// daemon's running plan (`plan interrupt|continue|status --daemon URL`).
    #[command(args_conflicts_with_subcommands = true)]
    Plan {
        #[command(subcommand)]
        action: Option<PlanAction>,
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        target: TargetArgs,
        /// Exit 0 when there are no changes, 2 when there are, 1 on error.
        #[arg(long)]
        detailed_exitcode: bool,
        #[arg(long, short, value_enum, default_value_t = PlanFormat::Text)]
        output: PlanFormat,
        #[command(flatten)]
        preview: PreviewArgs,
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
        /// How many requests may run at once (a batch of steps the platform takes together is one; 1 to 1024).
        #[arg(long, default_value_t = crate::apply::DEFAULT_PARALLELISM, value_parser = parse_parallelism)]
        parallelism: usize,
        /// Apply even when the plan deletes more than the mass-delete guard allows.
        #[arg(long)]
        allow_mass_delete: bool,
    },
    /// Apply the configuration of an earlier commit again, through the normal plan (with the
    /// usual preview and confirmation); or ask a daemon to (`--daemon URL`), which keeps to
    /// that commit until the next one arrives.
    Rollback(RollbackArgs),
    /// Watch a git repository and keep the platform equal to it, serving the plan API.
    Daemon(DaemonArgs),
    /// Serve a faithful emulation of a platform's API on loopback.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Operations on a service the platform runs with an API of its own (DC/OS SDK services,
    /// legacy Cassandra): pods, endpoints, config, pod replace|restart, cassandra ….
    Service(service::ServiceArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print capstan's man page (roff), generated from the command-line definition.
    Man,
}

#[derive(Subcommand, Debug)]
pub enum PlanAction {
    /// Stop starting new steps of the daemon's running plan (running steps finish).
    Interrupt(DaemonRef),
    /// Resume the daemon's interrupted plan at its next pending step.
    Continue(DaemonRef),
    /// Show the daemon's running or last plan with its step statuses.
    Status(DaemonRef),
}

#[derive(Args, Debug)]
pub struct DaemonRef {
    /// The daemon's URL, e.g. http://127.0.0.1:7878.
    #[arg(long)]
    pub daemon: String,
    /// Environment variable holding the daemon's token.
    #[arg(long)]
    pub token_env: Option<String>,
    /// The unit whose plan to drive, for a daemon of several (`clusters/eu`).
    #[arg(long)]
    pub unit: Option<String>,
    #[arg(long, short, value_enum, default_value_t = PlanFormat::Text)]
    pub output: PlanFormat,
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// The commit to go back to: a commit id, tag, branch or revision (`HEAD~1`).
    #[arg(long)]
    pub to: String,
    /// The git repository: a path, or a file://, http:// or https:// URL.
    #[arg(long, default_value = ".")]
    pub repo: String,
    /// Directory of the manifests inside the repository.
    #[arg(long, default_value = "")]
    pub path: String,
    /// Ask this daemon to roll back instead of applying from here.
    #[arg(long)]
    pub daemon: Option<String>,
    /// Environment variable holding the daemon's token.
    #[arg(long, requires = "daemon")]
    pub token_env: Option<String>,
    /// With --daemon: roll back even to a commit outside the followed branch's first-parent
    /// history, or one the daemon never applied (it refuses those otherwise).
    #[arg(long, requires = "daemon")]
    pub any_commit: bool,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Apply without asking for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// How many requests may run at once (a batch of steps the platform takes together is one; 1 to 1024).
    #[arg(long, default_value_t = crate::apply::DEFAULT_PARALLELISM, value_parser = parse_parallelism)]
    pub parallelism: usize,
    /// Apply even when the plan deletes more than the mass-delete guard allows.
    #[arg(long)]
    pub allow_mass_delete: bool,
    /// Where capstan keeps its state (default: .capstan in the current directory).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub variables: VarArgs,
}

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// The git repository to follow: a path, or a file://, http:// or https:// URL.
    #[arg(long)]
    pub repo: String,
    /// Branch, tag or commit to follow (default: HEAD of a local repository, the remote's
    /// default branch otherwise).
    #[arg(long = "ref")]
    pub git_ref: Option<String>,
    /// Directory of the manifests inside the repository: one directory is one deployment unit.
    /// Repeated (`--path a --path b`), or a pattern (`'clusters/*'`: `*`, `?`, `[a-z]` within
    /// one directory name), every matching directory of the newest commit that holds its own
    /// capstan.yaml is a unit, with its own target, lock, plan, history and events.
    #[arg(long)]
    pub path: Vec<String>,
    /// How many units reconcile at once.
    #[arg(long, default_value_t = crate::daemon::DEFAULT_UNIT_PARALLELISM)]
    pub unit_parallelism: usize,
    /// Target from the repository's capstan.yaml (default: default_target, else the embedded
    /// sandbox).
    #[arg(long, short)]
    pub target: Option<String>,
    /// Address of the daemon's HTTP API (loopback by default).
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: std::net::SocketAddr,
    /// Where the daemon keeps its database, fetched repositories and the embedded sandbox's state.
    #[arg(long, default_value = ".capstan")]
    pub state_dir: PathBuf,
    /// Where the history and keyed values are kept: `sqlite` (the default: a database in the
    /// state directory) or a PostgreSQL URL, postgres://user:password@host:port/database
    /// (its password is never shown).
    #[arg(long, env = "CAPSTAN_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// How often a remote repository is polled (e.g. 30s, 5m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub interval: std::time::Duration,
    /// How often live state is compared with the applied commit.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub resync: std::time::Duration,
    /// With a PostgreSQL --store and several units: how many connections the units share for
    /// their histories (the lease keeper and the shared journal use one more).
    #[arg(long, default_value_t = crate::daemon::DEFAULT_STORE_CONNECTIONS)]
    pub store_connections: usize,
    /// With a PostgreSQL --store: how long the unit's lease lasts unrenewed. It is renewed
    /// every third of this; a dead daemon's unit is taken over within about 4/3 of it.
    #[arg(long, default_value = "6s", value_parser = parse_lease_ttl)]
    pub lease_ttl: std::time::Duration,
    /// Repair drift found at a resync (false: only report it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub self_heal: bool,
    /// Environment variable holding the token every API call but /health/* and /metrics must
    /// carry (and webhooks, unless they are signed with --webhook-secret-env).
    #[arg(long)]
    pub token_env: Option<String>,
    /// Environment variable holding the secret that signs webhooks.
    #[arg(long)]
    pub webhook_secret_env: Option<String>,
    /// Require the token on /metrics as well.
    #[arg(long)]
    pub metrics_need_token: bool,
    /// Listen beyond loopback with no --token-env, letting anyone who can reach the port read
    /// the daemon's history and trigger syncs and rollbacks.
    #[arg(long)]
    pub insecure_listen: bool,
    /// How many requests may run at once (a batch of steps the platform takes together is one; 1 to 1024).
    #[arg(long, default_value_t = crate::apply::DEFAULT_PARALLELISM, value_parser = parse_parallelism)]
    pub parallelism: usize,
    /// Override a platform's deployment lock (Marathon: force=true) instead of waiting for it.
    #[arg(long)]
    pub force: bool,
    /// Apply every plan, even one that deletes more than the mass-delete guard allows
    /// (otherwise such a commit is refused; raising mass_delete in that commit's capstan.yaml
    /// lets just it through).
    #[arg(long)]
    pub allow_mass_delete: bool,
    /// Apply every plan, even one whose pre-apply checks (declared policy checks) fail
    /// (otherwise such a commit is refused).
    #[arg(long = "allow-policy-failures", visible_alias = "allow-check-failures")]
    pub allow_check_failures: bool,
    /// Take over declared resources that another owner's mark claims (otherwise a commit that
    /// declares one is invalid).
    #[arg(long)]
    pub take_ownership: bool,
    #[command(flatten)]
    pub variables: VarArgs,
}

/// The longest duration a flag takes: a year (anything longer overflows a clock somewhere).
const MAX_DURATION_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// `250ms`, `30s`, `5m`, `1h`, or a bare number of seconds: from 1 ms to a year.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("expected a duration like 30s or 5m, got {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}: expected ms, s, m or h")),
    };
    if !(0.001..=MAX_DURATION_SECS).contains(&secs) {
        return Err(format!("{s:?} is out of range: expected from 1ms to 365 days"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// How many steps may run at once: 1 to 1024.
/// A lease of at least 300 ms (renewed every third of it) and at most an hour.
fn parse_lease_ttl(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(s)?;
    if d < std::time::Duration::from_millis(300) || d > std::time::Duration::from_secs(3600) {
        return Err(format!("expected a lease between 300ms and 1h, got {s:?}"));
    }
    Ok(d)
}

fn parse_parallelism(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n @ 1..=1024) => Ok(n),
        _ => Err(format!("expected a number of steps from 1 to 1024, got {s:?}")),
    }
}

/// Milliseconds of a sandbox delay: 0 to an hour.
fn parse_millis(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n @ 0..=3_600_000) => Ok(n),
        _ => Err(format!("expected milliseconds from 0 to 3600000 (an hour), got {s:?}")),
    }
}

/// A share of requests: 0 to 1.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("expected a share from 0 to 1, got {s:?}")),
    }
}

#[derive(Subcommand, Debug)]
pub enum SandboxCommand {
    /// Serve until interrupted; prints its URL once it accepts connections.
    Serve(SandboxArgs),
}

#[derive(Args, Debug)]
pub struct SandboxArgs {
    /// The platform to emulate (one of the sandbox registry's).
    #[arg(long, default_value_t = crate::sandbox::EMULATORS[0].name.to_string())]
    pub platform: String,
    /// Address to listen on (loopback; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// File that keeps the platform's state across restarts.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Milliseconds added to every API response.
    #[arg(long, default_value_t = 0, value_parser = parse_millis)]
    pub latency_ms: u64,
    /// Up to this many more milliseconds, at random.
    #[arg(long, default_value_t = 0, value_parser = parse_millis)]
    pub latency_jitter_ms: u64,
    /// Milliseconds asynchronous work takes (job starts, tasks; each Marathon deployment step
    /// that launches tasks).
    #[arg(long, default_value_t = 0, value_parser = parse_millis)]
    pub rollout_ms: u64,
    /// Share of API requests answered 500, 502, 503 or 504 (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fail_rate: f64,
    /// Share of API requests whose connection is dropped, before or after the change is made.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub reset_rate: f64,
    /// Seed of the faults' randomness, so a run can be repeated.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Require this bearer token on every API request.
    #[arg(long)]
    pub token: Option<String>,
    /// Marathon: plan deployments as Marathon 1.x does, the apps at one dependency depth in
    /// one step (default: one app per step, as the API reference's dry-run example shows).
    #[arg(long)]
    pub grouped_steps: bool,
    /// DC/OS: milliseconds one step of a service's plan takes (default 5).
    #[arg(long, value_parser = parse_millis)]
    pub step_ms: Option<u64>,
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
    #[command(flatten)]
    pub variables: VarArgs,
}

/// Rendering inputs given on the command line, the same for every command that renders.
#[derive(Args, Debug, Clone, Default)]
pub struct VarArgs {
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

impl VarArgs {
    pub fn render_options(&self, keep_documents: bool) -> crate::render::RenderOptions {
        crate::render::RenderOptions {
            vars: self.vars.iter().cloned().collect(),
            namespace: self.namespace.clone(),
            allow_missing_vars: self.allow_missing_vars,
            keep_documents,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
    /// Target from capstan.yaml (default: default_target, else the embedded sandbox).
    #[arg(long, short)]
    pub target: Option<String>,
    /// Delete resources this owner created that are no longer declared.
    #[arg(long)]
    pub prune: bool,
    /// Override a platform's deployment lock (Marathon: force=true) instead of waiting for it.
    #[arg(long)]
    pub force: bool,
    /// Take over declared resources that another owner's mark claims (otherwise such a plan
    /// is refused); the plan shows each mark changing hands.
    #[arg(long)]
    pub take_ownership: bool,
    /// Plan and apply even when one of the platform's pre-apply checks (a declared policy
    /// check) fails after the plan.
    #[arg(long = "allow-policy-failures", visible_alias = "allow-check-failures")]
    pub allow_check_failures: bool,
}

impl TargetArgs {
    pub fn plan_flags(&self, config: &crate::config::Config) -> crate::engine::PlanFlags {
        crate::engine::PlanFlags { prune: self.prune || config.prune, take_ownership: self.take_ownership }
    }
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
    /// A report to post as a pull-request comment.
    Markdown,
}

/// For previews in CI.
#[derive(Args, Debug, Clone)]
pub struct PreviewArgs {
    /// With --repo: also show what the change from this commit to --head (or --ref) does to
    /// the declared state.
    #[arg(long, requires = "repo")]
    pub base: Option<String>,
    /// With --repo and --base: the commit to preview (default: --ref, else HEAD).
    #[arg(long, requires = "base")]
    pub head: Option<String>,
    /// With --base: only compare the two commits, without reading the live platform.
    #[arg(long, requires = "base")]
    pub no_live: bool,
    /// Handlebars template for --output markdown, instead of the built-in one.
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// Heading of the markdown report.
    #[arg(long)]
    pub title: Option<String>,
    /// The most bytes the markdown report may have: diffs are cut first, never the summary or
    /// a changed address unless those alone are over it (GitHub refuses comments over 65,536).
    #[arg(long, default_value_t = markdown::MAX_BYTES)]
    pub max_bytes: usize,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))?;
    if k.is_empty() {
        return Err(format!("expected NAME=VALUE, got {s:?}"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Whether stderr carries JSON lines (`--log-format json`).
static JSON_STDERR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(crate) fn json_stderr() -> bool {
    JSON_STDERR.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether stdout's reader has gone away (`capstan validate | head -1`).
static STDOUT_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Write to stdout. A reader that went away is not an error: the rest of the output is
/// dropped and the command carries on to its own exit code (a plan still says whether there
/// are changes, an apply keeps applying). Other failures (a full disk) are errors.
pub(crate) fn out(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::sync::atomic::Ordering::Relaxed;
    if STDOUT_GONE.load(Relaxed) {
        return Ok(());
    }
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_GONE.store(true, Relaxed);
            Ok(())
        }
        other => other,
    }
}

/// `out` of a line.
pub(crate) fn outln(text: &str) -> std::io::Result<()> {
    out(&format!("{text}\n"))
}

/// Write to stderr; nothing is left to tell when that fails (a closed pipe), so it is ignored.
fn err(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// A message for people on stderr (what is being used, errors, warnings). With
/// `--log-format json` it is one JSON object shaped as the log lines are, so that every line
/// of stderr is one object; it is shown whatever `RUST_LOG` says.
pub(crate) fn note(level: tracing::Level, text: &str) {
    if json_stderr() {
        let timestamp = crate::daemon::now_rfc3339();
        let line = serde_json::json!({
            "timestamp": timestamp,
            "level": level.as_str(),
            "fields": { "message": text.trim_end() },
            "target": "capstan",
        });
        err(&format!("{line}\n"));
    } else if text.ends_with('\n') {
        err(text);
    } else {
        err(&format!("{text}\n"));
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    JSON_STDERR.store(format == LogFormat::Json, std::sync::atomic::Ordering::Relaxed);
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
            err(&format!("capstan: cannot start the async runtime: {e}\n"));
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(commands::run(cli));
    ExitCode::from(code)
}

pub use crate::shutdown_signal;
