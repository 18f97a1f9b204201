//! The tsuru sandbox (`capstan sandbox serve --platform tsuru`) over real HTTP: the seed's
//! paths with and without their version prefix, tsuru's auth, 204 on empty lists, streamed
//! answers with an injected `Error` line, and each resource family's rules. Request bodies and
//! answer shapes come from the vectors of research/vectors, copied to tests/fixtures/tsuru/
//! (`tsuru-*`).

mod common;

use common::SandboxProc;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::{Value, json};
use std::time::Duration;

fn vector(name: &str) -> String {
    std::fs::read_to_string(common::repo_root().join("tests/fixtures/tsuru").join(name)).expect("the vector")
}

fn vector_json(name: &str) -> Value {
    serde_json::from_str(&vector(name)).unwrap()
}

struct Tsuru {
    sb: SandboxProc,
    http: Client,
    token: Option<String>,
}

impl Tsuru {
    fn start(extra: &[&str]) -> Tsuru {
        let token = extra.windows(2).find(|w| w[0] == "--token").map(|w| w[1].to_string());
        let sb = SandboxProc::start_platform("tsuru", extra);
        Tsuru { sb, http: Client::builder().timeout(Duration::from_secs(60)).build().unwrap(), token }
    }

    fn req(&self, method: &str, path: &str) -> RequestBuilder {
        let r = self
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{}{path}", self.sb.url));
        match &self.token {
            Some(t) => r.header("Authorization", format!("bearer {t}")),
            None => r,
        }
    }

    fn json(&self, method: &str, path: &str, body: &Value) -> Response {
        self.req(method, path).json(body).send().unwrap()
    }

    fn form(&self, method: &str, path: &str, body: &str) -> Response {
        self.req(method, path)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.to_string())
            .send()
            .unwrap()
    }

    fn call(&self, method: &str, path: &str) -> Response {
        self.req(method, path).send().unwrap()
    }

    /// A GET that must answer 200 with JSON.
    fn get(&self, path: &str) -> Value {
        let r = self.call("GET", path);
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().unwrap()
    }

    fn faults(&self, faults: Value) {
        let r = self.http.put(format!("{}/_sandbox/faults", self.sb.url)).json(&faults).send().unwrap();
        assert_eq!(r.status(), 200);
    }

    fn app_create(&self, name: &str) {
        let r = self.json("POST", "/1.0/apps", &json!({"name": name, "platform": "python", "teamOwner": "team-a"}));
        assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    }
}

/// The lines of an `application/x-json-stream` answer, which must be 200.
fn stream(r: Response) -> Vec<Value> {
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-json-stream");
    let text = r.text().unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object a line: {l:?}: {e}")))
        .collect()
}

fn stream_error(lines: &[Value]) -> Option<String> {
    lines.iter().find_map(|l| l.get("Error").and_then(Value::as_str).map(String::from))
}

/// Every key of `want` (the vector's answer) is in `got`, recursively into objects.
fn has_keys_of(got: &Value, want: &Value, at: &str) {
    if let (Some(g), Some(w)) = (got.as_object(), want.as_object()) {
        for (k, v) in w {
            let inner = g.get(k).unwrap_or_else(|| panic!("{at}.{k} missing in {got}"));
            has_keys_of(inner, v, &format!("{at}.{k}"));
        }
    }
}

fn env_of(t: &Tsuru, app: &str) -> Vec<Value> {
    t.get(&format!("/1.0/apps/{app}/env")).as_array().unwrap().clone()
}

fn env_var(t: &Tsuru, app: &str, name: &str) -> Option<Value> {
    env_of(t, app).into_iter().find(|v| v["name"] == name)
}

