//! `httpRequest`: the adaptors' only door to the network, a reqwest client
//! driven from JS as an async native function.
//!
//! JS calls `httpRequest(req)` and gets a Promise of `res`:
//!
//! ```text
//! req = { method: "GET", url: "https://…",            // absolute URL
//!         headers?: [[name, value], …],               // sent in this order
//!         body?: string, bodyBase64?: string,         // at most one
//!         timeout?: number /* ms, overrides the default */,
//!         responseType?: "text" | "base64",
//!         tls?: { ca?: string | string[] /* PEM; replaces the default roots */,
//!                 rejectUnauthorized?: boolean, cert?: string, key?: string } }
//! res = { status: 200, statusText: "OK", url: "…",
//!         headers: { "content-type": "…", "set-cookie": ["…", "…"] }, // repeated → array
//!         body: string /* UTF-8 text (lossy) or base64 */ }
//! ```
//!
//! Redirects are not followed here (the JS follows them, as undici's
//! `maxRedirections` does), so the JS sees every 3xx. Failures reject with an
//! `Error` carrying a `code`: `ECONNREFUSED`, `ECONNRESET`, `ENOTFOUND`,
//! `UND_ERR_HEADERS_TIMEOUT` / `UND_ERR_BODY_TIMEOUT` (the timeout elapsed
//! before / after the response head; named and worded as undici's errors),
//! `ERESPONSETOOLARGE` (body over the size limit), `EINVALIDURL`,
//! `ETLSCONFIG`, `EHTTP` (anything else).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rquickjs::{Array, Ctx, Exception, Function, Object, Value, function::Async};

/// Limits for the natives of one run.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Whole-request timeout (connect, headers and body). OpenFn's default
    /// is 300 s.
    pub http_timeout: Duration,
    /// Largest response body accepted, in bytes (default 100 MiB). Larger
    /// bodies reject the request with `ERESPONSETOOLARGE`.
    pub max_response_bytes: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            http_timeout: Duration::from_secs(300),
            max_response_bytes: 100 * 1024 * 1024,
        }
    }
}

/// A request as read from JS, owned so it can cross the await.
/// Node-style TLS options of one request (`tls` in OpenFn's adaptors).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct TlsOptions {
    ca: Vec<String>,
    insecure: bool,
    identity_pem: Option<String>,
}

struct NativeRequest {
    tls: TlsOptions,
    method: reqwest::Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout: Duration,
    base64_response: bool,
}

struct NativeResponse {
    status: u16,
    status_text: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A failure to report to JS as an `Error` with a `code`.
struct NativeError {
    code: &'static str,
    message: String,
}

/// undici's timeout errors: (name, code, message).
const HEADERS_TIMEOUT: (&str, &str, &str) = (
    "HeadersTimeoutError",
    "UND_ERR_HEADERS_TIMEOUT",
    "Headers Timeout Error",
);
const BODY_TIMEOUT: (&str, &str, &str) = (
    "BodyTimeoutError",
    "UND_ERR_BODY_TIMEOUT",
    "Body Timeout Error",
);

/// Install the rustls crypto provider (ring) once per process.
fn ensure_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn build_client(tls: &TlsOptions) -> Result<reqwest::Client, String> {
    ensure_crypto_provider();
    let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    if !tls.ca.is_empty() {
        let mut roots = Vec::new();
        for pem in &tls.ca {
            roots.extend(
                reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                    .map_err(|e| format!("invalid tls.ca: {e}"))?,
            );
        }
        if roots.is_empty() {
            return Err("invalid tls.ca: no PEM certificate found".to_string());
        }
        builder = builder.tls_certs_only(roots);
    }
    if tls.insecure {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    if let Some(pem) = &tls.identity_pem {
        let identity = reqwest::Identity::from_pem(pem.as_bytes())
            .map_err(|e| format!("invalid tls.cert/tls.key: {e}"))?;
        builder = builder.identity(identity);
    }
    builder.build().map_err(|e| e.to_string())
}

/// The run's clients, one per distinct TLS setup (the default setup
/// included). Built on first use: creating a client loads the system's
/// trust store (milliseconds), which runs that make no request should not
/// pay for.
#[derive(Clone, Default)]
struct Clients {
    built: Arc<Mutex<HashMap<TlsOptions, reqwest::Client>>>,
}

impl Clients {
    fn for_tls(&self, tls: &TlsOptions) -> Result<reqwest::Client, NativeError> {
        let mut map = self.built.lock().map_err(|_| NativeError {
            code: "EHTTP",
            message: "HTTP client cache poisoned".to_string(),
        })?;
        if let Some(c) = map.get(tls) {
            return Ok(c.clone());
        }
        let client = build_client(tls).map_err(|message| NativeError {
            code: if *tls == TlsOptions::default() {
                "EHTTP"
            } else {
                "ETLSCONFIG"
            },
            message,
        })?;
        map.insert(tls.clone(), client.clone());
        Ok(client)
    }
}

/// Create the `httpRequest` JS function. Each call of this gets its own
/// clients (connection pools), created when the first request is made.
pub fn http_request_function<'js>(
    ctx: &Ctx<'js>,
    config: &HostConfig,
) -> rquickjs::Result<Value<'js>> {
    let clients = Clients::default();
    let config = config.clone();
    let f = Function::new(
        ctx.clone(),
        Async(move |ctx: Ctx<'js>, req: Object<'js>| {
            let clients = clients.clone();
            let parsed = read_request(&req, &config);
            let limit = config.max_response_bytes;
            async move {
                let req = match parsed {
                    Ok(r) => r,
                    Err(e) => return Err(throw_native(&ctx, e)),
                };
                let client = match clients.for_tls(&req.tls) {
                    Ok(c) => c,
                    Err(e) => return Err(throw_native(&ctx, e)),
                };
                match send(&client, req, limit).await {
                    Ok(res) => response_to_js(&ctx, res),
                    Err(e) => Err(throw_native(&ctx, e)),
                }
            }
        }),
    )?;
    f.set_name("httpRequest")?;
    Ok(f.into_value())
}

