//! The database abstraction on both backends: migrations, one-query macros,
//! writes through `Store::write` (group commit on SQLite), isolation of a
//! failing operation inside a batch.

use gabbro_store::testing::TestDb;
use gabbro_store::{Backend, StoreError, exec, fetch_all, now_us, scalar};

async fn insert_project(db: &TestDb, name: &str) -> Result<u64, StoreError> {
    let name = name.to_string();
    db.store
        .write(move |mut c| {
            Box::pin(async move {
                let now = now_us();
                Ok(exec!(
                    c,
                    "INSERT INTO projects (id, name, inserted_at, updated_at) VALUES ($1, $2, $3, $3)",
                    gabbro_store::new_id(),
                    name,
                    now
                )?)
            })
        })
        .await
}

async fn writes_and_reads(backend: Backend) {
    let db = TestDb::new(backend).await.expect("test database");
    assert_eq!(insert_project(&db, "a").await.unwrap(), 1);
    // A duplicate name violates the unique constraint and is rolled back alone.
    let dup = insert_project(&db, "a").await.unwrap_err();
    assert!(dup.is_unique_violation(), "{dup}");
    // Many concurrent writes: on SQLite they share group commits.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = db.store.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("p{i}");
            store
                .write(move |mut c| {
                    Box::pin(async move {
                        exec!(
                            c,
                            "INSERT INTO projects (id, name, inserted_at, updated_at) VALUES ($1, $2, 0, 0)",
                            gabbro_store::new_id(),
                            name
                        )?;
                        if i % 10 == 0 {
                            // Fails after its insert: the insert must vanish too.
                            return Err(StoreError::rejected("name", "refused"));
                        }
                        Ok(())
                    })
                })
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 180);
    let mut c = db.store.read().await.unwrap();
    let n = scalar!(c, i64, "SELECT count(*) FROM projects").unwrap();
    assert_eq!(n, Some(181));
    let names: Vec<(String,)> = fetch_all!(
        c,
        (String,),
        "SELECT name FROM projects WHERE name = $1",
        "a"
    )
    .unwrap();
    assert_eq!(names.len(), 1);
    drop(c);
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_writes_and_reads() {
    writes_and_reads(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_writes_and_reads() {
    writes_and_reads(Backend::Postgres).await;
}

#[tokio::test]
async fn bad_url_is_refused() {
    let err = gabbro_store::Store::connect("mysql://x")
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::BadUrl(_)));
}

#[tokio::test]
async fn postgres_test_database_is_dropped_even_without_cleanup() {
    use sqlx::Connection as _;
    let db = TestDb::postgres().await.expect("test database");
    let name = db.url.rsplit('/').next().unwrap().to_string();
    db.store.close().await;
    drop(db); // as when a test panics before cleanup()
    let admin = std::env::var("GABBRO_TEST_PG")
        .unwrap_or_else(|_| gabbro_store::testing::DEFAULT_TEST_PG.into());
    let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 0);
}
