//! Rendering and validation through the real binary, with no target: seed 003's expansion
//! rules and worked example, the manifests the seed shows, and every kind of input error with
//! its file:line:column.

mod common;
use common::*;

fn seed_fixture(rel: &str) -> std::path::PathBuf {
    repo_root().join("tests/fixtures/seed").join(rel)
}

#[test]
fn render_reproduces_the_seed_expansion_example_byte_for_byte() {
    let vector: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(seed_fixture("expansion-vector.json")).unwrap()).unwrap();
    let expected = vector["response"]["expanded_json"].as_str().unwrap();
    let dir = seed_fixture("expansion");
    let run = run_in(&dir, &["render", ".", "--output", "json"]);
    run.ok();
    assert_eq!(run.stdout, format!("{expected}\n"));
    // The same warning text as the seed's server.
    assert!(run.stderr.contains("warning: no value found for variable NAMESPACE"), "{}", run.stderr);
    assert!(run.stderr.contains("manifest.json:3:11"), "the warning names where NAMESPACE is used: {}", run.stderr);
}

#[test]
fn every_complete_manifest_of_the_seed_is_accepted_as_it_stands() {
    for dir in ["expansion", "manifests-post"] {
        run_in(&seed_fixture(dir), &["validate", "."]).ok();
    }
    let out = run_in(&seed_fixture("manifests-post"), &["render", ".", "-o", "json"]);
    out.ok();
    assert!(out.stdout.contains("\"job::/sandbox/admin::testcapsule\""));
}

#[test]
fn the_seeds_derived_vectors_render_as_the_digest_says() {
    let w = Workdir::new();
    // V2: a variable in the local name; V3: a missing namespace variable filled by the default
    // namespace; V4: a literal empty namespace.
    w.write(
        "m.json",
        r#"{
  "jobs": {
    "job::/sandbox/admin::${APP_NAME}": {},
    "job::${MY_NAMESPACE}::${APP_NAME}-2": {},
    "job::::local-name": {}
  },
  "variables": { "APP_NAME": "my-app" }
}"#,
    );
    let out = w.capstan(&["render", ".", "-o", "json", "--namespace", "/sandbox/admin"]);
    out.ok();
    let v = out.json();
    let keys: Vec<&String> = v["jobs"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["job::/sandbox/admin::my-app", "job::/sandbox/admin::my-app-2", "job::/sandbox/admin::local-name"]
    );
    assert!(out.stderr.contains("no value found for variable MY_NAMESPACE"));
}

#[test]
fn variables_take_precedence_config_then_file_then_command_line() {
    let w = Workdir::new();
    w.write("capstan.yaml", "variables:\n  A: from-config\n  B: from-config\n  C: from-config\n");
    w.write(
        "m.yaml",
        "variables:\n  B: from-file\n  C: from-file\njobs:\n  job::/d::x:\n    tags:\n      a: ${A}\n      b: ${B}\n      c: ${C}\n",
    );
    let out = w.capstan(&["render", ".", "-o", "json", "--var", "C=from-flag"]);
    out.ok();
    let tags = &out.json()["jobs"]["job::/d::x"]["tags"];
    assert_eq!(tags, &serde_json::json!({"a": "from-config", "b": "from-file", "c": "from-flag"}));
}

#[test]
fn substituted_values_are_typed_only_where_the_schema_wants_a_number() {
    let w = Workdir::new();
    w.write("m.yaml", "jobs:\n  job::/d::x:\n    num_instances: ${N}\n    tags:\n      build: ${N}\n");
    let out = w.capstan(&["render", ".", "-o", "json", "--var", "N=3"]);
    out.ok();
    let job = &out.json()["jobs"]["job::/d::x"];
    assert_eq!(job["num_instances"], 3);
    assert_eq!(job["tags"]["build"], "3");
}

/// Run validate on one file and return stderr, asserting exit 1.
fn invalid(file: &str, content: &str, extra: &[&str]) -> String {
    let w = Workdir::new();
    w.write(file, content);
    let mut args = vec!["validate", "."];
    args.extend_from_slice(extra);
    let out = w.capstan(&args);
    out.code(1);
    out.stderr
}

