//! Protocol fidelity: an OpenFn-style worker double replays every
//! worker → server frame that OpenFn's ws-worker 1.25.0 sent in the captured
//! session (`shared/reference/ws-worker-frames.jsonl`) against gabbro's
//! `/worker` endpoint over a real socket and a real database, on SQLite and
//! PostgreSQL: both connections, the join-leave-join burst on reconnect,
//! every run event and the error replies. Then the misbehaving-worker cases:
//! bad tokens, a run token for another run, malformed frames, unknown topics
//! and events — each gets an error and the server stays up.

mod protocol_double_support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use gabbro_protocol::{Frame, RunClaims, WorkerToken};
use gabbro_server::worker_socket::SocketSettings;
use gabbro_store::Backend;
use protocol_double_support::*;
use serde_json::{Value, json};

/// The capture's run names, in the order their runs are enqueued (claims
/// are FIFO, so the n-th claimed run plays the n-th name).
const RUNS: [&str; 6] = ["run-a", "run-b", "run-c", "run-d", "run-e", "run-d2"];

struct Ids {
    /// capture name → our id (runs, jobs, the credential `c`)
    names: HashMap<String, String>,
    /// run id → its dataclip id (the capture's `d`)
    dataclips: HashMap<String, String>,
    /// run id → run token from our claim replies
    tokens: HashMap<String, String>,
}

impl Ids {
    /// The captured frame with the capture's ids swapped for ours.
    fn rewrite(&self, frame: &Frame) -> Frame {
        let run_of_topic = frame
            .topic
            .strip_prefix("run:")
            .and_then(|n| self.names.get(n))
            .cloned();
        let mut f = frame.clone();
        if let Some(run_id) = &run_of_topic {
            f.topic = format!("run:{run_id}");
            let dataclip = self.dataclips.get(run_id).cloned().unwrap_or_default();
            swap(&mut f.payload, &|s| match s {
                "d" => Some(dataclip.clone()),
                other => self.names.get(other).cloned(),
            });
            if f.event == "phx_join" {
                f.payload =
                    json!({ "token": self.tokens.get(run_id).cloned().unwrap_or_default() });
            }
        }
        f
    }
}

