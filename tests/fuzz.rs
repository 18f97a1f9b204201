//! A fuzzing harness over render: YAML and JSON parsing, `${VAR}` expansion, schema
//! validation, decoding, and redaction. Each case is made from a seed — a generated manifest
//! tree written as block YAML, flow YAML or JSON, with anchors, aliases, tags, variables and
//! secrets, or one of the repository's manifests, then mutated byte by byte — and rendered in
//! process on a thread with a 2 MiB stack (as the daemon's workers have). It must never panic or
//! overflow its stack, memory stays bounded, and no secret value is in any output: not in the
//! rendered manifest, not in a diagnostic, and not on either side of the change that rotating
//! every secret makes.
//!
//! `cargo test --test fuzz` runs a fixed set of cases (the same every run). For longer runs:
//! `FUZZ_SECONDS=600 FUZZ_SEED=1000000 cargo test --release --test fuzz -- --nocapture`. A
//! failing case is written to `target/fuzz-failures/<seed>/` with its seed.

use capstan::cli::output::{self, Style};
use capstan::config::Config;
use capstan::render::{RenderOptions, render};
use capstan::source::{Origin, Snapshot, SourceFile};
use indexmap::IndexMap;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Cases a plain `cargo test` runs.
const CI_CASES: u64 = 3000;

/// Cases that rendered, and rotations that changed something (how deep the cases reach).
static RENDERED: AtomicU64 = AtomicU64::new(0);
static ROTATED: AtomicU64 = AtomicU64::new(0);

const SECRET_NAMES: &[&str] = &["DB_PASSWORD", "API_TOKEN", "SECRET_SAUCE", "TLS_KEY", "LISTED"];
const PLAIN_NAMES: &[&str] = &["HOST", "N", "NS", "NAME", "FLAG", "EMPTY"];

const KEYS: &[&str] = &[
    "jobs",
    "services",
    "networks",
    "providers",
    "variables",
    "default_namespace",
    "state",
    "num_instances",
    "processes",
    "app",
    "environment",
    "start_command",
    "tags",
    "labels",
    "ports",
    "number",
    "routes",
    "type",
    "endpoint",
    "links",
    "bindings",
    "fqn",
    "port",
    "depends_on",
    "resources",
    "memory",
    "ssh",
    "start",
    "cmd",
    "description",
    "provider_fqn",
    "backing_job_fqn",
    "backing_job_port",
    "parameters",
    "id",
    "instances",
    "cpus",
    "mem",
    "apps",
    "groups",
    "dependencies",
    "env",
    "container",
    "ipAddress",
    "args",
    "uris",
    "constraints",
    "healthChecks",
    "x",
    "<<",
    "~",
    "a/b",
    "",
];

const IDENTITIES: &[&str] = &[
    "job::::web",
    "job::/dev::api",
    "job::${NS}::${NAME}",
    "job::/dev::w-${DB_PASSWORD}",
    "service::::db",
    "network::/n::backend",
    "provider::::pg",
    "job::::",
    "job::/a::b::c",
    "bogus",
    "job::::${API_TOKEN}",
];

const SCALARS: &[&str] = &[
    "started",
    "stopped",
    "0",
    "1",
    "-1",
    "3.5",
    "1e400",
    "9223372036854775807",
    "18446744073709551616",
    "true",
    "no",
    "null",
    "~",
    ".nan",
    ".inf",
    "",
    "${N}",
    "${HOST}",
    "run --key ${SECRET_SAUCE} --fast",
    "pg://u:${DB_PASSWORD}@h/db",
    "${API_TOKEN}",
    "$${literal}",
    "${",
    "${1x}",
    "${MISSING}",
    "x${TLS_KEY}y${HOST}",
    "job::::api",
    "service::/dev::db",
    "/shop/web",
    "../x",
    "ünïcödé ✓",
    "a: b",
    "- x",
    "'q'",
    "\"",
    "\\u0000",
    "#not a comment",
    "&anchor",
    "*alias",
    "!!str 3",
    "http://${HOST}/${LISTED}",
];

