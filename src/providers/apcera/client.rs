//! Typed calls to the Apcera REST API (seed 003). Bodies stay JSON values so that a full-object
//! update can carry back every field exactly as it was read.

use crate::http::{HttpClient, Idempotent};
use crate::providers::{ApiError, Connection};
use reqwest::Method;
use serde_json::{Value, json};

pub struct Client {
    http: HttpClient,
    /// The auth host, which serves the policy API (the API host unless `auth_url` says).
    auth: HttpClient,
}

impl Client {
    /// How many times a transient failure may be tried again (capstan.yaml's `retry`).
    pub fn max_attempts(&self) -> u32 {
        self.http.retry.max_attempts
    }
}

fn enc(s: &str) -> String {
    // Query values and path segments: FQNs contain ':' and '/', which must be escaped.
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn array(v: Option<Value>) -> Vec<Value> {
    match v {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    }
}

impl Client {
    pub fn new(conn: &Connection) -> anyhow::Result<Self> {
        let auth = match &conn.auth_url {
            Some(url) => HttpClient::new(&Connection { url: url.clone(), ..conn.clone() })?,
            None => HttpClient::new(conn)?,
        };
        Ok(Client { http: HttpClient::new(conn)?, auth })
    }

    async fn get(&self, path: &str) -> Result<Option<Value>, ApiError> {
        self.http.call(Method::GET, path, None, Idempotent::Yes).await
    }

    /// Every job, each handed to `each` as it is decoded from the answer's bytes (a cluster may
    /// have tens of thousands): only what comparing a job needs is built (`job::ListedJob`).
    pub async fn each_job(&self, mut each: impl FnMut(super::listed::ListedJob)) -> Result<(), ApiError> {
        self.http.list_each("/v1/jobs", |e: super::listed::ListEntry| e.0.into_iter().for_each(&mut each)).await
    }

    /// The job with this FQN, if any, decoded as `each_job` decodes each (`GET /v1/jobs?FQN=`).
    pub async fn each_job_named(&self, fqn: &str, mut each: impl FnMut(super::listed::ListedJob)) -> Result<(), ApiError> {
        let path = format!("/v1/jobs?FQN={}", enc(fqn));
        self.http.list_each(&path, |e: super::listed::ListEntry| e.0.into_iter().for_each(&mut each)).await
    }

    /// The job with this FQN, if any (`GET /v1/jobs?FQN=`).
    pub async fn find_job(&self, fqn: &str) -> Result<Option<Value>, ApiError> {
        let jobs = array(self.get(&format!("/v1/jobs?FQN={}", enc(fqn))).await?);
        Ok(jobs.into_iter().find(|j| j.get("fqn").and_then(Value::as_str) == Some(fqn)))
    }

    pub async fn get_job(&self, uuid: &str) -> Result<Value, ApiError> {
        let path = format!("/v1/jobs/{uuid}");
        self.get(&path).await?.ok_or_else(|| ApiError::other("GET", &path, "empty answer"))
    }

    /// `POST /v1/jobs`. Not retried once it may have reached the platform: the caller looks
    /// for the job before trying again.
    pub async fn create_job(&self, job: &Value) -> Result<Value, ApiError> {
        self.http
            .call(Method::POST, "/v1/jobs", Some(job), Idempotent::No)
            .await?
            .ok_or_else(|| ApiError::other("POST", "/v1/jobs", "empty answer"))
    }

    /// `PUT /v1/jobs/{uuid}` with the whole job object.
    pub async fn update_job(&self, uuid: &str, job: &Value) -> Result<Value, ApiError> {
        let path = format!("/v1/jobs/{uuid}");
        // A lost answer to a PUT carrying version_id is settled by the stale-version check.
        self.http
            .call(Method::PUT, &path, Some(job), Idempotent::Yes)
            .await?
            .ok_or_else(|| ApiError::other("PUT", &path, "empty answer"))
    }

    pub async fn delete_job(&self, uuid: &str) -> Result<(), ApiError> {
        self.delete(&format!("/v1/jobs/{uuid}")).await
    }

    /// A job's log drains (`GET /v1/jobs/{uuid}/logs/drains`).
    pub async fn list_drains(&self, job_uuid: &str) -> Result<Vec<Value>, ApiError> {
        Ok(array(self.get(&format!("/v1/jobs/{job_uuid}/logs/drains")).await?))
    }

    /// Add a log drain to a job. Not retried once it may have reached the platform: the caller
    /// reads the drains again before trying once more.
    pub async fn create_drain(&self, job_uuid: &str, drain: &Value) -> Result<(), ApiError> {
        let path = format!("/v1/jobs/{job_uuid}/logs/drains");
        self.http.call(Method::POST, &path, Some(drain), Idempotent::No).await.map(|_| ())
    }

    /// Health of several jobs in one call (`GET /v1/jobs/health?ids=a,b`).
    pub async fn job_health(&self, uuids: &[&str]) -> Result<Vec<Value>, ApiError> {
        Ok(array(self.get(&format!("/v1/jobs/health?ids={}", uuids.join(","))).await?))
    }

    pub async fn list_services(&self) -> Result<Vec<Value>, ApiError> {
        Ok(array(self.get("/v1/services").await?))
    }

    pub async fn list_networks(&self) -> Result<Vec<Value>, ApiError> {
        Ok(array(self.get("/v1/networks").await?))
    }

    pub async fn list_packages(&self) -> Result<Vec<Value>, ApiError> {
        Ok(array(self.get("/v1/packages").await?))
    }

    /// Every staging pipeline (`GET /v1/stagingpipelines`).
    pub async fn list_pipelines(&self) -> Result<Vec<Value>, ApiError> {
        Ok(array(self.get("/v1/stagingpipelines").await?))
    }

    /// Read a staging pipeline (an array of one, seed L4029, or the object), change it, and
    /// `PUT` it back whole with the `version_id` read: a stale one is refused by the platform
    /// and reported, never retried over someone else's change.
    pub async fn update_pipeline(&self, uuid: &str, change: impl FnOnce(&mut Value)) -> Result<(), ApiError> {
        let path = format!("/v1/stagingpipelines/{uuid}");
        let read = self.get(&path).await?;
        let mut p = match read {
            Some(Value::Array(mut a)) if a.len() == 1 => a.remove(0),
            Some(o @ Value::Object(_)) => o,
            _ => return Err(ApiError::other("GET", &path, "answer is not a staging pipeline")),
        };
        change(&mut p);
        self.http.call(Method::PUT, &path, Some(&p), Idempotent::Yes).await.map(|_| ())
    }

    /// Every semantic pipeline rule (`GET /v1/rules`).
    pub async fn list_rules(&self) -> Result<Vec<Value>, ApiError> {
        Ok(array(self.get("/v1/rules").await?))
    }

    pub async fn list_providers(&self) -> Result<Vec<Value>, ApiError> {
        Ok(array(self.get("/v1/providers").await?))
    }

    /// `POST` of a new object to a collection (`/v1/services`, `/v1/networks`, `/v1/providers`).
    pub async fn create(&self, collection: &str, body: &Value) -> Result<Value, ApiError> {
        self.http
            .call(Method::POST, collection, Some(body), Idempotent::No)
            .await?
            .ok_or_else(|| ApiError::other("POST", collection, "empty answer"))
    }

    /// `DELETE`; a resource already gone counts as deleted.
    pub async fn delete(&self, path: &str) -> Result<(), ApiError> {
        match self.http.call(Method::DELETE, path, None, Idempotent::Yes).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Join a job to a network (`POST /v1/jobs/{uuid}/networks`). Sent again after a lost
    /// answer: a second join is refused (409), and the caller reads back whether the first
    /// one took.
    pub async fn join_network(&self, job_uuid: &str, job_fqn: &str, network_fqn: &str) -> Result<(), ApiError> {
        let body = json!({ "job_fqn": job_fqn, "network_fqn": network_fqn });
        self.http.call(Method::POST, &format!("/v1/jobs/{job_uuid}/networks"), Some(&body), Idempotent::Yes).await?;
        Ok(())
    }

    /// Leave a network; a 404 is the caller's to settle by reading back.
    pub async fn leave_network(&self, job_uuid: &str, network_uuid: &str) -> Result<(), ApiError> {
        let path = format!("/v1/jobs/{job_uuid}/networks/{network_uuid}");
        self.http.call(Method::DELETE, &path, None, Idempotent::Yes).await.map(|_| ())
    }

    /// Every policy document's name and version (`GET /v1/policy` on the auth host).
    pub async fn list_policy(&self) -> Result<Vec<Value>, ApiError> {
        let v = self.auth.call(Method::GET, "/v1/policy", None, Idempotent::Yes).await?;
        Ok(array(v.and_then(|mut v| v.get_mut("docs").map(Value::take))))
    }

    /// One policy document with its text and version; None when there is none of that name.
    pub async fn get_policy(&self, name: &str) -> Result<Option<Value>, ApiError> {
        match self.auth.call(Method::GET, &format!("/v1/policy/{}", enc(name)), None, Idempotent::Yes).await {
            Err(e) if e.is_not_found() => Ok(None),
            other => other,
        }
    }

    /// `PUT /v1/policy`: every document at once, or none. Not sent again after a lost answer
    /// (a second PUT with the same `for_version` would be refused): the caller reads back.
    pub async fn put_policy(&self, docs: &[Value]) -> Result<(), ApiError> {
        let body = json!({ "docs": docs });
        self.auth.call(Method::PUT, "/v1/policy", Some(&body), Idempotent::No).await.map(|_| ())
    }

    /// `DELETE /v1/policy?doc=a&doc=b`.
    pub async fn delete_policy(&self, names: &[&str]) -> Result<(), ApiError> {
        let query: Vec<String> = names.iter().map(|n| format!("doc={}", enc(n))).collect();
        let path = format!("/v1/policy?{}", query.join("&"));
        self.auth.call(Method::DELETE, &path, None, Idempotent::Yes).await.map(|_| ())
    }

    /// A policy simulation (`GET /v1/sim`, or `PUT /v1/sim` with documents that replace or join
    /// the cluster's for this answer only).
    pub async fn simulate(&self, query: &[(&str, &str)], docs: Option<&[Value]>) -> Result<Value, ApiError> {
        let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect();
        let path = format!("/v1/sim?{}", q.join("&"));
        let answer = match docs {
            Some(d) => {
                let body = json!({ "docs": d });
                self.auth.call(Method::PUT, &path, Some(&body), Idempotent::Yes).await?
            }
            None => self.auth.call(Method::GET, &path, None, Idempotent::Yes).await?,
        };
        Ok(answer.unwrap_or(Value::Null))
    }

    /// `POST /v1/bindings`, for a service binding or a job link.
    pub async fn bind(&self, body: &Value) -> Result<Option<Value>, ApiError> {
        self.http.call(Method::POST, "/v1/bindings", Some(body), Idempotent::No).await
    }

    /// `POST /v1/unbind`. A 404 ("not bound") is not taken for success here: the caller reads
    /// the job back to see whether the binding is really gone.
    pub async fn unbind(&self, job: &str, service: &str) -> Result<(), ApiError> {
        let body = json!({ "job": job, "service": service });
        self.http.call(Method::POST, "/v1/unbind", Some(&body), Idempotent::Yes).await.map(|_| ())
    }

    /// `POST /v1/unlink`; a 404 is settled by the caller, as for unbind.
    pub async fn unlink(&self, from_job: &str, to_job: &str, port: u64) -> Result<(), ApiError> {
        let body = json!({ "from_job": from_job, "to_job": to_job, "port": port });
        self.http.call(Method::POST, "/v1/unlink", Some(&body), Idempotent::Yes).await.map(|_| ())
    }
}
