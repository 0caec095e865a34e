//! Built-in adaptors: `@openfn/language-common` and `@openfn/language-http`.
//!
//! # Interface for the executor / module loader
//!
//! * [`available`] lists the adaptors compiled into the binary; [`resolve`]
//!   maps any adaptor spec (`@openfn/language-http@7`, `...@latest`,
//!   `...@3.3.4`, or the bare name) to one of them. Any version resolves to
//!   ours; an unknown package gives [`UnknownAdaptor`], whose `Display` names
//!   the spec and lists what we have.
//! * Each [`Adaptor`] is one ES module: the loader serves `source` under the
//!   module name `name` (e.g. `@openfn/language-http`). `exports` lists the
//!   names that module exports, which the compiler may auto-import.
//! * The adaptor modules import native helpers from the module `gabbro:host`.
//!   The loader builds that module from [`host_exports`] (or
//!   [`host_exports_with`] to choose limits) plus its own logging export.
//!   The adaptor JS reads the host module as a namespace (`import * as host
//!   from 'gabbro:host'`), so a missing export is tolerated, not a link error.
//!   For adaptor logging the JS calls `host.log(level, ...args)` if present
//!   (level is one of `"log"`, `"info"`, `"warn"`, `"error"`, `"debug"`);
//!   logs sent through it must get the source `ADA`.
//! * Natives exported here:
//!   - `httpRequest(req) -> Promise<res>`: the only network access. See
//!     [`http_native`] for the request/response objects. Needs to be polled
//!     inside a tokio runtime (reqwest), which the async executor provides.
//!   - `urlParse(input, base?)`: WHATWG URL parsing (QuickJS has no `URL`).
//!
//! Call [`host_exports`] once per run (per JS context): each call gets its
//! own HTTP clients (created on the first request), so no connections are
//! shared between runs. Limits: [`HostConfig`] (HTTP timeout, default 300 s;
//! response size, default 100 MiB); `host_exports` uses the defaults.
//!
//! Adaptor JS sources: `crates/runtime/adaptors/` (`common-core.js` + the
//! per-adaptor export tail); behaviour and differences: `docs/adaptors.md`.

pub mod http_native;
mod registry;
mod url_native;

#[cfg(test)]
mod http_tests;
#[cfg(test)]
mod job_error_tests;
#[cfg(test)]
mod js_tests;

pub use http_native::HostConfig;
pub use registry::{UnknownAdaptor, available, resolve};

/// One built-in adaptor, served to job code as an ES module.
#[derive(Debug)]
pub struct Adaptor {
    /// Package name, e.g. `"@openfn/language-http"`.
    pub name: &'static str,
    /// The OpenFn version whose API we follow, e.g. `"7.2.10"`.
    pub version: &'static str,
    /// ES module source.
    pub source: &'static str,
    /// Names the module exports (the compiler auto-imports these).
    pub exports: &'static [&'static str],
}

/// Native (Rust) functions that the adaptors' JS imports from `gabbro:host`,
/// with default limits ([`HostConfig::default`]).
pub fn host_exports<'js>(
    ctx: &rquickjs::Ctx<'js>,
) -> rquickjs::Result<Vec<(&'static str, rquickjs::Value<'js>)>> {
    host_exports_with(ctx, &HostConfig::default())
}

/// [`host_exports`] with explicit limits (HTTP timeout, response size).
pub fn host_exports_with<'js>(
    ctx: &rquickjs::Ctx<'js>,
    config: &HostConfig,
) -> rquickjs::Result<Vec<(&'static str, rquickjs::Value<'js>)>> {
    Ok(vec![
        (
            "httpRequest",
            http_native::http_request_function(ctx, config)?,
        ),
        ("urlParse", url_native::url_parse_function(ctx)?),
    ])
}