/// A generated tree, written out in one of three styles.
enum Tree {
    Scalar(String),
    Seq(Vec<Tree>),
    Map(Vec<(String, Tree)>),
}

struct Gen {
    rng: SmallRng,
    anchors: u32,
}

impl Gen {
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.rng.random_range(0..from.len())]
    }

    fn key(&mut self) -> String {
        match self.rng.random_range(0..10) {
            0..=5 => self.pick(KEYS).to_string(),
            6 | 7 => self.pick(IDENTITIES).to_string(),
            8 => format!("t-${{{}}}", self.pick(SECRET_NAMES)),
            _ => self.scalar_text(),
        }
    }

    fn scalar_text(&mut self) -> String {
        match self.rng.random_range(0..8) {
            0 => self.rng.random_range(-5i64..70000).to_string(),
            1 => {
                let names = if self.rng.random_bool(0.5) { SECRET_NAMES } else { PLAIN_NAMES };
                format!("${{{}}}", self.pick(names))
            }
            2 => (0..self.rng.random_range(0..12)).map(|_| self.rng.random_range(' '..='~')).collect(),
            _ => self.pick(SCALARS).to_string(),
        }
    }

    fn tree(&mut self, depth: usize) -> Tree {
        let leaf = depth == 0 || self.rng.random_bool(0.35);
        if leaf {
            return Tree::Scalar(self.scalar_text());
        }
        let n = match self.rng.random_range(0..20) {
            0 => self.rng.random_range(20..200),
            _ => self.rng.random_range(0..5),
        };
        if self.rng.random_bool(0.3) {
            Tree::Seq((0..n).map(|_| self.tree(depth - 1)).collect())
        } else {
            Tree::Map((0..n).map(|_| (self.key(), self.tree(depth - 1))).collect())
        }
    }

    /// A manifest-shaped tree: kinds, identities, fields.
    fn manifest(&mut self) -> Tree {
        let mut top = Vec::new();
        if self.rng.random_bool(0.8) {
            let kind = self.pick(&["jobs", "services", "networks", "providers", "apps", "x"]).to_string();
            let items =
                (0..self.rng.random_range(1..4)).map(|_| (self.pick(IDENTITIES).to_string(), self.tree(4))).collect();
            top.push((kind, Tree::Map(items)));
        }
        if self.rng.random_bool(0.3) {
            let vars = (0..self.rng.random_range(1..4))
                .map(|_| (self.pick(PLAIN_NAMES).to_string(), Tree::Scalar(self.pick(SCALARS).to_string())))
                .collect();
            top.push(("variables".into(), Tree::Map(vars)));
        }
        if self.rng.random_bool(0.3) {
            top.push(("default_namespace".into(), Tree::Scalar(self.pick(&["/dev", "${NS}", "", "x"]).into())));
        }
        for _ in 0..self.rng.random_range(0..3) {
            top.push((self.key(), self.tree(3)));
        }
        if self.rng.random_bool(0.2) {
            // A Marathon app or group.
            top = vec![("id".into(), Tree::Scalar(self.pick(&["/a", "b/${NAME}", "/g-${API_TOKEN}", ""]).into()))];
            top.push(("cmd".into(), Tree::Scalar(self.scalar_text())));
            top.push((self.key(), self.tree(4)));
        }
        Tree::Map(top)
    }

    /// A string with variables in it, secret ones often.
    fn text_with_vars(&mut self) -> String {
        let mut out = String::new();
        for _ in 0..self.rng.random_range(1..4) {
            match self.rng.random_range(0..4) {
                0 => out.push_str(&format!("${{{}}}", self.pick(SECRET_NAMES))),
                1 => out.push_str(&format!("${{{}}}", self.pick(&["HOST", "N", "NAME", "FLAG"]))),
                _ => out.push_str(self.pick(&["run --key ", " --fast", "pg://u:", "@h/db", "x", "/", " ", "-"])),
            }
        }
        out
    }

    fn string_map(&mut self, keyed_secrets: bool) -> Tree {
        let n = self.rng.random_range(0..5);
        Tree::Map(
            (0..n)
                .map(|i| {
                    let key = if keyed_secrets && self.rng.random_bool(0.3) {
                        format!("k{i}-${{{}}}", self.pick(SECRET_NAMES))
                    } else {
                        format!("{}{i}", self.pick(&["CMDLINE", "URL", "PASSWORD", "plain", "API_KEY", "LISTED"]))
                    };
                    (key, Tree::Scalar(self.text_with_vars()))
                })
                .collect(),
        )
    }

    /// A manifest close to valid, for the platform, with secrets in values and keys.
    fn valid(&mut self, platform: &str, file: usize) -> Tree {
        let s = |x: &str| Tree::Scalar(x.to_string());
        if platform == "marathon" {
            return Tree::Map(vec![
                ("id".into(), s(&format!("/app{file}"))),
                ("cmd".into(), Tree::Scalar(self.text_with_vars())),
                ("instances".into(), s(self.pick(&["1", "${N}", "2"]))),
                ("env".into(), self.string_map(true)),
                ("labels".into(), self.string_map(true)),
            ]);
        }
        let jobs = (0..self.rng.random_range(1..3))
            .map(|j| {
                let job = Tree::Map(vec![
                    ("state".into(), s(self.pick(&["started", "stopped"]))),
                    ("num_instances".into(), s(self.pick(&["1", "${N}"]))),
                    (
                        "processes".into(),
                        Tree::Map(vec![(
                            "app".into(),
                            Tree::Map(vec![
                                ("start_command".into(), Tree::Scalar(self.text_with_vars())),
                                ("environment".into(), self.string_map(true)),
                            ]),
                        )]),
                    ),
                    ("tags".into(), self.string_map(true)),
                ]);
                (format!("job::/dev::w{file}-{j}"), job)
            })
            .collect();
        let mut top = vec![("jobs".to_string(), Tree::Map(jobs))];
        if self.rng.random_bool(0.3) {
            let params = self.string_map(false);
            top.push((
                "providers".into(),
                Tree::Map(vec![(
                    format!("provider::/dev::p{file}"),
                    Tree::Map(vec![
                        ("type".into(), s("postgres")),
                        ("backing_job_fqn".into(), s(&format!("job::/dev::w{file}-0"))),
                        ("backing_job_port".into(), s("5432")),
                        ("parameters".into(), params),
                    ]),
                )]),
            ));
        }
        Tree::Map(top)
    }

    fn quote(&mut self, s: &str, json: bool) -> String {
        // Numbers stay numbers (`num_instances: 1`), mostly.
        let number = s.parse::<i64>().is_ok() || s == "${N}";
        if number && !s.starts_with('$') && self.rng.random_bool(0.9) {
            return s.to_string();
        }
        if number && !json && self.rng.random_bool(0.9) {
            return s.to_string();
        }
        let plain_is_safe = !s.is_empty()
            && !s.starts_with(['-', '?', '@', '`', '&', '*', '!', '|', '>', '%', '\'', '"', '#', ' ', '[', '{'])
            && !s.contains([':', ',', '[', ']', '{', '}', '#', '\n'])
            && !s.ends_with(' ');
        if json || !plain_is_safe || self.rng.random_bool(0.3) {
            serde_json::to_string(s).unwrap()
        } else if self.rng.random_bool(0.5) {
            format!("'{}'", s.replace('\'', "''"))
        } else {
            s.to_string()
        }
    }

    fn anchor(&mut self) -> String {
        if self.rng.random_bool(0.05) {
            self.anchors += 1;
            format!("&a{} ", self.anchors)
        } else {
            String::new()
        }
    }

    fn alias(&mut self) -> Option<String> {
        (self.anchors > 0 && self.rng.random_bool(0.05))
            .then(|| format!("*a{}", self.rng.random_range(1..=self.anchors)))
    }

    fn flow(&mut self, t: &Tree, json: bool, out: &mut String) {
        if !json && let Some(a) = self.alias() {
            out.push_str(&a);
            return;
        }
        if !json {
            let a = self.anchor();
            out.push_str(&a);
        }
        match t {
            Tree::Scalar(s) => {
                let q = self.quote(s, json);
                out.push_str(&q);
            }
            Tree::Seq(items) => {
                out.push('[');
                for (i, x) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    self.flow(x, json, out);
                }
                out.push(']');
            }
            Tree::Map(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let k = self.quote(k, json);
                    out.push_str(&k);
                    out.push_str(": ");
                    self.flow(v, json, out);
                }
                out.push('}');
            }
        }
    }

    fn block(&mut self, t: &Tree, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match t {
            Tree::Map(entries) if !entries.is_empty() => {
                for (k, v) in entries {
                    let k = self.quote(k, false);
                    out.push_str(&format!("{pad}{k}:"));
                    self.block_value(v, indent, out);
                }
            }
            Tree::Seq(items) if !items.is_empty() => {
                for v in items {
                    out.push_str(&format!("{pad}-"));
                    self.block_value(v, indent, out);
                }
            }
            other => {
                out.push_str(&pad);
                self.flow(other, false, out);
                out.push('\n');
            }
        }
    }

    fn block_value(&mut self, v: &Tree, indent: usize, out: &mut String) {
        match v {
            Tree::Scalar(_) => {
                out.push(' ');
                self.flow(v, false, out);
                out.push('\n');
            }
            _ if self.rng.random_bool(0.2) => {
                out.push(' ');
                self.flow(v, false, out);
                out.push('\n');
            }
            _ => {
                let a = self.anchor();
                out.push_str(&format!(" {}\n", a.trim_end()));
                self.block(v, indent + 2, out);
            }
        }
    }

    /// Byte-level damage: insertions of YAML's structural characters, deletions, splices.
    fn mutate(&mut self, text: &str) -> String {
        let mut chars: Vec<char> = text.chars().collect();
        for _ in 0..self.rng.random_range(1..8) {
            let at = if chars.is_empty() { 0 } else { self.rng.random_range(0..=chars.len()) };
            match self.rng.random_range(0..7) {
                0 if at < chars.len() => {
                    chars.remove(at);
                }
                1 => {
                    let bits = [
                        "${", "$${", "}", "- ", "[", "{", ": ", "\n", "\t", "&x ", "*x", "!!int ", "---\n", "\"", "'",
                        "#", "\u{feff}", "\0",
                    ];
                    let s = self.pick(&bits);
                    chars.splice(at..at, s.chars());
                }
                2 if at < chars.len() => {
                    let end = (at + self.rng.random_range(1..40)).min(chars.len());
                    let piece: Vec<char> = chars[at..end].to_vec();
                    let to = self.rng.random_range(0..=chars.len());
                    chars.splice(to..to, piece);
                }
                3 => {
                    // Deep nesting, sometimes past the bound.
                    let n = self.rng.random_range(1..200);
                    let s = if self.rng.random_bool(0.5) { "- ".repeat(n) } else { "[".repeat(n) };
                    chars.splice(at..at, s.chars());
                }
                4 => {
                    let s = format!("${{{}}}", self.pick(SECRET_NAMES));
                    chars.splice(at..at, s.chars());
                }
                _ => {
                    let c = self.rng.random_range('\u{20}'..='\u{7e}');
                    chars.insert(at, c);
                }
            }
        }
        chars.into_iter().collect()
    }
}

