//! `capstan service …`: operations on a service that a platform runs with an API of its own
//! (DC/OS SDK services and legacy Cassandra): its pods, endpoints and configurations; a pod
//! replaced or restarted; a maintenance operation (cleanup, repair, backup, restore). An
//! operation that starts a plan of the service's shows that plan's steps as they change and
//! ends when it is done: exit 0, or 1 with the service's own message. The target is chosen as
//! for `plan` and `apply` (capstan.yaml's targets, `--target`, else the embedded sandbox).

use super::EXIT_OK;
use super::output::{self, Style};
use super::{ColorChoice, outln};
use crate::config::Config;
use crate::model::{ServiceOp, SubStep};
use crate::redact::Redactor;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

#[derive(Args, Debug)]
pub struct ServiceArgs {
    #[command(subcommand)]
    pub command: ServiceCommand,
    /// The directory whose capstan.yaml names the targets and the platform.
    #[arg(long, global = true, default_value = ".")]
    pub dir: PathBuf,
    /// capstan.yaml to use instead of the one in --dir.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Where capstan keeps its state (the embedded sandbox's; default: .capstan in --dir).
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
    /// Target from capstan.yaml (default: default_target, else the embedded sandbox).
    #[arg(long, short, global = true)]
    pub target: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// The service's pods (legacy Cassandra: nodes) and what each runs.
    Pods { service: String },
    /// How clients connect: each endpoint (legacy Cassandra: the connection's nodes).
    Endpoints { service: String },
    /// The target configuration, every configuration by id, and whether offers are suppressed.
    Config { service: String },
    /// Replace or restart one pod, following the service's recovery plan to its end.
    #[command(subcommand)]
    Pod(PodCommand),
    /// Legacy DC/OS Apache Cassandra's operations, followed through their status to the end.
    #[command(subcommand)]
    Cassandra(CassandraCommand),
}

#[derive(Subcommand, Debug)]
pub enum PodCommand {
    /// Move the pod to another agent (its data there is lost).
    Replace { service: String, pod: String },
    /// Restart the pod where it runs.
    Restart { service: String, pod: String },
}

#[derive(Subcommand, Debug)]
pub enum CassandraCommand {
    /// Remove data a node no longer owns (`nodetool cleanup`).
    Cleanup(Scope),
    /// Repair replicas (`nodetool repair`).
    Repair(Scope),
    /// Snapshot every node to external storage.
    Backup(Storage),
    /// Restore a backup into this cluster (of the same size).
    Restore(Storage),
}

#[derive(Args, Debug)]
pub struct Scope {
    pub service: String,
    /// Nodes to run on (`*`: the whole cluster).
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub nodes: Vec<String>,
    /// Key spaces (default: all).
    #[arg(long, value_delimiter = ',')]
    pub key_spaces: Vec<String>,
    /// Column families (default: all).
    #[arg(long, value_delimiter = ',')]
    pub column_families: Vec<String>,
}

#[derive(Args, Debug)]
pub struct Storage {
    pub service: String,
    /// The backup's name.
    #[arg(long)]
    pub name: String,
    /// Where backups are kept (`s3://bucket`).
    #[arg(long)]
    pub location: String,
    /// Environment variable holding the S3 access key (never shown).
    #[arg(long, default_value = "AWS_ACCESS_KEY_ID")]
    pub s3_access_key_env: String,
    /// Environment variable holding the S3 secret key (never shown).
    #[arg(long, default_value = "AWS_SECRET_ACCESS_KEY")]
    pub s3_secret_key_env: String,
}

