//! `urlParse(input, base?)`: WHATWG URL parsing for the adaptors (QuickJS has
//! no `URL`), backed by the `url` crate that reqwest uses.
//!
//! Returns `{href, origin, protocol, host, hostname, port, pathname, search,
//! hash, searchParams: [[name, value], …]}` or throws a `TypeError`
//! "Invalid URL" with `code: "ERR_INVALID_URL"`, as Node's `new URL` does.

use rquickjs::{Array, Ctx, Exception, Function, Object, Value, function::Opt};

pub fn url_parse_function<'js>(ctx: &Ctx<'js>) -> rquickjs::Result<Value<'js>> {
    let f = Function::new(
        ctx.clone(),
        |ctx: Ctx<'js>, input: String, base: Opt<String>| -> rquickjs::Result<Object<'js>> {
            let parsed = match base.0 {
                Some(b) => reqwest::Url::parse(&b).and_then(|b| b.join(&input)),
                None => reqwest::Url::parse(&input),
            };
            match parsed {
                Ok(url) => url_to_js(&ctx, &url),
                Err(_) => Err(invalid_url(&ctx, &input)),
            }
        },
    )?;
    f.set_name("urlParse")?;
    Ok(f.into_value())
}

fn invalid_url(ctx: &Ctx<'_>, input: &str) -> rquickjs::Error {
    let build = || -> rquickjs::Result<Value<'_>> {
        let ctor: Function = ctx.globals().get("TypeError")?;
        let err: Object = ctor.call(("Invalid URL",))?;
        err.set("code", "ERR_INVALID_URL")?;
        err.set("input", input)?;
        Ok(err.into_value())
    };
    match build() {
        Ok(v) => ctx.throw(v),
        Err(_) => Exception::throw_type(ctx, "Invalid URL"),
    }
}

fn url_to_js<'js>(ctx: &Ctx<'js>, url: &reqwest::Url) -> rquickjs::Result<Object<'js>> {
    let obj = Object::new(ctx.clone())?;
    obj.set("href", url.as_str())?;
    obj.set("origin", url.origin().ascii_serialization())?;
    obj.set("protocol", format!("{}:", url.scheme()))?;
    let hostname = url.host_str().unwrap_or_default().to_string();
    let port = url.port().map(|p| p.to_string()).unwrap_or_default();
    let host = if port.is_empty() {
        hostname.clone()
    } else {
        format!("{hostname}:{port}")
    };
    obj.set("host", host)?;
    obj.set("hostname", hostname)?;
    obj.set("port", port)?;
    obj.set("pathname", url.path())?;
    obj.set(
        "search",
        url.query()
            .filter(|q| !q.is_empty())
            .map(|q| format!("?{q}"))
            .unwrap_or_default(),
    )?;
    obj.set(
        "hash",
        url.fragment()
            .filter(|f| !f.is_empty())
            .map(|f| format!("#{f}"))
            .unwrap_or_default(),
    )?;
    let params = Array::new(ctx.clone())?;
    for (i, (k, v)) in url.query_pairs().enumerate() {
        let pair = Array::new(ctx.clone())?;
        pair.set(0, k.into_owned())?;
        pair.set(1, v.into_owned())?;
        params.set(i, pair)?;
    }
    obj.set("searchParams", params)?;
    Ok(obj)
}
