//! Test harness: a real database (SQLite file or a fresh PostgreSQL
//! database) migrated with the store's migrations, seeded with a project
//! whose names, logs and dataclips carry HTML, served over a real socket.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use gabbro_ui::{UiState, hash_password};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

pub const ADMIN_PASSWORD: &str = "first-admin-password";
pub const EDITOR_PASSWORD: &str = "editor-password-123";
pub const VIEWER_PASSWORD: &str = "viewer-password-123";
pub const OUTSIDER_PASSWORD: &str = "outsider-password-1";
/// Markup seeded into names, logs and dataclips; must never reach a page raw.
pub const EVIL: &str = "<script>alert('x')</script>";

pub fn pg_url() -> String {
    std::env::var("GABBRO_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A migrated database for one test; PostgreSQL ones are dropped by [`TestDb::cleanup`].
pub struct TestDb {
    pub pool: AnyPool,
    pub url: String,
    pg_admin: Option<(AnyPool, String)>,
    _dir: Option<TempDir>,
}

pub struct TempDir(pub std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique() -> String {
    format!(
        "{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .get(..8)
            .unwrap_or("x")
    )
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        sqlx::any::install_default_drivers();
        let dir = std::env::temp_dir().join(format!("gabbro-ui-test-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("gabbro.db").display());
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .unwrap();
        gabbro_store::migrator().run(&pool).await.unwrap();
        TestDb {
            pool,
            url,
            pg_admin: None,
            _dir: Some(TempDir(dir)),
        }
    }

    /// Fails (never skips) when PostgreSQL is unreachable.
    pub async fn postgres() -> TestDb {
        sqlx::any::install_default_drivers();
        let admin_url = pg_url();
        let admin = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} is unreachable: {e}"));
        let name = format!("gabbro_ui_{}", unique());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b.to_string())
            .unwrap_or(admin_url.clone());
        let url = format!("{base}/{name}");
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .unwrap();
        gabbro_store::migrator().run(&pool).await.unwrap();
        TestDb {
            pool,
            url,
            pg_admin: Some((admin, name)),
            _dir: None,
        }
    }

    pub async fn cleanup(self) {
        self.pool.close().await;
        if let Some((admin, name)) = self.pg_admin {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&admin)
            .await;
        }
    }
}

/// Ids of everything [`seed`] made.
#[derive(Debug, Clone)]
pub struct Seed {
    pub project_id: String,
    pub other_project_id: String,
    pub workflow_id: String,
    pub webhook_trigger_id: String,
    pub cron_trigger_id: String,
    pub job1_id: String,
    pub job2_id: String,
    pub failed_run_id: String,
    pub failed_work_order_id: String,
    pub step1_id: String,
    pub step2_id: String,
    pub active_run_id: String,
    pub big_dataclip_id: String,
    pub input_dataclip_id: String,
    pub credential_id: String,
}

async fn exec(pool: &AnyPool, sql: &'static str, args: Vec<Arg>) {
    let mut q = sqlx::query(sql);
    for a in args {
        q = match a {
            Arg::S(s) => q.bind(s),
            Arg::N(n) => q.bind(n),
            Arg::B(b) => q.bind(b),
            Arg::Null => q.bind(None::<String>),
        };
    }
    q.execute(pool)
        .await
        .unwrap_or_else(|e| panic!("seed failed: {e}\n{sql}"));
}

pub enum Arg {
    S(String),
    N(i64),
    B(bool),
    Null,
}
fn s(v: &str) -> Arg {
    Arg::S(v.to_string())
}
fn n(v: i64) -> Arg {
    Arg::N(v)
}
fn id() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub async fn add_user(
    pool: &AnyPool,
    email: &str,
    password: &str,
    role: &str,
    must_change: bool,
) -> String {
    let uid = id();
    exec(
        pool,
        "INSERT INTO users (id, email, password_hash, role, must_change_password, inserted_at, updated_at) VALUES ($1, $2, $3, $4, $5, 1, 1)",
        vec![s(&uid), s(email), s(&hash_password(password).unwrap()), s(role), Arg::B(must_change)],
    )
    .await;
    uid
}

pub async fn add_member(pool: &AnyPool, project_id: &str, user_id: &str, role: &str) {
    exec(
        pool,
        "INSERT INTO project_users (project_id, user_id, role) VALUES ($1, $2, $3)",
        vec![s(project_id), s(user_id), s(role)],
    )
    .await;
}

pub async fn add_log(
    pool: &AnyPool,
    run_id: &str,
    step_id: Option<&str>,
    level: &str,
    message: &str,
    ts: i64,
) {
    exec(
        pool,
        "INSERT INTO log_lines (id, run_id, step_id, level, source, message, timestamp) VALUES ($1, $2, $3, $4, 'JOB', $5, $6)",
        vec![s(&id()), s(run_id), step_id.map(s).unwrap_or(Arg::Null), s(level), s(message), n(ts)],
    )
    .await;
}

/// Users: admin@localhost (superuser, must change password), editor@example.org,
/// viewer@example.org (roles in the project), outsider@example.org (no role).
pub async fn seed(pool: &AnyPool, key: &[u8; 32]) -> Seed {
    let now = gabbro_ui::time::now_us();
    let admin = add_user(pool, "admin@localhost", ADMIN_PASSWORD, "superuser", true).await;
    let editor = add_user(pool, "editor@example.org", EDITOR_PASSWORD, "user", false).await;
    let viewer = add_user(pool, "viewer@example.org", VIEWER_PASSWORD, "user", false).await;
    let _outsider = add_user(
        pool,
        "outsider@example.org",
        OUTSIDER_PASSWORD,
        "user",
        false,
    )
    .await;
    let _ = admin;
    let project_id = id();
    let other_project_id = id();
    exec(pool, "INSERT INTO projects (id, name, description, inserted_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
        vec![s(&project_id), s(&format!("Health sync {EVIL}")), s("Patients from the clinic system to DHIS2"), n(now)]).await;
    exec(pool, "INSERT INTO projects (id, name, inserted_at, updated_at) VALUES ($1, 'Other project', $2, $2)",
        vec![s(&other_project_id), n(now)]).await;
    add_member(pool, &project_id, &editor, "editor").await;
    add_member(pool, &project_id, &viewer, "viewer").await;
    let workflow_id = id();
    exec(pool, "INSERT INTO workflows (id, project_id, name, lock_version, inserted_at, updated_at) VALUES ($1, $2, $3, 1, $4, $4)",
        vec![s(&workflow_id), s(&project_id), s("Patients to DHIS2"), n(now)]).await;
    let credential_id = id();
    let enc = gabbro_ui::vault::encrypt(
        key,
        br#"{"username":"dhis","password":"very-secret-value"}"#,
    )
    .unwrap();
    exec(pool, "INSERT INTO credentials (id, project_id, name, schema, body_encrypted, inserted_at, updated_at) VALUES ($1, $2, 'DHIS2 login', 'http', $3, $4, $4)",
        vec![s(&credential_id), s(&project_id), s(&enc), n(now)]).await;
    let job1_id = id();
    let job2_id = id();
    exec(pool, "INSERT INTO jobs (id, workflow_id, name, body, adaptor, inserted_at, updated_at) VALUES ($1, $2, $3, $4, '@openfn/language-common@latest', $5, $5)",
        vec![s(&job1_id), s(&workflow_id), s(&format!("Fetch patients {EVIL}")), s("fn(state => state);"), n(now)]).await;
    exec(pool, "INSERT INTO jobs (id, workflow_id, name, body, adaptor, credential_id, inserted_at, updated_at) VALUES ($1, $2, 'Send to DHIS2', $3, '@openfn/language-http@7', $4, $5, $5)",
        vec![s(&job2_id), s(&workflow_id), s("post('/api/events', state => state.data);"), s(&credential_id), n(now + 1)]).await;
    let webhook_trigger_id = id();
    let cron_trigger_id = id();
    exec(pool, "INSERT INTO triggers (id, workflow_id, type, enabled, custom_path, inserted_at, updated_at) VALUES ($1, $2, 'webhook', $3, 'patients', $4, $4)",
        vec![s(&webhook_trigger_id), s(&workflow_id), Arg::B(true), n(now)]).await;
    exec(pool, "INSERT INTO triggers (id, workflow_id, type, enabled, cron_expression, inserted_at, updated_at) VALUES ($1, $2, 'cron', $3, '0 9 * * MON-FRI', $4, $4)",
        vec![s(&cron_trigger_id), s(&workflow_id), Arg::B(false), n(now + 1)]).await;
    exec(pool, "INSERT INTO edges (id, workflow_id, source_trigger_id, target_job_id, condition_type, enabled, inserted_at, updated_at) VALUES ($1, $2, $3, $4, 'always', $5, $6, $6)",
        vec![s(&id()), s(&workflow_id), s(&webhook_trigger_id), s(&job1_id), Arg::B(true), n(now)]).await;
    exec(pool, "INSERT INTO edges (id, workflow_id, source_trigger_id, target_job_id, condition_type, enabled, inserted_at, updated_at) VALUES ($1, $2, $3, $4, 'always', $5, $6, $6)",
        vec![s(&id()), s(&workflow_id), s(&cron_trigger_id), s(&job1_id), Arg::B(true), n(now + 1)]).await;
    exec(pool, "INSERT INTO edges (id, workflow_id, source_job_id, target_job_id, condition_type, enabled, inserted_at, updated_at) VALUES ($1, $2, $3, $4, 'on_job_success', $5, $6, $6)",
        vec![s(&id()), s(&workflow_id), s(&job1_id), s(&job2_id), Arg::B(true), n(now + 2)]).await;
    let snapshot_id = id();
    exec(pool, "INSERT INTO workflow_snapshots (id, workflow_id, lock_version, body, inserted_at) VALUES ($1, $2, 1, '{}', $3)",
        vec![s(&snapshot_id), s(&workflow_id), n(now)]).await;

    // Dataclips: a webhook input with markup in it, a step output, and a big one.
    let input_dataclip_id = id();
    let input = format!(
        r#"{{"patient":{{"name":"Ada {}","id":42}},"visits":[1,2,3]}}"#,
        EVIL.replace('\'', "\\u0027")
    );
    exec(pool, "INSERT INTO dataclips (id, project_id, type, body, request, inserted_at) VALUES ($1, $2, 'http_request', $3, '{}', $4)",
        vec![s(&input_dataclip_id), s(&project_id), s(&input), n(now)]).await;
    let out1 = id();
    exec(pool, "INSERT INTO dataclips (id, project_id, type, body, inserted_at) VALUES ($1, $2, 'step_result', $3, $4)",
        vec![s(&out1), s(&project_id), s(r#"{"data":{"patients":[{"name":"Ada"}]},"references":[]}"#), n(now)]).await;
    let big_dataclip_id = id();
    let mut big = String::from(r#"{"data":{"rows":["#);
    while big.len() < 300_000 {
        big.push_str(r#"{"k":"0123456789abcdefghij"},"#);
    }
    big.push_str(r#"{"k":"end-of-big-dataclip"}]}}"#);
    exec(pool, "INSERT INTO dataclips (id, project_id, type, body, inserted_at) VALUES ($1, $2, 'step_result', $3, $4)",
        vec![s(&big_dataclip_id), s(&project_id), s(&big), n(now)]).await;

    // Work orders: three finished ones, oldest first, and one running.
    let mut wos = Vec::new();
    for (i, state) in ["success", "success", "failed"].iter().enumerate() {
        let wo = id();
        exec(pool, "INSERT INTO work_orders (id, workflow_id, snapshot_id, trigger_id, dataclip_id, state, last_activity, inserted_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7)",
            vec![s(&wo), s(&workflow_id), s(&snapshot_id), s(&webhook_trigger_id), s(&input_dataclip_id), s(state), n(now - 3_000_000 + i as i64 * 1000)]).await;
        let run = id();
        exec(pool, "INSERT INTO runs (id, work_order_id, workflow_id, project_id, snapshot_id, starting_trigger_id, dataclip_id, state, error_type, inserted_at, started_at, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11)",
            vec![s(&run), s(&wo), s(&workflow_id), s(&project_id), s(&snapshot_id), s(&webhook_trigger_id), s(&input_dataclip_id), s(state),
                 if *state == "failed" { s("JobError") } else { Arg::Null }, n(now - 3_000_000 + i as i64 * 1000), n(now - 2_000_000)]).await;
        wos.push((wo, run));
    }
    let (failed_work_order_id, failed_run_id) = wos[2].clone();
    let step1_id = id();
    let step2_id = id();
    exec(pool, "INSERT INTO steps (id, job_id, snapshot_id, input_dataclip_id, output_dataclip_id, exit_reason, started_at, finished_at, inserted_at) VALUES ($1, $2, $3, $4, $5, 'success', $6, $7, $6)",
        vec![s(&step1_id), s(&job1_id), s(&snapshot_id), s(&input_dataclip_id), s(&big_dataclip_id), n(now - 2_900_000), n(now - 2_600_000)]).await;
    exec(pool, "INSERT INTO steps (id, job_id, snapshot_id, input_dataclip_id, exit_reason, error_type, error_message, started_at, finished_at, inserted_at) VALUES ($1, $2, $3, $4, 'fail', 'TypeError', $5, $6, $7, $6)",
        vec![s(&step2_id), s(&job2_id), s(&snapshot_id), s(&out1), s(&format!("Cannot read properties of undefined {EVIL}")), n(now - 2_500_000), n(now - 2_100_000)]).await;
    exec(
        pool,
        "INSERT INTO run_steps (run_id, step_id, position) VALUES ($1, $2, 0)",
        vec![s(&failed_run_id), s(&step1_id)],
    )
    .await;
    exec(
        pool,
        "INSERT INTO run_steps (run_id, step_id, position) VALUES ($1, $2, 1)",
        vec![s(&failed_run_id), s(&step2_id)],
    )
    .await;
    add_log(
        pool,
        &failed_run_id,
        Some(&step1_id),
        "info",
        "Fetched 1 patient",
        now - 2_800_000,
    )
    .await;
    add_log(
        pool,
        &failed_run_id,
        Some(&step2_id),
        "debug",
        "POST /api/events",
        now - 2_400_000,
    )
    .await;
    add_log(
        pool,
        &failed_run_id,
        Some(&step2_id),
        "error",
        &format!("TypeError: boom {EVIL}"),
        now - 2_200_000,
    )
    .await;

    let active_wo = id();
    exec(pool, "INSERT INTO work_orders (id, workflow_id, snapshot_id, trigger_id, dataclip_id, state, last_activity, inserted_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'running', $6, $6, $6)",
        vec![s(&active_wo), s(&workflow_id), s(&snapshot_id), s(&webhook_trigger_id), s(&input_dataclip_id), n(now)]).await;
    let active_run_id = id();
    exec(pool, "INSERT INTO runs (id, work_order_id, workflow_id, project_id, snapshot_id, starting_trigger_id, dataclip_id, state, worker_name, inserted_at, claimed_at, started_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'started', 'worker-1', $8, $8, $8)",
        vec![s(&active_run_id), s(&active_wo), s(&workflow_id), s(&project_id), s(&snapshot_id), s(&webhook_trigger_id), s(&input_dataclip_id), n(now)]).await;

    Seed {
        project_id,
        other_project_id,
        workflow_id,
        webhook_trigger_id,
        cron_trigger_id,
        job1_id,
        job2_id,
        failed_run_id,
        failed_work_order_id,
        step1_id,
        step2_id,
        active_run_id,
        big_dataclip_id,
        input_dataclip_id,
        credential_id,
    }
}

pub const KEY: [u8; 32] = [42u8; 32];

/// Serves the UI on 127.0.0.1 with an ephemeral port.
pub async fn serve(pool: AnyPool) -> SocketAddr {
    let state = UiState::new(pool, Some(KEY));
    let app = gabbro_ui::router(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// A browser-like client over a real socket: keeps cookies by hand, follows
/// no redirects (tests look at them).
pub struct Client {
    pub base: String,
    http: reqwest::Client,
    pub cookies: Vec<(String, String)>,
}

pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

impl Page {
    /// The value of the first `name="_csrf" value="…"` in the page.
    pub fn csrf(&self) -> String {
        let marker = "name=\"_csrf\" value=\"";
        let i = self.body.find(marker).expect("page has a CSRF field") + marker.len();
        self.body[i..].split('"').next().unwrap().to_string()
    }
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, resp: reqwest::Response) -> Page {
        for v in resp.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let (kv, _) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = kv.split_once('=').unwrap();
            self.cookies.retain(|(name, _)| name != k);
            if !val.is_empty() {
                self.cookies.push((k.to_string(), val.to_string()));
            }
        }
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        Page {
            status,
            location,
            body: resp.text().await.unwrap_or_default(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.finish(resp).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        self.finish(resp).await
    }

    /// Signs in through the form; returns the POST's answer.
    pub async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        let form = self.get("/sign-in").await;
        let csrf = form.csrf();
        self.post(
            "/sign-in",
            &[("_csrf", &csrf), ("email", email), ("password", password)],
        )
        .await
    }
}