impl ServiceCommand {
    /// The service, the operation, and the secrets its body carries (never to be shown).
    fn op(self) -> anyhow::Result<(String, ServiceOp, Vec<String>)> {
        let scope = |op: &str, s: Scope| {
            let mut body = json!({ "nodes": s.nodes });
            if !s.key_spaces.is_empty() {
                body["key_spaces"] = json!(s.key_spaces);
            }
            if !s.column_families.is_empty() {
                body["column_families"] = json!(s.column_families);
            }
            (s.service, ServiceOp::Maintenance { op: op.into(), body }, Vec::new())
        };
        let storage = |op: &str, s: Storage| -> anyhow::Result<_> {
            let read = |var: &str| {
                std::env::var(var)
                    .map_err(|_| anyhow::anyhow!("the {op} reads an S3 key from ${var}, which is not set"))
            };
            let (access, secret) = (read(&s.s3_access_key_env)?, read(&s.s3_secret_key_env)?);
            let body = json!({
                "backup_name": s.name,
                "external_location": s.location,
                "s3_access_key": access,
                "s3_secret_key": secret,
            });
            Ok((s.service, ServiceOp::Maintenance { op: op.into(), body }, vec![access, secret]))
        };
        Ok(match self {
            ServiceCommand::Pods { service } => (service, ServiceOp::Pods, Vec::new()),
            ServiceCommand::Endpoints { service } => (service, ServiceOp::Endpoints, Vec::new()),
            ServiceCommand::Config { service } => (service, ServiceOp::Config, Vec::new()),
            ServiceCommand::Pod(PodCommand::Replace { service, pod }) => {
                (service, ServiceOp::PodReplace(pod), Vec::new())
            }
            ServiceCommand::Pod(PodCommand::Restart { service, pod }) => {
                (service, ServiceOp::PodRestart(pod), Vec::new())
            }
            ServiceCommand::Cassandra(CassandraCommand::Cleanup(s)) => scope("cleanup", s),
            ServiceCommand::Cassandra(CassandraCommand::Repair(s)) => scope("repair", s),
            ServiceCommand::Cassandra(CassandraCommand::Backup(s)) => storage("backup", s)?,
            ServiceCommand::Cassandra(CassandraCommand::Restore(s)) => storage("restore", s)?,
        })
    }
}

pub async fn run(args: ServiceArgs, color: ColorChoice) -> anyhow::Result<u8> {
    let (service, op, secrets) = args.command.op()?;
    let config_path = args.config.clone().unwrap_or_else(|| args.dir.join("capstan.yaml"));
    let (mut config, found) = Config::load(&config_path, args.config.is_some())?;
    if let Some(path) = found {
        config.read_ca_certs(path.parent().unwrap_or(std::path::Path::new("")), |p| Ok(std::fs::read(p)?))?;
    }
    // capstan.yaml's `sensitive` names, and the keys of the operation's body.
    let mut redactor = Redactor::new(&config.sensitive);
    for s in &secrets {
        redactor.add_value(s);
    }
    let state_dir = args.state_dir.unwrap_or_else(|| args.dir.join(".capstan"));
    let connected = crate::target::connect(&config, args.target.as_deref(), &state_dir, false).await?;
    let style = Style::stdout(color);
    // A line for each step of the service's plan whose status changed.
    let seen: Mutex<BTreeMap<(String, String), String>> = Mutex::default();
    let progress = |subs: Vec<SubStep>| {
        let mut seen = seen.lock().unwrap();
        for sub in subs {
            if seen.insert((sub.phase.clone(), sub.step.clone()), sub.status.clone()).as_ref() != Some(&sub.status) {
                let sub = SubStep { message: redactor.text(&sub.message), ..sub };
                let _ = outln(&format!("  {}", style.dim(&output::substep_line(&sub))));
            }
        }
    };
    let result = connected.provider.service(&service, &op, &progress).await;
    connected.close().await?;
    let shown: Value = result.map_err(|e| anyhow::anyhow!("{}", redactor.text(&e.to_string())))?;
    // A service's configuration and its pods' tasks carry its scheduler's environment, secret
    // settings too: fields whose names say secret are masked, and their values wherever else
    // they appear (a command line, another pod's info).
    redactor.learn(&shown);
    outln(&serde_json::to_string_pretty(&redactor.value(&shown))?)?;
    Ok(EXIT_OK)
}
