//! PostgreSQL for a harness run: a fresh database (created and dropped by
//! the harness) and restarts of the local cluster.

use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::Connection as _;

/// The default admin URL (as the tests use); `GABBRO_TEST_PG` overrides it.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for this run.
pub struct Database {
    admin_url: String,
    name: String,
    pub url: String,
}

impl Database {
    /// Creates `gabbro_fault_<uuid>` next to `admin_url`'s database.
    pub async fn create(admin_url: &str) -> anyhow::Result<Database> {
        let name = format!("gabbro_fault_{}", uuid::Uuid::new_v4().simple());
        let mut c = sqlx::PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("cannot reach PostgreSQL at {admin_url}"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        let _ = c.close().await;
        Ok(Database {
            url: sibling_url(admin_url, &name),
            admin_url: admin_url.to_string(),
            name,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database, disconnecting whoever still uses it.
    pub async fn drop_database(self) -> anyhow::Result<()> {
        let mut c = sqlx::PgConnection::connect(&self.admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut c)
        .await?;
        let _ = c.close().await;
        Ok(())
    }
}

/// The URL of database `name` on the same server as `admin_url`.
pub fn sibling_url(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin_url, None),
    };
    let base = match base.rfind('/') {
        Some(i) if i > base.find("://").map(|s| s + 2).unwrap_or(0) => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Restarts the local cluster (`pg_ctlcluster <version> main restart`) and
/// waits until it accepts connections again; returns how long it was away.
pub async fn restart_cluster(admin_url: &str) -> anyhow::Result<Duration> {
    let version = std::fs::read_dir("/etc/postgresql")
        .context("no /etc/postgresql: cannot restart PostgreSQL")?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .max()
        .context("no cluster under /etc/postgresql")?;
    let started = Instant::now();
    let out = tokio::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart"])
        .output()
        .await
        .context("cannot run pg_ctlcluster")?;
    anyhow::ensure!(
        out.status.success(),
        "pg_ctlcluster restart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_ready(admin_url, Duration::from_secs(60)).await?;
    Ok(started.elapsed())
}

/// Waits until PostgreSQL answers a connection.
pub async fn wait_ready(admin_url: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match sqlx::PgConnection::connect(admin_url).await {
            Ok(c) => {
                let _ = c.close().await;
                return Ok(());
            }
            Err(e) if Instant::now() > deadline => {
                return Err(e).context("PostgreSQL did not come back");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sibling_url_replaces_the_database_name_and_keeps_the_query() {
        assert_eq!(
            sibling_url("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            sibling_url("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(sibling_url("postgres://h:5432", "x"), "postgres://h:5432/x");
    }

    #[tokio::test]
    async fn create_then_drop_a_database() {
        let admin = std::env::var("GABBRO_TEST_PG").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into());
        let db = Database::create(&admin)
            .await
            .expect("PostgreSQL must be reachable for this test");
        let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(one, 1);
        let _ = c.close().await;
        let name = db.name().to_string();
        db.drop_database().await.unwrap();
        let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(left, 0);
    }
}
