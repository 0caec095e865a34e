//! Every frame OpenFn's worker sent in the captured session parses into a
//! typed [`WorkerMessage`] and re-serialises to the same JSON value; the
//! server-side frames (mock and proxy) parse as frames, and the binary
//! dataclip reply decodes.

use std::path::PathBuf;

use base64::Engine;
use gabbro_protocol::{BinaryReply, Frame, RunEvent, WorkerMessage};
use serde_json::Value;

fn captured_lines() -> Vec<Value> {
    let dir = std::env::var("GABBRO_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let path = dir.join("reference/ws-worker-frames.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .skip(1) // meta line
        .map(|l| serde_json::from_str(l).expect("jsonl line"))
        .collect()
}

#[test]
fn every_worker_frame_round_trips_through_its_typed_message() {
    let mut count = 0;
    let mut events = std::collections::BTreeSet::new();
    for line in captured_lines() {
        if line["dir"] != "worker->server" || line["kind"] != "text" {
            continue;
        }
        let original = line["frame"].clone();
        let frame = Frame::from_value(original.clone()).expect("frame");
        let msg = WorkerMessage::from_frame(&frame)
            .unwrap_or_else(|e| panic!("seq {}: {e}: {original}", line["seq"]));
        let rebuilt = msg.to_frame(frame.join_ref.clone(), frame.msg_ref.clone());
        assert_eq!(rebuilt.to_value(), original, "seq {}", line["seq"]);
        // And through text, as it goes on the wire.
        let reparsed = Frame::parse(&rebuilt.to_text()).unwrap();
        assert_eq!(reparsed.to_value(), original);
        events.insert(format!(
            "{} {}",
            frame.topic.split(':').next().unwrap(),
            frame.event
        ));
        count += 1;
    }
    assert_eq!(count, 327, "worker->server text frames in the capture");
    for expected in [
        "phoenix heartbeat",
        "worker phx_join",
        "worker claim",
        "worker phx_leave",
        "run phx_join",
        "run fetch:plan",
        "run fetch:dataclip",
        "run fetch:credential",
        "run run:start",
        "run step:start",
        "run step:complete",
        "run run:log",
        "run run:complete",
        "run phx_leave",
    ] {
        assert!(events.contains(expected), "no {expected} frame: {events:?}");
    }
}

#[test]
fn typed_values_carry_the_captured_fields() {
    let lines = captured_lines();
    // Find a worker frame by its message ref.
    let find = |msg_ref: &str| {
        let l = lines
            .iter()
            .find(|l| l["dir"] == "worker->server" && l["frame"][1] == msg_ref)
            .unwrap();
        let f = Frame::from_value(l["frame"].clone()).unwrap();
        WorkerMessage::from_frame(&f).unwrap()
    };
    match find("7") {
        WorkerMessage::Claim(c) => {
            assert_eq!(c.demand, 1);
            assert_eq!(c.worker_name.as_deref(), Some("capture-worker"));
            assert_eq!(c.queues, ["manual", "*"]);
        }
        other => panic!("{other:?}"),
    }
    match find("196") {
        WorkerMessage::Run {
            run_id,
            event: RunEvent::RunComplete(c),
        } => {
            assert_eq!(run_id, "run-c");
            assert_eq!(c.reason, gabbro_protocol::Reason::Crash);
            assert_eq!(c.error_type.as_deref(), Some("RuntimeCrash"));
            assert!(c.final_state.is_none() && c.timestamp.is_none());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn server_frames_parse_and_the_binary_dataclip_reply_decodes() {
    let mut binaries = 0;
    for line in captured_lines() {
        if line["dir"] != "server->worker" {
            continue;
        }
        match line["kind"].as_str() {
            Some("text") => {
                let f = Frame::from_value(line["frame"].clone()).unwrap();
                if f.is_reply() {
                    f.reply()
                        .unwrap_or_else(|e| panic!("seq {}: {e}", line["seq"]));
                }
            }
            Some("binary") => {
                let b64 = line["binary"]["base64"].as_str().unwrap();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap();
                let reply = BinaryReply::decode(&bytes).unwrap();
                let d = &line["binary"]["decoded"];
                assert_eq!(reply.join_ref, d["join_ref"].as_str().unwrap());
                assert_eq!(reply.msg_ref, d["ref"].as_str().unwrap());
                assert_eq!(reply.topic, d["topic"].as_str().unwrap());
                assert!(reply.is_ok());
                assert_eq!(
                    reply.payload,
                    d["payload_text"].as_str().unwrap().as_bytes()
                );
                assert_eq!(reply.encode().unwrap(), bytes);
                binaries += 1;
            }
            _ => {}
        }
    }
    assert_eq!(binaries, 1);
}
