//! Input that tries to kill, exhaust, crash or make capstan leak, through the real binary:
//! deep nesting, aliases and variables that multiply a file's size, huge mappings, values out
//! of range, a reader that goes away, and secrets that rotate or hide in mapping keys.

mod common;
use common::git::*;
use common::*;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Run capstan in `dir` with at most `cpu_secs` of CPU time (the kernel stops it past that);
/// returns what it printed and its peak resident memory in MiB.
fn run_bounded(dir: &Path, args: &[&str], cpu_secs: u64) -> (Run, u64) {
    let mut cmd = Command::new(capstan_bin());
    cmd.args(args).current_dir(dir).env("NO_COLOR", "1").stdin(Stdio::null());
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit { rlim_cur: cpu_secs, rlim_max: cpu_secs };
            if libc::setrlimit(libc::RLIMIT_CPU, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Waited for with wait4 below, which also reports its peak memory.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().expect("run capstan");
    let pid = child.id() as libc::pid_t;
    // Read the pipes on threads so a large output cannot block the child.
    let mut out_pipe = child.stdout.unwrap();
    let mut err_pipe = child.stderr.unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out_pipe, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err_pipe, &mut s);
        s
    });
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
    let run = Run { code, stdout: out.join().unwrap(), stderr: err.join().unwrap() };
    (run, usage.ru_maxrss as u64 / 1024)
}

/// No panic, no abort, no signal: capstan ended by itself with `code`.
fn ended_cleanly(run: &Run, code: i32) {
    run.code(code);
    for bad in ["panicked", "overflow", "fatal runtime error", "RUST_BACKTRACE"] {
        assert!(!run.stderr.contains(bad), "{bad} in stderr:\n{}", run.stderr);
    }
}

/// A Marathon app whose `ipAddress` (any object, to the schema) nests `depth` mappings deep,
/// indented one space a level: valid, so every stage walks it.
fn deep_app(id: &str, depth: usize) -> String {
    let mut s = format!("id: {id}\ncmd: sleep 100\nipAddress:\n");
    for i in 1..=depth {
        s.push_str(&format!("{}a:\n", " ".repeat(i)));
    }
    s.push_str(&format!("{}b: 1\n", " ".repeat(depth + 1)));
    s
}

fn marathon_config(sb: &SandboxProc) -> String {
    format!(
        "owner: t\nplatform: marathon\ntargets:\n  sb: {{platform: marathon, url: \"{}\"}}\ndefault_target: sb\n",
        sb.url
    )
}

fn job(name: &str, tags: &str) -> String {
    format!("jobs:\n  job::/dev::{name}:\n    state: started\n    tags: {tags}\n")
}

// Item 10: nesting deep enough to overflow a stack.

#[test]
fn deeply_nested_yaml_and_json_are_errors_at_their_place_not_a_crash() {
    let w = Workdir::new();
    w.write("deep.yaml", &format!("jobs:\n  job::/dev::a:\n    tags:\n      x:\n        {}a\n", "- ".repeat(50_000)));
    w.write("deep.json", &format!("{{\"jobs\": {}{}}}", "[".repeat(50_000), "]".repeat(50_000)));
    let out = w.capstan(&["validate", "."]);
    ended_cleanly(&out, 1);
    assert!(
        out.stderr
            .contains("deep.yaml:5:129: error: mappings and sequences nest too deep here: expected at most 64 levels"),
        "{}",
        out.stderr
    );
    // The parser's own bound on flow collections (255) may speak first.
    assert!(out.stderr.contains("deep.json:1:"), "{}", out.stderr);
    assert!(out.stderr.contains("nothing was applied"), "{}", out.stderr);
}

