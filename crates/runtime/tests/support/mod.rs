//! Shared by the conformance tests (in-process and through the `gabbro`
//! binary): the case format, a real HTTP fixture server, and the comparison
//! of conformance README §4.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub const PLACEHOLDER: &str = "{{BASE_URL}}";

/// `GABBRO_CONFORMANCE_DIR`, else `shared/conformance/cases` beside the repo.
pub fn cases_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("GABBRO_CONFORMANCE_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/cases")
}

/// Case files, sorted by name; `GABBRO_CASE` (a substring) narrows the list.
pub fn case_files() -> Vec<PathBuf> {
    let dir = cases_dir();
    let filter = std::env::var("GABBRO_CASE").ok();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read conformance cases at {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| match &filter {
            Some(f) => p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains(f.as_str())),
            None => true,
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no conformance cases in {}",
        dir.display()
    );
    files
}

/// A case with the placeholder replaced by `base_url` everywhere.
pub fn load_case(path: &Path, base_url: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let text = text.replace(PLACEHOLDER, base_url);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The raw routes of a case (read before the base URL is known).
pub fn routes_of(path: &Path) -> Option<Vec<Value>> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let needs = v.get("http").is_some() || text.contains(PLACEHOLDER);
    needs.then(|| {
        v.get("http")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    })
}

/// The execution plan JSON of a case (§1.2 for single jobs).
pub fn plan_of(case: &Value) -> Value {
    if let Some(job) = case.get("job") {
        json!({"workflow": {"start": "job-1", "steps": [
            {"id": "job-1", "adaptor": case["adaptor"], "expression": job}
        ]}})
    } else {
        json!({"workflow": case["workflow"]})
    }
}

// ------------------------------------------------------------------ comparison

/// Numbers by value, objects by key set, arrays in order (§4.1).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Removes a dotted path (object key deleted, array element set to null).
pub fn remove_path(v: &mut Value, path: &str) {
    let parts: Vec<&str> = path.split('.').collect();
    let mut cur = v;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        match cur {
            Value::Object(m) => {
                if last {
                    m.remove(*part);
                    return;
                }
                match m.get_mut(*part) {
                    Some(next) => cur = next,
                    None => return,
                }
            }
            Value::Array(a) => {
                let Ok(idx) = part.parse::<usize>() else {
                    return;
                };
                if idx >= a.len() {
                    return;
                }
                if last {
                    a[idx] = Value::Null;
                    return;
                }
                cur = &mut a[idx];
            }
            _ => return,
        }
    }
}

/// Compares `actual` (`{state, steps, run}`) with the case's expectations;
/// `Err` explains the first difference.
pub fn compare(case: &Value, actual: &Value) -> Result<(), String> {
    let mut expected = case["expected"].clone();
    let mut actual = actual.clone();
    for p in case
        .get("ignore")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(p) = p.as_str() {
            remove_path(&mut expected["state"], p);
            remove_path(&mut actual["state"], p);
        }
    }
    for p in case
        .get("ignore_report")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(p) = p.as_str() {
            remove_path(&mut expected, p);
            remove_path(&mut actual, p);
        }
    }
    for part in ["state", "steps", "run"] {
        if !json_eq(&expected[part], &actual[part]) {
            return Err(format!(
                "{part} differs\n  expected: {}\n  actual:   {}",
                truncate(&expected[part].to_string()),
                truncate(&actual[part].to_string())
            ));
        }
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    if s.len() > 1500 {
        let mut end = 1500;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s.to_string()
    }
}

// ------------------------------------------------------------------ fixture server

/// A real HTTP/1.1 server on 127.0.0.1 serving a case's routes (§2).
pub struct FixtureServer {
    pub base_url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FixtureServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FixtureServer {
    pub async fn start(routes: Vec<Value>) -> FixtureServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fixture server");
        let addr = listener.local_addr().expect("fixture address");
        let routes = std::sync::Arc::new(routes);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let routes = routes.clone();
                tokio::spawn(async move {
                    let _ = serve_connection(stream, &routes).await;
                });
            }
        });
        FixtureServer {
            base_url: format!("http://{addr}"),
            task,
        }
    }
}

struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

async fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.trim_end().splitn(3, ' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).await? == 0 {
            return Ok(None);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).await?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body = vec![0; len];
        reader.read_exact(&mut body).await?;
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), parse_query(q)),
        None => (target, Vec::new()),
    };
    Ok(Some(Request {
        method,
        path,
        query,
        headers,
        body,
    }))
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn route_matches(route: &Value, req: &Request) -> bool {
    let method_ok = route["method"]
        .as_str()
        .is_some_and(|m| m.eq_ignore_ascii_case(&req.method));
    let path_ok = route["path"].as_str() == Some(req.path.as_str());
    let query_ok = match route.get("query").and_then(Value::as_object) {
        None => true,
        Some(q) => q.iter().all(|(k, v)| {
            let last = req
                .query
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str());
            last.is_some() && last == v.as_str()
        }),
    };
    method_ok && path_ok && query_ok
}

/// Node's `http.STATUS_CODES`.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        418 => "I'm a Teapot",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

fn respond(route: Option<&Value>, req: &Request) -> Vec<u8> {
    let mut headers: Vec<(String, String)> = Vec::new();
    let (status, body): (u16, Vec<u8>) = match route {
        None => {
            headers.push(("content-type".into(), "application/json".into()));
            (404, br#"{"error":"no fixture route"}"#.to_vec())
        }
        Some(r) => {
            let status = r["status"].as_u64().unwrap_or(200) as u16;
            if let Some(h) = r.get("headers").and_then(Value::as_object) {
                for (k, v) in h {
                    let v = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    headers.push((k.to_ascii_lowercase(), v));
                }
            }
            let has_ct = headers.iter().any(|(k, _)| k == "content-type");
            if let Some(echo) = r.get("echo") {
                let mut q = Map::new();
                for (k, v) in &req.query {
                    q.insert(k.clone(), Value::String(v.clone()));
                }
                let mut h = Map::new();
                for name in echo
                    .get("headers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(name) = name.as_str() {
                        let lname = name.to_ascii_lowercase();
                        let val = req
                            .headers
                            .iter()
                            .find(|(k, _)| *k == lname)
                            .map(|(_, v)| Value::String(v.clone()));
                        h.insert(lname, val.unwrap_or(Value::Null));
                    }
                }
                let text = String::from_utf8_lossy(&req.body).into_owned();
                let body = if text.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&text).unwrap_or(Value::String(text))
                };
                let echo = json!({"method": req.method, "path": req.path, "query": q, "headers": h, "body": body});
                headers.retain(|(k, _)| k != "content-type");
                headers.push(("content-type".into(), "application/json".into()));
                (status, echo.to_string().into_bytes())
            } else {
                match r.get("body") {
                    None | Some(Value::Null) => (status, Vec::new()),
                    Some(Value::String(s)) => {
                        if !has_ct {
                            headers.push(("content-type".into(), "text/plain".into()));
                        }
                        (status, s.clone().into_bytes())
                    }
                    Some(v) => {
                        if !has_ct {
                            headers.push(("content-type".into(), "application/json".into()));
                        }
                        (status, v.to_string().into_bytes())
                    }
                }
            }
        }
    };
    headers.retain(|(k, _)| k != "content-length");
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    for (k, v) in &headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

async fn serve_connection(stream: TcpStream, routes: &[Value]) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    while let Some(req) = read_request(&mut reader).await? {
        let route = routes.iter().find(|r| route_matches(r, &req));
        let response = respond(route, &req);
        reader.get_mut().write_all(&response).await?;
        reader.get_mut().flush().await?;
        if req
            .headers
            .iter()
            .any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("close"))
        {
            break;
        }
    }
    Ok(())
}