#[test]
fn yaml_syntax_errors_name_file_line_and_column() {
    let err = invalid("web.yaml", "jobs:\n  job::/d::web:\n    state: [started\n", &[]);
    assert!(err.contains("web.yaml:4:1: error: invalid YAML"), "{err}");
}

#[test]
fn unknown_fields_name_the_key_and_what_was_expected() {
    let err = invalid("web.yaml", "jobs:\n  job::/d::web:\n    num_instanses: 2\n", &[]);
    assert!(err.contains("web.yaml:3:5: error: unknown field `num_instanses`"), "{err}");
    assert!(err.contains("did you mean `num_instances`?"), "{err}");
}

#[test]
fn wrong_types_name_the_value_and_the_expected_type() {
    let err = invalid("web.yaml", "jobs:\n  job::/d::web:\n    resources:\n      memory: lots\n", &[]);
    assert!(
        err.contains(
            "web.yaml:4:15: error: wrong type for `jobs.job::/d::web.resources.memory`: expected integer, found string"
        ),
        "{err}"
    );
}

#[test]
fn unresolved_variables_are_errors_unless_allowed() {
    let content = "jobs:\n  job::/d::web:\n    tags:\n      who: x-${WHO}\n";
    let err = invalid("web.yaml", content, &[]);
    assert!(err.contains("web.yaml:4:14: error: no value found for variable WHO"), "{err}");
    let w = Workdir::new();
    w.write("web.yaml", content);
    let out = w.capstan(&["validate", ".", "--allow-missing-vars"]);
    out.ok();
    assert!(out.stderr.contains("warning: no value found for variable WHO"));
}

#[test]
fn a_namespace_left_empty_without_a_default_is_an_error() {
    let err = invalid("web.yaml", "jobs:\n  job::::web: {}\n", &[]);
    assert!(err.contains("web.yaml:2:3: error: \"job::::web\" has an empty namespace"), "{err}");
}

#[test]
fn duplicate_identities_across_files_name_both_places() {
    let w = Workdir::new();
    w.write("a.yaml", "jobs:\n  job::/d::web: {}\n");
    w.write("sub/b.yaml", "# again\njobs:\n  job::/d::web:\n    state: started\n");
    let out = w.capstan(&["validate", "."]);
    out.code(1);
    assert!(out.stderr.contains("sub/b.yaml:3:3: error: job::/d::web is declared twice"), "{}", out.stderr);
    assert!(out.stderr.contains("a.yaml:2:3: note: first declared here"), "{}", out.stderr);
}

#[test]
fn capstan_yaml_rejects_unknown_keys_with_their_place() {
    let w = Workdir::new();
    w.write("capstan.yaml", "owner: me\ntargetz: {}\n");
    w.write("m.yaml", "jobs: {}\n");
    let out = w.capstan(&["validate", "."]);
    out.code(1);
    assert!(out.stderr.contains("capstan.yaml:2:1: error: unknown field `targetz`"), "{}", out.stderr);
}

/// A platform capstan.yaml names is checked against the registry, at its place: the schema's
/// enums list exactly the registered platforms (`tests/architecture.rs` keeps them so), and
/// config knows no platform code.
#[test]
fn capstan_yaml_rejects_an_unknown_platform_at_its_place_naming_the_registered_ones() {
    let w = Workdir::new();
    w.write("capstan.yaml", "platform: nosuch\ntargets:\n  prod:\n    platform: nosuch\n    url: http://127.0.0.1:1\n");
    w.write("m.yaml", "jobs: {}\n");
    let out = w.capstan(&["validate", "."]);
    out.code(1);
    let names: Vec<String> = capstan::providers::platform_names().iter().map(|n| format!("{n:?}")).collect();
    for (place, field) in [("capstan.yaml:1:11", "platform"), ("capstan.yaml:4:15", "targets.prod.platform")] {
        let expected = format!("{place}: error: invalid value for `{field}`: expected one of [{}]\n", names.join(","));
        assert!(out.stderr.contains(&expected), "{expected}{}", out.stderr);
    }
}

#[test]
fn hidden_directories_and_other_files_are_not_manifests() {
    let w = Workdir::new();
    w.write(".hidden/broken.yaml", "this: [is not valid\n");
    w.write("notes.txt", "not yaml: [\n");
    w.write("ok.yml", "jobs:\n  job::/d::web: {}\n");
    let out = w.capstan(&["validate", "."]);
    out.ok();
    assert!(out.stdout.contains("1 resources in 1 documents"), "{}", out.stdout);
}

