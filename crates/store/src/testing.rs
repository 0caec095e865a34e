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
    pub async fn cleanup(self) {
        self.store.close().await;
        if let Some((admin, name)) = self.pg
            && let Ok(mut c) = sqlx::PgConnection::connect(&admin).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut c)
            .await;
            let _ = c.close().await;
        }
        if let Some(dir) = self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