#[test]
fn apps_round_trip_the_seed_shapes_on_both_path_forms_and_empty_lists_are_204() {
    let t = Tsuru::start(&[]);
    for path in ["/apps", "/1.0/apps"] {
        let r = t.call("GET", path);
        assert_eq!(r.status(), 204, "{path}");
        assert_eq!(r.text().unwrap(), "", "no body");
    }
    assert_eq!(t.call("GET", "/1.13/apps").status(), 404, "tsuru routes only the seed's version");

    let create = vector_json("tsuru-app-create-request.synth.json");
    let r = t.json("POST", "/1.0/apps", &create);
    assert_eq!(r.status(), 201);
    has_keys_of(&r.json().unwrap(), &json!({"status": "", "ip": ""}), "create");
    let r = t.json("POST", "/apps", &create);
    assert_eq!(r.status(), 409, "a second create");

    let info = t.get("/apps/myapp");
    has_keys_of(
        &info,
        &json!({"name": 0, "description": 0, "platform": 0, "pool": 0, "teamOwner": 0, "owner": 0,
        "teams": 0, "tags": 0, "ip": 0, "cname": 0, "deploys": 0, "router": 0, "routers": 0, "plan": {"name": 0,
        "cpumilli": 0, "memory": 0}, "units": 0, "metadata": {"labels": 0, "annotations": 0}}),
        "info",
    );
    let upstream = vector_json("tsuru-app-get-response.synth.json");
    for k in upstream.as_object().unwrap().keys() {
        assert!(info.get(k).is_some(), "the vector's key {k} is in the answer");
    }
    assert_eq!(info["teamOwner"], "team-a");
    assert_eq!(info["tags"], json!(["gitops"]));
    assert_eq!(info["pool"], "prod");
    assert_eq!(info["plan"]["name"], "c1m1");
    assert_eq!(info["metadata"]["labels"], json!([{"name": "env", "value": "prod", "delete": false}]));

    // Update (the vector: delete a label that is not there, same pool), then add one.
    let lines = stream(t.json("PUT", "/1.0/apps/myapp", &vector_json("tsuru-app-update-request.synth.json")));
    assert_eq!(stream_error(&lines), None);
    let lines = stream(t.json(
        "PUT",
        "/apps/myapp",
        &json!({"description": "new", "tags": ["gitops", "capstan.owner=x"],
            "metadata": {"labels": [{"name": "capstan.io/owner", "value": "repo-1"}]}}),
    ));
    assert_eq!(stream_error(&lines), None);
    let info = t.get("/1.0/apps/myapp");
    assert_eq!(info["description"], "new");
    assert_eq!(info["tags"], json!(["gitops", "capstan.owner=x"]), "tags round-trip exactly");
    assert_eq!(
        info["metadata"]["labels"],
        json!([{"name": "env", "value": "prod", "delete": false}, {"name": "capstan.io/owner", "value": "repo-1", "delete": false}])
    );
    let r = t.json("PUT", "/apps/myapp", &json!({"pool": "default"}));
    assert_eq!(r.status(), 400, "pool updates are refused");

    let list = t.get("/apps");
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "myapp");

    assert_eq!(stream_error(&stream(t.call("DELETE", "/1.0/apps/myapp"))), None);
    assert_eq!(t.call("GET", "/apps").status(), 204);
    assert_eq!(t.call("GET", "/apps/myapp").status(), 404);
}

#[test]
fn auth_reads_the_last_word_of_the_authorization_header_in_any_case() {
    let t = Tsuru::start(&["--token", "s3cret"]);
    let url = format!("{}/1.0/apps", t.sb.url);
    for ok in ["bearer s3cret", "Bearer s3cret", "BEARER s3cret"] {
        let r = t.http.get(&url).header("Authorization", ok).send().unwrap();
        assert_eq!(r.status(), 204, "{ok}");
    }
    for bad in [None, Some("bearer wrong"), Some("bearer x s3cret")] {
        let mut r = t.http.get(&url);
        if let Some(h) = bad {
            r = r.header("Authorization", h);
        }
        let r = r.send().unwrap();
        assert_eq!(r.status(), 401, "{bad:?}");
        assert!(r.headers().contains_key("www-authenticate"));
        assert!(!r.text().unwrap().contains("s3cret"), "the token is never echoed");
    }
}

