//! The pages' behaviour over a real socket, on SQLite and on PostgreSQL:
//! diagram, job save as a snapshot, triggers, history filters and paging,
//! rerun, retry from a step, dataclip truncation and download, live logs,
//! credentials that never come back, the queue dashboard.

mod common;

use common::*;
use futures_util::StreamExt;

async fn editor(db: &TestDb) -> (Seed, Client) {
    let seed = seed(&db.pool, &KEY).await;
    let addr = serve(db.pool.clone()).await;
    let mut c = Client::new(addr);
    let page = c.sign_in("editor@example.org", EDITOR_PASSWORD).await;
    assert_eq!(page.status, 303);
    (seed, c)
}

async fn count(db: &TestDb, sql: &'static str, arg: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(arg)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn workflow_diagram_and_triggers(db: &TestDb) {
    let (s, mut c) = editor(db).await;
    let path = format!("/projects/{}/workflows/{}", s.project_id, s.workflow_id);
    let page = c.get(&path).await;
    assert_eq!(page.status, 200);
    let b = &page.body;
    assert!(b.contains("<svg class=\"diagram\""));
    assert_eq!(b.matches("class=\"node job\"").count(), 2, "two jobs drawn");
    assert_eq!(
        b.matches("class=\"node trigger").count(),
        2,
        "two triggers drawn"
    );
    assert_eq!(b.matches("<g class=\"edge").count(), 3, "three edges drawn");
    assert!(
        b.contains(&format!("{}/i/patients", c.base)),
        "webhook URL with its custom path"
    );
    assert!(b.contains("0 9 * * MON-FRI"));
    assert!(b.contains("Monday"), "cron schedule in words: {b}");
    // Enable the disabled cron trigger: new snapshot, trigger on.
    let before = count(
        db,
        "SELECT COUNT(*) FROM workflow_snapshots WHERE workflow_id = $1",
        &s.workflow_id,
    )
    .await;
    let r = c
        .post(
            &format!(
                "/projects/{}/triggers/{}/enabled",
                s.project_id, s.cron_trigger_id
            ),
            &[("_csrf", &page.csrf()), ("enabled", "true")],
        )
        .await;
    assert_eq!(
        (r.status, r.location.as_deref()),
        (303, Some(path.as_str()))
    );
    let on = count(
        db,
        "SELECT COUNT(*) FROM triggers WHERE id = $1 AND enabled = TRUE",
        &s.cron_trigger_id,
    )
    .await;
    assert_eq!(on, 1);
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM workflow_snapshots WHERE workflow_id = $1",
            &s.workflow_id
        )
        .await,
        before + 1
    );
}