#[test]
fn deep_nesting_in_one_of_many_files_is_an_error_on_the_render_threads_too() {
    // Eight files and more are rendered on worker threads, whose stacks are smaller.
    let w = Workdir::new();
    w.write("capstan.yaml", "platform: marathon\n");
    for i in 0..12 {
        w.write(&format!("a{i:02}.yaml"), &format!("id: /a{i}\ncmd: sleep 100\n"));
    }
    w.write("a05.yaml", &deep_app("/deep", 3_000));
    let out = w.capstan(&["validate", "."]);
    ended_cleanly(&out, 1);
    assert!(out.stderr.contains("a05.yaml:67:65: error: mappings and sequences nest too deep here"), "{}", out.stderr);
}

#[test]
fn a_deeply_nested_capstan_yaml_is_an_error_at_its_place() {
    let w = Workdir::new();
    w.write("capstan.yaml", &format!("variables:\n  A: {}x\n", "- ".repeat(50_000)));
    w.write("a.yaml", &job("a", "{a: b}"));
    let out = w.capstan(&["validate", "."]);
    ended_cleanly(&out, 1);
    assert!(out.stderr.contains("capstan.yaml:2:"), "{}", out.stderr);
}

#[test]
fn a_deeply_nested_commit_is_invalid_and_the_daemon_lives_on_to_apply_the_next() {
    let sb = SandboxProc::start_platform("marathon", &[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &marathon_config(&sb));
    repo.write("web.yaml", "id: /web\ncmd: sleep 100\nlabels: {v: \"1\"}\n");
    let good = repo.commit("good");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &[], &[]);
    let wait = Duration::from_secs(60);
    d.wait_for("the good commit", wait, |d| d.status_of(&good).as_deref() == Some("applied"));

    repo.write("deep.yaml", &deep_app("/deep", 3_000));
    let deep = repo.commit("deep");
    d.wait_for("the deep commit to be judged", wait, |d| d.status_of(&deep).as_deref() == Some("invalid"));
    let conf = d.configuration(&deep).unwrap();
    assert!(conf["errors"][0]["text"].as_str().unwrap().contains("deep.yaml:67:65:"), "{conf}");

    std::fs::remove_file(repo.path().join("deep.yaml")).unwrap();
    repo.write("web.yaml", "id: /web\ncmd: sleep 100\nlabels: {v: \"2\"}\n");
    let fixed = repo.commit("fixed");
    d.wait_for("the next commit", wait, |d| d.status_of(&fixed).as_deref() == Some("applied"));
    assert_eq!(sb.get("/v2/apps/web")["app"]["labels"]["v"], "2");
    assert_eq!(d.stop(), 0);
}

// Item 11: input that multiplies into gigabytes, or costs quadratic time.

#[test]
fn aliases_of_a_large_string_are_bounded_by_bytes_not_nodes() {
    let w = Workdir::new();
    let big = "x".repeat(1 << 20);
    let aliases = vec!["*s"; 1000].join(", ");
    w.write("a.yaml", &format!("variables:\n  S: &s {big}\njobs:\n  job::/dev::a:\n    tags: {{}}\nx: [{aliases}]\n"));
    let (out, rss) = run_bounded(w.path(), &["validate", "."], 120);
    ended_cleanly(&out, 1);
    assert!(out.stderr.contains("a.yaml:6:"), "{}", out.stderr);
    assert!(out.stderr.contains("aliases copy too much"), "{}", out.stderr);
    assert!(rss < 400, "peak memory {rss} MiB");
}

#[test]
fn a_large_variable_used_many_times_is_bounded_by_what_it_adds() {
    let w = Workdir::new();
    let big = "y".repeat(1 << 20);
    let uses: String = (0..1000).map(|i| format!("      t{i}: ${{BIG}}\n")).collect();
    w.write("a.yaml", &format!("variables:\n  BIG: {big}\njobs:\n  job::/dev::a:\n    tags:\n{uses}"));
    let (out, rss) = run_bounded(w.path(), &["validate", "."], 120);
    ended_cleanly(&out, 1);
    assert!(out.stderr.contains("variables make this document too large here"), "{}", out.stderr);
    assert!(rss < 400, "peak memory {rss} MiB");
}