#[test]
fn env_prunes_only_its_managers_variables_masks_private_ones_and_refuses_protected_names() {
    let t = Tsuru::start(&[]);
    t.app_create("web");
    // Set by hand, and by another manager.
    let lines = stream(t.json(
        "POST",
        "/1.0/apps/web/env",
        &json!({"envs": [{"name": "HAND", "value": "h"}], "noRestart": true}),
    ));
    assert_eq!(stream_error(&lines), None);
    let other = json!({"envs": [{"name": "OTHER", "value": "o"}], "managedBy": "other", "noRestart": true});
    stream(t.json("POST", "/apps/web/env", &other));
    stream(t.json(
        "POST",
        "/apps/web/env",
        &json!({"envs": [{"name": "STALE", "value": "s"}], "managedBy": "capstan", "noRestart": true}),
    ));

    // The form vector: capstan's set with pruneUnused.
    let lines = stream(t.form("POST", "/1.0/apps/web/env", vector("tsuru-env-set-request.synth.form").trim()));
    assert_eq!(stream_error(&lines), None);
    let env = env_of(&t, "web");
    let names: Vec<&str> = env.iter().filter_map(|v| v["name"].as_str()).filter(|n| !n.starts_with("TSURU_")).collect();
    assert_eq!(names, ["DATABASE_URL", "HAND", "LOG_LEVEL", "OTHER"], "STALE pruned, HAND and OTHER kept");
    let db = env_var(&t, "web", "DATABASE_URL").unwrap();
    assert_eq!(db["value"], "*** (private variable)");
    assert_eq!(db["public"], false);
    assert_eq!(db["managedBy"], "capstan");
    assert!(!serde_json::to_string(&env).unwrap().contains("postgres://x"), "a private value is never read back");
    has_keys_of(&db, &vector_json("tsuru-env-get-response.synth.json")[0], "env item");
    assert_eq!(env_var(&t, "web", "LOG_LEVEL").unwrap()["value"], "info");
    assert_eq!(env_var(&t, "web", "HAND").unwrap()["managedBy"], "");

    // The JSON vector does the same (idempotent).
    stream(t.json("POST", "/apps/web/env", &vector_json("tsuru-env-set-request.synth.json")));
    assert_eq!(env_of(&t, "web").len(), env.len());

    // Protected names and prune without a manager: refused before anything changes.
    for body in [
        json!({"envs": [{"name": "TSURU_APPNAME", "value": "x"}, {"name": "NEW", "value": "1"}], "managedBy": "capstan"}),
        json!({"envs": [{"name": "NEW", "value": "1"}], "pruneUnused": true}),
        json!({"envs": [{"name": "1BAD", "value": "1"}]}),
    ] {
        let r = t.json("POST", "/1.0/apps/web/env", &body);
        assert_eq!(r.status(), 400, "{body}");
    }
    assert!(env_var(&t, "web", "NEW").is_none());

    // Unset by name removes whatever the names are.
    let lines = stream(t.call("DELETE", "/1.0/apps/web/env?env=OTHER&env=HAND&noRestart=true"));
    assert_eq!(stream_error(&lines), None);
    assert!(env_var(&t, "web", "OTHER").is_none() && env_var(&t, "web", "HAND").is_none());
    assert!(env_var(&t, "web", "LOG_LEVEL").is_some());
}