fn swap(v: &mut Value, map: &dyn Fn(&str) -> Option<String>) {
    match v {
        Value::String(s) => {
            if let Some(n) = map(s) {
                *s = n;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| swap(x, map)),
        Value::Object(o) => o.values_mut().for_each(|x| swap(x, map)),
        _ => {}
    }
}

struct Sent {
    frame: Frame,
    /// The capture's name of the run (or "queue").
    run: String,
}

/// Checks one reply against what Lightning answers for that event.
fn check_reply(
    o: &Orchestrator,
    ids: &mut Ids,
    sent: &Sent,
    reply: Incoming,
    counts: &mut HashMap<String, usize>,
) {
    let f = &sent.frame;
    *counts.entry(f.event.clone()).or_default() += 1;
    let what = format!(
        "{} {} on {}",
        f.event,
        f.msg_ref.clone().unwrap_or_default(),
        sent.run
    );
    if f.event == "fetch:dataclip" {
        let Incoming::Binary(b) = reply else {
            panic!("{what}: expected a binary reply")
        };
        assert_eq!(b.status, "ok", "{what}");
        assert_eq!(b.topic, f.topic, "{what}");
        let v: Value = serde_json::from_slice(&b.payload).expect("dataclip JSON");
        assert_eq!(
            v["data"],
            json!({"x": 1}),
            "{what}: the webhook body as data"
        );
        assert_eq!(
            v["request"]["method"], "POST",
            "{what}: the request beside it"
        );
        return;
    }
    let Incoming::Text(r) = reply else {
        panic!("{what}: expected a text reply")
    };
    assert_eq!(r.event, "phx_reply", "{what}");
    assert_eq!(r.join_ref, f.join_ref, "{what}: join_ref echoed");
    assert_eq!(r.topic, f.topic, "{what}: topic echoed");
    let status = r.payload["status"].as_str().unwrap_or_default();
    let resp = &r.payload["response"];
    match f.event.as_str() {
        "fetch:credential" if f.payload["id"] == "no-such-credential" => {
            assert_eq!(status, "error", "{what}");
            assert_eq!(
                resp,
                &json!({"errors": {"id": ["Credential not found!"]}}),
                "{what}"
            );
        }
        "fetch:credential" => {
            assert_eq!(status, "ok", "{what}: {resp}");
            assert_eq!(resp, &o.credential_body, "{what}");
        }
        "claim" => {
            assert_eq!(status, "ok", "{what}: {resp}");
            let runs = resp["runs"].as_array().expect("runs array");
            assert!(
                runs.len() as u64 <= f.payload["demand"].as_u64().unwrap_or(0),
                "{what}: never more than demand"
            );
            for run in runs {
                let id = run["id"].as_str().expect("id").to_string();
                ids.tokens
                    .insert(id, run["token"].as_str().expect("token").to_string());
            }
        }
        "fetch:plan" => {
            assert_eq!(status, "ok", "{what}: {resp}");
            assert_eq!(resp["id"].as_str(), f.topic.strip_prefix("run:"), "{what}");
            assert_eq!(
                resp["project_id"].as_str(),
                Some(o.project_id.as_str()),
                "{what}"
            );
            assert_eq!(resp["jobs"].as_array().map(Vec::len), Some(4), "{what}");
            assert_eq!(
                resp["triggers"][0]["id"], resp["starting_node_id"],
                "{what}"
            );
            assert_eq!(
                resp["jobs"][0]["credential_id"].as_str(),
                Some(o.credential_id.as_str()),
                "{what}"
            );
            assert!(resp["dataclip_id"].is_string(), "{what}");
            assert_eq!(resp["options"]["run_timeout_ms"], 300_000, "{what}");
            let conditions: Vec<&str> = resp["edges"]
                .as_array()
                .expect("edges")
                .iter()
                .filter_map(|e| e["condition"].as_str())
                .collect();
            assert!(
                conditions.contains(&"on_job_failure") && conditions.contains(&"!state.errors"),
                "{what}: {conditions:?}"
            );
        }
        "run:start" | "run:complete" => {
            assert_eq!(status, "ok", "{what}: {resp}");
            assert_eq!(resp, &Value::Null, "{what}");
        }
        "step:start" | "step:complete" => {
            assert_eq!(status, "ok", "{what}: {resp}");
            assert_eq!(resp["step_id"], f.payload["step_id"], "{what}");
        }
        "run:log" => {
            assert_eq!(status, "ok", "{what}: {resp}");
            assert!(resp["log_line_id"].is_string(), "{what}: {resp}");
        }
        "phx_join" | "phx_leave" | "heartbeat" => {
            assert_eq!(status, "ok", "{what}: {resp}");
            assert_eq!(resp, &json!({}), "{what}");
        }
        other => panic!("unexpected event {other} in the capture"),
    }
}

async fn replay_capture(backend: Backend) {
    let o = Orchestrator::start(backend).await;
    let mut ids = Ids {
        names: o.jobs.iter().cloned().collect(),
        dataclips: HashMap::new(),
        tokens: HashMap::new(),
    };
    ids.names.insert("c".into(), o.credential_id.clone());
    for name in RUNS {
        let (run_id, dataclip_id) = o.enqueue(json!({"x": 1})).await;
        ids.names.insert(name.to_string(), run_id.clone());
        ids.dataclips.insert(run_id, dataclip_id);
    }

    let lines = captured_lines();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut client: Option<Client> = None;
    let mut outstanding: Vec<Sent> = Vec::new();
    let mut prev_t = 0i64;
    let mut sent_total = 0;
    for line in &lines {
        if line["dir"] != "worker->server" {
            continue;
        }
        if line["kind"] == "close" {
            drain(&o, &mut ids, client.as_mut(), &mut outstanding, &mut counts).await;
            if let Some(c) = client.take() {
                c.close().await;
            }
            continue;
        }
        let captured = Frame::from_value(line["frame"].clone()).expect("captured frame");
        let t = line["t_ms"].as_i64().unwrap_or(0);
        // The worker sent these back to back (e.g. join, leave, join on
        // reconnect): send them so. Otherwise it waited for the replies,
        // and a run join needs the token of a claim reply.
        let burst = t - prev_t < 5;
        prev_t = t;
        if !burst || (captured.event == "phx_join" && captured.topic.starts_with("run:")) {
            drain(&o, &mut ids, client.as_mut(), &mut outstanding, &mut counts).await;
        }
        if client.is_none() {
            client = Some(o.connect().await);
        }
        let frame = ids.rewrite(&captured);
        let c = client.as_mut().expect("client");
        c.send(&frame).await;
        sent_total += 1;
        if frame.msg_ref.is_some() {
            outstanding.push(Sent {
                frame,
                run: line["run"].as_str().unwrap_or("queue").to_string(),
            });
        }
    }
    drain(&o, &mut ids, client.as_mut(), &mut outstanding, &mut counts).await;
    if let Some(c) = client.take() {
        c.close().await;
    }
    assert_eq!(
        sent_total, 327,
        "every captured worker text frame was replayed"
    );
    for ev in [
        "phx_join",
        "phx_leave",
        "heartbeat",
        "claim",
        "fetch:plan",
        "fetch:credential",
        "fetch:dataclip",
        "run:start",
        "step:start",
        "step:complete",
        "run:log",
        "run:complete",
    ] {
        assert!(
            counts.get(ev).copied().unwrap_or(0) > 0,
            "replayed and answered {ev}"
        );
    }

    // What the runs became, as the capture's worker reported them.
    let expect = [
        ("run-a", "success", 2),
        ("run-b", "success", 2),
        ("run-c", "crashed", 1),
        ("run-d", "success", 1),
        ("run-e", "exception", 0),
        ("run-d2", "success", 1),
    ];
    for (name, state, steps) in expect {
        let id = &ids.names[name];
        assert_eq!(o.run_state(id).await, state, "{name}");
        let n = o
            .count("SELECT COUNT(*) FROM run_steps WHERE run_id = $1", id)
            .await;
        assert_eq!(n, steps, "{name}: steps");
        let logs = o
            .count("SELECT COUNT(*) FROM log_lines WHERE run_id = $1", id)
            .await;
        assert!(logs > 0, "{name}: log lines stored");
    }
    let a = &ids.names["run-a"];
    let reasons = o
        .strings(
            "SELECT s.exit_reason FROM steps s JOIN run_steps rs ON rs.step_id = s.id WHERE rs.run_id = $1 ORDER BY rs.position",
            a,
        )
        .await;
    assert_eq!(reasons, ["success", "success"]);
    let outputs = o
        .count(
            "SELECT COUNT(*) FROM dataclips d JOIN steps s ON s.output_dataclip_id = d.id
             JOIN run_steps rs ON rs.step_id = s.id WHERE rs.run_id = $1 AND d.type = 'step_result'",
            a,
        )
        .await;
    assert_eq!(
        outputs, 2,
        "each step's output dataclip stored under the worker's id"
    );
    let c = &ids.names["run-c"];
    let crash = o
        .strings("SELECT COALESCE(error_type, '') FROM runs WHERE id = $1", c)
        .await;
    assert_eq!(crash, ["RuntimeCrash"]);
    o.stop().await;
}

async fn drain(
    o: &Orchestrator,
    ids: &mut Ids,
    client: Option<&mut Client>,
    outstanding: &mut Vec<Sent>,
    counts: &mut HashMap<String, usize>,
) {
    let Some(c) = client else {
        outstanding.clear();
        return;
    };
    for sent in std::mem::take(outstanding) {
        let r = sent.frame.msg_ref.clone().expect("ref");
        let reply = c.reply_to(&r).await;
        check_reply(o, ids, &sent, reply, counts);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_worker_session_replays_on_sqlite() {
    replay_capture(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_worker_session_replays_on_postgres() {
    replay_capture(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// Misbehaving workers.

async fn errors_and_survival(backend: Backend) {
    let o = Orchestrator::start(backend).await;

    // Socket auth: no token, a token signed with another secret, garbage.
    for token in [
        None,
        Some(WorkerToken::sign("wrong-secret", WORKER_ID).expect("token")),
        Some("not-a-jwt".to_string()),
    ] {
        let url = match &token {
            Some(t) => o.url(t),
            None => format!("ws://{}/worker/websocket?vsn=2.0.0", o.addr),
        };
        match Client::connect(&url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 401, "token {token:?}")
            }
            Err(e) => panic!("expected HTTP 401, got {e}"),
            Ok(_) => panic!("socket with token {token:?} was accepted"),
        }
    }
    // `/worker` answers too.
    let token = WorkerToken::sign(SECRET, WORKER_ID).expect("token");
    let mut plain = Client::connect(&format!("ws://{}/worker?token={token}&vsn=2.0.0", o.addr))
        .await
        .expect("/worker accepts the socket");
    let (s, _) = plain
        .call(&frame(None, "1", "phoenix", "heartbeat", json!({})))
        .await;
    assert_eq!(s, "ok");
    plain.close().await;

    let mut c = o.connect().await;
    // Malformed frames: each answered with an error; the socket lives on.
    for bad in [
        "not json",
        "[1,2]",
        "{\"a\":1}",
        "[null,\"7\",\"worker:queue\"]",
        "[]",
    ] {
        c.send_text(bad.to_string()).await;
        let Some(Incoming::Text(r)) = c.next().await else {
            panic!("reply to malformed frame {bad:?}")
        };
        assert_eq!(r.payload["status"], "error", "{bad}");
        assert!(
            r.payload["response"]["reason"]
                .as_str()
                .unwrap_or("")
                .starts_with("malformed frame"),
            "{bad}: {r:?}"
        );
    }
    // Unknown topic; claim before joining; unknown phoenix event.
    let (s, r) = c
        .call(&frame(Some("2"), "2", "rooms:lobby", "phx_join", json!({})))
        .await;
    assert_eq!(
        (s.as_str(), r),
        ("error", json!({"reason": "unmatched topic"}))
    );
    let (s, r) = c
        .call(&frame(
            Some("3"),
            "3",
            "worker:queue",
            "claim",
            json!({"demand": 1}),
        ))
        .await;
    assert_eq!(
        (s.as_str(), r),
        ("error", json!({"reason": "unmatched topic"}))
    );
    let (s, _) = c
        .call(&frame(None, "4", "phoenix", "sing", json!({})))
        .await;
    assert_eq!(s, "error");
    // Join the queue; an unknown event and a malformed claim are errors.
    let (s, _) = c
        .call(&frame(
            Some("5"),
            "5",
            "worker:queue",
            "phx_join",
            json!({"capacity": 2, "queues": {"manual>*": 2}}),
        ))
        .await;
    assert_eq!(s, "ok");
    let (s, r) = c
        .call(&frame(Some("5"), "6", "worker:queue", "dance", json!({})))
        .await;
    assert_eq!(s, "error", "{r}");
    let (s, r) = c
        .call(&frame(
            Some("5"),
            "7",
            "worker:queue",
            "claim",
            json!({"worker_name": null}),
        ))
        .await;
    assert_eq!(
        (s.as_str(), r),
        ("error", json!({"errors": {"demand": ["can't be blank"]}}))
    );

    // work-available on the leading edge: an idle worker hears at once.
    let t0 = Instant::now();
    let (run_id, _) = o.enqueue(json!({"n": 1})).await;
    let push = wait_push(&mut c).await;
    assert!(
        push.msg_ref.is_none() && push.payload == json!({}),
        "{push:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "push took {:?}",
        t0.elapsed()
    );

    // Claim it; then a second run for the token-misuse cases.
    let (s, r) = c
        .call(&frame(
            Some("5"),
            "8",
            "worker:queue",
            "claim",
            json!({"demand": 1, "worker_name": "double", "queues": ["manual", "*"]}),
        ))
        .await;
    assert_eq!(s, "ok");
    let runs = r["runs"].as_array().expect("runs").clone();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["id"], json!(run_id));
    let token = runs[0]["token"].as_str().expect("token").to_string();
    let claims = o.socket_verify(&token);
    assert_eq!(claims.iss, "Lightning");
    assert_eq!(
        claims.sub.as_deref(),
        Some(format!("run:{run_id}").as_str())
    );
    assert!(
        claims.exp >= claims.nbf + 300 && claims.exp <= claims.nbf + 320,
        "exp = run timeout + grace"
    );
    let (other_id, _) = o.enqueue(json!({"n": 2})).await;
    let topic = format!("run:{run_id}");

    // Events on a run channel not joined.
    let (s, r) = c
        .call(&frame(Some("9"), "9", &topic, "fetch:plan", json!({})))
        .await;
    assert_eq!(
        (s.as_str(), r),
        ("error", json!({"reason": "unmatched topic"}))
    );
    // A run token for another run, a token by another key, no token.
    let other_topic = format!("run:{other_id}");
    let (s, r) = c
        .call(&frame(
            Some("10"),
            "10",
            &other_topic,
            "phx_join",
            json!({"token": token}),
        ))
        .await;
    assert_eq!(
        (s.as_str(), r),
        ("error", json!({"reason": "unauthorized"}))
    );
    let foreign = gabbro_protocol::RunSigner::generate(1024)
        .expect("key")
        .sign(&RunClaims::new(&run_id, 60))
        .expect("sign");
    let (s, r) = c
        .call(&frame(
            Some("11"),
            "11",
            &topic,
            "phx_join",
            json!({"token": foreign}),
        ))
        .await;
    assert_eq!(
        (s.as_str(), r),
        ("error", json!({"reason": "unauthorized"}))
    );
    let (s, r) = c
        .call(&frame(Some("12"), "12", &topic, "phx_join", json!({})))
        .await;
    assert_eq!(
        (s.as_str(), r),
        ("error", json!({"reason": "unauthorized"}))
    );
    // A valid token for a run that does not exist.
    let ghost = gabbro_store::new_id();
    let ghost_token = signer().sign(&RunClaims::new(&ghost, 60)).expect("sign");
    let (s, r) = c
        .call(&frame(
            Some("13"),
            "13",
            &format!("run:{ghost}"),
            "phx_join",
            json!({"token": ghost_token}),
        ))
        .await;
    assert_eq!((s.as_str(), r), ("error", json!({"reason": "not_found"})));

    // Join, leave and join again within a millisecond (pipelined).
    c.send(&frame(
        Some("14"),
        "14",
        &topic,
        "phx_join",
        json!({"token": token}),
    ))
    .await;
    c.send(&frame(Some("14"), "15", &topic, "phx_leave", json!({})))
        .await;
    c.send(&frame(
        Some("16"),
        "16",
        &topic,
        "phx_join",
        json!({"token": token}),
    ))
    .await;
    for r in ["14", "15", "16"] {
        let Incoming::Text(f) = c.reply_to(r).await else {
            panic!("text reply")
        };
        assert_eq!(f.payload["status"], "ok", "ref {r}: {f:?}");
    }
    let j = Some("16");
    // Unknown run event; payloads missing required fields; a job not in
    // the snapshot; an unknown step.
    let (s, _) = c
        .call(&frame(j, "17", &topic, "run:dance", json!({})))
        .await;
    assert_eq!(s, "error");
    let (s, r) = c
        .call(&frame(
            j,
            "18",
            &topic,
            "step:start",
            json!({"step_id": "s1", "timestamp": "1795844572970130"}),
        ))
        .await;
    assert_eq!(
        (s.as_str(), r),
        ("error", json!({"errors": {"job_id": ["can't be blank"]}}))
    );
    let (s, r) = c
        .call(&frame(
            j,
            "19",
            &topic,
            "fetch:credential",
            json!({"id": ""}),
        ))
        .await;
    assert_eq!(
        (s.as_str(), r),
        ("error", json!({"errors": {"id": ["can't be blank"]}}))
    );
    let (s, _) = c
        .call(&frame(
            j,
            "20",
            &topic,
            "run:start",
            json!({"timestamp": "1795844572970130"}),
        ))
        .await;
    assert_eq!(s, "ok");
    let (s, r) = c.call(&frame(j, "21", &topic, "step:start", json!({"step_id": gabbro_store::new_id(), "job_id": gabbro_store::new_id(), "timestamp": "1795844572970131"}))).await;
    assert_eq!(s, "error", "job not in snapshot: {r}");
    assert!(r["errors"]["job_id"].is_array(), "{r}");
    let (s, r) = c.call(&frame(j, "22", &topic, "step:complete", json!({"step_id": gabbro_store::new_id(), "reason": "success", "timestamp": "1795844572970132"}))).await;
    assert_eq!(s, "error", "unknown step: {r}");
    // Credentials never reach the log.
    let (s, _) = c
        .call(&frame(
            j,
            "23",
            &topic,
            "fetch:credential",
            json!({"id": o.credential_id}),
        ))
        .await;
    assert_eq!(s, "ok");
    let (s, r) = c.call(&frame(j, "24", &topic, "run:log", json!({"run_id": run_id, "message": ["password is", "pa55word-very-secret"], "level": "info", "source": "JOB", "timestamp": "1795844572970133"}))).await;
    assert_eq!(s, "ok", "{r}");
    let messages = o
        .strings("SELECT message FROM log_lines WHERE run_id = $1", &run_id)
        .await;
    assert_eq!(messages, ["password is ***"]);
    // Complete, then a contradicting second outcome is refused.
    let (s, _) = c
        .call(&frame(
            j,
            "25",
            &topic,
            "run:complete",
            json!({"reason": "success", "timestamp": "1795844572970134"}),
        ))
        .await;
    assert_eq!(s, "ok");
    let (s, _) = c
        .call(&frame(
            j,
            "26",
            &topic,
            "run:complete",
            json!({"reason": "success", "timestamp": "1795844572970134"}),
        ))
        .await;
    assert_eq!(s, "ok", "a repeat is answered ok");
    let (s, r) = c
        .call(&frame(
            j,
            "27",
            &topic,
            "run:complete",
            json!({"reason": "crash", "error_type": "X"}),
        ))
        .await;
    assert_eq!(
        (s.as_str(), r),
        (
            "error",
            json!({"errors": {"state": ["already in completed state"]}})
        )
    );
    assert_eq!(o.run_state(&run_id).await, "success");

    // Still up: heartbeats answer and a new socket connects.
    let (s, _) = c
        .call(&frame(None, "28", "phoenix", "heartbeat", json!({})))
        .await;
    assert_eq!(s, "ok");
    c.close().await;
    let mut again = o.connect().await;
    let (s, _) = again
        .call(&frame(None, "1", "phoenix", "heartbeat", json!({})))
        .await;
    assert_eq!(s, "ok");
    again.close().await;
    o.stop().await;
}

async fn wait_push(c: &mut Client) -> Frame {
    if let Some(i) = c
        .backlog
        .iter()
        .position(|m| matches!(m, Incoming::Text(f) if f.event == "work-available"))
        && let Incoming::Text(f) = c.backlog.remove(i)
    {
        return f;
    }
    loop {
        match c.next().await {
            Some(Incoming::Text(f)) if f.event == "work-available" => return f,
            Some(other) => c.backlog.push(other),
            None => panic!("socket closed"),
        }
    }
}

/// Joins `worker:queue` (join ref "1") with `payload`; the join must succeed.
async fn join_queue(c: &mut Client, payload: Value) {
    let (s, r) = c
        .call(&frame(Some("1"), "1", "worker:queue", "phx_join", payload))
        .await;
    assert_eq!(s, "ok", "{r}");
}

/// A claim for one run on any queue, as message `msg_ref`: (status, response).
async fn claim_one(c: &mut Client, msg_ref: &str) -> (String, Value) {
    c.call(&frame(
        Some("1"),
        msg_ref,
        "worker:queue",
        "claim",
        json!({"demand": 1, "queues": ["*"]}),
    ))
    .await
}

trait Verify {
    fn socket_verify(&self, token: &str) -> RunClaims;
}

impl Verify for Orchestrator {
    fn socket_verify(&self, token: &str) -> RunClaims {
        gabbro_protocol::RunVerifier::from_public_pem(self.socket.public_key_pem())
            .expect("verifier")
            .verify(token, None)
            .expect("run token verifies with the published key")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_worker_gets_errors_and_server_survives_on_sqlite() {
    errors_and_survival(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_worker_gets_errors_and_server_survives_on_postgres() {
    errors_and_survival(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// Claims.

async fn overlapping_claims(backend: Backend) {
    let o = Orchestrator::start(backend).await;
    let mut c = o.connect().await;
    join_queue(&mut c, json!({"capacity": 20, "queues": {"*": 20}})).await;
    let mut enqueued = Vec::new();
    for i in 0..5 {
        enqueued.push(o.enqueue(json!({"i": i})).await.0);
    }
    // 20 claims in flight at once, as the capture's overlapping workloops.
    for r in 0..20 {
        let m = format!("c{r}");
        c.send(&frame(
            Some("1"),
            &m,
            "worker:queue",
            "claim",
            json!({"demand": 1, "worker_name": null, "queues": ["*"]}),
        ))
        .await;
    }
    let mut got = Vec::new();
    for r in 0..20 {
        let Incoming::Text(f) = c.reply_to(&format!("c{r}")).await else {
            panic!("text")
        };
        assert_eq!(f.payload["status"], "ok");
        let runs = f.payload["response"]["runs"]
            .as_array()
            .expect("runs")
            .clone();
        assert!(runs.len() <= 1, "never more than demand");
        got.extend(
            runs.into_iter()
                .map(|r| r["id"].as_str().unwrap_or_default().to_string()),
        );
    }
    got.sort();
    enqueued.sort();
    assert_eq!(got, enqueued, "each run claimed exactly once");

    // A claim whose socket is gone before the reply: its run goes back.
    let (lost_run, _) = o.enqueue(json!({"lost": true})).await;
    let mut d = o.connect().await;
    let (s, _) = d
        .call(&frame(
            Some("1"),
            "1",
            "worker:queue",
            "phx_join",
            json!({"capacity": 1, "queues": {"*": 1}}),
        ))
        .await;
    assert_eq!(s, "ok");
    d.send(&frame(
        Some("1"),
        "2",
        "worker:queue",
        "claim",
        json!({"demand": 1, "queues": ["*"]}),
    ))
    .await;
    drop(d);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut state = o.run_state(&lost_run).await;
    // Either the claim ran after the socket died (released), or it raced
    // ahead and was delivered into a closing socket and released anyway.
    while state != "available" && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        state = o.run_state(&lost_run).await;
    }
    assert_eq!(state, "available", "an undelivered claim is rolled back");
    c.close().await;
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_claims_and_rollback_on_sqlite() {
    overlapping_claims(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_claims_and_rollback_on_postgres() {
    overlapping_claims(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// work-available coalescing.

async fn wake_coalesces(backend: Backend) {
    let o = Orchestrator::start(backend).await;
    let mut c = o.connect().await;
    join_queue(&mut c, json!({"capacity": 1, "queues": {"*": 1}})).await;
    let t0 = Instant::now();
    for i in 0..30 {
        o.enqueue(json!({"i": i})).await;
    }
    let burst = t0.elapsed();
    // Count pushes over the burst plus one window.
    let until = Instant::now() + Duration::from_millis(600);
    let mut pushes = 0;
    while Instant::now() < until {
        match tokio::time::timeout(until - Instant::now(), c.next()).await {
            Ok(Some(Incoming::Text(f))) if f.event == "work-available" => pushes += 1,
            Ok(Some(_)) => {}
            Ok(None) => panic!("closed"),
            Err(_) => break,
        }
    }
    let windows = usize::try_from(burst.as_millis() / 200).unwrap_or(usize::MAX) + 2;
    assert!(
        pushes >= 1 && pushes <= windows + 1,
        "{pushes} pushes for 30 enqueues over {burst:?}"
    );
    c.close().await;
    o.stop().await;
}

/// A push stays unanswered until the worker claims: later enqueues wait
/// (here for a 10 s window), and a claim lets the next push out at once.
async fn wake_answered_by_claim(backend: Backend) {
    let mut settings = SocketSettings::new(SECRET);
    settings.wake_window = Duration::from_secs(10);
    let o = Orchestrator::start_with(backend, settings).await;
    let mut c = o.connect().await;
    join_queue(&mut c, json!({"capacity": 1, "queues": {"*": 1}})).await;
    o.enqueue(json!({"n": 1})).await;
    wait_push(&mut c).await;
    // Unanswered: a second enqueue is not pushed (not within 1 s of a 10 s window).
    o.enqueue(json!({"n": 2})).await;
    let quiet = tokio::time::timeout(Duration::from_secs(1), wait_push(&mut c)).await;
    assert!(quiet.is_err(), "pushed again before the worker claimed");
    // The claim answers it: the pending enqueue is pushed at once.
    let t0 = Instant::now();
    let (s, _) = claim_one(&mut c, "2").await;
    assert_eq!(s, "ok");
    wait_push(&mut c).await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "push after the claim took {:?} (window 10 s)",
        t0.elapsed()
    );
    c.close().await;
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_available_waits_for_a_claim_on_sqlite() {
    wake_answered_by_claim(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_available_waits_for_a_claim_on_postgres() {
    wake_answered_by_claim(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_available_is_coalesced_on_sqlite() {
    wake_coalesces(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_available_is_coalesced_on_postgres() {
    wake_coalesces(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// Tokens across outages and claims; gabbro's seq.

async fn tokens_and_seq(backend: Backend) {
    let o = Orchestrator::start(backend).await;
    let mut c = o.connect().await;
    join_queue(
        &mut c,
        json!({"capacity": 1, "queues": {"*": 1}, "active_runs": []}),
    )
    .await;
    let (run_id, _) = o.enqueue(json!({"t": 1})).await;
    let (_, r) = claim_one(&mut c, "2").await;
    let token = r["runs"][0]["token"].as_str().expect("token").to_string();
    let claims = o.socket_verify(&token);
    assert_eq!(
        claims.worker_id.as_deref(),
        Some(WORKER_ID),
        "holder in the token"
    );
    let epoch = claims.epoch.expect("claim epoch in the token");
    let topic = format!("run:{run_id}");

    // A token from an older claim of the run is refused.
    let mut stale = claims.clone();
    stale.epoch = Some(epoch + 7);
    let stale = signer().sign(&stale).expect("sign");
    let (s, r) = c
        .call(&frame(
            Some("3"),
            "3",
            &topic,
            "phx_join",
            json!({"token": stale}),
        ))
        .await;
    assert_eq!(
        (s.as_str(), r),
        ("error", json!({"reason": "unauthorized"}))
    );

    // The token expired (an outage outlived it): its holder may still
    // deliver; any other worker may not.
    let mut expired = claims.clone();
    expired.nbf -= 4000;
    expired.exp = expired.nbf + 100;
    let expired = signer().sign(&expired).expect("sign");
    let other_token = WorkerToken::sign(SECRET, "some-other-worker").expect("token");
    let mut other = Client::connect(&o.url(&other_token))
        .await
        .expect("connect");
    let (s, r) = other
        .call(&frame(
            Some("1"),
            "1",
            &topic,
            "phx_join",
            json!({"token": expired}),
        ))
        .await;
    assert_eq!(
        (s.as_str(), r),
        ("error", json!({"reason": "unauthorized"}))
    );
    // Nor, with a valid token, may a worker that does not hold the run.
    let (s, r) = other
        .call(&frame(
            Some("2"),
            "2",
            &topic,
            "phx_join",
            json!({"token": token}),
        ))
        .await;
    assert_eq!(
        (s.as_str(), r),
        ("error", json!({"reason": "unauthorized"}))
    );
    other.close().await;
    let (s, r) = c
        .call(&frame(
            Some("4"),
            "4",
            &topic,
            "phx_join",
            json!({"token": expired}),
        ))
        .await;
    assert_eq!(s, "ok", "the holder rejoins with its expired token: {r}");

    // seq: in order, replays answered ok, a gap names the expected seq.
    let j = Some("4");
    let ts = "1795844572970130";
    let (s, r) = c
        .call(&frame(
            j,
            "5",
            &topic,
            "run:start",
            json!({"timestamp": ts, "seq": 1}),
        ))
        .await;
    assert_eq!(s, "ok", "{r}");
    let log = |seq: u64| json!({"run_id": run_id, "message": [format!("line {seq}")], "level": "info", "source": "JOB", "timestamp": ts, "seq": seq});
    let (s, r) = c.call(&frame(j, "6", &topic, "run:log", log(3))).await;
    assert_eq!(s, "error");
    assert_eq!(r["errors"]["seq"], json!(["expected 2"]), "{r}");
    let (s, r) = c.call(&frame(j, "7", &topic, "run:log", log(2))).await;
    assert_eq!(s, "ok", "{r}");
    let first_id = r["log_line_id"].clone();
    let (s, r) = c.call(&frame(j, "8", &topic, "run:log", log(2))).await;
    assert_eq!(s, "ok", "a replay is answered ok: {r}");
    assert_eq!(r["log_line_id"], first_id, "with the first answer");
    let (s, _) = c
        .call(&frame(
            j,
            "9",
            &topic,
            "run:start",
            json!({"timestamp": ts, "seq": 1}),
        ))
        .await;
    assert_eq!(s, "ok");
    let lines = o
        .count("SELECT COUNT(*) FROM log_lines WHERE run_id = $1", &run_id)
        .await;
    assert_eq!(lines, 1, "the replayed line is stored once");
    assert_eq!(o.run_state(&run_id).await, "started");
    c.close().await;
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_stale_tokens_and_seq_on_sqlite() {
    tokens_and_seq(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_stale_tokens_and_seq_on_postgres() {
    tokens_and_seq(Backend::Postgres).await;
}

/// The JWT `alg` of a token's header.
fn alg_of(token: &str) -> String {
    use base64::Engine;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').next().expect("header"))
        .expect("base64 header");
    let header: Value = serde_json::from_slice(&header).expect("JSON header");
    header["alg"].as_str().expect("alg").to_string()
}

/// gabbro's `run_token_alg` extension: a worker that asks gets HS256 run
/// tokens the orchestrator takes at the run join (bound to their run like
/// RS256 ones); one that does not ask, as OpenFn's, gets Lightning's RS256.
async fn hs256_on_request(backend: Backend) {
    let o = Orchestrator::start(backend).await;
    let mut c = o.connect().await;
    join_queue(
        &mut c,
        json!({"capacity": 2, "queues": {"*": 2}, "active_runs": [], "run_token_alg": "HS256"}),
    )
    .await;
    let (first, _) = o.enqueue(json!({"t": 1})).await;
    let (second, _) = o.enqueue(json!({"t": 2})).await;
    let (_, r) = claim_one(&mut c, "2").await;
    let run_a = r["runs"][0]["id"].as_str().expect("id").to_string();
    let token_a = r["runs"][0]["token"].as_str().expect("token").to_string();
    assert_eq!(alg_of(&token_a), "HS256");
    let public =
        gabbro_protocol::RunVerifier::from_public_pem(o.socket.public_key_pem()).expect("verifier");
    assert!(
        public.verify(&token_a, None).is_err(),
        "an HS256 token is not checkable with the public key"
    );
    let (_, r) = claim_one(&mut c, "3").await;
    let run_b = r["runs"][0]["id"].as_str().expect("id").to_string();
    let mut runs = vec![run_a.clone(), run_b.clone()];
    runs.sort();
    let mut enqueued = vec![first, second];
    enqueued.sort();
    assert_eq!(runs, enqueued);

    // Bound to its run: refused on the other run's channel.
    let (s, r) = c
        .call(&frame(
            Some("4"),
            "4",
            &format!("run:{run_b}"),
            "phx_join",
            json!({"token": token_a}),
        ))
        .await;
    assert_eq!(
        (s.as_str(), r),
        ("error", json!({"reason": "unauthorized"}))
    );
    let (s, r) = c
        .call(&frame(
            Some("5"),
            "5",
            &format!("run:{run_a}"),
            "phx_join",
            json!({"token": token_a}),
        ))
        .await;
    assert_eq!(s, "ok", "the HS256 token joins its run: {r}");
    let (s, r) = c
        .call(&frame(
            Some("5"),
            "6",
            &format!("run:{run_a}"),
            "run:start",
            json!({"timestamp": "1795844572970130"}),
        ))
        .await;
    assert_eq!(s, "ok", "{r}");
    assert_eq!(o.run_state(&run_a).await, "started");
    c.close().await;

    // Without the field: Lightning's RS256, checkable with the public key.
    let mut plain = o.connect().await;
    join_queue(&mut plain, json!({"capacity": 1, "queues": {"*": 1}})).await;
    let (third, _) = o.enqueue(json!({"t": 3})).await;
    let (_, r) = claim_one(&mut plain, "2").await;
    assert_eq!(r["runs"][0]["id"], json!(third));
    let token = r["runs"][0]["token"].as_str().expect("token");
    assert_eq!(alg_of(token), "RS256");
    o.socket_verify(token);
    plain.close().await;
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_run_tokens_on_request_on_sqlite() {
    hs256_on_request(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_run_tokens_on_request_on_postgres() {
    hs256_on_request(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// Latency: enqueue → work-available → claim reply, with an idle worker.

async fn wake_to_claim_latency(backend: Backend) {
    let o = Orchestrator::start(backend).await;
    let mut c = o.connect().await;
    join_queue(&mut c, json!({"capacity": 1, "queues": {"*": 1}})).await;
    let mut took = Vec::new();
    for i in 0..60 {
        // Past the coalescing window, so every enqueue is a leading edge.
        tokio::time::sleep(Duration::from_millis(210)).await;
        let t0 = Instant::now();
        let (run_id, _) = o.enqueue(json!({"i": i})).await;
        wait_push(&mut c).await;
        let m = format!("l{i}");
        let (_, r) = claim_one(&mut c, &m).await;
        assert_eq!(r["runs"][0]["id"], json!(run_id));
        took.push(t0.elapsed());
    }
    took.sort();
    let (p50, p99) = (took[took.len() / 2], took[took.len() * 99 / 100]);
    eprintln!(
        "{backend:?}: enqueue → work-available → claim reply over 60 runs: p50 {p50:?}, p99 {p99:?}"
    );
    assert!(p50 < Duration::from_secs(1), "p50 {p50:?}");
    c.close().await;
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_worker_hears_and_claims_promptly_on_sqlite() {
    wake_to_claim_latency(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_worker_hears_and_claims_promptly_on_postgres() {
    wake_to_claim_latency(Backend::Postgres).await;
}

/// PostgreSQL: a run enqueued by another node wakes this node's workers
/// (LISTEN on the store's channel).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_on_another_node_wakes_workers_on_postgres() {
    let o = Orchestrator::start(Backend::Postgres).await;
    let mut c = o.connect().await;
    join_queue(&mut c, json!({"capacity": 1, "queues": {"*": 1}})).await;
    // Let the listener connect before the first NOTIFY.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), c.next()).await {}
    let t0 = Instant::now();
    let run_id = o.enqueue_from_other_node(json!({"remote": true})).await;
    let push = wait_push(&mut c).await;
    assert_eq!(push.payload, json!({}));
    eprintln!("remote enqueue → work-available: {:?}", t0.elapsed());
    let (_, r) = claim_one(&mut c, "2").await;
    assert_eq!(r["runs"][0]["id"], json!(run_id));
    c.close().await;
    o.stop().await;
}

/// What `gabbro worker` does: a run channel's first event sent right behind
/// its join, without waiting for the join's reply. The server handles it
/// after the join: answered normally behind an accepted join, `unmatched
/// topic` behind a refused one (and nothing is applied).
async fn event_behind_a_join(backend: Backend) {
    let o = Orchestrator::start(backend).await;
    let mut c = o.connect().await;
    join_queue(
        &mut c,
        json!({"capacity": 1, "queues": {"*": 1}, "active_runs": []}),
    )
    .await;
    let (run_id, _) = o.enqueue(json!({"p": 1})).await;
    let (_, r) = claim_one(&mut c, "2").await;
    let token = r["runs"][0]["token"].as_str().expect("token").to_string();
    let topic = format!("run:{run_id}");

    // Refused join (garbage token) with fetch:plan and run:start behind it.
    c.send(&frame(
        Some("3"),
        "3",
        &topic,
        "phx_join",
        json!({"token": "bad"}),
    ))
    .await;
    c.send(&frame(Some("3"), "4", &topic, "fetch:plan", json!({})))
        .await;
    let started = json!({"timestamp": "1700000000000000"});
    c.send(&frame(Some("3"), "5", &topic, "run:start", started.clone()))
        .await;
    for (msg_ref, reason) in [
        ("3", "unauthorized"),
        ("4", "unmatched topic"),
        ("5", "unmatched topic"),
    ] {
        let Incoming::Text(f) = c.reply_to(msg_ref).await else {
            panic!("text reply to {msg_ref}")
        };
        assert_eq!(f.payload["status"], "error", "{msg_ref}: {f:?}");
        assert_eq!(
            f.payload["response"],
            json!({ "reason": reason }),
            "{msg_ref}"
        );
    }
    assert_eq!(o.run_state(&run_id).await, "claimed");

    // Accepted join with fetch:plan behind it.
    c.send(&frame(
        Some("6"),
        "6",
        &topic,
        "phx_join",
        json!({"token": token}),
    ))
    .await;
    c.send(&frame(Some("6"), "7", &topic, "fetch:plan", json!({})))
        .await;
    let Incoming::Text(join) = c.reply_to("6").await else {
        panic!("text reply to the join")
    };
    assert_eq!(join.payload["status"], "ok", "{join:?}");
    let Incoming::Text(plan) = c.reply_to("7").await else {
        panic!("text reply to fetch:plan")
    };
    assert_eq!(plan.payload["status"], "ok", "{plan:?}");
    assert_eq!(plan.payload["response"]["id"], json!(run_id));
    let (s, r) = c
        .call(&frame(Some("6"), "8", &topic, "run:start", started))
        .await;
    assert_eq!(s, "ok", "{r}");
    assert_eq!(o.run_state(&run_id).await, "started");
    c.close().await;
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_behind_a_join_is_handled_after_it_on_sqlite() {
    event_behind_a_join(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_behind_a_join_is_handled_after_it_on_postgres() {
    event_behind_a_join(Backend::Postgres).await;
}
