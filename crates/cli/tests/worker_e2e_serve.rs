//! End to end over real sockets and processes: `gabbro serve` (with its
//! embedded worker executing runs in child processes), `gabbro deploy` of
//! the example project, webhooks, and the API — on SQLite and PostgreSQL.
//! A good request runs normalise → tag batch to `success` with both steps,
//! their dataclips and the job's logs; a bad one routes the failure along
//! the on-failure edge; a crashing workflow ends `crashed` while runs on the
//! same worker still succeed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_gabbro");

struct Serve {
    child: Child,
    port: u16,
    dir: PathBuf,
    token: String,
    pg_db: Option<String>,
    db_url: String,
}

const PG_KEY: &str = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn pg_admin_url() -> String {
    std::env::var("GABBRO_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

async fn create_pg_db() -> (String, String) {
    use sqlx::Connection;
    let admin = pg_admin_url();
    let name = format!(
        "gabbro_e2e_{}",
        std::process::id() as u64 * 1000 + rand_suffix()
    );
    let mut c = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL reachable (set GABBRO_TEST_PG)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut c)
        .await
        .expect("create database");
    let url = match admin.rfind('/') {
        Some(i) => format!("{}/{name}", &admin[..i]),
        None => panic!("bad GABBRO_TEST_PG"),
    };
    (name, url)
}

async fn drop_pg_db(name: &str) {
    use sqlx::Connection;
    if let Ok(mut c) = sqlx::PgConnection::connect(&pg_admin_url()).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut c)
        .await;
    }
}

/// Unique within the process (a counter), varied across runs (the clock).
fn rand_suffix() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_micros() % 100))
        .unwrap_or(0);
    t * 10 + n % 10
}

