//! The native `httpRequest` (and the adaptors' HTTP on top of it) against a
//! real local HTTP/1.1 server on an ephemeral port.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::HostConfig;
use super::js_tests::{eval_with, eval_with_config};

/// A tiny HTTP/1.1 server; one response per connection, then close.
async fn start_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(serve(sock));
        }
    });
    format!("http://{addr}")
}

async fn serve(mut sock: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let Ok(n) = sock.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let Ok(n) = sock.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
    let mut first = head.lines().next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default().to_string();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let path = target.split('?').next().unwrap_or_default().to_string();
    if path == "/slowbody" {
        let _ = sock
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
            .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        return;
    }
    let (status, extra, out): (&str, String, String) = match path.as_str() {
        "/ok" => (
            "200 OK",
            "content-type: text/plain\r\nx-a: 1\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n".into(),
            "hello".into(),
        ),
        "/odd" => ("299 Weird Phrase", String::new(), String::new()),
        "/json404" => (
            "404 Not Found",
            "content-type: application/json\r\n".into(),
            r#"{"error":"not here"}"#.into(),
        ),
        "/redirect" => ("302 Found", "location: /ok\r\n".into(), String::new()),
        "/see-other" => ("303 See Other", "location: /echo\r\n".into(), String::new()),
        "/big" => (
            "200 OK",
            "content-type: text/plain\r\n".into(),
            "x".repeat(5000),
        ),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            ("200 OK", String::new(), String::new())
        }
        _ => (
            "200 OK",
            "content-type: application/json\r\n".into(),
            serde_json::json!({
                "method": method, "target": target, "body": body,
                "x-test": header("x-test"), "content-type": header("content-type"),
                "authorization": header("authorization"),
                "content-length": header("content-length"),
            })
            .to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{out}",
        out.len()
    );
    let _ = sock.write_all(response.as_bytes()).await;
    let _ = sock.shutdown().await;
}

async fn js(adaptor: &str, body: &str) -> serde_json::Value {
    let s = eval_with(adaptor, body)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&s).expect("json")
}

async fn js_err(adaptor: &str, body: &str) -> String {
    eval_with(adaptor, body).await.expect_err("should throw")
}

const COMMON: &str = "@openfn/language-common";
const HTTP: &str = "@openfn/language-http";

#[tokio::test]
async fn native_returns_status_reason_headers_and_body() {
    let base = start_server().await;
    let v = js(COMMON, &format!(
        "const r = await H.httpRequest({{ method: 'GET', url: '{base}/ok' }});
         const o = await H.httpRequest({{ method: 'GET', url: '{base}/odd' }});
         return {{ status: r.status, text: r.statusText, body: r.body, xa: r.headers['x-a'], cookies: r.headers['set-cookie'],
                  odd: [o.status, o.statusText, o.body] }};"
    ))
    .await;
    assert_eq!(
        v,
        serde_json::json!({"status":200,"text":"OK","body":"hello","xa":"1","cookies":["a=1","b=2"],
            "odd":[299,"Weird Phrase",""]})
    );
}

#[tokio::test]
async fn native_sends_method_headers_and_body_in_order() {
    let base = start_server().await;
    let v = js(COMMON, &format!(
        "const r = await H.httpRequest({{ method: 'post', url: '{base}/echo?a=1', headers: [['X-Test', 'yes']], body: 'payload' }});
         return JSON.parse(r.body);"
    ))
    .await;
    assert_eq!(v["method"], "POST");
    assert_eq!(v["target"], "/echo?a=1");
    assert_eq!(v["body"], "payload");
    assert_eq!(v["x-test"], "yes");
    assert_eq!(v["content-type"], "", "no content-type unless asked");
}

#[tokio::test]
async fn native_does_not_follow_redirects_itself() {
    let base = start_server().await;
    let v = js(COMMON, &format!(
        "const r = await H.httpRequest({{ method: 'GET', url: '{base}/redirect' }}); return [r.status, r.headers.location];"
    ))
    .await;
    assert_eq!(v, serde_json::json!([302, "/ok"]));
}