#[test]
fn an_injected_stream_error_comes_after_a_200_and_changes_nothing() {
    let t = Tsuru::start(&[]);
    t.app_create("web");
    t.faults(json!({"stream_error": {"path_contains": "/env", "message": "unit web-1 failed to start", "count": 1}}));
    let lines = stream(t.json(
        "POST",
        "/apps/web/env",
        &json!({"envs": [{"name": "A", "value": "1"}], "managedBy": "capstan"}),
    ));
    assert_eq!(stream_error(&lines).as_deref(), Some("unit web-1 failed to start"));
    let last = lines.last().unwrap();
    assert_eq!(last["Message"], "");
    assert!(last["Timestamp"].is_string());
    // The vector's error line has the same keys.
    let upstream: Vec<Value> = vector("tsuru-stream-error.synth.ndjson")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    has_keys_of(last, upstream.last().unwrap(), "error line");
    assert!(lines[..lines.len() - 1].iter().all(|l| l["Message"].is_string() && l.get("Error").is_none()));
    assert!(env_var(&t, "web", "A").is_none(), "a failed stream changed nothing");

    // The fault counted itself out: the next set goes through.
    let lines = stream(t.json(
        "POST",
        "/apps/web/env",
        &json!({"envs": [{"name": "A", "value": "1"}], "managedBy": "capstan"}),
    ));
    assert_eq!(stream_error(&lines), None);
    assert!(lines.iter().all(|l| l["Message"].is_string() && l["Timestamp"].is_string()));
    assert_eq!(env_var(&t, "web", "A").unwrap()["value"], "1");
}

#[test]
fn units_go_up_and_down_per_process() {
    let t = Tsuru::start(&["--rollout-ms", "50"]);
    t.app_create("web");
    let add = vector_json("tsuru-units-add-request.synth.json");
    assert_eq!(stream_error(&stream(t.json("PUT", "/1.0/apps/web/units", &add))), None);
    assert_eq!(stream_error(&stream(t.form("PUT", "/apps/web/units", "units=1&process=worker"))), None);
    let units = |t: &Tsuru| -> Vec<(String, bool)> {
        let info = t.get("/apps/web");
        info["units"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| (u["processname"].as_str().unwrap_or("").to_string(), u["ready"] == true))
            .collect()
    };
    let now = units(&t);
    assert_eq!(now.iter().filter(|(p, _)| p == "web").count(), 2, "{now:?}");
    assert_eq!(now.iter().filter(|(p, _)| p == "worker").count(), 1);
    assert!(now.iter().all(|(_, ready)| *ready), "the stream ended when the units were ready");

    assert_eq!(stream_error(&stream(t.call("DELETE", "/1.0/apps/web/units?units=1&process=web"))), None);
    let now = units(&t);
    assert_eq!(now.iter().filter(|(p, _)| p == "web").count(), 1);
    assert_eq!(now.iter().filter(|(p, _)| p == "worker").count(), 1);
    assert_eq!(t.call("DELETE", "/apps/web/units?units=5&process=worker").status(), 403, "more than it has");
    assert_eq!(t.form("PUT", "/apps/web/units", "units=0&process=web").status(), 400);
}

#[test]
fn a_cname_is_refused_while_another_app_holds_it_and_moves_by_remove_then_add() {
    let t = Tsuru::start(&[]);
    t.app_create("a");
    t.app_create("b");
    let r = t.json("POST", "/1.0/apps/a/cname", &vector_json("tsuru-cname-request.synth.json"));
    assert_eq!(r.status(), 200);
    assert_eq!(t.get("/apps/a")["cname"], json!(["www.example.test", "api.example.test"]));
    let r = t.json("POST", "/apps/b/cname", &json!({"cname": ["www.example.test"]}));
    assert_eq!(r.status(), 500, "tsuru answers a taken cname with 500");
    assert!(r.text().unwrap().contains("already exists for app a"));
    assert_eq!(t.get("/apps/b")["cname"], Value::Null);

    assert_eq!(t.call("DELETE", "/1.0/apps/a/cname?cname=www.example.test").status(), 200);
    assert_eq!(t.form("POST", "/apps/b/cname", "cname=www.example.test").status(), 200);
    assert_eq!(t.get("/apps/a")["cname"], json!(["api.example.test"]));
    assert_eq!(t.get("/apps/b")["cname"], json!(["www.example.test"]));
    assert_eq!(t.form("POST", "/apps/b/cname", "cname=bad%20name").status(), 400);
}

