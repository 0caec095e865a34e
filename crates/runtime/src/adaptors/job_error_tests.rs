//! Adaptor failures seen through a whole run (compiler + executor): they must
//! get the error class OpenFn gives them. OpenFn reports an error as
//! AdaptorError only when it is raised in adaptor/library code; socket-level
//! errors come from Node's core and end up as JobError.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::{Limits, Plan, execute};

async fn run(job: &str, adaptor: &str, input: serde_json::Value) -> serde_json::Value {
    let plan = Plan::single_job(job, adaptor);
    let report = execute(&plan, input, &Limits::default(), &[], &mut |_| {}).await;
    report.final_state.unwrap_or(serde_json::Value::Null)
}

#[tokio::test]
async fn connection_refused_is_a_job_error_as_in_openfn() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let state = run(
        "get('/x');",
        "@openfn/language-http@7",
        serde_json::json!({"data": {}, "configuration": {"baseUrl": format!("http://127.0.0.1:{port}")}}),
    )
    .await;
    let err = &state["errors"]["job-1"];
    assert_eq!(err["name"], "JobError", "{state}");
    assert_eq!(
        err["message"],
        format!("connect ECONNREFUSED 127.0.0.1:{port}")
    );
}

#[tokio::test]
async fn request_timeout_is_an_adaptor_error_with_undicis_details() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut sock, _)) = listener.accept().await {
            let _ = sock.flush().await;
            held.push(sock);
        }
    });
    let started = std::time::Instant::now();
    let state = run(
        "fn(s => s);\nget('/x', { timeout: 200 });",
        "@openfn/language-http@7",
        serde_json::json!({"data": {}, "configuration": {"baseUrl": base}}),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = &state["errors"]["job-1"];
    assert_eq!(err["name"], "AdaptorError", "{state}");
    assert_eq!(err["message"], "Headers Timeout Error");
    assert_eq!(err["operationName"], "get");
    assert_eq!(err["line"], 2);
    assert_eq!(
        err["details"],
        serde_json::json!({"message": "Headers Timeout Error", "name": "HeadersTimeoutError", "code": "UND_ERR_HEADERS_TIMEOUT"})
    );
}

#[tokio::test]
async fn csv_errors_are_adaptor_errors_with_csv_parse_codes() {
    let state = run(
        "parseCsv('a,b\\n1,2,3');",
        "@openfn/language-common",
        serde_json::json!({"data": {}}),
    )
    .await;
    let err = &state["errors"]["job-1"];
    assert_eq!(err["name"], "AdaptorError", "{state}");
    assert_eq!(
        err["details"],
        serde_json::json!({"message": "Invalid Record Length: columns length is 2, got 3 on line 2", "code": "CSV_RECORD_INCONSISTENT_COLUMNS"})
    );
}
