//! `capstan sandbox serve`.

use super::*;

pub(super) async fn serve(args: SandboxArgs) -> anyhow::Result<u8> {
    let mut opts = SandboxOptions::new(args.platform.parse()?);
    opts.listen = args.listen;
    anyhow::ensure!(
        args.listen.ip().is_loopback(),
        "the sandbox listens on loopback only; {} is not a loopback address",
        args.listen
    );
    opts.state_file = args.state;
    opts.latency_ms = args.latency_ms;
    opts.rollout_ms = args.rollout_ms;
    opts.token = args.token;
    opts.seed = args.seed;
    opts.faults = crate::sandbox::Faults {
        fail_rate: args.fail_rate,
        reset_rate: args.reset_rate,
        latency_ms: args.latency_ms,
        latency_jitter_ms: args.latency_jitter_ms,
        rollout_ms: args.rollout_ms,
        methods: Vec::new(),
        grouped_steps: args.grouped_steps,
        step_ms: args.step_ms,
        ..Default::default()
    };
    let sandbox = Sandbox::start(opts).await?;
    outln(&format!("capstan sandbox ({}) listening on {}", args.platform, sandbox.url()))?;
    shutdown_signal().await;
    sandbox.shutdown().await?;
    Ok(EXIT_OK)
}