#[test]
fn a_mapping_of_many_keys_is_checked_in_linear_time() {
    // Quadratic checks took 16.7 s of a release build at 80,000 keys; linear ones take a
    // fraction of a second. The kernel stops the process after a generous minute of CPU.
    let w = Workdir::new();
    let mut text = String::from("jobs:\n  job::/dev::a:\n    tags:\n");
    for i in 0..200_000 {
        text.push_str(&format!("      k{i}: v\n"));
    }
    text.push_str("      k7: again\n");
    w.write("a.yaml", &text);
    let (out, _) = run_bounded(w.path(), &["validate", "."], 60);
    ended_cleanly(&out, 1);
    assert!(out.stderr.contains("a.yaml:200004:7: error: duplicate key \"k7\""), "{}", out.stderr);
    assert!(out.stderr.contains("a.yaml:11:7: note: first written here"), "{}", out.stderr);
}

#[test]
fn many_unknown_fields_are_reported_in_linear_time() {
    // Each problem was placed by a walk of the mapping: 50,000 unknown fields took 17 s of a
    // debug build, and the count grew as its square.
    let w = Workdir::new();
    let mut text = String::from("jobs:\n  job::/dev::a:\n");
    for i in 0..100_000 {
        text.push_str(&format!("    k{i}: 1\n"));
    }
    w.write("a.yaml", &text);
    let (out, _) = run_bounded(w.path(), &["validate", "."], 30);
    ended_cleanly(&out, 1);
    assert!(
        out.stderr.contains("a.yaml:3:5: error: unknown field `k0`"),
        "{}",
        &out.stderr[..out.stderr.len().min(2000)]
    );
    assert!(out.stderr.contains("the first 100 are shown"), "{}", &out.stderr[..out.stderr.len().min(2000)]);
    assert!(out.stderr.lines().count() < 200, "{} lines", out.stderr.lines().count());
}

#[test]
fn a_file_over_the_size_limit_is_one_error_naming_it() {
    let w = Workdir::new();
    w.write("a.yaml", &job("a", "{a: b}"));
    let mut big = job("b", "{a: b}");
    big.push_str(&format!("# {}\n", "z".repeat(17 << 20)));
    w.write("big.yaml", &big);
    let (out, rss) = run_bounded(w.path(), &["validate", "."], 60);
    ended_cleanly(&out, 1);
    assert!(out.stderr.contains("big.yaml"), "{}", out.stderr);
    assert!(out.stderr.contains("expected at most 16777216 bytes (16 MiB) in one file"), "{}", out.stderr);
    assert!(rss < 400, "peak memory {rss} MiB");
}

// Item 13: nothing panics: not a closed pipe, not a value out of range.

/// Run capstan with its stdout (or stderr) a pipe nobody reads any more.
fn run_into_closed_pipe(dir: &Path, args: &[&str], stderr_too: bool) -> Run {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = Command::new(capstan_bin());
    cmd.args(args).current_dir(dir).env("NO_COLOR", "1").stdin(Stdio::null());
    cmd.stdout(writer.try_clone().unwrap());
    let err_file = tempfile::NamedTempFile::new().unwrap();
    if stderr_too {
        cmd.stderr(writer);
    } else {
        cmd.stderr(err_file.reopen().unwrap());
    }
    let status = cmd.status().unwrap();
    use std::os::unix::process::ExitStatusExt;
    Run {
        code: status.code().unwrap_or(128 + status.signal().unwrap_or(0)),
        stdout: String::new(),
        stderr: std::fs::read_to_string(err_file.path()).unwrap(),
    }
}