#[test]
fn instances_bind_inject_env_and_a_bound_instance_is_not_deleted() {
    let t = Tsuru::start(&[]);
    t.app_create("myapp");
    let r = t.json(
        "POST",
        "/1.0/services/mysql/instances",
        &vector_json("tsuru-service-instance-create-request.synth.json"),
    );
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let info = t.get("/services/mysql/instances/db1");
    let upstream = vector_json("tsuru-service-instance-get-response.synth.json");
    for k in upstream.as_object().unwrap().keys() {
        assert!(info.get(k).is_some(), "the vector's key {k} is in {info}");
    }
    assert_eq!(info["planname"], "small");
    assert_eq!(info["teamowner"], "team-a");
    assert_eq!(info["tags"], json!(["gitops"]));
    let list = t.get("/1.0/services/instances");
    let mysql = list.as_array().unwrap().iter().find(|s| s["service"] == "mysql").unwrap();
    assert_eq!(mysql["service_instances"][0]["name"], "db1");

    let r = t.json(
        "PUT",
        "/1.0/services/mysql/instances/db1",
        &vector_json("tsuru-service-instance-update-request.synth.json"),
    );
    assert_eq!(r.status(), 200);
    assert_eq!(t.get("/services/mysql/instances/db1")["planname"], "medium");

    // Bind: the instance's variables appear in the app's env, private, managed by the service.
    let bind = vector_json("tsuru-service-instance-bind-request.synth.json");
    let lines = stream(t.json("PUT", "/1.13/services/mysql/instances/db1/apps/myapp", &bind));
    assert_eq!(stream_error(&lines), None);
    let host = env_var(&t, "myapp", "MYSQL_HOST").expect("the bind injected MYSQL_HOST");
    assert_eq!(host["managedBy"], "mysql/db1");
    assert_eq!(host["public"], false);
    assert_eq!(t.get("/services/mysql/instances/db1")["apps"], json!(["myapp"]));
    assert_eq!(t.json("PUT", "/services/mysql/instances/db1/myapp", &bind).status(), 500, "bound twice");

    // A bound instance is not deleted.
    let r = t.call("DELETE", "/1.0/services/mysql/instances/db1");
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("myapp"));
    assert!(t.call("GET", "/services/mysql/instances/db1").status().is_success());

    // Unbind removes the injected variables; then the delete goes through.
    let lines = stream(t.call("DELETE", "/1.0/services/mysql/instances/db1/myapp?noRestart=true"));
    assert_eq!(stream_error(&lines), None);
    assert!(env_var(&t, "myapp", "MYSQL_HOST").is_none());
    assert_eq!(stream_error(&stream(t.call("DELETE", "/services/mysql/instances/db1"))), None);
    assert_eq!(t.call("GET", "/services/mysql/instances/db1").status(), 404);
}

#[test]
fn instances_list_is_204_when_there_is_no_service() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(&state, r#"{"services": {}}"#).unwrap();
    let t = Tsuru::start(&["--state", state.to_str().unwrap()]);
    let r = t.call("GET", "/1.0/services/instances");
    assert_eq!(r.status(), 204);
    assert_eq!(r.text().unwrap(), "");
}