#[test]
fn the_example_application_validates() {
    let out = run_in(&repo_root(), &["validate", "examples/manifests/apcera"]);
    out.ok();
    assert!(out.stdout.contains("10 resources"), "{}", out.stdout);
}

#[test]
fn handlebars_templates_render_before_they_are_parsed_and_name_missing_values() {
    let w = Workdir::new();
    w.write("capstan.yaml", "platform: marathon\nvariables: {ENV: prod}\n");
    w.write(
        "web.json.hbs",
        "{\n  \"id\": \"/web\",\n  \"cmd\": \"serve\",\n  \"instances\": {{#if (eq ENV \"prod\")}}5{{else}}1{{/if}}\n}\n",
    );
    let out = w.capstan(&["render", ".", "-o", "json"]);
    out.ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v[0]["instances"], 5);
    let out = w.capstan(&["render", ".", "-o", "json", "--var", "ENV=dev"]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()[0]["instances"], 1);

    w.write("api.yaml.hbs", "id: /api\ncmd: serve\ninstances: {{REPLICAS}}\n");
    let out = w.capstan(&["validate", "."]);
    out.code(1);
    assert!(out.stderr.contains("api.yaml.hbs:3:12") && out.stderr.contains("REPLICAS"), "{}", out.stderr);
}

#[test]
fn keys_that_collide_once_expanded_are_errors_naming_both_places() {
    // Issue 12, item 3: each pair passed validation and the last silently won.
    let w = Workdir::new();
    w.write("capstan.yaml", "default_namespace: /dev/shop\nvariables: {N: dv, K: app}\n");
    w.write("ns.yaml", "jobs:\n  job::/dev/shop::dn: {num_instances: 1}\n  job::::dn: {num_instances: 2}\n");
    w.write("var.yaml", "jobs:\n  job::::dv: {num_instances: 1}\n  job::::${N}: {num_instances: 2}\n");
    w.write("tags.yaml", "jobs:\n  job::::t:\n    tags:\n      app: one\n      ${K}: two\n");
    let out = w.capstan(&["validate", "."]);
    out.code(1);
    for (at, key, other) in [
        ("ns.yaml:3:3", "job::/dev/shop::dn", "ns.yaml:2:3"),
        ("var.yaml:3:3", "job::/dev/shop::dv", "var.yaml:2:3"),
        ("tags.yaml:5:7", "app", "tags.yaml:4:7"),
    ] {
        let error = format!("{at}: error: this key expands to {key:?}, as another key of the same mapping does");
        assert!(out.stderr.contains(&error), "expected {error:?} in:\n{}", out.stderr);
        let note = format!("{other}: note: the other key that expands to {key:?}");
        assert!(out.stderr.contains(&note), "expected {note:?} in:\n{}", out.stderr);
    }
    // The same through --var, and render refuses too.
    let w = Workdir::new();
    w.write("m.yaml", "jobs:\n  job::/d::a: {}\n  job::/d::${X}: {}\n");
    let out = w.capstan(&["render", ".", "--var", "X=a"]);
    out.code(1);
    assert!(out.stderr.contains("m.yaml:3:3: error: this key expands to \"job::/d::a\""), "{}", out.stderr);
    w.capstan(&["render", ".", "--var", "X=b"]).ok();
}

/// Validate a repository's working tree (directory mode) and its HEAD commit (git mode); both
/// must fail, and each expected line must be in both outputs.
fn refused_in_both_modes(repo: &common::git::Repo, expect: &[&str]) {
    let dir = repo.path().to_str().unwrap();
    for (mode, args) in [("directory", vec!["validate", "."]), ("git", vec!["validate", "--repo", dir])] {
        let out = run_in(repo.path(), &args);
        out.code(1);
        for line in expect {
            assert!(out.stderr.contains(line), "{mode} mode: expected {line:?} in:\n{}", out.stderr);
        }
        assert!(!out.stdout.contains("valid:"), "{mode} mode: {}", out.stdout);
    }
}

