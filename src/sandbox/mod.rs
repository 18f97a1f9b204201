//! Faithful local emulations of the platforms' REST APIs (interface stub; the implementation
//! is being built on the `sandbox-apcera` branch and replaces this file).

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    Apcera,
}

impl std::str::FromStr for Platform {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "apcera" => Ok(Platform::Apcera),
            other => anyhow::bail!("unknown platform {other:?}"),
        }
    }
}

impl Platform {
    pub fn name(&self) -> &'static str {
        "apcera"
    }
}

#[derive(Clone, Debug)]
pub struct SandboxOptions {
    pub platform: Platform,
    pub listen: SocketAddr,
    pub state_file: Option<PathBuf>,
    pub latency_ms: u64,
    pub token: Option<String>,
    pub rollout_ms: u64,
    pub principal: String,
}

impl SandboxOptions {
    pub fn new(platform: Platform) -> Self {
        SandboxOptions {
            platform,
            listen: "127.0.0.1:0".parse().unwrap(),
            state_file: None,
            latency_ms: 0,
            token: None,
            rollout_ms: 0,
            principal: "admin@apcera.me".into(),
        }
    }
}

pub struct Sandbox {
    url: String,
    addr: SocketAddr,
}

impl Sandbox {
    pub async fn start(_opts: SandboxOptions) -> anyhow::Result<Sandbox> {
        anyhow::bail!("sandbox not built yet")
    }
    pub fn url(&self) -> &str {
        &self.url
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub async fn shutdown(self) -> anyhow::Result<()> {
        Ok(())
    }
}
