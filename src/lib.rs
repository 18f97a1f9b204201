//! capstan: a declarative GitOps reconciler for PaaS REST APIs.
//!
//! The pipeline, one module per stage: [`source`] → [`render`] → [`diff`] (against what
//! [`providers`] observe) → [`plan`] → [`apply`]; [`engine`] runs it end to end for every mode.
//! See ARCHITECTURE.md for the bird's-eye view and the code map.

pub mod apply;
pub mod base;
pub mod cli;
pub mod config;
pub mod converge;
pub mod daemon;
pub mod diff;
pub mod engine;
pub mod fds;
pub mod http;
pub mod journal;
pub mod lock;
pub mod model;
pub mod pg;
pub mod plan;
pub mod providers;
pub mod redact;
pub mod render;
pub mod sandbox;
pub mod source;
pub mod state;
pub mod target;
pub mod view;

/// Return memory the allocator holds but no longer uses to the operating system (capstan's
/// binary allocates with mimalloc; see `main.rs`).
pub fn release_free_memory() {
    unsafe extern "C" {
        fn mi_collect(force: bool);
    }
    // SAFETY: mi_collect only frees pages with no live allocation; it is safe to call from any
    // thread at any time.
    unsafe { mi_collect(true) }
}

/// Wait for SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
