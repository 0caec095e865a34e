//! The module loader of a run: which module may import which.
//!
//! Modules a run can see:
//! - `@openfn/language-*`: the built-in adaptors (any version spec resolves to
//!   ours, see `crate::adaptors::resolve`). Compiled to QuickJS bytecode once
//!   per process and loaded from it afterwards.
//! - `gabbro:host`: native helpers for adaptors. **Only adaptor modules may
//!   import it.** Its exports are `crate::adaptors::host_exports` plus
//!   `log(level, ...args)`, which logs with source `ADA` (`level`: `log`,
//!   `info`, `warn`, `error`, `debug`).
//! - `gabbro:runtime`: `defer`, used by compiled promise chains.
//! - `job:<n>`: compiled job modules; only the executor's glue imports them
//!   (so job code cannot import other jobs or itself).
//!
//! Anything else is refused; the glue reports it as OpenFn's ImportError.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rquickjs::loader::{ImportAttributes, Loader, Resolver};
use rquickjs::module::{Declared, WriteOptions};
use rquickjs::{Ctx, Error, Module, Result};

use crate::adaptors;

pub const HOST: &str = "gabbro:host";
pub const RUNTIME: &str = crate::compiler::RUNTIME_MODULE;
pub const GLUE: &str = "gabbro:glue";
pub const JOB_PREFIX: &str = "job:";

/// Compiled job sources of the current run, by module name.
pub type JobSources = Arc<Mutex<HashMap<String, String>>>;

pub struct RunResolver {
    pub jobs: JobSources,
}

fn refuse(base: &str, name: &str, why: &str) -> Error {
    Error::new_resolving_message(base, name, format!("gabbro-import: {why}"))
}

impl Resolver for RunResolver {
    fn resolve<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> Result<String> {
        let from_adaptor = base.starts_with("@openfn/");
        if name.starts_with(JOB_PREFIX) {
            let known = self
                .jobs
                .lock()
                .map(|j| j.contains_key(name))
                .unwrap_or(false);
            return if base == GLUE && known {
                Ok(name.to_string())
            } else {
                Err(refuse(base, name, &format!("Cannot import {name}")))
            };
        }
        match name {
            HOST if from_adaptor => Ok(HOST.into()),
            HOST => Err(refuse(
                base,
                name,
                "gabbro:host is only available to adaptors",
            )),
            RUNTIME | "@openfn/runtime" => Ok(RUNTIME.into()),
            // `""`: imported by the executor itself (Rust), never by a module.
            GLUE if base == RUNTIME || base == HOST || base.is_empty() => Ok(GLUE.into()),
            _ => match adaptors::resolve(name) {
                Ok(a) => Ok(a.name.to_string()),
                Err(e) => Err(refuse(base, name, &e.to_string())),
            },
        }
    }
}

pub struct RunLoader {
    pub jobs: JobSources,
}

/// Bytecode of the built-in modules, compiled once per process. Leaked on purpose: QuickJS
/// may keep pointing into it (ROM data) for as long as any runtime lives.
fn bytecode_cache() -> &'static Mutex<HashMap<&'static str, &'static [u8]>> {
    static CACHE: OnceLock<Mutex<HashMap<&'static str, &'static [u8]>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn load_adaptor<'js>(
    ctx: &Ctx<'js>,
    adaptor: &'static adaptors::Adaptor,
) -> Result<Module<'js, Declared>> {
    declare_cached(ctx, adaptor.name, adaptor.source)
}

/// Declares a built-in module (an adaptor or the glue) from its bytecode,
/// compiling the source only the first time in this process: parsing the
/// glue and the adaptors was a third of a short run's CPU.
pub fn declare_cached<'js>(
    ctx: &Ctx<'js>,
    name: &'static str,
    source: &'static str,
) -> Result<Module<'js, Declared>> {
    let cached = bytecode_cache()
        .lock()
        .ok()
        .and_then(|c| c.get(name).copied());
    if let Some(bytes) = cached {
        // SAFETY: the bytes were produced by `Module::write` in this process,
        // by the same QuickJS build.
        return unsafe { Module::load(ctx.clone(), bytes) };
    }
    let module = Module::declare(ctx.clone(), name, source)?;
    if let Ok(bytes) = module.write(WriteOptions::default())
        && let Ok(mut cache) = bytecode_cache().lock()
    {
        let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        cache.insert(name, leaked);
    }
    Ok(module)
}

impl Loader for RunLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> Result<Module<'js, Declared>> {
        if name.starts_with(JOB_PREFIX) {
            let source = self.jobs.lock().ok().and_then(|j| j.get(name).cloned());
            return match source {
                Some(src) => Module::declare(ctx.clone(), name, src),
                None => Err(Error::new_loading_message(
                    name,
                    "gabbro-import: no such job module",
                )),
            };
        }
        match name {
            HOST => host_module(ctx),
            RUNTIME => {
                Module::declare(ctx.clone(), RUNTIME, "export { defer } from 'gabbro:glue';")
            }
            _ => match adaptors::resolve(name) {
                Ok(a) => load_adaptor(ctx, a),
                Err(e) => Err(Error::new_loading_message(
                    name,
                    format!("gabbro-import: {e}"),
                )),
            },
        }
    }
}

/// `gabbro:host`: a module whose exports come from `import.meta.host`, an
/// object the loader fills with the natives (nothing reaches `globalThis`).
fn host_module<'js>(ctx: &Ctx<'js>) -> Result<Module<'js, Declared>> {
    let natives = adaptors::host_exports(ctx)?;
    let host = rquickjs::Object::new(ctx.clone())?;
    let mut src = String::from("const h = import.meta.host;\n");
    for (name, value) in natives {
        host.set(name, value)?;
        src.push_str(&format!("export const {name} = h.{name};\n"));
    }
    src.push_str("export { adaptorLog as log } from 'gabbro:glue';\n");
    let module = Module::declare(ctx.clone(), HOST, src)?;
    module.meta()?.set("host", host)?;
    Ok(module)
}
