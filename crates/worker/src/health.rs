//! `GET /livez` and `GET /` (as OpenFn's worker): 200 with a small JSON
//! status. A hand-written HTTP/1.1 responder; nothing else is served.

use std::sync::Arc;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::worker::Shared;

/// Serve health on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let n = match tokio::time::timeout(
                std::time::Duration::from_secs(5),
                stream.read(&mut buf),
            )
            .await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = match path {
                "/" | "/livez" => {
                    let state = shared.socket.state();
                    let body = json!({
                        "status": "ok",
                        "worker_id": shared.config.worker_id,
                        "connected": state.connected,
                        "capacity": shared.config.capacity,
                        "active_runs": shared.active_runs(),
                        "idle_children": shared.pool.idle_count(),
                        "journal": {
                            "used_bytes": shared.journal.used_bytes(),
                            "max_bytes": shared.journal.max_bytes(),
                            "full": shared.journal.is_full(),
                        },
                    });
                    ("200 OK", body.to_string())
                }
                _ => ("404 Not Found", json!({"error": "not found"}).to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
