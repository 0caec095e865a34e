//! How long one sqlx SQLite statement round trip takes here (the writer's
//! floor per statement): `cargo run --release -p gabbro-store --example hop_cost`.
use std::time::Instant;

use sqlx::Connection as _;

#[tokio::main]
async fn main() {
    let mut c = sqlx::SqliteConnection::connect("sqlite::memory:")
        .await
        .unwrap();
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        sqlx::query("SELECT 1").execute(&mut c).await.unwrap();
    }
    println!(
        "{:.1} µs per statement",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}