#[test]
fn a_reader_that_goes_away_is_no_panic_and_changes_no_exit_code() {
    let w = Workdir::from_example("examples/manifests/apcera");
    ended_cleanly(&run_into_closed_pipe(w.path(), &["validate", "."], false), 0);
    ended_cleanly(&run_into_closed_pipe(w.path(), &["render", "."], false), 0);
    ended_cleanly(&run_into_closed_pipe(w.path(), &["render", ".", "-o", "json"], false), 0);
    ended_cleanly(&run_into_closed_pipe(w.path(), &["--help"], false), 0);
    ended_cleanly(&run_into_closed_pipe(w.path(), &["completions", "bash"], false), 0);
    // Errors go to stderr: closed as well, the exit code still says what happened.
    ended_cleanly(&run_into_closed_pipe(w.path(), &["validate", "no-such-dir"], true), 1);
    w.write("bad.yaml", "jobs: [\n");
    ended_cleanly(&run_into_closed_pipe(w.path(), &["validate", "."], true), 1);

    // A plan still says there are changes, and an apply still applies everything.
    let sb = SandboxProc::start(&[]);
    w.remove("bad.yaml");
    w.target(&sb.url);
    ended_cleanly(&run_into_closed_pipe(w.path(), &["plan", ".", "--detailed-exitcode"], true), 2);
    ended_cleanly(&run_into_closed_pipe(w.path(), &["apply", ".", "--yes"], true), 0);
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
}

#[test]
fn values_out_of_range_in_capstan_yaml_are_errors_at_their_place_before_any_request() {
    let sb = SandboxProc::start_platform("marathon", &[]);
    let w = Workdir::new();
    w.write("app.json", r#"{"id": "/a", "cmd": "sleep 100", "instances": 1}"#);
    let huge = "9223372036854775807";
    let cases = [
        (format!("timeouts: {{app: {huge}}}\n"), "capstan.yaml:1:17"),
        (format!("retry: {{max_elapsed: {huge}}}\n"), "capstan.yaml:1:22"),
        (format!("retry: {{max_attempts: {huge}}}\n"), "capstan.yaml:1:23"),
        (format!("mass_delete: {{max_deletes: {huge}}}\n"), "capstan.yaml:1:28"),
        ("mass_delete: {max_percent: 101}\n".to_string(), "capstan.yaml:1:28"),
        (format!("targets:\n  m: {{platform: marathon, url: \"{}\", timeout: {huge}}}\n", sb.url), "capstan.yaml:3:"),
    ];
    for (extra, place) in cases {
        let target = format!(
            "platform: marathon\ntargets:\n  sb: {{platform: marathon, url: \"{}\"}}\ndefault_target: sb\n",
            sb.url
        );
        let config = if extra.starts_with("targets") {
            format!("platform: marathon\n{extra}default_target: m\n")
        } else {
            format!("{extra}{target}")
        };
        w.write("capstan.yaml", &config);
        sb.clear_requests();
        let out = w.capstan(&["apply", ".", "--yes"]);
        ended_cleanly(&out, 1);
        assert!(out.stderr.contains(place), "{config}\n{}", out.stderr);
        assert!(out.stderr.contains("expected"), "{}", out.stderr);
        assert!(sb.mutating_requests().is_empty(), "{config}: {:?}", sb.mutating_requests());
    }
}

#[test]
fn flags_out_of_range_are_usage_errors_not_panics() {
    let w = Workdir::new();
    w.write("a.yaml", &job("a", "{a: b}"));
    let cases: [&[&str]; 8] = [
        &["apply", ".", "--yes", "--parallelism", "0"],
        &["daemon", "--repo", ".", "--interval", "99999999999999999999999"],
        &["daemon", "--repo", ".", "--resync", "18446744073709551615"],
        &["daemon", "--repo", ".", "--interval", "0"],
        &["daemon", "--repo", ".", "--parallelism", "0"],
        &["sandbox", "serve", "--latency-ms", "18446744073709551615", "--latency-jitter-ms", "9"],
        &["sandbox", "serve", "--fail-rate", "2"],
        &["sandbox", "serve", "--reset-rate", "NaN"],
    ];
    for args in cases {
        let out = w.capstan(args);
        ended_cleanly(&out, 2);
        assert!(out.stderr.contains("invalid value"), "{args:?}: {}", out.stderr);
    }
}

// Items 14 and 15: secrets that rotate, and secrets in mapping keys.

fn secret_job(tags: &str) -> String {
    format!(
        "jobs:\n  job::/dev::web:\n    state: started\n    processes:\n      app:\n        start_command: run\n        environment:\n          CMDLINE: run --key ${{SECRET_SAUCE}} --fast\n    tags: {tags}\n"
    )
}

#[test]
fn a_rotated_secret_shows_in_no_plan_on_either_side() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.target(&sb.url);
    w.write("web.yaml", &secret_job("{\"t-${DB_PASSWORD}\": v}"));
    let old = ["--var", "SECRET_SAUCE=old-sauce-1", "--var", "DB_PASSWORD=old-pw-1"];
    let new = ["--var", "SECRET_SAUCE=new-sauce-2", "--var", "DB_PASSWORD=new-pw-2"];
    fn with<'a>(args: &[&'a str], vars: &[&'a str]) -> Vec<&'a str> {
        [args, vars].concat()
    }
    w.capstan(&with(&["apply", ".", "--yes"], &old)).ok();

    let text = w.capstan(&with(&["plan", "."], &new));
    text.ok();
    let json = w.capstan(&with(&["plan", ".", "-o", "json"], &new));
    json.ok();
    let render = w.capstan(&with(&["render", "."], &new));
    render.ok();
    for out in [&text, &json, &render] {
        for secret in ["old-sauce-1", "new-sauce-2", "old-pw-1", "new-pw-2"] {
            assert!(!out.stdout.contains(secret), "{secret} in\n{}", out.stdout);
            assert!(!out.stderr.contains(secret), "{secret} in\n{}", out.stderr);
        }
    }
    assert!(text.stdout.contains("run --key (sensitive) --fast"), "{}", text.stdout);
    assert!(render.stdout.contains("t-(sensitive)"), "{}", render.stdout);
    let plan = json.json();
    let change = plan["resource_changes"].as_array().unwrap().iter().find(|c| c["action"] == "update").unwrap();
    let env = |side: &str| change[side]["processes"]["app"]["environment"]["CMDLINE"].clone();
    assert_eq!(env("before"), "run --key (sensitive) --fast");
    assert_eq!(env("after"), "(sensitive, changed)");
}