fn read_request(req: &Object<'_>, config: &HostConfig) -> Result<NativeRequest, NativeError> {
    let bad = |message: String| NativeError {
        code: "EINVALIDREQUEST",
        message,
    };
    let method: String = req
        .get::<_, Option<String>>("method")
        .map_err(|e| bad(format!("invalid method: {e}")))?
        .unwrap_or_else(|| "GET".to_string());
    let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| bad(format!("invalid HTTP method {method:?}")))?;
    let url: String = req
        .get("url")
        .map_err(|e| bad(format!("invalid url: {e}")))?;
    let mut headers = Vec::new();
    if let Some(list) = req
        .get::<_, Option<Array>>("headers")
        .map_err(|e| bad(format!("invalid headers: {e}")))?
    {
        for pair in list.iter::<Array>() {
            let pair = pair.map_err(|e| bad(format!("invalid header pair: {e}")))?;
            let name: String = pair
                .get(0)
                .map_err(|e| bad(format!("invalid header: {e}")))?;
            let value: String = pair
                .get(1)
                .map_err(|e| bad(format!("invalid header: {e}")))?;
            headers.push((name, value));
        }
    }
    let text: Option<String> = req
        .get("body")
        .map_err(|e| bad(format!("invalid body: {e}")))?;
    let b64: Option<String> = req
        .get("bodyBase64")
        .map_err(|e| bad(format!("invalid bodyBase64: {e}")))?;
    let body = match (text, b64) {
        (Some(t), _) => Some(t.into_bytes()),
        (None, Some(b)) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b.as_bytes())
                .map_err(|e| bad(format!("invalid bodyBase64: {e}")))?,
        ),
        (None, None) => None,
    };
    let timeout = match req.get::<_, Option<f64>>("timeout") {
        Ok(Some(ms)) if ms.is_finite() && ms > 0.0 => Duration::from_secs_f64(ms / 1000.0),
        _ => config.http_timeout,
    };
    let base64_response = matches!(
        req.get::<_, Option<String>>("responseType")
            .ok()
            .flatten()
            .as_deref(),
        Some("base64")
    );
    let tls = read_tls(req).map_err(bad)?;
    Ok(NativeRequest {
        tls,
        method,
        url,
        headers,
        body,
        timeout,
        base64_response,
    })
}

fn read_tls(req: &Object<'_>) -> Result<TlsOptions, String> {
    let Some(tls) = req
        .get::<_, Option<Object>>("tls")
        .map_err(|e| format!("invalid tls: {e}"))?
    else {
        return Ok(TlsOptions::default());
    };
    let mut out = TlsOptions::default();
    let ca: Value = tls.get("ca").map_err(|e| format!("invalid tls.ca: {e}"))?;
    if let Some(list) = ca.as_array() {
        for pem in list.iter::<String>() {
            out.ca
                .push(pem.map_err(|e| format!("invalid tls.ca: {e}"))?);
        }
    } else if let Some(pem) = ca.as_string() {
        out.ca.push(
            pem.to_string()
                .map_err(|e| format!("invalid tls.ca: {e}"))?,
        );
    }
    out.insecure = matches!(
        tls.get::<_, Option<bool>>("rejectUnauthorized"),
        Ok(Some(false))
    );
    let cert: Option<String> = tls.get("cert").ok().flatten();
    let key: Option<String> = tls.get("key").ok().flatten();
    if let (Some(cert), Some(key)) = (cert, key) {
        out.identity_pem = Some(format!("{key}\n{cert}"));
    }
    Ok(out)
}

