//! The orchestrator's HTTP side end to end, over a real socket, on SQLite and
//! on PostgreSQL (a fresh database per test): deploy the shared example
//! project, post to its webhook, read the work order, run and dataclip back;
//! and the bad-input answers.

use std::path::PathBuf;
use std::time::Duration;

use gabbro_server::{ServeArgs, prepare, run};
use gabbro_store::Backend;
use gabbro_store::testing::TestDb;
use serde_json::{Value, json};

fn shared_dir() -> PathBuf {
    match std::env::var_os("GABBRO_SHARED_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

struct TestServer {
    url: String,
    token: String,
    data_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    db: Option<TestDb>,
    http: reqwest::Client,
}

impl TestServer {
    async fn start(backend: Backend) -> TestServer {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let db = TestDb::new(backend)
            .await
            .expect("test database (PostgreSQL must be reachable)");
        let data_dir =
            std::env::temp_dir().join(format!("gabbro-serve-test-{}", uuid::Uuid::new_v4()));
        let args = ServeArgs {
            data_dir: data_dir.clone(),
            listen: "127.0.0.1:0".parse().unwrap(),
            db: Some(db.url.clone()),
            worker_capacity: 0,
            worker_secret: None,
            encryption_key: Some("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into()),
            max_dataclip_size_mb: 1,
            webhook_memory_mb: 64,
            cron: false,
            log_json: false,
            janitor: Default::default(),
        };
        let server = prepare(&args).await.expect("server prepared");
        let url = format!("http://{}", server.listener.local_addr().unwrap());
        let token = std::fs::read_to_string(data_dir.join("admin.token"))
            .expect("admin.token written before serving");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(server, async move {
            let _ = rx.await;
        }));
        TestServer {
            url,
            token: token.trim().to_string(),
            data_dir,
            stop: Some(tx),
            task: Some(task),
            db: Some(db),
            http: reqwest::Client::new(),
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        if let Some(db) = self.db.take() {
            db.cleanup().await;
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn deploy_example(&self) -> i32 {
        gabbro_deploy::deploy(gabbro_deploy::DeployArgs {
            file: shared_dir().join("examples/project.yaml"),
            server: gabbro_deploy::ServerArgs {
                server: self.url.clone(),
                token: Some(self.token.clone()),
            },
        })
        .await
        .expect("deploy ran")
    }
}

async fn deploy_post_and_read_back(backend: Backend) {
    let s = TestServer::start(backend).await;
    let r = s
        .http
        .get(format!("{}/health", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    assert_eq!(s.deploy_example().await, 0);
    let (status, projects) = s.get("/api/projects").await;
    assert_eq!(status, 200);
    assert_eq!(projects["data"][0]["name"], "clinic-sync");
    let project_id = projects["data"][0]["id"].as_str().unwrap().to_string();
    let (_, before) = s.get(&format!("/api/provision/{project_id}")).await;

    // The same file again changes nothing: same ids, no new snapshot.
    assert_eq!(s.deploy_example().await, 0);
    let (_, after) = s.get(&format!("/api/provision/{project_id}")).await;
    assert_eq!(
        before, after,
        "a second deploy of the same file changed the project"
    );
    assert_eq!(after["data"]["workflows"][0]["lock_version"], 1);

    // Post to the webhook by its custom path.
    let payload =
        json!({"patients": [{"id": 1, "given": "Ada", "family": "Lovelace", "age": "36"}]});
    let r = s
        .http
        .post(format!("{}/i/clinic-register?source=test", s.url))
        .header("x-api-key", "not-stored")
        .header("x-partner", "kept")
        .json(&payload)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let wo_header = r
        .headers()
        .get("x-meta-work-order-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let run_header = r
        .headers()
        .get("x-meta-run-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = r.json().await.unwrap();
    let wo_id = body["work_order_id"].as_str().unwrap().to_string();
    assert_eq!(
        body.as_object().unwrap().len(),
        1,
        "the reply is {{work_order_id}} only, never wrapped: {body}"
    );
    assert_eq!(wo_id, wo_header);

    let (status, wo) = s.get(&format!("/api/work_orders/{wo_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(wo["state"], "pending");
    assert_eq!(wo["runs"][0]["id"], run_header.as_str());
    assert_eq!(wo["runs"][0]["state"], "available");

    let (status, run) = s.get(&format!("/api/runs/{run_header}")).await;
    assert_eq!(status, 200);
    assert_eq!(run["state"], "available");
    assert_eq!(run["error_type"], Value::Null);
    assert_eq!(run["steps"], json!([]));

    let dataclip_id = wo["dataclip_id"].as_str().unwrap();
    let (status, clip) = s.get(&format!("/api/dataclips/{dataclip_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(clip, payload, "the input dataclip is the request body");

    // The request part is stored without secrets.
    let mut c = s.db.as_ref().unwrap().store.read().await.unwrap();
    let mut conn = c.reborrow();
    let request: Option<String> = gabbro_store::scalar!(
        conn,
        String,
        "SELECT request FROM dataclips WHERE id = $1",
        dataclip_id
    )
    .unwrap();
    let request: Value = serde_json::from_str(&request.unwrap()).unwrap();
    assert_eq!(request["method"], "POST");
    assert_eq!(request["query_params"]["source"], "test");
    assert_eq!(request["headers"]["x-partner"], "kept");
    assert!(
        request["headers"].get("x-api-key").is_none(),
        "x-api-key must not be stored: {request}"
    );
    drop(c);

    // Listing with filters.
    let (status, list) = s.get("/api/work_orders?state=pending&limit=10").await;
    assert_eq!(status, 200);
    assert_eq!(list["data"][0]["id"], wo_id.as_str());
    let (_, none) = s.get("/api/work_orders?state=success").await;
    assert_eq!(none["data"], json!([]));

    // Idempotency-Key: the same work order again.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = s
            .http
            .post(format!("{}/i/clinic-register", s.url))
            .header("idempotency-key", "abc-1")
            .json(&payload)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        ids.push(r.json::<Value>().await.unwrap()["work_order_id"].clone());
    }
    assert_eq!(ids[0], ids[1]);
    assert_ne!(ids[0], json!(wo_id));

    // Changing a job makes a new snapshot (lock_version 2).
    let mut doc = after["data"].clone();
    doc["workflows"][0]["jobs"][0]["body"] = json!("fn(state => state);\n");
    let (status, _) = s.post_json("/api/provision", &doc).await;
    assert_eq!(status, 201);
    let (_, changed) = s.get(&format!("/api/provision/{project_id}")).await;
    assert_eq!(changed["data"]["workflows"][0]["lock_version"], 2);
    s.stop().await;
}

async fn bad_input_is_refused_clearly(backend: Backend) {
    let s = TestServer::start(backend).await;
    assert_eq!(s.deploy_example().await, 0);
    let hook = format!("{}/i/clinic-register", s.url);

    let r = s
        .http
        .post(&hook)
        .header("content-type", "application/json")
        .body("{\"a\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "malformed JSON");
    let r = s
        .http
        .post(&hook)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415, "wrong content type");
    let big = format!("{{\"x\": \"{}\"}}", "a".repeat(1024 * 1024 + 10));
    let r = s
        .http
        .post(&hook)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413, "oversized body");
    let r = s
        .http
        .post(format!("{}/i/no-such-hook", s.url))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404, "unknown webhook");

    // Unknown ids and bad tokens.
    let (status, _) = s
        .get(&format!("/api/work_orders/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(status, 404);
    let (status, _) = s.get(&format!("/api/runs/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(status, 404);
    let r = s
        .http
        .get(format!("{}/api/projects", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "no token");
    let r = s
        .http
        .get(format!("{}/api/projects", s.url))
        .bearer_auth("gbt_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "unknown token");

    // Invalid documents: 422 naming the field.
    let (_, projects) = s.get("/api/projects").await;
    let id = projects["data"][0]["id"].as_str().unwrap().to_string();
    let (_, current) = s.get(&format!("/api/provision/{id}")).await;
    let mut doc = current["data"].clone();
    doc["workflows"][0]["triggers"][0]["webhook_reply"] = json!("after_completion");
    let (status, body) = s.post_json("/api/provision", &doc).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["errors"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.ends_with("webhook_reply")),
        "{body}"
    );

    let mut doc = current["data"].clone();
    doc["workflows"][0]["edges"][1]["target_job_id"] = json!(uuid::Uuid::new_v4().to_string());
    let (status, body) = s.post_json("/api/provision", &doc).await;
    assert_eq!(status, 422);
    assert!(
        body["errors"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.ends_with("target_job_id")),
        "{body}"
    );

    // Another project may not take this one's custom path.
    let other = json!({
        "id": uuid::Uuid::new_v4().to_string(), "name": "other",
        "workflows": [{"id": uuid::Uuid::new_v4().to_string(), "name": "w",
            "jobs": [], "edges": [],
            "triggers": [{"id": uuid::Uuid::new_v4().to_string(), "type": "webhook", "custom_path": "clinic-register"}]}]
    });
    let (status, body) = s.post_json("/api/provision", &other).await;
    assert_eq!(status, 422);
    assert!(
        body["errors"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.ends_with("custom_path")),
        "{body}"
    );

    let r = s
        .http
        .post(format!("{}/api/provision", s.url))
        .bearer_auth(&s.token)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // A disabled trigger answers 403 trigger_disabled.
    let mut doc = current["data"].clone();
    doc["workflows"][0]["triggers"][0]["enabled"] = json!(false);
    let (status, _) = s.post_json("/api/provision", &doc).await;
    assert_eq!(status, 201);
    let r = s.http.post(&hook).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "trigger_disabled"
    );
    s.stop().await;
}

async fn pull_writes_the_project_back(backend: Backend) {
    let s = TestServer::start(backend).await;
    assert_eq!(s.deploy_example().await, 0);
    let out = s.data_dir.join("pulled.yaml");
    let code = gabbro_deploy::pull(gabbro_deploy::PullArgs {
        server: gabbro_deploy::ServerArgs {
            server: s.url.clone(),
            token: Some(s.token.clone()),
        },
        project: Some("clinic-sync".into()),
        output: Some(out.clone()),
    })
    .await
    .unwrap();
    assert_eq!(code, 0);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("custom_path: clinic-register"), "{text}");
    let pulled = gabbro_deploy::spec::parse_project_yaml(&text, None).unwrap();
    let original = gabbro_deploy::spec::parse_project_yaml(
        &std::fs::read_to_string(shared_dir().join("examples/project.yaml")).unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(pulled, original);
    s.stop().await;
}

async fn metrics_and_openapi_answer(backend: Backend) {
    let s = TestServer::start(backend).await;
    assert_eq!(s.deploy_example().await, 0);
    let r = s
        .http
        .post(format!("{}/i/clinic-register", s.url))
        .json(&json!({"a": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("gabbro_runs{state=\"available\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("gabbro_webhook_duration_seconds_count 1"),
        "{text}"
    );
    let r = s
        .http
        .get(format!("{}/api/openapi.json", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let doc: Value = r.json().await.unwrap();
    assert!(doc["paths"]["/i/{id}"]["post"].is_object());
    s.stop().await;
}

async fn redeploy_removes_what_the_file_no_longer_lists(backend: Backend) {
    let s = TestServer::start(backend).await;
    assert_eq!(s.deploy_example().await, 0);
    let example = std::fs::read_to_string(shared_dir().join("examples/project.yaml")).unwrap();
    // Drop the report-failure job and its edge.
    let trimmed: String = {
        let mut out = Vec::new();
        let mut skip = false;
        for line in example.lines() {
            let t = line.trim_start();
            let indent = line.len() - t.len();
            if t.starts_with("report-failure:") || t.starts_with("normalise->report-failure:") {
                skip = true;
                continue;
            }
            if skip && indent <= 6 && !t.is_empty() {
                skip = false;
            }
            if !skip {
                out.push(line);
            }
        }
        out.join("\n")
    };
    let file = s.data_dir.join("trimmed.yaml");
    std::fs::write(&file, trimmed).unwrap();
    let code = gabbro_deploy::deploy(gabbro_deploy::DeployArgs {
        file,
        server: gabbro_deploy::ServerArgs {
            server: s.url.clone(),
            token: Some(s.token.clone()),
        },
    })
    .await
    .unwrap();
    assert_eq!(code, 0);
    let (_, projects) = s.get("/api/projects").await;
    let id = projects["data"][0]["id"].as_str().unwrap().to_string();
    let (_, doc) = s.get(&format!("/api/provision/{id}")).await;
    let wf = &doc["data"]["workflows"][0];
    let names: Vec<&str> = wf["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["normalise", "tag batch"]);
    assert_eq!(wf["edges"].as_array().unwrap().len(), 2);
    assert_eq!(wf["lock_version"], 2, "removing a job is a new snapshot");
    s.stop().await;
}

async fn webhook_api_key_auth(backend: Backend) {
    let s = TestServer::start(backend).await;
    assert_eq!(s.deploy_example().await, 0);
    // Webhook auth is set outside provisioning (as in Lightning); set it here.
    let key: [u8; 32] = std::array::from_fn(|i| i as u8);
    let secret = gabbro_server::vault::encrypt(&key, b"s3cret").unwrap();
    s.db.as_ref()
        .unwrap()
        .store
        .write(move |mut c| {
            Box::pin(async move {
                gabbro_store::exec!(c, "UPDATE triggers SET auth_type = 'api', auth_secret_encrypted = $1 WHERE custom_path = 'clinic-register'", &secret)?;
                Ok(())
            })
        })
        .await
        .unwrap();
    let hook = format!("{}/i/clinic-register", s.url);
    let r = s.http.post(&hook).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "no credentials");
    let r = s
        .http
        .post(&hook)
        .header("x-api-key", "wrong")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        404,
        "wrong credentials hide the webhook"
    );
    let r = s
        .http
        .post(&hook)
        .header("x-api-key", "s3cret")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    s.stop().await;
}

/// Roles on the API: a viewer of a project may read it but not provision it;
/// an editor may.
async fn viewer_may_read_but_not_provision(backend: Backend) {
    let s = TestServer::start(backend).await;
    assert_eq!(s.deploy_example().await, 0);
    let (status, projects) = s.get("/api/projects").await;
    assert_eq!(status, 200);
    let project_id = projects["data"][0]["id"].as_str().unwrap().to_string();
    let (status, doc) = s.get(&format!("/api/provision/{project_id}")).await;
    assert_eq!(status, 200);
    let doc = if doc.get("data").is_some() {
        doc["data"].clone()
    } else {
        doc
    };
    let store = &s.db.as_ref().unwrap().store;
    let mut tokens = Vec::new();
    for role in ["viewer", "editor"] {
        let user = store
            .create_user(&format!("{role}@example.org"), "x", "user", false)
            .await
            .unwrap();
        let (pid, uid, r) = (project_id.clone(), user.clone(), role.to_string());
        store
            .write(move |mut c| {
                Box::pin(async move {
                    gabbro_store::exec!(
                        c,
                        "INSERT INTO project_users (project_id, user_id, role) VALUES ($1, $2, $3)",
                        &pid,
                        &uid,
                        &r
                    )?;
                    Ok(())
                })
            })
            .await
            .unwrap();
        tokens.push(store.create_api_token(&user).await.unwrap().token);
    }
    let call = |token: String, method: &str| {
        let req = match method {
            "get" => s.http.get(format!("{}/api/projects/{project_id}", s.url)),
            _ => s.http.post(format!("{}/api/provision", s.url)).json(&doc),
        };
        req.bearer_auth(token).send()
    };
    let viewer_read = call(tokens[0].clone(), "get").await.unwrap();
    assert_eq!(viewer_read.status().as_u16(), 200, "a viewer reads");
    let viewer_write = call(tokens[0].clone(), "post").await.unwrap();
    assert_eq!(
        viewer_write.status().as_u16(),
        403,
        "a viewer may not provision"
    );
    let editor_write = call(tokens[1].clone(), "post").await.unwrap();
    assert!(
        editor_write.status().is_success(),
        "an editor may provision: {}",
        editor_write.status()
    );
    s.stop().await;
}

#[tokio::test]
async fn sqlite_viewer_may_read_but_not_provision() {
    viewer_may_read_but_not_provision(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_viewer_may_read_but_not_provision() {
    viewer_may_read_but_not_provision(Backend::Postgres).await;
}

#[tokio::test]
async fn sqlite_redeploy_removes_what_the_file_no_longer_lists() {
    redeploy_removes_what_the_file_no_longer_lists(Backend::Sqlite).await;
}
#[tokio::test]
async fn postgres_redeploy_removes_what_the_file_no_longer_lists() {
    redeploy_removes_what_the_file_no_longer_lists(Backend::Postgres).await;
}
#[tokio::test]
async fn sqlite_webhook_api_key_auth() {
    webhook_api_key_auth(Backend::Sqlite).await;
}
#[tokio::test]
async fn postgres_webhook_api_key_auth() {
    webhook_api_key_auth(Backend::Postgres).await;
}

#[tokio::test]
async fn sqlite_deploy_post_and_read_back() {
    deploy_post_and_read_back(Backend::Sqlite).await;
}
#[tokio::test]
async fn postgres_deploy_post_and_read_back() {
    deploy_post_and_read_back(Backend::Postgres).await;
}
#[tokio::test]
async fn sqlite_bad_input_is_refused_clearly() {
    bad_input_is_refused_clearly(Backend::Sqlite).await;
}
#[tokio::test]
async fn postgres_bad_input_is_refused_clearly() {
    bad_input_is_refused_clearly(Backend::Postgres).await;
}
#[tokio::test]
async fn sqlite_pull_writes_the_project_back() {
    pull_writes_the_project_back(Backend::Sqlite).await;
}
#[tokio::test]
async fn postgres_pull_writes_the_project_back() {
    pull_writes_the_project_back(Backend::Postgres).await;
}
#[tokio::test]
async fn sqlite_metrics_and_openapi_answer() {
    metrics_and_openapi_answer(Backend::Sqlite).await;
}
#[tokio::test]
async fn postgres_metrics_and_openapi_answer() {
    metrics_and_openapi_answer(Backend::Postgres).await;
}