impl Serve {
    async fn start(postgres: bool, worker_capacity: u32) -> Serve {
        let dir = std::env::temp_dir().join(format!(
            "gabbro-e2e-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--worker-capacity")
            .arg(worker_capacity.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let mut pg_db = None;
        let mut db_url = String::new();
        if postgres {
            let (name, url) = create_pg_db().await;
            cmd.arg("--db")
                .arg(&url)
                .arg("--encryption-key")
                .arg(PG_KEY);
            pg_db = Some(name);
            db_url = url;
        }
        let child = cmd.spawn().expect("spawn gabbro serve");
        let mut s = Serve {
            child,
            port,
            dir,
            token: String::new(),
            pg_db,
            db_url,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = s.http("GET", "/health", None) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "gabbro serve did not become healthy"
            );
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("gabbro serve exited: {status}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        s.token = std::fs::read_to_string(s.dir.join("admin.token"))
            .expect("admin.token")
            .trim()
            .to_string();
        s
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A bare HTTP/1.1 request (Connection: close); (status, body).
    fn http(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.token,
            body.len()
        );
        s.write_all(req.as_bytes())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).to_string();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        Ok((status, body))
    }

    fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.http("GET", path, None).expect("GET");
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    fn deploy(&self, file: &Path) -> String {
        let out = Command::new(BIN)
            .arg("deploy")
            .arg(file)
            .arg("--server")
            .arg(self.base())
            .arg("--token")
            .arg(&self.token)
            .output()
            .expect("gabbro deploy");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "deploy failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn webhook(&self, path: &str, body: Value) -> String {
        let (status, text) = self.http("POST", path, Some(&body)).expect("POST");
        assert_eq!(status, 200, "webhook {path}: {text}");
        let v: Value = serde_json::from_str(&text).expect("json");
        v["work_order_id"]
            .as_str()
            .expect("work_order_id")
            .to_string()
    }

    /// The work order's first run once it is final.
    fn finished_run(&self, work_order_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let wo = self.get_json(&format!("/api/work_orders/{work_order_id}"));
            let wo = wo.get("data").cloned().unwrap_or(wo);
            if let Some(run_id) = wo["runs"][0]["id"].as_str() {
                let run = self.get_json(&format!("/api/runs/{run_id}"));
                let run = run.get("data").cloned().unwrap_or(run);
                let state = run["state"].as_str().unwrap_or_default();
                if !["available", "claimed", "started"].contains(&state) {
                    return run;
                }
            }
            assert!(
                Instant::now() < deadline,
                "work order {work_order_id} did not finish: {wo}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn dataclip(&self, id: &str) -> Value {
        let v = self.get_json(&format!("/api/dataclips/{id}"));
        match v.get("data") {
            Some(d) if v.as_object().is_some_and(|o| o.len() == 1) => d.clone(),
            _ => v,
        }
    }

    fn job_ids(&self) -> Vec<(String, String)> {
        let projects = self.get_json("/api/projects");
        let list = projects.get("data").cloned().unwrap_or(projects);
        let mut out = Vec::new();
        for p in list.as_array().cloned().unwrap_or_default() {
            let pid = p["id"].as_str().unwrap_or_default();
            let wfs = self.get_json(&format!("/api/projects/{pid}/workflows"));
            let wfs = wfs.get("data").cloned().unwrap_or(wfs);
            for w in wfs.as_array().cloned().unwrap_or_default() {
                let wid = w["id"].as_str().unwrap_or_default();
                let wf = self.get_json(&format!("/api/workflows/{wid}"));
                let wf = wf.get("data").cloned().unwrap_or(wf);
                for j in wf["jobs"].as_array().cloned().unwrap_or_default() {
                    out.push((
                        j["name"].as_str().unwrap_or_default().to_string(),
                        j["id"].as_str().unwrap_or_default().to_string(),
                    ));
                }
            }
        }
        out
    }
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].strip_prefix("\r\n").unwrap_or(&tail[n..]);
    }
    out
}

fn example_project() -> PathBuf {
    std::env::var("GABBRO_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
        .join("examples/project.yaml")
}

const CRASHING: &str = r#"name: crash-lab
workflows:
  crashes:
    name: crashes
    jobs:
      boom:
        name: boom
        adaptor: '@openfn/language-common@latest'
        body: |
          fn(state => { notDefinedAnywhere(); return state; });
    triggers:
      webhook:
        type: webhook
        enabled: true
        custom_path: crash-lab-boom
    edges:
      webhook->boom:
        source_trigger: webhook
        target_job: boom
        condition_type: always
        enabled: true
"#;

const WITH_CREDENTIAL: &str = r#"name: vault-lab
credentials:
  partner-api:
    name: partner api
    owner: admin@localhost
workflows:
  uses-secret:
    name: uses secret
    jobs:
      call:
        name: call
        adaptor: '@openfn/language-common@latest'
        credential: partner-api
        body: |
          fn(state => {
            console.log('secret is', state.configuration.password);
            return { ...state, data: { len: state.configuration.password.length, user: state.configuration.username } };
          });
    triggers:
      webhook:
        type: webhook
        enabled: true
        custom_path: vault-lab-call
    edges:
      webhook->call:
        source_trigger: webhook
        target_job: call
        condition_type: always
        enabled: true
"#;

const PASSWORD: &str = "s3cr3t-Horse-Battery";

/// Sets the deployed credential's body, as the API/UI would, straight in
/// the database (deploy carries no secrets).
async fn set_credential_body(serve: &Serve, db_url: &str, key: &str) {
    let store = gabbro_store::Store::connect(db_url).await.expect("store");
    let vault = gabbro_store::Vault::new(key).expect("vault");
    let body = vault
        .encrypt_json(&json!({"username": "partner-user", "password": PASSWORD}))
        .expect("encrypt");
    let n = store
        .write(move |mut c| {
            Box::pin(async move {
                Ok(gabbro_store::exec!(
                    c,
                    "UPDATE credentials SET body_encrypted = $1 WHERE name = 'partner api'",
                    body
                )?)
            })
        })
        .await
        .expect("update credential");
    assert_eq!(n, 1, "the deployed credential exists");
    store.close().await;
    let _ = serve;
}

async fn end_to_end(postgres: bool) {
    let serve = Serve::start(postgres, 3).await;
    let printed = serve.deploy(&example_project());
    assert!(
        printed.contains("/i/clinic-register"),
        "deploy prints the webhook: {printed}"
    );
    let jobs = serve.job_ids();
    let job = |name: &str| {
        jobs.iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| id.clone())
            .unwrap_or_else(|| panic!("job {name} in {jobs:?}"))
    };

    // Success along normalise → tag batch.
    let good = json!({"patients": [{"id": 1, "given": "Ann", "family": "Lee", "age": "30"}]});
    let wo = serve.webhook("/i/clinic-register", good.clone());
    let run = serve.finished_run(&wo);
    assert_eq!(run["state"], "success", "{run}");
    assert_eq!(run["error_type"], Value::Null);
    let steps = run["steps"].as_array().expect("steps").clone();
    assert_eq!(steps.len(), 2, "{run}");
    assert_eq!(steps[0]["job_id"], json!(job("normalise")));
    assert_eq!(steps[1]["job_id"], json!(job("tag batch")));
    assert!(steps.iter().all(|s| s["exit_reason"] == "success"), "{run}");
    let input = serve.dataclip(steps[0]["input_dataclip_id"].as_str().expect("input"));
    assert_eq!(input, good, "the webhook body is the first step's input");
    let out = serve.dataclip(steps[1]["output_dataclip_id"].as_str().expect("output"));
    let data = out.get("data").cloned().unwrap_or(out.clone());
    assert_eq!(data["batch"], "batch-1", "{out}");
    assert_eq!(data["patients"][0]["name"], "Ann Lee", "{out}");
    assert_eq!(
        steps[1]["input_dataclip_id"],
        steps[0]["output_dataclip_id"]
    );
    let run_id = run["id"].as_str().expect("run id").to_string();
    let logs = serve.get_json(&format!("/api/runs/{run_id}/log_lines"));
    assert!(logs.to_string().len() > 20, "the run has log lines: {logs}");

    // Failure routed along the on-failure edge.
    let wo = serve.webhook("/i/clinic-register", json!({"patients": 5}));
    let run = serve.finished_run(&wo);
    let steps = run["steps"].as_array().expect("steps").clone();
    assert_eq!(steps.len(), 2, "{run}");
    assert_eq!(steps[0]["job_id"], json!(job("normalise")));
    assert_eq!(steps[0]["exit_reason"], "fail", "{run}");
    assert_eq!(steps[1]["job_id"], json!(job("report failure")));
    assert_eq!(steps[1]["exit_reason"], "success", "{run}");
    // As OpenFn: a failure handled by a downstream step leaves the run a success.
    assert_eq!(run["state"], "success", "{run}");

    // A crash ends `crashed`, and the same worker goes on to succeed.
    let lab = serve.dir.join("crash-lab.yaml");
    std::fs::write(&lab, CRASHING).expect("write yaml");
    serve.deploy(&lab);
    let crash_wo = serve.webhook("/i/crash-lab-boom", json!({}));
    let ok_wo = serve.webhook("/i/clinic-register", good);
    let crashed = serve.finished_run(&crash_wo);
    assert_eq!(crashed["state"], "crashed", "{crashed}");
    assert_eq!(crashed["steps"][0]["exit_reason"], "crash", "{crashed}");
    let ok = serve.finished_run(&ok_wo);
    assert_eq!(ok["state"], "success", "{ok}");

    // Credentials reach the job and never appear in its logs.
    let lab = serve.dir.join("vault-lab.yaml");
    std::fs::write(&lab, WITH_CREDENTIAL).expect("write yaml");
    serve.deploy(&lab);
    let (db_url, key) = match &serve.pg_db {
        Some(_) => (serve.db_url.clone(), PG_KEY.to_string()),
        None => (
            format!("sqlite://{}", serve.dir.join("gabbro.db").display()),
            std::fs::read_to_string(serve.dir.join("encryption.key"))
                .expect("key")
                .trim()
                .to_string(),
        ),
    };
    set_credential_body(&serve, &db_url, &key).await;
    let wo = serve.webhook("/i/vault-lab-call", json!({}));
    let run = serve.finished_run(&wo);
    assert_eq!(run["state"], "success", "{run}");
    let out = serve.dataclip(
        run["steps"][0]["output_dataclip_id"]
            .as_str()
            .expect("output"),
    );
    let data = out.get("data").cloned().unwrap_or(out.clone());
    assert_eq!(
        data["len"],
        json!(PASSWORD.len()),
        "the job saw the password: {out}"
    );
    assert_eq!(data["user"], "partner-user", "{out}");
    let run_id = run["id"].as_str().expect("run id");
    let (_, logs) = serve
        .http("GET", &format!("/api/runs/{run_id}/log_lines"), None)
        .expect("logs");
    // Masked by the worker ([REDACTED]) or by the orchestrator (***).
    assert!(
        logs.contains("secret is "),
        "the job's log line is stored: {logs}"
    );
    assert!(
        !logs.contains(PASSWORD),
        "the secret never reaches the log: {logs}"
    );

    let pg = serve.pg_db.clone();
    drop(serve);
    if let Some(name) = pg {
        drop_pg_db(&name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_to_success_failure_routing_and_crash_on_sqlite() {
    end_to_end(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_to_success_failure_routing_and_crash_on_postgres() {
    end_to_end(true).await;
}

const SLOW: &str = r#"name: slow-lab
workflows:
  spins:
    name: spins
    jobs:
      spin:
        name: spin
        adaptor: '@openfn/language-common@latest'
        body: |
          fn(state => { while (true) {} });
    triggers:
      webhook:
        type: webhook
        enabled: true
        custom_path: slow-lab-spin
    edges:
      webhook->spin:
        source_trigger: webhook
        target_job: spin
        condition_type: always
        enabled: true
"#;

/// A run past its timeout ends `killed` (TimeoutError) while another run
/// on the same standalone `gabbro worker` process succeeds.
async fn timeout_beside_success(postgres: bool) {
    let serve = Serve::start(postgres, 0).await;
    serve.deploy(&example_project());
    let lab = serve.dir.join("slow-lab.yaml");
    std::fs::write(&lab, SLOW).expect("write yaml");
    serve.deploy(&lab);
    let slow_wo = serve.webhook("/i/slow-lab-spin", json!({}));
    let ok_wo = serve.webhook(
        "/i/clinic-register",
        json!({"patients": [{"id": 2, "given": "Bo", "family": "Ng", "age": "41"}]}),
    );
    // A short timeout frozen on the slow run (as a project setting would).
    let db_url = match &serve.pg_db {
        Some(_) => serve.db_url.clone(),
        None => format!("sqlite://{}", serve.dir.join("gabbro.db").display()),
    };
    let store = gabbro_store::Store::connect(&db_url).await.expect("store");
    let wo = slow_wo.clone();
    let n = store
        .write(move |mut c| {
            Box::pin(async move {
                Ok(gabbro_store::exec!(
                    c,
                    "UPDATE runs SET options = '{\"run_timeout_ms\":1500}' WHERE work_order_id = $1",
                    wo
                )?)
            })
        })
        .await
        .expect("set timeout");
    assert_eq!(n, 1);
    store.close().await;

    let secret = std::fs::read_to_string(serve.dir.join("worker.secret")).expect("secret");
    let mut worker = Command::new(BIN)
        .arg("worker")
        .arg("--lightning")
        .arg(format!("ws://127.0.0.1:{}/worker", serve.port))
        .arg("--secret")
        .arg(secret.trim())
        .arg("--capacity")
        .arg("2")
        .arg("--journal-dir")
        .arg(serve.dir.join("journal"))
        .arg("--port")
        .arg("0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn gabbro worker");
    let ok = serve.finished_run(&ok_wo);
    let slow = serve.finished_run(&slow_wo);
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(ok["state"], "success", "{ok}");
    assert_eq!(slow["state"], "killed", "{slow}");
    assert_eq!(slow["error_type"], "TimeoutError", "{slow}");
    let pg = serve.pg_db.clone();
    drop(serve);
    if let Some(name) = pg {
        drop_pg_db(&name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_run_is_killed_while_another_succeeds_on_sqlite() {
    timeout_beside_success(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_run_is_killed_while_another_succeeds_on_postgres() {
    timeout_beside_success(true).await;
}