#[tokio::test]
async fn native_enforces_the_response_size_limit() {
    let base = start_server().await;
    let body = format!(
        "return (await H.httpRequest({{ method: 'GET', url: '{base}/big' }})).body.length;"
    );
    let small = HostConfig {
        http_timeout: Duration::from_secs(5),
        max_response_bytes: 1000,
    };
    let err = eval_with_config(COMMON, &body, small)
        .await
        .expect_err("over the limit");
    assert!(
        err.contains("ERESPONSETOOLARGE") && err.contains("1000 bytes"),
        "{err}"
    );
    let big = HostConfig {
        http_timeout: Duration::from_secs(5),
        max_response_bytes: 5000,
    };
    assert_eq!(
        eval_with_config(COMMON, &body, big).await,
        Ok("5000".to_string())
    );
}

#[tokio::test]
async fn native_default_timeout_comes_from_the_config() {
    let base = start_server().await;
    let short = HostConfig {
        http_timeout: Duration::from_millis(200),
        max_response_bytes: 1000,
    };
    let err = eval_with_config(
        COMMON,
        &format!("return await H.httpRequest({{ method: 'GET', url: '{base}/slow' }});"),
        short,
    )
    .await
    .expect_err("times out");
    assert!(
        err.contains("UND_ERR_HEADERS_TIMEOUT")
            && err.contains("HeadersTimeoutError: Headers Timeout Error"),
        "{err}"
    );
}

