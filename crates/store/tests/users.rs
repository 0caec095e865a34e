//! Users, API tokens and the first admin, on both databases.

use gabbro_store::testing::TestDb;
use gabbro_store::{ADMIN_EMAIL, Backend};

async fn tokens_and_bootstrap(backend: Backend) {
    let db = TestDb::new(backend).await.expect("test database");
    let s = &db.store;
    let first = s
        .bootstrap_admin("$argon2id$fake")
        .await
        .unwrap()
        .expect("created");
    assert!(
        s.bootstrap_admin("$argon2id$other")
            .await
            .unwrap()
            .is_none(),
        "only once"
    );
    let admin = s
        .user_for_token(&first.token)
        .await
        .unwrap()
        .expect("token works");
    assert_eq!(admin.email, ADMIN_EMAIL);
    assert_eq!(admin.role, "superuser");
    assert!(admin.must_change_password);
    assert!(s.user_for_token("gab_wrong").await.unwrap().is_none());

    let uid = s.create_user("u@x", "$h", "user", false).await.unwrap();
    let t = s.create_api_token(&uid).await.unwrap();
    assert_eq!(s.user_for_token(&t.token).await.unwrap().unwrap().id, uid);
    assert!(
        s.create_user("u@x", "$h", "user", false)
            .await
            .unwrap_err()
            .is_unique_violation()
    );
    assert!(s.set_password_hash(&admin.id, "$new").await.unwrap());
    let a = s.user_by_email(ADMIN_EMAIL).await.unwrap().unwrap();
    assert_eq!(a.password_hash, "$new");
    assert!(!a.must_change_password);
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_tokens_and_bootstrap() {
    tokens_and_bootstrap(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_tokens_and_bootstrap() {
    tokens_and_bootstrap(Backend::Postgres).await;
}