#[test]
fn jobs_round_trip_and_an_empty_job_list_is_the_seeds_404() {
    let t = Tsuru::start(&[]);
    let r = t.call("GET", "/1.13/jobs");
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().unwrap(), "Not founds.\n", "not a route's 404");
    assert_eq!(t.call("GET", "/1.0/jobs").status(), 404);

    let r = t.json("POST", "/1.13/jobs", &vector_json("tsuru-job-create-request.synth.json"));
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    assert_eq!(r.json::<Value>().unwrap()["jobName"], "nightly");
    let info = t.get("/jobs/nightly");
    let upstream = vector_json("tsuru-job-get-response.synth.json");
    for k in upstream.as_object().unwrap().keys() {
        assert!(info.get(k).is_some(), "the vector's key {k} is in {info}");
    }
    for k in upstream["job"].as_object().unwrap().keys() {
        assert!(info["job"].get(k).is_some(), "job.{k} is in {info}");
    }
    assert_eq!(info["job"]["teamOwner"], "team-a");
    assert_eq!(info["job"]["spec"]["schedule"], "0 3 * * *");
    assert_eq!(info["job"]["spec"]["container"]["image"], "registry.example.test/nightly:1");
    assert_eq!(info["job"]["spec"]["container"]["command"], json!(["/bin/run"]));

    let r = t.json(
        "PUT",
        "/1.13/jobs/nightly",
        &json!({"schedule": "0 4 * * *", "container": {"image": "registry.example.test/nightly:2"}}),
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let info = t.get("/1.13/jobs/nightly");
    assert_eq!(info["job"]["spec"]["schedule"], "0 4 * * *");
    assert_eq!(info["job"]["spec"]["container"]["image"], "registry.example.test/nightly:2");
    assert_eq!(t.get("/jobs").as_array().unwrap().len(), 1);
    assert_eq!(
        t.json("POST", "/jobs", &json!({"name": "nopool", "container": {"image": "x"}, "schedule": "* * * * *"}))
            .status(),
        400
    );

    // A job binds without a stream.
    let r = t.json(
        "POST",
        "/services/redis/instances",
        &json!({"name": "cache", "plan_name": "basic", "team_owner": "team-a"}),
    );
    assert_eq!(r.status(), 201);
    let r = t.json("PUT", "/1.13/services/redis/instances/cache/jobs/nightly", &json!({}));
    assert_eq!(r.status(), 200);
    assert_eq!(t.get("/services/redis/instances/cache")["jobs"], json!(["nightly"]));
    let r = t.call("DELETE", "/services/redis/instances/cache");
    assert_eq!(r.status(), 400, "bound to a job");

    assert!(t.call("DELETE", "/1.13/jobs/nightly").status().is_success());
    assert_eq!(t.call("GET", "/jobs").status(), 404);
    assert_eq!(t.get("/services/redis/instances/cache")["jobs"], json!([]), "deleting the job unbound it");
}

#[test]
fn the_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let s = state.to_str().unwrap();
    let t = Tsuru::start(&["--state", s]);
    t.app_create("kept");
    stream(t.json(
        "POST",
        "/apps/kept/env",
        &json!({"envs": [{"name": "K", "value": "v", "private": true}], "managedBy": "capstan"}),
    ));
    stream(t.form("PUT", "/apps/kept/units", "units=2&process=web"));
    t.json("POST", "/apps/kept/cname", &json!({"cname": ["kept.example.test"]}));
    t.json("POST", "/services/mysql/instances", &json!({"name": "db", "plan_name": "small", "team_owner": "team-a"}));
    stream(t.json("PUT", "/services/mysql/instances/db/kept", &json!({"noRestart": true})));
    t.sb.stop();

    let t = Tsuru::start(&["--state", s]);
    let info = t.get("/apps/kept");
    assert_eq!(info["cname"], json!(["kept.example.test"]));
    assert_eq!(info["units"].as_array().unwrap().len(), 2);
    assert_eq!(env_var(&t, "kept", "K").unwrap()["value"], "*** (private variable)");
    assert_eq!(env_var(&t, "kept", "MYSQL_HOST").unwrap()["managedBy"], "mysql/db");
    assert_eq!(t.get("/services/mysql/instances/db")["apps"], json!(["kept"]));
    // The state file never holds a masked value in place of the real one: a second restart
    // still has the secret (read back masked).
    assert!(std::fs::read_to_string(&state).unwrap().contains("\"K\""));
}
