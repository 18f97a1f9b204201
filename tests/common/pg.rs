//! A real PostgreSQL for the tests of the shared store: the server CI started
//! (`CAPSTAN_TEST_POSTGRES_URL`), else one `.ci/postgres` starts for this test binary (stopped
//! once it has ended). The tests that use it never skip.

use super::repo_root;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The server's URL (with its password).
pub fn server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("CAPSTAN_TEST_POSTGRES_URL") {
            return url;
        }
        let dir = std::env::temp_dir().join(format!("capstan-test-pg-{}", std::process::id()));
        let out = Command::new(repo_root().join(".ci/postgres"))
            .arg("start")
            .arg(&dir)
            .arg(std::process::id().to_string())
            .stderr(Stdio::inherit())
            .output()
            .expect("run .ci/postgres");
        assert!(out.status.success(), ".ci/postgres could not start a server (see above)");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}

/// A new, empty database on the server, and its URL.
pub fn fresh_database() -> String {
    let base = server_url();
    let name = format!("capstan_{}", uuid::Uuid::new_v4().simple());
    let mut client = postgres::Client::connect(base, postgres::NoTls).expect("connect to the test server");
    client.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let (head, _) = base.rsplit_once('/').unwrap();
    format!("{head}/{name}")
}
