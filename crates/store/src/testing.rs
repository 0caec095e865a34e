//! Fresh databases for tests: a temporary SQLite file, or a uniquely named
//! PostgreSQL database (dropped by [`TestDb::cleanup`]). PostgreSQL is at
//! `GABBRO_TEST_PG` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! if it is unreachable the test fails, never skips.

use sqlx::Connection as _;

use crate::{Backend, Result, Store};

/// The default admin URL of the test PostgreSQL.
pub const DEFAULT_TEST_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A store on a throwaway database.
pub struct TestDb {
    /// The store, migrated.
    pub store: Store,
    /// The URL the store was opened with.
    pub url: String,
    pg: Option<(String, String)>, // (admin url, database name)
    dir: Option<std::path::PathBuf>,
}

impl TestDb {
    /// A fresh store on `backend`.
    pub async fn new(backend: Backend) -> Result<TestDb> {
        match backend {
            Backend::Sqlite => TestDb::sqlite().await,
            Backend::Postgres => TestDb::postgres().await,
        }
    }

    /// A store on a new SQLite file in a temporary directory.
    pub async fn sqlite() -> Result<TestDb> {
        let dir = std::env::temp_dir().join(format!("gabbro-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).map_err(|e| crate::StoreError::Commit(e.to_string()))?;
        let url = format!("sqlite://{}", dir.join("gabbro.db").display());
        let store = Store::connect(&url).await?;
        Ok(TestDb {
            store,
            url,
            pg: None,
            dir: Some(dir),
        })
    }

    /// A store on a new PostgreSQL database named `gabbro_test_<uuid>`.
    pub async fn postgres() -> Result<TestDb> {
        let admin = std::env::var("GABBRO_TEST_PG").unwrap_or_else(|_| DEFAULT_TEST_PG.into());
        let name = format!("gabbro_test_{}", uuid::Uuid::new_v4().simple());
        let mut c = sqlx::PgConnection::connect(&admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await?;
        let _ = c.close().await;
        let base = match admin.rfind('/') {
            Some(i) if i > "postgres://".len() => &admin[..i],
            _ => admin.as_str(),
        };
        let url = format!("{base}/{name}");
        let store = Store::connect(&url).await?;
        Ok(TestDb {
            store,
            url,
            pg: Some((admin, name)),
            dir: None,
        })
    }

    /// Closes the store and removes the database.
    pub async fn cleanup(mut self) {
        self.store.close().await;
        if let Some((admin, name)) = self.pg.take() {
            drop_database(&admin, &name).await;
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for TestDb {
    /// A test that panicked before [`TestDb::cleanup`] still removes its
    /// database (on a thread of its own: `Drop` cannot await).
    fn drop(&mut self) {
        let pg = self.pg.take();
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((admin, name)) = pg {
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(drop_database(&admin, &name));
                }
            })
            .join();
        }
    }
}

async fn drop_database(admin: &str, name: &str) {
    if let Ok(mut c) = sqlx::PgConnection::connect(admin).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut c)
        .await;
        let _ = c.close().await;
    }
}

/// What [`seed_workflow`] created.
#[derive(Debug, Clone)]
pub struct Seeded {
    /// The project.
    pub project_id: String,
    /// The workflow.
    pub workflow_id: String,
    /// Its webhook trigger.
    pub trigger_id: String,
    /// Jobs `a` then `b` (edge a→b on success).
    pub job_ids: [String; 2],
    /// The workflow's snapshot.
    pub snapshot_id: String,
}

/// Limits for [`seed_workflow`].
#[derive(Debug, Clone, Default)]
pub struct SeedOptions {
    /// Project name (default: a random one).
    pub project_name: Option<String>,
    /// An existing project to add the workflow to.
    pub project_id: Option<String>,
    /// `projects.concurrency` (only for a new project).
    pub project_concurrency: Option<i32>,
    /// `workflows.concurrency`.
    pub workflow_concurrency: Option<i32>,
}

/// Writes a minimal project: a workflow with a webhook trigger, jobs `a` →
/// `b`, and its snapshot (Lightning's snapshot JSON, as provisioning writes
/// it). For tests of ingest, queue and ledger without the provisioning code.
pub async fn seed_workflow(store: &Store, opts: SeedOptions) -> Result<Seeded> {
    use crate::{exec, new_id, now_us};
    let s = Seeded {
        project_id: opts.project_id.clone().unwrap_or_else(new_id),
        workflow_id: new_id(),
        trigger_id: new_id(),
        job_ids: [new_id(), new_id()],
        snapshot_id: new_id(),
    };
    let out = s.clone();
    let new_project = opts.project_id.is_none();
    let body = serde_json::json!({
        "id": s.workflow_id, "name": "wf", "lock_version": 1,
        "jobs": [
            {"id": s.job_ids[0], "name": "a", "adaptor": "@openfn/language-common@latest", "body": "fn(s => s)", "project_credential_id": null},
            {"id": s.job_ids[1], "name": "b", "adaptor": "@openfn/language-common@latest", "body": "fn(s => s)", "project_credential_id": null},
        ],
        "triggers": [{"id": s.trigger_id, "type": "webhook", "enabled": true, "cron_expression": null, "custom_path": null}],
        "edges": [
            {"id": new_id(), "source_trigger_id": s.trigger_id, "source_job_id": null, "target_job_id": s.job_ids[0], "condition_type": "always", "enabled": true},
            {"id": new_id(), "source_trigger_id": null, "source_job_id": s.job_ids[0], "target_job_id": s.job_ids[1], "condition_type": "on_job_success", "enabled": true},
        ],
    })
    .to_string();
    store
        .write(move |mut c| {
            Box::pin(async move {
                let now = now_us();
                if new_project {
                    let name = opts.project_name.unwrap_or_else(|| format!("p-{}", new_id()));
                    exec!(c, "INSERT INTO projects (id, name, concurrency, inserted_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
                        &s.project_id, name, opts.project_concurrency, now)?;
                }
                exec!(c, "INSERT INTO workflows (id, project_id, name, concurrency, lock_version, inserted_at, updated_at) VALUES ($1, $2, $3, $4, 1, $5, $5)",
                    &s.workflow_id, &s.project_id, format!("wf-{}", s.workflow_id), opts.workflow_concurrency, now)?;
                for (i, j) in s.job_ids.iter().enumerate() {
                    exec!(c, "INSERT INTO jobs (id, workflow_id, name, body, inserted_at, updated_at) VALUES ($1, $2, $3, 'fn(s => s)', $4, $4)",
                        j, &s.workflow_id, if i == 0 { "a" } else { "b" }, now)?;
                }
                exec!(c, "INSERT INTO triggers (id, workflow_id, type, inserted_at, updated_at) VALUES ($1, $2, 'webhook', $3, $3)",
                    &s.trigger_id, &s.workflow_id, now)?;
                exec!(c, "INSERT INTO workflow_snapshots (id, workflow_id, lock_version, body, inserted_at) VALUES ($1, $2, 1, $3, $4)",
                    &s.snapshot_id, &s.workflow_id, body, now)?;
                Ok(())
            })
        })
        .await?;
    Ok(out)
}

/// One webhook request on the seeded trigger, claimed by `worker_id`;
/// returns the run's id.
pub async fn claimed_run(store: &Store, seed: &Seeded, worker_id: &str) -> Result<String> {
    let got = store
        .ingest_webhook(crate::WebhookIngest {
            trigger_id: seed.trigger_id.clone(),
            body: r#"{"x":1}"#.into(),
            request: "{}".into(),
            idempotency_key: None,
            options: None,
            queue: None,
        })
        .await?;
    let claimed = store
        .claim(crate::ClaimRequest {
            demand: 1,
            queues: gabbro_model::QueuePreference::default(),
            worker_name: None,
            worker_id: worker_id.into(),
        })
        .await?;
    match claimed.first() {
        Some(run) if run.id == got.run_id => Ok(got.run_id),
        _ => Err(crate::StoreError::rejected(
            "run",
            "the seeded run was not the one claimed",
        )),
    }
}