#[tokio::test]
async fn native_times_out_and_rejects_with_etimedout() {
    let base = start_server().await;
    let started = std::time::Instant::now();
    let err = js_err(
        COMMON,
        &format!(
            "return await H.httpRequest({{ method: 'GET', url: '{base}/slow', timeout: 200 }});"
        ),
    )
    .await;
    assert!(
        err.contains("UND_ERR_HEADERS_TIMEOUT")
            && err.contains("HeadersTimeoutError: Headers Timeout Error"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn native_reports_connection_refused() {
    // Bind then drop a listener to get a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let err = js_err(
        COMMON,
        &format!(
            "return await H.httpRequest({{ method: 'GET', url: 'http://127.0.0.1:{port}/' }});"
        ),
    )
    .await;
    assert!(err.contains("ECONNREFUSED"), "{err}");
}

#[tokio::test]
async fn native_refuses_non_http_urls() {
    let err = js_err(
        COMMON,
        "return await H.httpRequest({ method: 'GET', url: 'file:///etc/passwd' });",
    )
    .await;
    assert!(err.contains("EINVALIDURL"), "{err}");
}

#[tokio::test]
async fn http_adaptor_follows_redirects_and_adds_auth() {
    let base = start_server().await;
    let v = js(HTTP, &format!(
        "const s = await A.execute(A.get('/redirect'), A.post('/see-other', {{ a: 1 }}))({{ configuration: {{ baseUrl: '{base}', username: 'u', password: 'p' }} }});
         return {{ first: s.references[1], second: s.data, status: s.response.statusCode }};"
    ))
    .await;
    assert_eq!(v["first"], "hello");
    // 303 turns the POST into a GET without body.
    assert_eq!(v["second"]["method"], "GET");
    assert_eq!(v["second"]["body"], "");
    assert_eq!(v["second"]["authorization"], "Basic dTpw");
    assert_eq!(v["status"], 200);
}

#[tokio::test]
async fn common_request_without_max_redirections_throws_on_redirect() {
    let base = start_server().await;
    let err = js_err(
        COMMON,
        &format!("return await A.util.get('{base}/redirect');"),
    )
    .await;
    assert!(
        err.contains("302: Response has redirect status, but 'maxRedirections' is not set"),
        "{err}"
    );
}

#[tokio::test]
async fn http_errors_map_overrides_the_message_and_status_details_are_set() {
    let base = start_server().await;
    let v = js(HTTP, &format!(
        "const s = {{ configuration: {{ baseUrl: '{base}' }} }};
         let custom, details;
         try {{ await A.get('/json404', {{ errors: {{ 404: 'gone away' }} }})(s); }} catch (e) {{ custom = e.message; }}
         try {{ await A.get('/json404')(s); }} catch (e) {{ details = {{ ...e, message: e.message }}; delete details.duration; delete details.headers; }}
         const ok = await A.get('/json404', {{ errors: {{ 404: false }} }})(s);
         return {{ custom, details, okData: ok.data }};"
    ))
    .await;
    assert_eq!(v["custom"], "gone away");
    assert_eq!(
        v["details"],
        serde_json::json!({"message": format!("GET to {base}/json404 returned 404: Not Found"),
            "statusCode":404,"statusMessage":"Not Found","url": format!("{base}/json404"),"method":"GET",
            "body":{"error":"not here"}})
    );
    assert_eq!(v["okData"], serde_json::json!({"error":"not here"}));
}

#[tokio::test]
async fn http_query_and_parse_as_options() {
    let base = start_server().await;
    let v = js(HTTP, &format!(
        "const s = await A.get('/echo?x=1', {{ query: {{ page: 2, tags: ['a', 'b'], q: 'a b&c' }}, parseAs: 'text' }})({{ configuration: {{ baseUrl: '{base}' }} }});
         const b = await A.get('/ok', {{ parseAs: 'base64' }})({{ configuration: {{ baseUrl: '{base}' }} }});
         return {{ raw: typeof s.data, target: JSON.parse(s.data).target, query: s.response.query, b64: b.data }};"
    ))
    .await;
    assert_eq!(v["raw"], "string");
    assert_eq!(v["target"], "/echo?page=2&tags=a&tags=b&q=a%20b%26c&x=1");
    assert_eq!(
        v["query"],
        serde_json::json!({"page":2,"tags":["a","b"],"q":"a b&c","x":"1"})
    );
    assert_eq!(v["b64"], "aGVsbG8=");
}

#[tokio::test]
async fn native_rejects_an_invalid_tls_ca() {
    let err = js_err(
        COMMON,
        "return await H.httpRequest({ method: 'GET', url: 'https://127.0.0.1:9/', tls: { ca: 'not a pem' } });",
    )
    .await;
    assert!(
        err.contains("ETLSCONFIG") || err.contains("tls.ca"),
        "{err}"
    );
}

#[tokio::test]
async fn http_adaptor_passes_tls_options_to_a_separate_client() {
    let base = start_server().await;
    // Plain HTTP ignores TLS settings, but the request must still go through
    // the client built for them.
    let v = js(HTTP, &format!(
        "const s = await A.get('/ok', {{ tls: {{ rejectUnauthorized: false }} }})({{ configuration: {{ baseUrl: '{base}' }} }});
         return s.data;"
    ))
    .await;
    assert_eq!(v, "hello");
}

#[tokio::test]
async fn native_body_timeout_is_named_as_undici() {
    let base = start_server().await;
    let err = js_err(
        COMMON,
        &format!(
            "return await H.httpRequest({{ method: 'GET', url: '{base}/slowbody', timeout: 300 }});"
        ),
    )
    .await;
    assert!(
        err.contains("BodyTimeoutError: Body Timeout Error")
            && err.contains("UND_ERR_BODY_TIMEOUT"),
        "{err}"
    );
}

#[tokio::test]
async fn native_reports_unknown_hosts_as_node_does() {
    let err = js_err(
        COMMON,
        "return await H.httpRequest({ method: 'GET', url: 'http://no-such-host.invalid/' });",
    )
    .await;
    assert!(
        err.contains("getaddrinfo ENOTFOUND no-such-host.invalid") && err.contains("[ENOTFOUND]"),
        "{err}"
    );
}

#[tokio::test]
async fn request_bodies_are_encoded_as_undici_does() {
    let base = start_server().await;
    let v = js(HTTP, &format!(
        "const s = {{ configuration: {{ baseUrl: '{base}' }} }};
         const empty = (await A.post('/echo')(s)).data;
         const strings = (await A.post('/echo', ['a', 'b'])(s)).data;
         let bad; try {{ await A.post('/echo', [1])(s); }} catch (e) {{ bad = [e.code, e.message]; }}
         return {{ empty: [empty['content-length'], empty.body], strings: strings.body, bad }};"
    ))
    .await;
    assert_eq!(
        v,
        serde_json::json!({"empty": ["0", ""], "strings": "ab", "bad": ["ERR_INVALID_ARG_TYPE",
            "The \"string\" argument must be of type string or an instance of Buffer or ArrayBuffer. Received type number (1)"]})
    );
}
