//! TLS to PostgreSQL (issue 19): a throwaway server with `ssl=on` (`.ci/postgres` with
//! `CAPSTAN_PG_TLS_DIR`) and a certificate made here with the openssl command line, signed by a
//! CA made here, naming `localhost` only. The daemon connects with rustls as the store URL's
//! `sslmode` and `sslrootcert` say; a certificate it cannot trust is refused with a clear
//! error; the URL's password is never in its output.

mod common;
use common::git::*;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`ca.crt`), another CA that signed nothing (`other-ca.crt`), and the server's key and
/// certificate signed by the first, valid for `localhost` only.
fn certificates() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for ca in ["ca", "other-ca"] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.crt"),
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=capstan test {ca}"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            );
        }
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        dir
    })
    .path()
}

/// A server of this test binary's own that speaks TLS with the certificate above: its URL,
/// on 127.0.0.1, with its password.
fn tls_server() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("capstan-test-pg-tls-{}", std::process::id()));
        let out = Command::new(repo_root().join(".ci/postgres"))
            .arg("start")
            .arg(&dir)
            .arg(std::process::id().to_string())
            .env("CAPSTAN_PG_TLS_DIR", certificates())
            .stderr(Stdio::inherit())
            .output()
            .expect("run .ci/postgres");
        assert!(out.status.success(), ".ci/postgres could not start a server (see above)");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}

fn password() -> String {
    let url = tls_server();
    let userinfo = url.split("://").nth(1).unwrap().split('@').next().unwrap();
    let password = userinfo.split_once(':').unwrap().1.to_string();
    assert!(password.len() >= 8, "a password worth looking for");
    password
}

/// A new database on the TLS server: its URL with `host` instead of 127.0.0.1 and `query`.
fn database(host: &str, query: &str) -> String {
    let base = tls_server();
    let name = format!("capstan_{}", uuid::Uuid::new_v4().simple());
    let mut c = postgres::Client::connect(base, postgres::NoTls).unwrap();
    c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let (head, _) = base.rsplit_once('/').unwrap();
    format!("{}/{name}?{query}", head.replace("@127.0.0.1:", &format!("@{host}:")))
}

fn ca(name: &str) -> String {
    certificates().join(name).to_str().unwrap().replace('/', "%2F")
}

/// Two units, each with its own sandbox: the store's connections of both kinds (the units'
/// shared pool and the lease keeper's) are made.
fn fleet_repo() -> (Repo, Vec<SandboxProc>, String) {
    let sandboxes: Vec<SandboxProc> = (0..2).map(|_| SandboxProc::start(&[])).collect();
    let repo = Repo::new();
    for (i, sb) in sandboxes.iter().enumerate() {
        repo.write(&format!("clusters/c{i}/capstan.yaml"), &config_for(sb, ""));
        repo.write(&format!("clusters/c{i}/web.yaml"), "jobs:\n  job::::web:\n    state: started\n");
    }
    let sha = repo.commit("two units");
    (repo, sandboxes, sha)
}

/// `capstan daemon` with `store`, expected to stop with an error: its exit code and output.
fn refused(repo: &Repo, store: &str) -> (i32, String) {
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(capstan_bin())
        .args(["daemon", "--repo", repo.path().to_str().unwrap(), "--listen", "127.0.0.1:0", "--path", "clusters/*"])
        .args(["--store", store, "--state-dir"])
        .arg(state.path())
        .env("RUST_LOG", "capstan=debug")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// verify-full with the CA: every connection the daemon makes is TLS (the server's own view,
/// `pg_stat_ssl`), the units apply, and the password is in none of its output.
#[test]
fn a_daemon_connects_with_verify_full_and_every_connection_is_tls() {
    let (repo, sandboxes, sha) = fleet_repo();
    let store = database("localhost", &format!("sslmode=verify-full&sslrootcert={}", ca("ca.crt")));
    let state = tempfile::tempdir().unwrap();
    let log = state.path().join("daemon.log");
    let path = repo.path().to_str().unwrap().to_string();
    let d = DaemonProc::start_logged(
        &path,
        &state.path().join("state"),
        &["--store", &store, "--path", "clusters/*"],
        &[("RUST_LOG", "capstan=debug")],
        &log,
    );
    for unit in ["clusters%2Fc0", "clusters%2Fc1"] {
        d.wait_for("the unit to apply", WAIT, |d| {
            d.get(&format!("/v1/units/{unit}/configurations/{sha}")).1["status"] == "applied"
        });
    }
    assert!(sandboxes.iter().all(|sb| sb.job("job::/dev::web").is_some()), "both units applied");
    let plain = store.split('?').next().unwrap().replace("@localhost:", "@127.0.0.1:");
    let mut db = postgres::Client::connect(&plain, postgres::NoTls).unwrap();
    let seen: Vec<bool> = db
        .query(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
              WHERE a.datname = current_database() AND a.pid != pg_backend_pid()",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(seen.len() >= 2, "the lease keeper's connection and the units' pool: {seen:?}");
    assert!(seen.iter().all(|ssl| *ssl), "every connection of the daemon is TLS: {seen:?}");
    assert_eq!(d.stop(), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(&password()), "the store's password is in the daemon's log");
}

/// A certificate the daemon cannot trust is refused before anything is written, and says why:
/// signed by another CA than `sslrootcert` (verify-full), or naming another host than the URL's
/// (verify-full to 127.0.0.1, which the certificate does not name). verify-ca, which does not
/// check the name, and require, which checks nothing, connect.
#[test]
fn a_certificate_not_trusted_is_refused_with_a_clear_error_and_no_password() {
    let (repo, _sandboxes, _) = fleet_repo();
    let secret = password();

    let wrong_ca = database("localhost", &format!("sslmode=verify-full&sslrootcert={}", ca("other-ca.crt")));
    let (code, out) = refused(&repo, &wrong_ca);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("cannot connect to the store postgres://localhost:"), "{out}");
    assert!(out.contains("UnknownIssuer"), "the reason: {out}");
    assert!(!out.contains(&secret), "the password is shown: {out}");

    let wrong_name = database("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={}", ca("ca.crt")));
    let (code, out) = refused(&repo, &wrong_name);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("cannot connect to the store postgres://127.0.0.1:"), "{out}");
    assert!(out.contains("certificate not valid for name"), "the reason: {out}");
    assert!(!out.contains(&secret), "the password is shown: {out}");

    let no_ca = database("127.0.0.1", "sslmode=verify-full");
    let (code, out) = refused(&repo, &no_ca);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("sslmode=verify-full needs sslrootcert=FILE"), "{out}");
    assert!(!out.contains(&secret), "the password is shown: {out}");

    for query in [format!("sslmode=verify-ca&sslrootcert={}", ca("ca.crt")), "sslmode=require".to_string()] {
        let store = database("127.0.0.1", &query);
        let state = tempfile::tempdir().unwrap();
        let d = DaemonProc::start(
            repo.path().to_str().unwrap(),
            state.path(),
            &["--store", &store, "--path", "clusters/*"],
            &[],
        );
        let (code, _) = d.get("/v1/status");
        assert_eq!(code, 200, "{query}: the daemon is up");
        assert_eq!(d.stop(), 0, "{query}");
    }
}