/// The repository's own manifests, as a corpus to mutate.
fn corpus() -> Vec<String> {
    let mut out = Vec::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("examples/manifests"), root.join("tests/fixtures")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "json" || x == "yml")
                && let Ok(t) = std::fs::read_to_string(&p)
                && t.len() < 64 << 10
            {
                out.push(t);
            }
        }
    }
    out
}

/// One case: files, capstan.yaml, variables, and the secrets' values before and after a rotation.
struct Case {
    platform: &'static str,
    files: Vec<(String, String)>,
    config: String,
    vars: IndexMap<String, String>,
    rotated: IndexMap<String, String>,
    /// Secret variables and their values (old and new), which must appear in no output.
    secrets: Vec<(String, String)>,
}

fn make_case(seed: u64, corpus: &[String]) -> Case {
    let mut g = Gen { rng: SmallRng::seed_from_u64(seed), anchors: 0 };
    let platform = if g.rng.random_bool(0.7) { "apcera" } else { "marathon" };
    let n_files = if g.rng.random_bool(0.1) { g.rng.random_range(8..12) } else { g.rng.random_range(1..4) };
    let mut files = Vec::new();
    // Some cases are all near-valid files, so that rendering gets past parsing and checks.
    let clean = g.rng.random_bool(0.4);
    for i in 0..n_files {
        g.anchors = 0;
        let (name, mut text) = match if clean { 10 } else { g.rng.random_range(0..14) } {
            10..=13 => {
                let mut t = String::new();
                let tree = g.valid(platform, i);
                if g.rng.random_bool(0.7) {
                    g.block(&tree, 0, &mut t);
                } else {
                    g.flow(&tree, true, &mut t);
                }
                (format!("v{i}.yaml"), t)
            }
            0..=3 => {
                let mut t = String::new();
                let tree = g.manifest();
                g.block(&tree, 0, &mut t);
                (format!("f{i}.yaml"), t)
            }
            4 | 5 => {
                let mut t = String::new();
                let tree = g.manifest();
                g.flow(&tree, true, &mut t);
                (format!("f{i}.json"), t)
            }
            6 => {
                let mut t = String::new();
                let tree = g.manifest();
                g.flow(&tree, false, &mut t);
                (format!("f{i}.yml"), t)
            }
            _ if !corpus.is_empty() => (format!("f{i}.yaml"), corpus[g.rng.random_range(0..corpus.len())].clone()),
            _ => (format!("f{i}.yaml"), String::new()),
        };
        if g.rng.random_bool(if clean { 0.03 } else { 0.5 }) {
            text = g.mutate(&text);
        }
        files.push((name, text));
    }
    let mut config = format!("platform: {platform}\nsensitive: [LISTED]\n");
    if g.rng.random_bool(0.3) {
        config.push_str("default_namespace: /dev\n");
    }
    if g.rng.random_bool(0.1) {
        config = g.mutate(&config);
    }
    let token =
        |g: &mut Gen| -> String { format!("Zq{}", (0..10).map(|_| g.rng.random_range('a'..='z')).collect::<String>()) };
    let mut vars = IndexMap::new();
    let mut rotated = IndexMap::new();
    let mut secrets = Vec::new();
    for name in SECRET_NAMES {
        if clean || g.rng.random_bool(0.8) {
            let (old, new) = (token(&mut g), token(&mut g));
            secrets.push((name.to_string(), old.clone()));
            secrets.push((name.to_string(), new.clone()));
            vars.insert(name.to_string(), old);
            rotated.insert(name.to_string(), new);
        }
    }
    for name in PLAIN_NAMES {
        let v = match *name {
            "N" => "3".to_string(),
            "NS" => "/dev".to_string(),
            "EMPTY" => String::new(),
            _ => g.pick(&["web", "api", "true", "x y", "${HOST}"]).to_string(),
        };
        vars.insert(name.to_string(), v.clone());
        rotated.insert(name.to_string(), v);
    }
    Case { platform, files, config, vars, rotated, secrets }
}