#[test]
fn links_foreign_names_and_submodules_are_refused_alike_in_directory_and_git_mode() {
    // Issue 12, item 2: a symlinked directory was skipped without a word, a file link was
    // followed out of the tree, a name that is not UTF-8 was skipped (and read, lossily, from
    // git), and a submodule's manifests were read from a checkout but not from the commit.
    use common::git::{Repo, git};
    use std::os::unix::ffi::OsStrExt;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("far.yaml"), "jobs:\n  job::/x::far: {}\n").unwrap();

    let repo = Repo::new();
    repo.write("ok.yaml", "jobs:\n  job::/x::ok: {}\n");
    repo.write("shared/a.yaml", "jobs:\n  job::/x::a: {}\n");
    std::os::unix::fs::symlink("shared", repo.path().join("linked")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("far.yaml"), repo.path().join("far.yaml")).unwrap();
    repo.commit("links");
    let far = format!("far.yaml is a symbolic link (to {}/far.yaml)", outside.path().display());
    refused_in_both_modes(&repo, &["linked is a symbolic link (to shared): links are not followed", &far]);

    let repo = Repo::new();
    repo.write("ok.yaml", "jobs:\n  job::/x::ok: {}\n");
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.yaml");
    std::fs::write(repo.path().join(name), "jobs:\n  job::/x::cafe: {}\n").unwrap();
    repo.commit("a Latin-1 name");
    refused_in_both_modes(&repo, &["caf\u{fffd}.yaml: the name is not UTF-8"]);

    let inner = Repo::new();
    inner.write("inner.yaml", "jobs:\n  job::/x::inner: {}\n");
    inner.commit("inner manifests");
    let repo = Repo::new();
    repo.write("ok.yaml", "jobs:\n  job::/x::ok: {}\n");
    repo.commit("outer");
    let inner_path = inner.path().to_str().unwrap();
    git(repo.path(), &["-c", "protocol.file.allow=always", "submodule", "add", "-q", inner_path, "sub"]);
    repo.commit("a submodule");
    assert!(repo.path().join("sub/inner.yaml").exists(), "the checkout has the submodule's files");
    refused_in_both_modes(&repo, &["sub is a git submodule (or a repository inside this one)"]);

    // capstan.yaml itself: a link would be followed out of the tree on disk and skipped in git.
    let repo = Repo::new();
    repo.write("ok.yaml", "jobs:\n  job::/x::ok: {}\n");
    std::fs::write(outside.path().join("capstan.yaml"), "owner: elsewhere\nprune: true\n").unwrap();
    std::os::unix::fs::symlink(outside.path().join("capstan.yaml"), repo.path().join("capstan.yaml")).unwrap();
    repo.commit("a linked configuration");
    refused_in_both_modes(&repo, &["capstan.yaml is a symbolic link"]);

    // Hidden entries stay outside the rules, in both modes.
    let repo = Repo::new();
    repo.write("ok.yaml", "jobs:\n  job::/x::ok: {}\n");
    std::os::unix::fs::symlink("ok.yaml", repo.path().join(".hidden.yaml")).unwrap();
    repo.commit("hidden");
    run_in(repo.path(), &["validate", "."]).ok();
    run_in(repo.path(), &["validate", "--repo", repo.path().to_str().unwrap()]).ok();
}

#[test]
fn validate_names_where_each_undeclared_reference_is_and_warns_when_pruning_would_refuse_it() {
    // Issue 12, item 1, offline: the example minus jobs/worker.yaml, whose network still lists
    // job::::worker, said "valid" and nothing more.
    let w = Workdir::from_example("examples/manifests/apcera");
    w.remove("jobs/worker.yaml");
    let out = w.capstan(&["validate", "."]);
    out.ok();
    assert!(out.stdout.contains("  job::/dev/shop::worker (network.yaml:8:9)"), "{}", out.stdout);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    w.write("capstan.yaml", &format!("{}prune: true\n", w.read("capstan.yaml")));
    let out = w.capstan(&["validate", "."]);
    out.ok();
    let expect = "network.yaml:8:9: warning: job::/dev/shop::worker is not declared here and capstan.yaml prunes: if owner \"shop\" made it, plan refuses to delete it while this points at it";
    assert!(out.stderr.contains(expect), "expected {expect:?} in:\n{}", out.stderr);
    assert!(!out.stderr.contains("package::"), "packages are not capstan's to prune: {}", out.stderr);
}
