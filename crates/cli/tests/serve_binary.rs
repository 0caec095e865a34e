//! `gabbro serve`, `gabbro deploy` and `gabbro pull` as a user runs them:
//! the real binary, real sockets, SQLite and PostgreSQL. The contract
//! (design.md §8): admin files (0600) exist before `/health` first answers
//! 200; deploy prints the webhook URL; the webhook answers
//! `{"work_order_id"}`; SIGTERM stops the server cleanly; PostgreSQL without
//! an encryption key is refused with a clear message.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn gabbro() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gabbro"))
}

fn shared_dir() -> PathBuf {
    match std::env::var_os("GABBRO_SHARED_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "gabbro-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A minimal HTTP/1.1 client: (status, body).
async fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Some((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

struct Serve {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Serve {
    async fn start(db: Option<&str>) -> Serve {
        let dir = temp_dir("serve");
        let port = free_port();
        let mut cmd = gabbro();
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--worker-capacity")
            .arg("0")
            .env("GABBRO_ENCRYPTION_KEY", KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("serve.log")).unwrap(),
            ));
        if let Some(url) = db {
            cmd.arg("--db").arg(url);
        }
        let child = cmd.spawn().expect("gabbro serve starts");
        let s = Serve { child, port, dir };
        s.wait_healthy().await;
        s
    }

    /// Polls /health; on its first 200 the admin files must already exist.
    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((200, _)) = http(self.port, "GET", "/health", &[], "").await {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no /health 200 within 60 s: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for name in ["admin.token", "admin.password"] {
            let path = self.data().join(name);
            let meta = std::fs::metadata(&path)
                .unwrap_or_else(|_| panic!("{name} missing at the first /health 200"));
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                assert_eq!(
                    meta.permissions().mode() & 0o777,
                    0o600,
                    "{name} must be 0600"
                );
            }
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(text.lines().count(), 1, "{name} holds one line");
            assert!(!text.trim().is_empty());
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.data().join("admin.token"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        gabbro()
            .args(args)
            .env("GABBRO_SERVER", format!("http://127.0.0.1:{}", self.port))
            .env("GABBRO_TOKEN", self.token())
            .current_dir(&self.dir)
            .output()
            .unwrap()
    }

    async fn get_json(&self, path: &str) -> (u16, Value) {
        let token = format!("Bearer {}", self.token());
        let (status, body) = http(self.port, "GET", path, &[("authorization", &token)], "")
            .await
            .unwrap();
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// SIGTERM, then the process must exit 0 promptly.
    fn terminate(mut self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                assert!(
                    s.success(),
                    "gabbro serve exited with {s} after SIGTERM: {}",
                    self.log()
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "gabbro serve did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(self.log().contains("stopped"), "{}", self.log());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn deploy_post_list(db: Option<&str>) {
    let s = Serve::start(db).await;
    let example = shared_dir().join("examples/project.yaml");
    let out = s.cli(&["deploy", example.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "deploy failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("http://127.0.0.1:{}/i/clinic-register", s.port)),
        "{stdout}"
    );
    // Twice: nothing changes.
    let out = s.cli(&["deploy", example.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unchanged"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let (status, body) = http(
        s.port,
        "POST",
        "/i/clinic-register",
        &[("content-type", "application/json")],
        r#"{"patients":[]}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    let wo = reply["work_order_id"]
        .as_str()
        .expect("work_order_id")
        .to_string();

    let (status, list) = s.get_json("/api/work_orders").await;
    assert_eq!(status, 200);
    assert_eq!(list["data"][0]["id"], wo.as_str());
    let (_, detail) = s.get_json(&format!("/api/work_orders/{wo}")).await;
    let run = detail["runs"][0]["id"].as_str().unwrap().to_string();
    let (status, run) = s.get_json(&format!("/api/runs/{run}")).await;
    assert_eq!(status, 200);
    assert!(run["steps"].is_array());

    let out = s.cli(&["pull", "-o", "pulled.yaml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pulled = std::fs::read_to_string(s.dir.join("pulled.yaml")).unwrap();
    assert!(pulled.contains("custom_path: clinic-register"), "{pulled}");
    s.terminate();
}

#[tokio::test]
async fn serve_sqlite_deploy_post_list_and_sigterm() {
    deploy_post_list(None).await;
}

fn psql(admin: &str, sql: &str) {
    let out = Command::new("psql")
        .arg(admin)
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg("-c")
        .arg(sql)
        .output()
        .expect("psql is installed");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn serve_postgres_deploy_post_list_and_sigterm() {
    let admin = std::env::var("GABBRO_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("gabbro_serve_{}_{}", std::process::id(), free_port());
    psql(&admin, &format!("CREATE DATABASE {name}"));
    let base = &admin[..admin.rfind('/').unwrap()];
    let url = format!("{base}/{name}");
    deploy_post_list(Some(&url)).await;
    psql(
        &admin,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
}

#[test]
fn serve_refuses_postgres_without_an_encryption_key() {
    let dir = temp_dir("nokey");
    let out = gabbro()
        .args([
            "serve",
            "--db",
            "postgres://postgres@127.0.0.1:5432/postgres",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .env_remove("GABBRO_ENCRYPTION_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--encryption-key"), "{err}");
    assert!(
        !Path::new(&dir).join("encryption.key").exists(),
        "no key is generated for PostgreSQL"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