/// Render the case (and again with every secret rotated) and check what may never happen.
fn check(case: &Case) -> Result<(), String> {
    let snapshot = |_: ()| Snapshot {
        origin: Origin::Dir { path: ".".into() },
        files: case.files.iter().map(|(p, t)| SourceFile { path: p.into(), text: t.as_str().into() }).collect(),
        data: Vec::new(),
        config: None,
    };
    let config = Config::parse(std::path::Path::new("capstan.yaml"), &case.config).unwrap_or_default();
    let provider = capstan::providers::provider_for(case.platform, None, "fuzz").map_err(|e| e.to_string())?;
    let opts = |vars: &IndexMap<String, String>| RenderOptions {
        vars: vars.clone(),
        namespace: None,
        allow_missing_vars: case.secrets.len().is_multiple_of(3),
        keep_documents: true,
    };
    // LISTED is secret only through capstan.yaml's `sensitive`, which a mutation may break.
    let secrets: Vec<&str> = case
        .secrets
        .iter()
        .filter(|(name, _)| name != "LISTED" || config.sensitive.iter().any(|s| s == "LISTED"))
        .map(|(_, v)| v.as_str())
        .collect();
    let leaks = |what: &str, text: &str| -> Result<(), String> {
        match secrets.iter().find(|s| text.contains(*s)) {
            Some(s) => Err(format!("secret {s} in {what}:\n{text}")),
            None => Ok(()),
        }
    };
    let before = render(&snapshot(()), &config, &opts(&case.vars), provider.as_ref(), None);
    let after = render(&snapshot(()), &config, &opts(&case.rotated), provider.as_ref(), None);
    let style = Style::new(output::ColorChoice::Never, false);
    for r in [&before, &after] {
        match r {
            Ok(rendered) => {
                let merged = rendered.redactor.value(&provider.merge_documents(&rendered.documents));
                leaks("render -o json", &serde_json::to_string_pretty(&merged).unwrap())?;
                leaks("render", &serde_yaml::to_string(&merged).unwrap_or_default())?;
                leaks("warnings", &output::diagnostics_text(&rendered.warnings, style))?;
            }
            Err(e) => {
                if std::env::var_os("FUZZ_DEBUG").is_some() {
                    eprintln!("{}", output::diagnostics_text(&e.0, style));
                }
                leaks("diagnostics", &output::diagnostics_text(&e.0, style))?
            }
        }
    }
    // The rotation as a plan shows it: both sides masked.
    if let (Ok(b), Ok(a)) = (&before, &after) {
        RENDERED.fetch_add(1, Ordering::Relaxed);
        let changes = capstan::diff::diff_declared(provider.as_ref(), &b.desired, &a.desired);
        let mut redactor = a.redactor.clone();
        redactor.merge(&b.redactor);
        redactor.learn_changes(&changes);
        let json = output::resource_changes_json(&changes, &redactor);
        leaks("plan -o json", &serde_json::to_string(&json).unwrap())?;
        let (view, diffs) =
            output::PlanView::for_text("fuzz", &changes, &Default::default(), &a.warnings, &redactor, None);
        let text = output::plan_text(&view, &diffs, style);
        leaks("plan", &text)?;
        if changes.has_changes() {
            ROTATED.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

fn run_case(seed: u64, corpus: &[String]) -> Result<(), String> {
    let case = make_case(seed, corpus);
    // The daemon renders on tokio workers, whose stacks are 2 MiB.
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&case)));
            (out, case)
        })
        .unwrap();
    let (out, case) = handle.join().map_err(|_| "the case's thread died".to_string())?;
    let problem = match out {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(leak)) => leak,
        Err(panic) => format!(
            "panic: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or(panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        ),
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/fuzz-failures/{seed}"));
    let _ = std::fs::create_dir_all(&dir);
    for (name, text) in &case.files {
        let _ = std::fs::write(dir.join(name), text);
    }
    let _ = std::fs::write(dir.join("capstan.yaml"), &case.config);
    let _ = std::fs::write(dir.join("vars.json"), serde_json::to_string_pretty(&(&case.vars, &case.rotated)).unwrap());
    Err(format!("seed {seed} (written to {}): {problem}", dir.display()))
}

fn peak_rss_mib() -> u64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as u64 / 1024
}

#[test]
fn render_survives_generated_and_mutated_manifests_and_leaks_no_secret() {
    let corpus = corpus();
    let first: u64 = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let seconds: Option<u64> = std::env::var("FUZZ_SECONDS").ok().and_then(|s| s.parse().ok());
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut seed = first;
    loop {
        let done = match seconds {
            Some(s) => started.elapsed() >= Duration::from_secs(s),
            None => seed - first >= CI_CASES,
        };
        if done || failures.len() >= 5 {
            break;
        }
        if let Err(e) = run_case(seed, &corpus) {
            failures.push(e);
        }
        seed += 1;
    }
    let rss = peak_rss_mib();
    eprintln!(
        "fuzz: {} cases (seeds {first}..{seed}) in {:.0?}, {} rendered, {} rotations changed something, peak memory {rss} MiB, {} failures",
        seed - first,
        started.elapsed(),
        RENDERED.load(Ordering::Relaxed),
        ROTATED.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(rss < 1024, "peak memory {rss} MiB");
}
