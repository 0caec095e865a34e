//! Security over a real socket: no page or action without a session, CSRF
//! checked on every form, roles enforced, HTML escaped everywhere.

mod common;

use common::*;

async fn setup() -> (TestDb, Seed, Client) {
    let db = TestDb::sqlite().await;
    let seed = seed(&db.pool, &KEY).await;
    let addr = serve(db.pool.clone()).await;
    (db, seed, Client::new(addr))
}

fn is_sign_in_redirect(p: &Page) -> bool {
    p.status == 303 && p.location.as_deref() == Some("/sign-in")
}

#[tokio::test]
async fn root_leads_a_signed_out_visitor_to_a_sign_in_form() {
    let (db, _seed, mut c) = setup().await;
    let root = c.get("/").await;
    assert!(
        is_sign_in_redirect(&root),
        "GET / answered {} {:?}",
        root.status,
        root.location
    );
    let form = c.get("/sign-in").await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains(r#"type="email" name="email""#));
    assert!(form.body.contains(r#"type="password" name="password""#));
    db.cleanup().await;
}

#[tokio::test]
async fn no_page_or_action_is_reachable_without_a_session() {
    let (db, s, mut c) = setup().await;
    let p = &s.project_id;
    let gets = [
        "/projects".to_string(),
        format!("/projects/{p}"),
        format!("/projects/{p}/workflows/{}", s.workflow_id),
        format!("/projects/{p}/jobs/{}", s.job1_id),
        format!("/projects/{p}/history"),
        format!("/projects/{p}/runs/{}", s.failed_run_id),
        format!("/projects/{p}/runs/{}/logs", s.active_run_id),
        format!("/projects/{p}/dataclips/{}/download", s.big_dataclip_id),
        format!("/projects/{p}/credentials"),
        format!("/projects/{p}/credentials/{}", s.credential_id),
        "/queue".to_string(),
        "/users".to_string(),
        format!("/projects/{p}/members"),
        "/password".to_string(),
    ];
    for path in &gets {
        let page = c.get(path).await;
        assert!(
            is_sign_in_redirect(&page),
            "GET {path} answered {} without a session",
            page.status
        );
        assert!(!page.body.contains("Ada"), "GET {path} leaked data");
    }
    let posts = [
        format!("/projects/{p}/jobs/{}", s.job1_id),
        format!("/projects/{p}/triggers/{}/enabled", s.webhook_trigger_id),
        format!("/projects/{p}/history/rerun"),
        format!("/projects/{p}/runs/{}/retry", s.failed_run_id),
        format!("/projects/{p}/credentials"),
        format!("/projects/{p}/credentials/{}", s.credential_id),
        format!("/projects/{p}/credentials/{}/delete", s.credential_id),
        "/password".to_string(),
        "/users".to_string(),
        format!("/projects/{p}/members"),
        "/sign-out".to_string(),
    ];
    for path in &posts {
        let page = c
            .post(
                path,
                &[("_csrf", "guess"), ("body", "evil"), ("enabled", "false")],
            )
            .await;
        assert!(
            is_sign_in_redirect(&page),
            "POST {path} answered {} without a session",
            page.status
        );
    }
    // A forged session cookie is no session either.
    c.cookies.push(("gabbro_session".into(), "0".repeat(64)));
    assert!(is_sign_in_redirect(&c.get("/projects").await));
    let body: String = sqlx::query_scalar("SELECT body FROM jobs WHERE id = $1")
        .bind(&s.job1_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(body, "fn(state => state);");
    db.cleanup().await;
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_sign_out_ends_the_session() {
    let (db, _s, mut c) = setup().await;
    let bad = c.sign_in("editor@example.org", "not-the-password").await;
    assert_eq!(bad.status, 401);
    assert!(bad.body.contains("Wrong email or password"));
    assert!(is_sign_in_redirect(&c.get("/projects").await));
    let ok = c.sign_in("editor@example.org", EDITOR_PASSWORD).await;
    assert_eq!(
        (ok.status, ok.location.as_deref()),
        (303, Some("/projects"))
    );
    let projects = c.get("/projects").await;
    assert_eq!(projects.status, 200);
    let csrf = projects.csrf();
    let out = c.post("/sign-out", &[("_csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert!(is_sign_in_redirect(&c.get("/projects").await));
    db.cleanup().await;
}

#[tokio::test]
async fn session_cookie_is_http_only_and_same_site_lax() {
    let (db, _s, c) = setup().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = http
        .get(format!("{}/sign-in", c.base))
        .send()
        .await
        .unwrap();
    let csrf_cookie = form
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let html = form.text().await.unwrap();
    let page = Page {
        status: 200,
        location: None,
        body: html,
    };
    let token = csrf_cookie.split(';').next().unwrap().to_string();
    let body = format!(
        "_csrf={}&email=editor%40example.org&password={}",
        page.csrf(),
        EDITOR_PASSWORD
    );
    let resp = http
        .post(format!("{}/sign-in", c.base))
        .header("cookie", token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let set = resp.headers().get("set-cookie").unwrap().to_str().unwrap();
    assert!(set.starts_with("gabbro_session="));
    assert!(set.contains("HttpOnly"));
    assert!(set.contains("SameSite=Lax"));
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ui_sessions")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);
    let token = set.split(';').next().unwrap().split_once('=').unwrap().1;
    let raw: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ui_sessions WHERE id = $1")
        .bind(token)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        raw, 0,
        "the session token itself must not be stored, only its hash"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn the_first_admin_must_change_the_password_before_anything_else() {
    let (db, s, mut c) = setup().await;
    let signed = c.sign_in("admin@localhost", ADMIN_PASSWORD).await;
    assert_eq!(signed.status, 303);
    let projects = c.get("/projects").await;
    assert_eq!(
        (projects.status, projects.location.as_deref()),
        (303, Some("/password"))
    );
    let run = c
        .get(&format!(
            "/projects/{}/runs/{}",
            s.project_id, s.failed_run_id
        ))
        .await;
    assert_eq!(run.location.as_deref(), Some("/password"));
    let form = c.get("/password").await;
    assert!(form.body.contains("Choose a new password"));
    let csrf = form.csrf();
    let short = c
        .post(
            "/password",
            &[
                ("_csrf", &csrf),
                ("current", ADMIN_PASSWORD),
                ("new", "short"),
                ("confirm", "short"),
            ],
        )
        .await;
    assert_eq!(short.status, 400);
    let wrong = c
        .post(
            "/password",
            &[
                ("_csrf", &csrf),
                ("current", "nope-nope-nope"),
                ("new", "a-brand-new-password"),
                ("confirm", "a-brand-new-password"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 400);
    let ok = c
        .post(
            "/password",
            &[
                ("_csrf", &csrf),
                ("current", ADMIN_PASSWORD),
                ("new", "a-brand-new-password"),
                ("confirm", "a-brand-new-password"),
            ],
        )
        .await;
    assert_eq!(
        (ok.status, ok.location.as_deref()),
        (303, Some("/projects"))
    );
    assert_eq!(c.get("/projects").await.status, 200);
    // The new password works, the old one no longer does.
    let mut c2 = Client::new(c.base.trim_start_matches("http://").parse().unwrap());
    assert_eq!(
        c2.sign_in("admin@localhost", ADMIN_PASSWORD).await.status,
        401
    );
    assert_eq!(
        c2.sign_in("admin@localhost", "a-brand-new-password")
            .await
            .status,
        303
    );
    assert_eq!(c2.get("/projects").await.status, 200);
    db.cleanup().await;
}

#[tokio::test]
async fn forms_without_the_right_csrf_token_are_refused() {
    let (db, s, mut c) = setup().await;
    // The sign-in form itself: no token cookie, no sign-in.
    let mut bare = Client::new(c.base.trim_start_matches("http://").parse().unwrap());
    let page = bare
        .post(
            "/sign-in",
            &[
                ("_csrf", "x"),
                ("email", "editor@example.org"),
                ("password", EDITOR_PASSWORD),
            ],
        )
        .await;
    assert_eq!(page.status, 403);

    c.sign_in("editor@example.org", EDITOR_PASSWORD).await;
    let job_path = format!("/projects/{}/jobs/{}", s.project_id, s.job1_id);
    let form = c.get(&job_path).await;
    let csrf = form.csrf();
    for bad in [None, Some("wrong-token"), Some("")] {
        let mut fields = vec![
            ("body", "changed"),
            ("adaptor", "@openfn/language-common@latest"),
        ];
        if let Some(b) = bad {
            fields.push(("_csrf", b));
        }
        let resp = c.post(&job_path, &fields).await;
        assert_eq!(resp.status, 403, "CSRF token {bad:?} was accepted");
    }
    let toggle = c
        .post(
            &format!(
                "/projects/{}/triggers/{}/enabled",
                s.project_id, s.webhook_trigger_id
            ),
            &[("enabled", "false")],
        )
        .await;
    assert_eq!(toggle.status, 403);
    let retry = c
        .post(
            &format!("/projects/{}/runs/{}/retry", s.project_id, s.failed_run_id),
            &[("step_id", &s.step2_id)],
        )
        .await;
    assert_eq!(retry.status, 403);
    let body: String = sqlx::query_scalar("SELECT body FROM jobs WHERE id = $1")
        .bind(&s.job1_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(body, "fn(state => state);");
    // With the token it goes through.
    let ok = c
        .post(
            &job_path,
            &[
                ("_csrf", &csrf),
                ("body", "changed"),
                ("adaptor", "@openfn/language-common@latest"),
            ],
        )
        .await;
    assert_eq!(ok.status, 303);
    db.cleanup().await;
}

#[tokio::test]
async fn html_in_names_logs_errors_and_dataclips_is_escaped() {
    let (db, s, mut c) = setup().await;
    c.sign_in("editor@example.org", EDITOR_PASSWORD).await;
    let p = &s.project_id;
    let pages = [
        "/projects".to_string(),
        format!("/projects/{p}"),
        format!("/projects/{p}/workflows/{}", s.workflow_id),
        format!("/projects/{p}/jobs/{}", s.job1_id),
        format!("/projects/{p}/history"),
        format!("/projects/{p}/runs/{}", s.failed_run_id),
    ];
    for path in &pages {
        let page = c.get(path).await;
        assert_eq!(page.status, 200, "GET {path}");
        assert!(
            !page.body.contains("<script>alert"),
            "GET {path} contains raw markup"
        );
        assert!(
            page.body.contains("&lt;script&gt;") || page.body.contains("&#60;script&#62;"),
            "GET {path} should show the escaped name"
        );
    }
    // askama writes `<` as `&#60;`; either spelling is inert.
    let run = c
        .get(&format!("/projects/{p}/runs/{}", s.failed_run_id))
        .await
        .body
        .replace("&#60;", "&lt;")
        .replace("&#62;", "&gt;");
    assert!(
        run.contains("TypeError: boom &lt;script&gt;"),
        "log line escaped"
    );
    assert!(
        run.contains("Cannot read properties of undefined &lt;script&gt;"),
        "step error escaped"
    );
    assert!(run.contains("Ada &lt;script&gt;"), "dataclip escaped");
    db.cleanup().await;
}

#[tokio::test]
async fn a_viewer_reads_but_is_refused_every_edit() {
    let (db, s, mut c) = setup().await;
    c.sign_in("viewer@example.org", VIEWER_PASSWORD).await;
    let p = &s.project_id;
    let job_path = format!("/projects/{p}/jobs/{}", s.job1_id);
    let job = c.get(&job_path).await;
    assert_eq!(job.status, 200);
    assert!(job.body.contains("your role does not allow editing"));
    assert!(!job.body.contains(">Save</button>"));
    let csrf = job.csrf();
    let refused = [
        c.post(
            &job_path,
            &[
                ("_csrf", &csrf),
                ("body", "hacked"),
                ("adaptor", "@openfn/language-common@1"),
            ],
        )
        .await,
        c.post(
            &format!("/projects/{p}/triggers/{}/enabled", s.webhook_trigger_id),
            &[("_csrf", &csrf), ("enabled", "false")],
        )
        .await,
        c.post(
            &format!("/projects/{p}/runs/{}/retry", s.failed_run_id),
            &[("_csrf", &csrf), ("step_id", &s.step2_id)],
        )
        .await,
        c.post(
            &format!("/projects/{p}/history/rerun"),
            &[("_csrf", &csrf), ("ids", &s.failed_work_order_id)],
        )
        .await,
        c.post(
            &format!("/projects/{p}/credentials"),
            &[("_csrf", &csrf), ("name", "x"), ("body", "{}")],
        )
        .await,
        c.post(
            &format!("/projects/{p}/credentials/{}/delete", s.credential_id),
            &[("_csrf", &csrf)],
        )
        .await,
    ];
    for (i, r) in refused.iter().enumerate() {
        assert_eq!(r.status, 403, "edit #{i} was not refused");
    }
    let body: String = sqlx::query_scalar("SELECT body FROM jobs WHERE id = $1")
        .bind(&s.job1_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(body, "fn(state => state);");
    let runs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(runs, 4);
    assert_eq!(
        c.get("/queue").await.status,
        403,
        "queue dashboard is for superusers"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn a_user_without_a_role_cannot_see_the_project() {
    let (db, s, mut c) = setup().await;
    c.sign_in("outsider@example.org", OUTSIDER_PASSWORD).await;
    let list = c.get("/projects").await;
    assert!(!list.body.contains("Health sync"));
    for path in [
        format!("/projects/{}", s.project_id),
        format!("/projects/{}/runs/{}", s.project_id, s.failed_run_id),
        format!(
            "/projects/{}/dataclips/{}/download",
            s.project_id, s.big_dataclip_id
        ),
    ] {
        assert_eq!(c.get(&path).await.status, 404, "{path}");
    }
    // An editor of one project cannot reach another project's run through its own project's URL.
    let mut e = Client::new(c.base.trim_start_matches("http://").parse().unwrap());
    e.sign_in("editor@example.org", EDITOR_PASSWORD).await;
    assert_eq!(
        e.get(&format!("/projects/{}", s.other_project_id))
            .await
            .status,
        404
    );
    db.cleanup().await;
}

#[tokio::test]
async fn repeated_wrong_passwords_lock_the_account_for_a_while() {
    let (db, _s, mut c) = setup().await;
    for _ in 0..gabbro_ui::throttle::MAX_FAILURES {
        assert_eq!(
            c.sign_in("editor@example.org", "wrong-password!")
                .await
                .status,
            401
        );
    }
    let locked = c.sign_in("editor@example.org", EDITOR_PASSWORD).await;
    assert_eq!(
        locked.status, 429,
        "even the right password waits out the window"
    );
    assert!(locked.body.contains("Too many failed sign-ins"));
    // Other accounts are not affected.
    assert_eq!(
        c.sign_in("viewer@example.org", VIEWER_PASSWORD)
            .await
            .status,
        303
    );
    db.cleanup().await;
}

#[tokio::test]
async fn pages_forbid_foreign_scripts_and_framing() {
    let (db, _s, c) = setup().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::get(format!("{}/sign-in", c.base)).await.unwrap();
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    db.cleanup().await;
}
