//! The load: N webhooks posted with bounded concurrency. A request counts
//! as accepted only when it was answered 200 with a `work_order_id`; one
//! that got no answer (the orchestrator was down, or died mid-request) or a
//! 5xx/429 is sent again until it is answered or its deadline passes. Every
//! attempt carries the same `Idempotency-Key`, so a retry whose first answer
//! was lost in flight does not make a second work order; if the server
//! ignored the key, the extra work order would be counted, not hidden.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::Semaphore;

/// What the load produced.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// `(request number, work_order_id)` of every request answered 200.
    pub accepted: Vec<(usize, String)>,
    /// Requests never answered 200 within their deadline, with the last error.
    pub gave_up: Vec<(usize, String)>,
    /// Attempts that got no answer or a retryable status.
    pub retries: usize,
}

/// Settings of one load.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Full webhook URL.
    pub url: String,
    pub requests: usize,
    pub concurrency: usize,
    /// Per-request deadline across all its retries.
    pub request_deadline: Duration,
    /// Timeout of one attempt.
    pub attempt_timeout: Duration,
}

/// Posts `{"n": i}` for i in 0..requests. `accepted` counts the 200s as they
/// come, so fault injection can follow progress.
pub async fn post_all(cfg: &LoadConfig, accepted: Arc<AtomicUsize>) -> anyhow::Result<LoadResult> {
    // reqwest is built without a TLS provider of its own (workspace choice).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(cfg.attempt_timeout)
        .pool_max_idle_per_host(cfg.concurrency)
        .build()
        .context("cannot build the HTTP client")?;
    let slots = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(cfg.requests);
    for n in 0..cfg.requests {
        let permit = slots.clone().acquire_owned().await?;
        let client = client.clone();
        let cfg = cfg.clone();
        let accepted = accepted.clone();
        tasks.push(tokio::spawn(async move {
            let out = post_one(&client, &cfg, n).await;
            if out.0.is_ok() {
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
            out
        }));
    }
    let mut result = LoadResult::default();
    for t in tasks {
        let (outcome, retries) = t.await?;
        result.retries += retries;
        match outcome {
            Ok((n, id)) => result.accepted.push((n, id)),
            Err((n, e)) => result.gave_up.push((n, e)),
        }
    }
    result.accepted.sort();
    Ok(result)
}

type Outcome = Result<(usize, String), (usize, String)>;

async fn post_one(client: &reqwest::Client, cfg: &LoadConfig, n: usize) -> (Outcome, usize) {
    let deadline = Instant::now() + cfg.request_deadline;
    let body = serde_json::json!({ "n": n });
    let mut retries = 0;
    let mut pause = Duration::from_millis(100);
    loop {
        // The same key on every attempt: a retry whose first attempt was
        // committed but unanswered finds the same work order (gabbro extension).
        let request = client
            .post(&cfg.url)
            .header("idempotency-key", format!("gabbro-fault-{n}"))
            .json(&body);
        let last_error = match request.send().await {
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await;
                match (status.as_u16(), text) {
                    (200, Ok(t)) => match work_order_id(&t) {
                        Some(id) => return (Ok((n, id)), retries),
                        // A 200 without an id is a broken promise, not a retry case.
                        None => {
                            return (Err((n, format!("200 without work_order_id: {t}"))), retries);
                        }
                    },
                    // The answer was cut off: unanswered, so retried.
                    (200, Err(e)) => format!("200 but the body was cut: {e}"),
                    (429 | 500..=599, t) => format!("{status}: {}", t.unwrap_or_default()),
                    (_, t) => {
                        return (
                            Err((n, format!("{status}: {}", t.unwrap_or_default()))),
                            retries,
                        );
                    }
                }
            }
            Err(e) => format!("no answer: {e}"),
        };
        if Instant::now() + pause > deadline {
            return (Err((n, last_error)), retries);
        }
        retries += 1;
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// `{"work_order_id": "…"}` → the id.
pub fn work_order_id(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get("work_order_id")?.as_str().map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that drops the first `drop_first` connections without an
    /// answer, answers 503 to the next `busy`, then 200 with an id that
    /// echoes the request number.
    async fn flaky_server(drop_first: usize, busy: usize) -> String {
        let l = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let mut seen = 0usize;
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                seen += 1;
                let nth = seen;
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    // Read headers and the small JSON body.
                    loop {
                        let n = match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        got.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&got);
                        if let Some(i) = text.find("\r\n\r\n")
                            && text[i + 4..].contains('}')
                        {
                            break;
                        }
                    }
                    if nth <= drop_first {
                        return;
                    }
                    let text = String::from_utf8_lossy(&got).to_string();
                    let (status, body) = if nth <= drop_first + busy {
                        ("503 Service Unavailable", "{}".to_string())
                    } else {
                        let n: serde_json::Value =
                            serde_json::from_str(&text[text.find("\r\n\r\n").unwrap() + 4..])
                                .unwrap();
                        ("200 OK", format!("{{\"work_order_id\":\"wo-{}\"}}", n["n"]))
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        format!("http://{addr}/i/hook")
    }

    fn cfg(url: String, requests: usize) -> LoadConfig {
        LoadConfig {
            url,
            requests,
            concurrency: 2,
            request_deadline: Duration::from_secs(20),
            attempt_timeout: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn unanswered_and_503_requests_are_retried_until_answered_200() {
        let url = flaky_server(3, 2).await;
        let counter = Arc::new(AtomicUsize::new(0));
        let r = post_all(&cfg(url, 6), counter.clone()).await.unwrap();
        assert!(r.gave_up.is_empty(), "{:?}", r.gave_up);
        assert_eq!(r.accepted.len(), 6);
        assert_eq!(counter.load(Ordering::Relaxed), 6);
        assert_eq!(r.accepted[4], (4, "wo-4".to_string()));
        assert!(r.retries >= 5, "retries {}", r.retries);
    }

    #[tokio::test]
    async fn a_request_that_is_never_answered_is_not_accepted() {
        let dead = TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let mut c = cfg(format!("http://{dead}/i/hook"), 1);
        c.request_deadline = Duration::from_millis(500);
        let r = post_all(&c, Arc::new(AtomicUsize::new(0))).await.unwrap();
        assert!(r.accepted.is_empty());
        assert_eq!(r.gave_up.len(), 1);
        assert!(r.gave_up[0].1.contains("no answer"), "{}", r.gave_up[0].1);
    }

    #[test]
    fn work_order_id_reads_the_unwrapped_answer() {
        assert_eq!(
            work_order_id(r#"{"work_order_id":"abc"}"#),
            Some("abc".into())
        );
        assert_eq!(work_order_id(r#"{"data":{"work_order_id":"abc"}}"#), None);
        assert_eq!(work_order_id("not json"), None);
    }
}
