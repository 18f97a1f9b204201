//! The Apcera sandbox's policy documents and simulation, spoken to directly over HTTP.

mod common;
use common::*;
use serde_json::json;

#[test]
fn policy_documents_keep_versions_history_and_the_cluster_version() {
    let sb = SandboxProc::start(&[]);
    assert_eq!(sb.get("/v1/policy"), json!({ "docs": [] }));
    let (code, v) = sb.send(
        "PUT",
        "/v1/policy",
        Some(&json!({ "docs": [{ "name": "quotas", "text": "one" }, { "name": "b-doc", "text": "b" }] })),
    );
    assert_eq!((code, v), (200, json!({ "version": 1 })));
    let (code, v) =
        sb.send("PUT", "/v1/policy", Some(&json!({ "docs": [{ "name": "quotas", "for_version": 1, "text": "two" }] })));
    assert_eq!((code, v), (200, json!({ "version": 2 })));
    let list = sb.get("/v1/policy");
    let names: Vec<&str> = list["docs"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["b-doc", "quotas"], "sorted by name");
    assert_eq!(list["docs"][1]["version"], 2);
    assert_eq!(list["docs"][1]["updated_by"], "admin@apcera.me");
    let doc = sb.get("/v1/policy/quotas");
    assert_eq!((doc["text"].as_str(), doc["version"].as_u64()), (Some("two"), Some(2)));
    assert_eq!(doc["updated_at"], "0001-01-01T00:00:00Z");
    assert_eq!(sb.get("/v1/policy/quotas?version=1")["text"], "one");
    assert_eq!(sb.send("GET", "/v1/policy/quotas?version=3", None).0, 404);
    assert_eq!(sb.send("GET", "/v1/policy/nope", None).0, 404);
}

#[test]
fn a_stale_for_version_refuses_the_whole_put() {
    let sb = SandboxProc::start(&[]);
    sb.send("PUT", "/v1/policy", Some(&json!({ "docs": [{ "name": "a", "text": "a1" }] })));
    sb.send("PUT", "/v1/policy", Some(&json!({ "docs": [{ "name": "a", "for_version": 1, "text": "a2" }] })));
    // One stale document: nothing of the request is written, the cluster version stays.
    let (code, e) = sb.send(
        "PUT",
        "/v1/policy",
        Some(&json!({ "docs": [{ "name": "new", "text": "n" }, { "name": "a", "for_version": 1, "text": "mine" }] })),
    );
    assert_eq!(code, 409, "{e}");
    assert!(e["message"].as_str().unwrap().contains("changed meanwhile"), "{e}");
    assert_eq!(sb.get("/v1/policy/a")["text"], "a2");
    assert_eq!(sb.send("GET", "/v1/policy/new", None).0, 404);
    // A create over an existing document is a conflict too: it would overwrite it.
    assert_eq!(sb.send("PUT", "/v1/policy", Some(&json!({ "docs": [{ "name": "a", "text": "x" }] }))).0, 409);
    assert_eq!(sb.send("PUT", "/v1/policy", Some(&json!({ "docs": [{ "name": "-bad", "text": "x" }] }))).0, 400);
    let (code, v) = sb.send("PUT", "/v1/policy", Some(&json!({ "docs": [{ "name": "c", "text": "c" }] })));
    assert_eq!((code, v), (200, json!({ "version": 3 })));
}

#[test]
fn delete_takes_several_docs_all_or_nothing() {
    let sb = SandboxProc::start(&[]);
    sb.send(
        "PUT",
        "/v1/policy",
        Some(
            &json!({ "docs": [{ "name": "a", "text": "" }, { "name": "b", "text": "" }, { "name": "c", "text": "" }] }),
        ),
    );
    assert_eq!(sb.send("DELETE", "/v1/policy?doc=a&doc=zz", None).0, 404);
    assert_eq!(sb.get("/v1/policy")["docs"].as_array().unwrap().len(), 3);
    let (code, v) = sb.send("DELETE", "/v1/policy?doc=a&doc=b", None);
    assert_eq!((code, v), (200, json!({ "version": 2 })));
    assert_eq!(sb.get("/v1/policy")["docs"], json!([sb.get("/v1/policy")["docs"][0]]));
    assert_eq!(sb.get("/v1/policy")["docs"][0]["name"], "c");
    assert_eq!(sb.send("DELETE", "/v1/policy", None).0, 400);
}

#[test]
fn simulation_answers_from_stored_and_proposed_policy() {
    let sb = SandboxProc::start(&[]);
    let q = "/v1/sim?fqn=job::/sandbox/tim&input=name=tim&claim=permit=create";
    assert_eq!(sb.get(q)["result"], "deny", "no policy permits nothing");
    // The seed's PUT example: the document joins the stored ones for this answer only.
    let docs = json!({ "docs": [{ "name": "testpolicy", "text": "on job::/sandbox/tim {{ permit create }}" }] });
    let (code, a) = sb.send("PUT", q, Some(&docs));
    assert_eq!(code, 200);
    assert_eq!(a["result"], "permit", "{a}");
    assert_eq!(
        a["lines"][0],
        json!({ "context": "(s) testpolicy.pol:1", "level": 0, "type": 0, "value": "permit create" })
    );
    assert_eq!(a["maxl"], 1);
    assert_eq!(sb.get("/v1/policy")["docs"], json!([]), "nothing saved");
    assert_eq!(sb.get(q)["result"], "deny");
    // Stored, then replaced by name in a simulation.
    sb.send("PUT", "/v1/policy", Some(&docs));
    assert_eq!(sb.get(q)["result"], "permit");
    let (_, a) = sb.send(
        "PUT",
        q,
        Some(&json!({ "docs": [{ "name": "testpolicy", "text": "on job::/other {{ permit create }}" }] })),
    );
    assert_eq!(a["result"], "deny");
    // Outside the subset: unknown with a reason, never permit.
    let (_, a) = sb.send(
        "PUT",
        q,
        Some(&json!({ "docs": [{ "name": "x", "text": "on job::/ { if (name fqnMatch \"*\") { deny all } }" }] })),
    );
    assert_eq!(a["result"], "unknown", "{a}");
    assert!(a["reason"].as_str().unwrap().contains("fqnMatch"), "{a}");
}
