//! The UI and the store agree on formats: credentials encrypted by either
//! decrypt with the other, and the UI reaches the database the store opened
//! through `UiState::connect_lazy`.

mod common;

use base64::Engine;

#[test]
fn credentials_encrypted_by_the_ui_decrypt_with_the_store_vault_and_back() {
    let key = [9u8; 32];
    let store =
        gabbro_store::Vault::new(&base64::engine::general_purpose::STANDARD.encode(key)).unwrap();
    let from_ui = gabbro_ui::vault::encrypt(&key, b"{\"a\":1}").unwrap();
    assert_eq!(store.decrypt(&from_ui).unwrap(), b"{\"a\":1}");
    let from_store = store.encrypt(b"{\"b\":2}").unwrap();
    assert_eq!(
        gabbro_ui::vault::decrypt(&key, &from_store).unwrap(),
        b"{\"b\":2}"
    );
}

#[tokio::test]
async fn the_ui_signs_in_a_user_the_store_created_in_a_database_the_store_opened() {
    let dir = std::env::temp_dir().join(format!(
        "gabbro-ui-compat-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("gabbro.db").display());
    let store = gabbro_store::Store::connect(&url).await.unwrap();
    let hash = gabbro_ui::hash_password("bootstrap-password").unwrap();
    store
        .bootstrap_admin(&hash)
        .await
        .unwrap()
        .expect("an admin on an empty database");
    let state = gabbro_ui::UiState::connect_lazy(&url, Some([1u8; 32])).unwrap();
    let app = gabbro_ui::router(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut c = common::Client::new(addr);
    let page = c.sign_in("admin@localhost", "bootstrap-password").await;
    assert_eq!(
        (page.status, page.location.as_deref()),
        (303, Some("/projects"))
    );
    assert_eq!(
        c.get("/projects").await.location.as_deref(),
        Some("/password"),
        "the first admin must change the password"
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