#[test]
fn a_short_secret_is_masked_where_it_was_substituted() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.target(&sb.url);
    w.write("web.yaml", &secret_job("{}"));
    w.capstan(&["apply", ".", "--yes", "--var", "SECRET_SAUCE=q1"]).ok();
    let out = w.capstan(&["plan", ".", "-o", "json", "--var", "SECRET_SAUCE=z9"]);
    out.ok();
    assert!(!out.stdout.contains("--key q1") && !out.stdout.contains("--key z9"), "{}", out.stdout);
    let render = w.capstan(&["render", ".", "--var", "SECRET_SAUCE=z9"]);
    assert!(!render.stdout.contains("--key z9"), "{}", render.stdout);
}

#[test]
fn a_secret_in_an_identity_is_an_error_at_its_place() {
    let w = Workdir::new();
    w.write("a.yaml", "jobs:\n  job::/dev::web-${DB_PASSWORD}:\n    state: started\n");
    let out = w.capstan(&["validate", ".", "--var", "DB_PASSWORD=hunter22"]);
    ended_cleanly(&out, 1);
    assert!(out.stderr.contains("a.yaml:2:3: error: a secret variable is part of this identity"), "{}", out.stderr);
    assert!(!out.stderr.contains("hunter22"), "{}", out.stderr);
}