async fn job_save_writes_a_snapshot(db: &TestDb) {
    let (s, mut c) = editor(db).await;
    let path = format!("/projects/{}/jobs/{}", s.project_id, s.job2_id);
    let page = c.get(&path).await;
    assert!(
        page.body.contains("post(&#39;/api/events&#39;")
            || page.body.contains("post('/api/events'")
    );
    assert!(
        page.body.contains("DHIS2 login"),
        "credential offered in the select"
    );
    let bad = c
        .post(
            &path,
            &[
                ("_csrf", &page.csrf()),
                ("body", "x"),
                ("adaptor", "<bad adaptor>"),
            ],
        )
        .await;
    assert_eq!(bad.status, 400);
    let new_body = "fn(state => { state.data.fixed = true; return state; });";
    let r = c
        .post(
            &path,
            &[
                ("_csrf", &page.csrf()),
                ("body", new_body),
                ("adaptor", "@openfn/language-http@7.2.10"),
                ("credential_id", &s.credential_id),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    let saved = c.get(r.location.as_deref().unwrap()).await;
    assert!(saved.body.contains("Saved as a new version"));
    let body: String = sqlx::query_scalar("SELECT body FROM jobs WHERE id = $1")
        .bind(&s.job2_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(body, new_body);
    let lv: i64 =
        sqlx::query_scalar("SELECT CAST(lock_version AS BIGINT) FROM workflows WHERE id = $1")
            .bind(&s.workflow_id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(lv, 2);
    let snap: String = sqlx::query_scalar(
        "SELECT body FROM workflow_snapshots WHERE workflow_id = $1 AND lock_version = 2",
    )
    .bind(&s.workflow_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let snap: serde_json::Value = serde_json::from_str(&snap).unwrap();
    assert_eq!(snap["lock_version"], 2);
    assert_eq!(snap["jobs"].as_array().unwrap().len(), 2);
    assert_eq!(snap["triggers"].as_array().unwrap().len(), 2);
    assert_eq!(snap["edges"].as_array().unwrap().len(), 3);
    let job = snap["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == s.job2_id.as_str())
        .unwrap();
    assert_eq!(job["body"], new_body);
    assert_eq!(job["project_credential_id"], s.credential_id.as_str());
    // Exactly the fields provisioning writes (gabbro_store::provision::snapshot_body).
    // Sorted: serde_json keeps insertion order when another crate of the
    // workspace enables `preserve_order`, and the key set is what matters.
    let keys = |v: &serde_json::Value| {
        let mut keys = v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        keys.sort();
        keys
    };
    assert_eq!(
        keys(&snap),
        ["edges", "id", "jobs", "lock_version", "name", "triggers"]
    );
    assert_eq!(
        keys(job),
        ["adaptor", "body", "id", "name", "project_credential_id"]
    );
    assert_eq!(
        keys(&snap["triggers"][0]),
        ["cron_expression", "custom_path", "enabled", "id", "type"]
    );
    assert_eq!(
        keys(&snap["edges"][0]),
        [
            "condition_expression",
            "condition_label",
            "condition_type",
            "enabled",
            "id",
            "source_job_id",
            "source_trigger_id",
            "target_job_id"
        ]
    );
    assert_eq!(job["adaptor"], "@openfn/language-http@7.2.10");
}

async fn history_filters_paging_and_rerun(db: &TestDb) {
    let (s, mut c) = editor(db).await;
    // 120 more successful work orders with a distinctive input in one of them.
    let snapshot: String =
        sqlx::query_scalar("SELECT id FROM workflow_snapshots WHERE workflow_id = $1")
            .bind(&s.workflow_id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let base = gabbro_ui::time::now_us() - 10_000_000_000;
    for i in 0..120i64 {
        let dc = uuid::Uuid::now_v7().to_string();
        let body = if i == 7 {
            r#"{"needle":"Zanzibar-42"}"#.to_string()
        } else {
            format!(r#"{{"n":{i}}}"#)
        };
        sqlx::query("INSERT INTO dataclips (id, project_id, type, body, inserted_at) VALUES ($1, $2, 'http_request', $3, $4)")
            .bind(&dc).bind(&s.project_id).bind(body).bind(base + i).execute(&db.pool).await.unwrap();
        sqlx::query("INSERT INTO work_orders (id, workflow_id, snapshot_id, trigger_id, dataclip_id, state, last_activity, inserted_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'success', $6, $6, $6)")
            .bind(uuid::Uuid::now_v7().to_string()).bind(&s.workflow_id).bind(&snapshot).bind(&s.webhook_trigger_id).bind(&dc).bind(base + i)
            .execute(&db.pool).await.unwrap();
    }
    let hist = format!("/projects/{}/history", s.project_id);
    let first = c.get(&hist).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body.matches("<tr class=\"wo\"").count(), 50);
    // Newest first: the running work order (seeded last, newest) leads.
    let first_row = first.body.find("<tr class=\"wo\"").unwrap();
    assert!(first.body[first_row..first_row + 400].contains("running"));
    // Keyset pages: 124 work orders = 50 + 50 + 24, no repeats.
    let mut seen = std::collections::HashSet::new();
    let mut page = first;
    let mut pages = 1;
    loop {
        for part in page.body.split("<tr class=\"wo\" data-id=\"").skip(1) {
            assert!(
                seen.insert(part.split('"').next().unwrap().to_string()),
                "a work order repeated across pages"
            );
        }
        let Some(i) = page.body.find("id=\"older\"") else {
            break;
        };
        let href_start = page.body[..i].rfind("href=\"").unwrap() + 6;
        let href = page.body[href_start..]
            .split('"')
            .next()
            .unwrap()
            .replace("&amp;", "&")
            .replace("&#38;", "&");
        page = c.get(&href).await;
        pages += 1;
    }
    assert_eq!((seen.len(), pages), (124, 3));
    // Filters.
    let failed = c.get(&format!("{hist}?state=failed")).await;
    assert_eq!(failed.body.matches("<tr class=\"wo\"").count(), 1);
    let found = c.get(&format!("{hist}?q=zanzibar")).await;
    assert_eq!(
        found.body.matches("<tr class=\"wo\"").count(),
        1,
        "text search in the input, case-insensitive"
    );
    let none = c.get(&format!("{hist}?q=%25")).await;
    assert_eq!(
        none.body.matches("<tr class=\"wo\"").count(),
        0,
        "punctuation alone matches nothing"
    );
    // Index asynchronously, then the same searches are answered from the index.
    while gabbro_ui::search::index_batch(&db.pool).await.unwrap() > 0 {}
    assert!(
        gabbro_ui::search::progress(&db.pool)
            .await
            .unwrap()
            .is_some()
    );
    let terms: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM ui_search_terms WHERE term = 'zanzibar'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(terms, 1);
    for q in ["zanzibar", "ZANZIBAR", "needle%20zanzibar", "zanzibar%2042"] {
        let found = c.get(&format!("{hist}?q={q}")).await;
        assert_eq!(
            found.body.matches("<tr class=\"wo\"").count(),
            1,
            "indexed search for {q}"
        );
    }
    let both = c.get(&format!("{hist}?q=needle%20absent")).await;
    assert_eq!(
        both.body.matches("<tr class=\"wo\"").count(),
        0,
        "every word must match"
    );
    // A common word pages like the unfiltered history ("n" is in 119 inputs).
    let common = c.get(&format!("{hist}?q=n")).await;
    assert_eq!(common.body.matches("<tr class=\"wo\"").count(), 50);
    assert!(common.body.contains("id=\"older\""));
    let old = c.get(&format!("{hist}?to=2000-01-01T00:00")).await;
    assert_eq!(old.body.matches("<tr class=\"wo\"").count(), 0);
    assert_eq!(c.get(&format!("{hist}?state=bogus")).await.status, 400);
    // Rerun two selected work orders.
    let runs_before = count(
        db,
        "SELECT COUNT(*) FROM runs WHERE project_id = $1",
        &s.project_id,
    )
    .await;
    let r = c
        .post(
            &format!("{hist}/rerun"),
            &[
                ("_csrf", &failed.csrf()),
                ("ids", &s.failed_work_order_id),
                ("ids", "not-a-work-order"),
            ],
        )
        .await;
    assert_eq!(
        (r.status, r.location.as_deref()),
        (303, Some(format!("{hist}?rerun=1").as_str()))
    );
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM runs WHERE project_id = $1",
            &s.project_id
        )
        .await,
        runs_before + 1
    );
    let st: String = sqlx::query_scalar("SELECT state FROM work_orders WHERE id = $1")
        .bind(&s.failed_work_order_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(st, "pending");
    let (q, start): (String, Option<String>) = sqlx::query_as(
        "SELECT queue, starting_trigger_id FROM runs WHERE work_order_id = $1 AND state = 'available'",
    )
    .bind(&s.failed_work_order_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (q.as_str(), start.as_deref()),
        ("manual", Some(s.webhook_trigger_id.as_str()))
    );
}

async fn run_inspector_and_retry(db: &TestDb) {
    let (s, mut c) = editor(db).await;
    let path = format!("/projects/{}/runs/{}", s.project_id, s.failed_run_id);
    let page = c.get(&path).await;
    assert_eq!(page.status, 200);
    let b = &page.body;
    // Steps in order with exit reasons, error and duration.
    let first = b.find("data-step=\"").unwrap();
    assert!(b[first..].starts_with(&format!("data-step=\"{}\"", s.step1_id)));
    assert!(b.contains("TypeError"));
    assert!(
        b.contains("300 ms") && b.contains("400 ms"),
        "durations shown"
    );
    // Logs: every line, with levels for the filter.
    assert_eq!(b.matches("class=\"log\" data-level=").count(), 3);
    // The 300 KB output is truncated to a prefix with a download link; the small input is whole.
    assert!(b.contains("Only the beginning is shown"));
    assert!(
        !b.contains("end-of-big-dataclip"),
        "the big dataclip is not in the page"
    );
    assert!(b.len() < 200_000, "page is {} bytes", b.len());
    let dl = c
        .get(&format!(
            "/projects/{}/dataclips/{}/download",
            s.project_id, s.big_dataclip_id
        ))
        .await;
    assert_eq!(dl.status, 200);
    assert!(dl.body.len() > 300_000 && dl.body.ends_with(r#"{"k":"end-of-big-dataclip"}]}}"#));
    serde_json::from_str::<serde_json::Value>(&dl.body).expect("the download is the whole JSON");
    // Retry from the failed step: a new run on the latest snapshot, starting at that job, reusing step 1.
    let r = c
        .post(
            &format!("{path}/retry"),
            &[("_csrf", &page.csrf()), ("step_id", &s.step2_id)],
        )
        .await;
    assert_eq!(r.status, 303);
    let new_run = r.location.unwrap().rsplit('/').next().unwrap().to_string();
    let (state, job, dc): (String, Option<String>, Option<String>) =
        sqlx::query_as("SELECT state, starting_job_id, dataclip_id FROM runs WHERE id = $1")
            .bind(&new_run)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(state, "available");
    assert_eq!(job.as_deref(), Some(s.job2_id.as_str()));
    let step2_input: String =
        sqlx::query_scalar("SELECT input_dataclip_id FROM steps WHERE id = $1")
            .bind(&s.step2_id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(dc.as_deref(), Some(step2_input.as_str()));
    let reused: Vec<String> = sqlx::query_scalar("SELECT step_id FROM run_steps WHERE run_id = $1")
        .bind(&new_run)
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(reused, vec![s.step1_id.clone()]);
    let new_page = c
        .get(&format!("/projects/{}/runs/{new_run}", s.project_id))
        .await;
    assert!(new_page.body.contains("available"));
    // A step that is not in the run cannot be retried.
    let bad = c
        .post(
            &format!("{path}/retry"),
            &[("_csrf", &page.csrf()), ("step_id", "nope")],
        )
        .await;
    assert_eq!(bad.status, 404);
}

async fn live_logs_stream(db: &TestDb) {
    let (s, c) = editor(db).await;
    let url = format!(
        "{}/projects/{}/runs/{}/logs",
        c.base, s.project_id, s.active_run_id
    );
    let cookie = c
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::Client::new()
        .get(&url)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = resp.bytes_stream();
    let pool = db.pool.clone();
    let run = s.active_run_id.clone();
    // A "worker" writes lines while we listen, then finishes the run.
    let writer = tokio::spawn(async move {
        for i in 0..3 {
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            add_log(
                &pool,
                &run,
                None,
                "info",
                &format!("live line {i} <b>"),
                gabbro_ui::time::now_us(),
            )
            .await;
        }
        sqlx::query("UPDATE runs SET state = 'success', finished_at = $1 WHERE id = $2")
            .bind(gabbro_ui::time::now_us())
            .bind(&run)
            .execute(&pool)
            .await
            .unwrap();
    });
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while !text.contains("event: end") {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("stream ended in time")
            .expect("stream open")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    writer.await.unwrap();
    for i in 0..3 {
        assert!(
            text.contains(&format!("live line {i} <b>")),
            "line {i} streamed: {text}"
        );
    }
    assert!(
        text.contains("event: state\ndata: started")
            || text.contains("event: state\ndata: success")
    );
    assert!(text.contains("event: end\ndata: success"));
    // Order: line 0 before line 2.
    assert!(text.find("live line 0").unwrap() < text.find("live line 2").unwrap());
}

async fn credentials_never_come_back(db: &TestDb) {
    let (s, mut c) = editor(db).await;
    let list_path = format!("/projects/{}/credentials", s.project_id);
    let list = c.get(&list_path).await;
    assert!(list.body.contains("DHIS2 login"));
    assert!(!list.body.contains("very-secret-value"));
    let bad = c
        .post(
            &list_path,
            &[("_csrf", &list.csrf()), ("name", "x"), ("body", "not json")],
        )
        .await;
    assert_eq!(bad.status, 400);
    let r = c
        .post(
            &list_path,
            &[
                ("_csrf", &list.csrf()),
                ("name", "Clinic API"),
                ("schema", "http"),
                ("body", r#"{"apiKey":"sk-live-123456"}"#),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    let enc: String =
        sqlx::query_scalar("SELECT body_encrypted FROM credentials WHERE name = 'Clinic API'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(!enc.contains("sk-live"));
    assert_eq!(
        gabbro_ui::vault::decrypt(&KEY, &enc).unwrap(),
        br#"{"apiKey":"sk-live-123456"}"#
    );
    let id: String = sqlx::query_scalar("SELECT id FROM credentials WHERE name = 'Clinic API'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let edit = c.get(&format!("{list_path}/{id}")).await;
    assert_eq!(edit.status, 200);
    assert!(
        !edit.body.contains("sk-live"),
        "the secret is never sent back"
    );
    // Rename with an empty body keeps the secret.
    let r = c
        .post(
            &format!("{list_path}/{id}"),
            &[
                ("_csrf", &edit.csrf()),
                ("name", "Clinic API v2"),
                ("schema", "http"),
                ("body", ""),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    let enc2: String = sqlx::query_scalar("SELECT body_encrypted FROM credentials WHERE id = $1")
        .bind(&id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(enc, enc2);
    // An editor cannot delete (admins and owners can); a used credential is kept.
    let del = c
        .post(
            &format!("{list_path}/{id}/delete"),
            &[("_csrf", &edit.csrf())],
        )
        .await;
    assert_eq!(del.status, 403);
    let mut admin = Client::new(c.base.trim_start_matches("http://").parse().unwrap());
    admin.sign_in("admin@localhost", ADMIN_PASSWORD).await;
    let f = admin.get("/password").await;
    admin
        .post(
            "/password",
            &[
                ("_csrf", &f.csrf()),
                ("current", ADMIN_PASSWORD),
                ("new", "new-admin-password"),
                ("confirm", "new-admin-password"),
            ],
        )
        .await;
    let page = admin.get(&format!("{list_path}/{}", s.credential_id)).await;
    let used = admin
        .post(
            &format!("{list_path}/{}/delete", s.credential_id),
            &[("_csrf", &page.csrf())],
        )
        .await;
    assert_eq!(
        used.status, 400,
        "a credential used by a job is not deleted"
    );
    let gone = admin
        .post(
            &format!("{list_path}/{id}/delete"),
            &[("_csrf", &page.csrf())],
        )
        .await;
    assert_eq!(gone.status, 303);
    assert_eq!(
        count(db, "SELECT COUNT(*) FROM credentials WHERE id = $1", &id).await,
        0
    );
    // The queue dashboard, for the superuser.
    let q = admin.get("/queue").await;
    assert_eq!(q.status, 200);
    assert!(
        q.body.contains("data-state=\"started\">1<"),
        "one started run: {}",
        q.body
    );
    assert!(q.body.contains("Finished in the last hour: 3"));
    assert!(
        q.body.contains("data-holder=\"worker-1\">1<"),
        "the worker holding the started run"
    );
}

async fn accounts_and_members(db: &TestDb) {
    let (s, mut editor) = editor(db).await;
    let mut admin = Client::new(editor.base.trim_start_matches("http://").parse().unwrap());
    admin.sign_in("admin@localhost", ADMIN_PASSWORD).await;
    let f = admin.get("/password").await;
    admin
        .post(
            "/password",
            &[
                ("_csrf", &f.csrf()),
                ("current", ADMIN_PASSWORD),
                ("new", "new-admin-password"),
                ("confirm", "new-admin-password"),
            ],
        )
        .await;
    // Only superusers manage accounts.
    assert_eq!(editor.get("/users").await.status, 403);
    let users = admin.get("/users").await;
    assert_eq!(users.status, 200);
    let short = admin
        .post(
            "/users",
            &[
                ("_csrf", &users.csrf()),
                ("email", "nurse@example.org"),
                ("password", "short"),
            ],
        )
        .await;
    assert_eq!(short.status, 400);
    let made = admin
        .post(
            "/users",
            &[
                ("_csrf", &users.csrf()),
                ("email", "Nurse@Example.org"),
                ("password", "temporary-pass-1"),
            ],
        )
        .await;
    assert_eq!(
        (made.status, made.location.as_deref()),
        (303, Some("/users?done=1"))
    );
    let dup = admin
        .post(
            "/users",
            &[
                ("_csrf", &users.csrf()),
                ("email", "nurse@example.org"),
                ("password", "temporary-pass-1"),
            ],
        )
        .await;
    assert_eq!(dup.status, 400);
    // The new account must change its password, and sees no project yet.
    let mut nurse = Client::new(editor.base.trim_start_matches("http://").parse().unwrap());
    assert_eq!(
        nurse
            .sign_in("nurse@example.org", "temporary-pass-1")
            .await
            .status,
        303
    );
    assert_eq!(
        nurse.get("/projects").await.location.as_deref(),
        Some("/password")
    );
    let f = nurse.get("/password").await;
    nurse
        .post(
            "/password",
            &[
                ("_csrf", &f.csrf()),
                ("current", "temporary-pass-1"),
                ("new", "nurse-own-password"),
                ("confirm", "nurse-own-password"),
            ],
        )
        .await;
    assert_eq!(
        nurse
            .get(&format!("/projects/{}", s.project_id))
            .await
            .status,
        404
    );
    // An editor cannot add members; the owner (superuser) can.
    let members = format!("/projects/{}/members", s.project_id);
    let ep = editor.get(&members).await;
    assert_eq!(ep.status, 200);
    assert!(!ep.body.contains("Add a member"));
    let refused = editor
        .post(
            &members,
            &[
                ("_csrf", &ep.csrf()),
                ("email", "nurse@example.org"),
                ("role", "viewer"),
            ],
        )
        .await;
    assert_eq!(refused.status, 403);
    let mp = admin.get(&members).await;
    let added = admin
        .post(
            &members,
            &[
                ("_csrf", &mp.csrf()),
                ("email", "nurse@example.org"),
                ("role", "viewer"),
            ],
        )
        .await;
    assert_eq!(added.status, 303);
    assert_eq!(
        nurse
            .get(&format!("/projects/{}", s.project_id))
            .await
            .status,
        200
    );
    let unknown = admin
        .post(
            &members,
            &[
                ("_csrf", &mp.csrf()),
                ("email", "nobody@example.org"),
                ("role", "viewer"),
            ],
        )
        .await;
    assert_eq!(unknown.status, 400);
    // Promote the nurse to admin: they may manage members but not grant owner.
    admin
        .post(
            &members,
            &[
                ("_csrf", &mp.csrf()),
                ("email", "nurse@example.org"),
                ("role", "admin"),
            ],
        )
        .await;
    let np = nurse.get(&members).await;
    assert!(np.body.contains("Add a member"));
    let owner = nurse
        .post(
            &members,
            &[
                ("_csrf", &np.csrf()),
                ("email", "viewer@example.org"),
                ("role", "owner"),
            ],
        )
        .await;
    assert_eq!(owner.status, 403);
    let removed = nurse
        .post(
            &members,
            &[
                ("_csrf", &np.csrf()),
                ("email", "viewer@example.org"),
                ("role", "remove"),
            ],
        )
        .await;
    assert_eq!(removed.status, 303);
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM project_users WHERE project_id = $1")
        .bind(&s.project_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 2, "editor and nurse remain");
    // A project keeps one owner.
    admin
        .post(
            &members,
            &[
                ("_csrf", &mp.csrf()),
                ("email", "editor@example.org"),
                ("role", "owner"),
            ],
        )
        .await;
    let last = admin
        .post(
            &members,
            &[
                ("_csrf", &mp.csrf()),
                ("email", "editor@example.org"),
                ("role", "viewer"),
            ],
        )
        .await;
    assert_eq!(last.status, 400);
}

macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                let db = TestDb::sqlite().await;
                super::$name(&db).await;
                db.cleanup().await;
            }
            #[tokio::test]
            async fn postgres() {
                let db = TestDb::postgres().await;
                super::$name(&db).await;
                db.cleanup().await;
            }
        }
    };
}

on_both!(workflow_diagram_and_triggers);
on_both!(job_save_writes_a_snapshot);
on_both!(history_filters_paging_and_rerun);
on_both!(run_inspector_and_retry);
on_both!(live_logs_stream);
on_both!(credentials_never_come_back);
on_both!(accounts_and_members);

/// On PostgreSQL a retry wakes every node's claimers, as the store's ingest does.
#[tokio::test]
async fn retry_notifies_postgres_listeners() {
    let db = TestDb::postgres().await;
    let (s, mut c) = editor(&db).await;
    let mut listener = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
    listener.listen("gabbro_run_available").await.unwrap();
    let path = format!("/projects/{}/runs/{}", s.project_id, s.failed_run_id);
    let page = c.get(&path).await;
    let r = c
        .post(
            &format!("{path}/retry"),
            &[("_csrf", &page.csrf()), ("step_id", &s.step2_id)],
        )
        .await;
    assert_eq!(r.status, 303);
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(n.payload(), s.workflow_id);
    drop(listener);
    db.cleanup().await;
}