async fn send(
    client: &reqwest::Client,
    req: NativeRequest,
    limit: usize,
) -> Result<NativeResponse, NativeError> {
    let url = reqwest::Url::parse(&req.url).map_err(|e| NativeError {
        code: "EINVALIDURL",
        message: format!("Invalid URL {:?}: {e}", req.url),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(NativeError {
            code: "EINVALIDURL",
            message: format!("Unsupported URL scheme in {:?}", req.url),
        });
    }
    let deadline = Instant::now() + req.timeout;
    let mut builder = client.request(req.method, url);
    for (name, value) in &req.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if let Some(body) = req.body {
        // hyper omits the length of an empty body; undici (OpenFn) sends it
        if body.is_empty()
            && !req
                .headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        {
            builder = builder.header(reqwest::header::CONTENT_LENGTH, "0");
        }
        builder = builder.body(body);
    }
    let request = builder.build().map_err(|e| classify(&e, &req.url))?;
    let headers_received = std::sync::atomic::AtomicBool::new(false);
    let fut = async {
        let mut response = client
            .execute(request)
            .await
            .map_err(|e| classify(&e, &req.url))?;
        headers_received.store(true, std::sync::atomic::Ordering::Relaxed);
        let status = response.status();
        let status_text = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
            .or_else(|| status.canonical_reason().map(str::to_string))
            .unwrap_or_default();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let final_url = response.url().to_string();
        if let Some(len) = response.content_length()
            && len > limit as u64
        {
            return Err(too_large(limit));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| classify(&e, &req.url))? {
            if body.len() + chunk.len() > limit {
                return Err(too_large(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(NativeResponse {
            status: status.as_u16(),
            status_text,
            url: final_url,
            headers,
            body,
        })
    };
    let mut res = match tokio::time::timeout_at(deadline.into(), fut).await {
        Ok(r) => r?,
        Err(_) => {
            let (_, code, message) = if headers_received.load(std::sync::atomic::Ordering::Relaxed)
            {
                BODY_TIMEOUT
            } else {
                HEADERS_TIMEOUT
            };
            return Err(NativeError {
                code,
                message: message.to_string(),
            });
        }
    };
    if req.base64_response {
        res.body = base64::engine::general_purpose::STANDARD
            .encode(&res.body)
            .into_bytes();
    }
    Ok(res)
}

fn too_large(limit: usize) -> NativeError {
    NativeError {
        code: "ERESPONSETOOLARGE",
        message: format!("Response body exceeds the limit of {limit} bytes"),
    }
}

/// Map a reqwest error to a Node-like code and message.
fn classify(err: &reqwest::Error, url: &str) -> NativeError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    let host = reqwest::Url::parse(url)
                        .ok()
                        .map(|u| {
                            format!(
                                "{}:{}",
                                u.host_str().unwrap_or_default(),
                                u.port_or_known_default().unwrap_or_default()
                            )
                        })
                        .unwrap_or_default();
                    return NativeError {
                        code: "ECONNREFUSED",
                        message: format!("connect ECONNREFUSED {host}"),
                    };
                }
                std::io::ErrorKind::ConnectionReset => {
                    return NativeError {
                        code: "ECONNRESET",
                        message: "socket hang up".to_string(),
                    };
                }
                _ => {}
            }
        }
        source = e.source();
    }
    // hyper-util reports resolver failures as "dns error"; Node says
    // `getaddrinfo ENOTFOUND <host>`.
    let mut chain: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = chain {
        if e.to_string().starts_with("dns error") {
            let host = reqwest::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default();
            return NativeError {
                code: "ENOTFOUND",
                message: format!("getaddrinfo ENOTFOUND {host}"),
            };
        }
        chain = e.source();
    }
    if err.is_timeout() {
        return NativeError {
            code: HEADERS_TIMEOUT.1,
            message: HEADERS_TIMEOUT.2.to_string(),
        };
    }
    // reqwest's Display is terse ("error sending request"); add the cause.
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        message.push_str(": ");
        message.push_str(&e.to_string());
        source = e.source();
    }
    NativeError {
        code: "EHTTP",
        message,
    }
}

fn throw_native(ctx: &Ctx<'_>, e: NativeError) -> rquickjs::Error {
    let build = || -> rquickjs::Result<Value<'_>> {
        let ex = Exception::from_message(ctx.clone(), &e.message)?;
        ex.as_object().set("code", e.code)?;
        for (name, code, _) in [HEADERS_TIMEOUT, BODY_TIMEOUT] {
            if e.code == code {
                ex.as_object().set("name", name)?;
            }
        }
        Ok(ex.into_value())
    };
    match build() {
        Ok(v) => ctx.throw(v),
        Err(err) => err,
    }
}

fn response_to_js<'js>(ctx: &Ctx<'js>, res: NativeResponse) -> rquickjs::Result<Value<'js>> {
    let obj = Object::new(ctx.clone())?;
    obj.set("status", res.status)?;
    obj.set("statusText", res.status_text)?;
    obj.set("url", res.url)?;
    let headers = Object::new(ctx.clone())?;
    for (name, value) in res.headers {
        // As undici: one occurrence gives a string, repeated ones an array.
        let prev: Value = headers.get(name.as_str())?;
        if prev.is_undefined() {
            headers.set(name, value)?;
        } else if let Some(arr) = prev.as_array() {
            arr.set(arr.len(), value)?;
        } else {
            let arr = Array::new(ctx.clone())?;
            arr.set(0, prev)?;
            arr.set(1, value)?;
            headers.set(name, arr)?;
        }
    }
    obj.set("headers", headers)?;
    // (valid UTF-8 is moved, not copied: bodies may be large)
    let body = String::from_utf8(res.body)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    obj.set("body", body)?;
    Ok(obj.into_value())
}