#[test]
fn an_error_about_a_key_a_secret_was_substituted_into_does_not_show_it() {
    let w = Workdir::new();
    w.write("a.yaml", "jobs:\n  job::/dev::web:\n    state: started\n    x-${API_TOKEN}: 1\n");
    let out = w.capstan(&["validate", ".", "--var", "API_TOKEN=tok-123456"]);
    ended_cleanly(&out, 1);
    assert!(out.stderr.contains("a.yaml:4:5: error: unknown field"), "{}", out.stderr);
    assert!(!out.stderr.contains("tok-123456"), "{}", out.stderr);
}

#[test]
fn the_daemon_stores_and_serves_no_rotated_secret() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    let doc = |secret: &str| format!("variables:\n  SECRET_SAUCE: {secret}\n{}", secret_job("{}").replace("/dev", ""));
    repo.write("web.yaml", &doc("old-sauce-1"));
    let first = repo.commit("first");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &[], &[]);
    let wait = Duration::from_secs(60);
    d.wait_for("the first commit", wait, |d| d.status_of(&first).as_deref() == Some("applied"));
    repo.write("web.yaml", &doc("new-sauce-2"));
    let second = repo.commit("rotate");
    d.wait_for("the rotation", wait, |d| d.status_of(&second).as_deref() == Some("applied"));
    let plan = d.text(&format!("/v1/configurations/{second}/plan"));
    assert!(plan.contains("run --key (sensitive) --fast"), "{plan}");
    let events = d.text("/v1/status") + &d.text(&format!("/v1/configurations/{second}"));
    assert_eq!(d.stop(), 0);
    for secret in ["old-sauce-1", "new-sauce-2"] {
        assert!(!plan.contains(secret) && !events.contains(secret), "{secret} served");
        // Every file the daemon keeps (the database, its WAL, the journal).
        for entry in files_under(state.path()) {
            if entry.components().any(|c| c.as_os_str() == "repos" || c.as_os_str() == "objects") {
                continue;
            }
            let bytes = std::fs::read(&entry).unwrap();
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} in {}", entry.display());
        }
    }
}

/// A "platform" on loopback that answers every request 200 with a JSON body that never ends
/// (chunked, `[` and then spaces), or with a `Content-Length` of 10 GiB when `announce` is set;
/// it stops writing after 2 GiB or when the client goes away.
fn endless_platform(announce: bool) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let mut req = [0u8; 8192];
                let _ = s.read(&mut req);
                let head = if announce {
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10737418240\r\n\r\n"
                } else {
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n[\r\n"
                };
                if s.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let chunk = vec![b' '; 1 << 20];
                let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                framed.extend_from_slice(&chunk);
                framed.extend_from_slice(b"\r\n");
                let piece = if announce { &chunk } else { &framed };
                for _ in 0..2048 {
                    if s.write_all(piece).is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

#[test]
fn an_answer_that_never_ends_is_an_error_not_all_of_capstans_memory() {
    for announce in [false, true] {
        let url = endless_platform(announce);
        let w = Workdir::new();
        w.target(&url);
        w.write("jobs.yaml", &job("web", "{}"));
        let (run, peak_mib) = run_bounded(w.path(), &["plan", "."], 60);
        ended_cleanly(&run, 1);
        assert!(
            run.stderr.contains("larger than 256 MiB, the most capstan reads of one answer"),
            "announce={announce}: {}",
            run.stderr
        );
        // Without the bound it reads the 2 GiB the platform sends (or waits for 10 GiB).
        assert!(peak_mib < 1024, "announce={announce}: peak {peak_mib} MiB");
    }
}

#[test]
fn a_daemon_answer_that_never_ends_is_an_error_too() {
    let url = endless_platform(false);
    let w = Workdir::new();
    let (run, peak_mib) = run_bounded(w.path(), &["plan", "status", "--daemon", &url], 60);
    ended_cleanly(&run, 1);
    assert!(run.stderr.contains("answered more than 256 MiB, the most capstan reads"), "{}", run.stderr);
    assert!(peak_mib < 1024, "peak {peak_mib} MiB");
}
