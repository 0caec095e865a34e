//! The whole loop in a real browser against a real `gabbro serve` with its
//! embedded worker: deploy, webhook, live logs, failure, fix, retry, rerun,
//! viewer refused (`tests/browser/e2e.mjs`). Needs the `gabbro` binary: it
//! is taken from `GABBRO_BIN`, or next to this test's target directory, or
//! built with `cargo build -p gabbro --bin gabbro`. Screenshots go to
//! `docs/ui/e2e-*.png`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn gabbro_bin() -> PathBuf {
    if let Ok(p) = std::env::var("GABBRO_BIN") {
        return PathBuf::from(p);
    }
    // target/debug/deps/e2e-xxxx -> target/debug/gabbro
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("gabbro"))
        .unwrap();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "-p", "gabbro", "--bin", "gabbro"])
        .current_dir(repo_root())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build of the gabbro binary failed");
    assert!(bin.exists(), "no gabbro binary at {}", bin.display());
    bin
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_webhook_live_logs_fix_retry_rerun_and_viewer_in_chromium() {
    let root = repo_root();
    let script_dir = root.join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing (apt-get install chromium, as .ci/run does)"
    );
    assert!(
        script_dir.join("node_modules/playwright-core").exists(),
        "run `npm ci` in tests/browser, as .ci/run does"
    );
    let bin = gabbro_bin();

    let dir = std::env::temp_dir().join(format!("gabbro-ui-e2e-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let _server = Server(
        Command::new(&bin)
            .args(["serve", "--data-dir"])
            .arg(dir.join("data"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--worker-capacity",
                "2",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("gabbro serve starts"),
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/health")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no /health within 60 s: {}",
            std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = std::fs::read_to_string(dir.join("data/admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let password = std::fs::read_to_string(dir.join("data/admin.password"))
        .unwrap()
        .trim()
        .to_string();
    let deploy = Command::new(&bin)
        .arg("deploy")
        .arg(script_dir.join("fixtures/e2e-project.yaml"))
        .args(["--server", &base, "--token", &token])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        deploy.status.success(),
        "deploy failed: {}{}",
        String::from_utf8_lossy(&deploy.stdout),
        String::from_utf8_lossy(&deploy.stderr)
    );

    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new("node")
            .arg(script_dir.join("e2e.mjs"))
            .current_dir(&script_dir)
            .env("BASE_URL", &base)
            .env("SHOTS_DIR", root.join("docs/ui"))
            .env("ADMIN_PASSWORD", &password)
            .env("CHROMIUM", &chromium)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the end-to-end test finished within 300 s")
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let serve_log = std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default();
    assert!(
        out.status.success() && stdout.contains("all end-to-end checks passed"),
        "end-to-end failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- serve.log (tail)\n{}",
        serve_log
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !serve_log.contains(&password),
        "the admin password never appears in the server's log"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
