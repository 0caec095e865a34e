//! Sanity tests of the adaptor JS, evaluated in QuickJS with a minimal loader
//! (the adaptors and `gabbro:host`; no compiler, no executor). The full
//! behaviour is checked by the conformance harness in `tests/`.

use std::time::Duration;

use rquickjs::loader::{ImportAttributes, Loader, Resolver};
use rquickjs::module::Declared;
use rquickjs::{
    AsyncContext, AsyncRuntime, CatchResultExt, Ctx, Function, Module, Object, Promise,
};

use super::{HostConfig, host_exports_with, resolve};

struct TestResolver;

impl Resolver for TestResolver {
    fn resolve<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        _base: &str,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        if name == "gabbro:host" {
            return Ok(name.to_string());
        }
        resolve(name)
            .map(|a| a.name.to_string())
            .map_err(|e| rquickjs::Error::new_resolving_message("test", name, e.to_string()))
    }
}

struct TestLoader {
    config: HostConfig,
}

impl Loader for TestLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js, Declared>> {
        if name == "gabbro:host" {
            let host = Object::new(ctx.clone())?;
            let mut src = String::from("const h = import.meta.host;\n");
            for (n, v) in host_exports_with(ctx, &self.config)? {
                host.set(n, v)?;
                src.push_str(&format!("export const {n} = h.{n};\n"));
            }
            src.push_str("export const log = (...a) => { (globalThis.__logs ||= []).push(a); };\n");
            let m = Module::declare(ctx.clone(), name, src)?;
            m.meta()?.set("host", host)?;
            return Ok(m);
        }
        let a =
            resolve(name).map_err(|e| rquickjs::Error::new_loading_message(name, e.to_string()))?;
        Module::declare(ctx.clone(), a.name, a.source)
    }
}

/// Runs `body` (the body of an async function that may use `A`, the
/// adaptor's namespace) and returns JSON.stringify of its result, or
/// `Err("<name>: <message>")` when it throws.
pub(crate) async fn eval_with(adaptor: &str, body: &str) -> Result<String, String> {
    let config = HostConfig {
        http_timeout: Duration::from_secs(5),
        max_response_bytes: 1024 * 1024,
    };
    eval_with_config(adaptor, body, config).await
}

/// [`eval_with`] with explicit host limits.
pub(crate) async fn eval_with_config(
    adaptor: &str,
    body: &str,
    config: HostConfig,
) -> Result<String, String> {
    let rt = AsyncRuntime::new().expect("runtime");
    rt.set_loader(TestResolver, TestLoader { config }).await;
    let ctx = AsyncContext::full(&rt).await.expect("context");
    let src = format!(
        "import * as A from '{adaptor}';\nimport * as H from 'gabbro:host';\nexport default async () => {{ try {{ const r = await (async () => {{ {body} }})(); return JSON.stringify(r === undefined ? null : r); }} catch (e) {{ throw new Error('THROWN ' + (e && e.name) + ': ' + (e && e.message !== undefined ? e.message : e) + (e && e.code ? ' [' + e.code + ']' : '')); }} }};"
    );
    let out = ctx
        .async_with(async |ctx| {
            let run = async || -> rquickjs::Result<String> {
                let m = Module::declare(ctx.clone(), "test", src)?;
                let (m, p) = m.eval()?;
                p.into_future::<()>().await?;
                let f: Function = m.namespace()?.get("default")?;
                let p: Promise = f.call(())?;
                p.into_future::<String>().await
            };
            run().await.catch(&ctx).map_err(|e| e.to_string())
        })
        .await;
    rt.idle().await;
    out
}

async fn common(body: &str) -> serde_json::Value {
    let s = eval_with("@openfn/language-common", body)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&s).expect("json")
}

#[tokio::test]
async fn modules_export_exactly_the_listed_names() {
    for a in super::available() {
        let s = eval_with(
            a.name,
            "return Object.keys(A).filter(k => k !== 'default').sort();",
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", a.name));
        let got: Vec<String> = serde_json::from_str(&s).expect("json");
        let mut want: Vec<&str> = a.exports.to_vec();
        want.sort_unstable();
        assert_eq!(got, want, "{}", a.name);
    }
}

#[tokio::test]
async fn lodash_subset_matches_the_conformance_case() {
    let v = common(
        r#"const _ = A._; const people = [{name:'Bo',age:30,team:'x'},{name:'Al',age:30,team:'y'},{name:'Cy',age:25,team:'x'}];
        const nested = {a:[{b:0},{b:'found'}]};
        return { total: _.sumBy(people,'age'), names: _.map(_.sortBy(people,['age','name']),'name'),
          deep: _.get({nested},'nested.a[1].b','default'), missing: _.get({nested},'nested.zzz','default'),
          uniq: _.uniq([3,1,3,2,1]), chunks: _.chunk(['a','b','c','d','e'],2), picked: _.pick(people[0],['name']),
          camel: _.camelCase('Hello big World'), keyed: Object.keys(_.keyBy(people,'name')),
          grouped: Object.keys(_.groupBy(people,'team')), chained: _([3,1,2]).sortBy().map(x => x * 2).value(),
          kebab: _.kebabCase('fooBar baz'), snake: _.snakeCase('Foo Bar'), start: _.startCase('foo_bar') };"#,
    )
    .await;
    assert_eq!(
        v,
        serde_json::json!({"total":85,"names":["Cy","Al","Bo"],"deep":"found","missing":"default",
            "uniq":[3,1,2],"chunks":[["a","b"],["c","d"],["e"]],"picked":{"name":"Bo"},"camel":"helloBigWorld",
            "keyed":["Bo","Al","Cy"],"grouped":["x","y"],"chained":[2,4,6],"kebab":"foo-bar-baz","snake":"foo_bar",
            "start":"Foo Bar"})
    );
}

#[tokio::test]
async fn jsonpath_matches_jsonpath_plus_on_common_paths() {
    let v = common(
        r#"const s = {data:{patient:{name:'Zed'},list:[{k:1},{k:2},{k:3}]},meta:{id:'m1'}};
        return { name: A.dataValue('patient.name')(s), path: A.dataPath('patient.name'),
          meta: A.sourceValue('$.meta.id')(s), firstK: A.sourceValue('$.data.list[*].k')(s),
          allK: A.source('$.data.list[*].k')(s), none: A.source('$.data.none[*]')(s),
          deep: A.source('$..k')(s), filtered: A.source('$.data.list[?(@.k > 1)].k')(s),
          slice: A.source('$.data.list[0:2].k')(s), quoted: A.source("$['meta']['id']")(s),
          whole: A.source('$.data.list')(s).length, last: A.jsonValue(s, '$.data.list[-1:].k'),
          calls: A.source('$.data.patient[?(@.startsWith("Z") && @.match(/e/) ? true : false)]')(s) };"#,
    )
    .await;
    assert_eq!(
        v,
        serde_json::json!({"name":"Zed","path":"$.data.patient.name","meta":"m1","firstK":1,"allK":[1,2,3],
            "none":[],"deep":[1,2,3],"filtered":[2,3],"slice":[1,2],"quoted":["m1"],"whole":1,"last":3,
            "calls":["Zed"]})
    );
}

#[tokio::test]
async fn parse_csv_trims_unquotes_and_skips_blank_lines() {
    let v = common(
        r#"const s = await A.parseCsv("name,age\n Ana ,30\nBen,\n\n\"Cai, Jr\",41\n")({data: {}});
        const raw = await A.parseCsv('a;b\n"x ""q""";2', {delimiter: ';', columns: false})({});
        let chunks = [];
        await A.parseCsv('n\n1\n2\n3', {chunkSize: 2}, (st, rows) => { chunks.push(rows); return st; })({});
        return { data: s.data, refs: s.references, raw: raw.data, chunks };"#,
    )
    .await;
    assert_eq!(
        v,
        serde_json::json!({"data":[{"name":"Ana","age":"30"},{"name":"Ben","age":""},{"name":"Cai, Jr","age":"41"}],
            "refs":[{}],"raw":[["a","b"],["x \"q\"","2"]],"chunks":[[{"n":"1"},{"n":"2"}],[{"n":"3"}]]})
    );
}

#[tokio::test]
async fn date_fns_format_and_parse() {
    let v = common(
        r#"const d = new Date(Date.UTC(2024, 6, 4, 12, 5, 9));
        const p = A.dateFns.parse('2024-03-10 14:30', 'yyyy-MM-dd HH:mm', new Date(0));
        return { f: A.dateFns.format(d, 'yyyy-MM-dd'), g: A.dateFns.format(d, "d MMM yyyy 'at' HH:mm:ss"),
          p: [p.getFullYear(), p.getMonth(), p.getDate(), p.getHours(), p.getMinutes()],
          bad: isNaN(A.dateFns.parse('nope', 'yyyy', new Date(0)).getTime()) };"#,
    )
    .await;
    assert_eq!(
        v,
        serde_json::json!({"f":"2024-07-04","g":"4 Jul 2024 at 12:05:09","p":[2024,2,10,14,30],"bad":true})
    );
}

#[tokio::test]
async fn util_helpers_match_the_conformance_case() {
    let v = common(
        r#"return { b64: A.util.encode({ hello: 'wörld' }), b64str: A.util.encode('plain text'),
          decoded: A.util.decode('eyJhIjoxfQ=='), decodedText: A.util.decode('aGVsbG8='),
          human: A.humanProper('first_name-of person'), split: A.splitKeys({ a: 1, b: 2, c: 3 }, ['b']),
          joined: A.arrayToString([1, 'two', 3], ' | '), arr1: A.toArray('x'), arr2: A.toArray(['y', 'z']),
          scrubbed: A.scrubEmojis('Hi 😀 there'), scrubbedX: A.scrubEmojis('ok 👍', '*'),
          uuid: /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(A.util.uuid()) };"#,
    )
    .await;
    assert_eq!(
        v,
        serde_json::json!({"b64":"eyJoZWxsbyI6InfDtnJsZCJ9","b64str":"cGxhaW4gdGV4dA==","decoded":{"a":1},
            "decodedText":"hello","human":"First Name Of Person","split":[{"a":1,"c":3},{"b":2}],
            "joined":"1 | two | 3","arr1":["x"],"arr2":["y","z"],"scrubbed":"Hi \u{fffd} there","scrubbedX":"ok *",
            "uuid":true})
    );
}

#[tokio::test]
async fn operations_compose_state_like_language_common() {
    let v = common(
        r#"let s = { data: { ids: [1,2,3,4,5,6,7], rows: [{kind:'a',v:1},{kind:'b',v:2},{kind:'a',v:3},{v:4}] } };
        const grouped = A.group(st => st.data.rows, 'kind')(s).data;
        s = await A.execute(
          A.each('$.data.ids[*]', A.fn(st => { st.sum = (st.sum || 0) + st.data; return st; })),
          A.cursor('2024-06-01T00:00:00.000Z', { key: 'since' }),
          A.fnIf(true, A.fn(st => ({ ...st, yes: true }))),
          A.as('mapped', A.map([1, 2], async (x, i) => x * 10 + i)),
        )(s);
        const merged = A.merge('$.rows[*]', A.fields(A.field('org', 'ACME')))({ rows: [{ n: 1 }] });
        const next = A.composeNextState({ data: 1 }, 2);
        let assertMsg = null;
        try { A.assert(st => st.x, 'need x')({}); } catch (e) { assertMsg = e.message; }
        return { grouped, sum: s.sum, index: s.index, since: s.since, yes: s.yes, mapped: s.mapped, data: s.data,
          merged, next, assertMsg, chunks: A.chunk([1,2,3], 2) };"#,
    )
    .await;
    assert_eq!(
        v,
        serde_json::json!({"grouped":{"a":[{"kind":"a","v":1},{"kind":"a","v":3}],"b":[{"kind":"b","v":2}]},
            "sum":28,"index":6,"since":"2024-06-01T00:00:00.000Z","yes":true,"mapped":[10,21],"data":7,
            "merged":[{"n":1,"org":"ACME"}],"next":{"data":2,"references":[1]},"assertMsg":"need x",
            "chunks":[[1,2],[3]]})
    );
}

#[tokio::test]
async fn http_combine_merges_without_awaiting() {
    let s = eval_with(
        "@openfn/language-http",
        r#"return A.execute(A.combine(A.fn(async st => ({ ...st, late: true })), A.fn(st => ({ ...st, saw: 'late' in st }))))({ data: {} });"#,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let v: serde_json::Value = serde_json::from_str(&s).expect("json");
    assert_eq!(
        v,
        serde_json::json!({"references":[],"data":{},"saw":false})
    );
}

#[tokio::test]
async fn http_relative_url_without_base_url_fails_before_any_request() {
    let err = eval_with(
        "@openfn/language-http",
        "return A.get('/api/items')({ data: {} });",
    )
    .await
    .unwrap_err();
    assert!(err.contains("UNEXPECTED_RELATIVE_URL"), "{err}");
}

/// Not a benchmark, a guard: `each` over 100,000 JSONPath matches must stay
/// linear (the runtime's benchmark (c) does this through the whole stack).
#[tokio::test]
async fn each_over_100k_items_is_linear() {
    let started = std::time::Instant::now();
    let v = common(
        r#"const items = []; for (let i = 0; i < 100000; i++) items.push({ id: i, qty: i % 7 });
        let t0 = Date.now();
        const matches = A.source('$.data.items[*]')({ data: { items } }).length;
        const jp = Date.now() - t0;
        t0 = Date.now();
        let st0 = { data: { items } };
        for (let i = 0; i < 100000; i++) st0 = { ...st0, data: items[i], index: i };
        const spread = Date.now() - t0;
        t0 = Date.now();
        const s = await A.execute(A.each('$.data.items[*]', A.fn(st => { st.total = (st.total || 0) + st.data.qty; return st; })))({ data: { items } });
        return { total: s.total, index: s.index, ms: Date.now() - t0, jp, spread, matches };"#,
    )
    .await;
    assert_eq!(v["total"], 299995);
    assert_eq!(v["index"], 99999);
    eprintln!(
        "each over 100k items: {} ms in JS (jsonpath alone {} ms, spreads alone {} ms), {:?} in all",
        v["ms"],
        v["jp"],
        v["spread"],
        started.elapsed()
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

/// Development probe (not part of the suite): runs the scenarios of
/// $GABBRO_ADAPTOR_PROBE (a JSON list of [adaptor, operation source, config])
/// and writes the results next to it, to compare with OpenFn's adaptors.
#[tokio::test]
#[ignore]
async fn adaptor_probe() {
    let Ok(path) = std::env::var("GABBRO_ADAPTOR_PROBE") else {
        return;
    };
    let text = std::fs::read_to_string(&path).expect("scenarios");
    let scenarios: Vec<(String, String, String)> = serde_json::from_str(&text).expect("json");
    let base = std::env::var("GABBRO_PROBE_BASE").unwrap_or_default();
    let mut out = Vec::new();
    for (which, code, cfg) in scenarios {
        let adaptor = if which == "http" {
            "@openfn/language-http"
        } else {
            "@openfn/language-common"
        };
        let code = code.replace("BASE", &base);
        let body = format!(
            "const BASE = '{base}';
             const cfgs = {{ cfg: {{ baseUrl: BASE }}, cfgv1: {{ baseUrl: BASE + '/api/v1/' }}, cfgauth: {{ baseUrl: BASE, username: 'u', password: 'p' }}, none: undefined }};
             const clean = v => JSON.parse(JSON.stringify(v, (k, x) => (k === 'duration' ? 'D' : k === 'date' || k === 'keep-alive' || k === 'connection' || k === 'transfer-encoding' ? undefined : x)) ?? 'null');
             const op = ({code});
             const state = {{ data: {{ old: 1 }}, configuration: cfgs['{cfg}'] }};
             try {{ const r = await A.execute(op)(state); if (r) delete r.configuration; return clean({{ ok: r }}); }}
             catch (e) {{ return clean({{ err: {{ message: e.message, ...e }} }}); }}"
        );
        let r = eval_with(adaptor, &body)
            .await
            .unwrap_or_else(|e| format!("{{\"harness\": {e:?}}}"));
        out.push(
            serde_json::from_str::<serde_json::Value>(&r).unwrap_or(serde_json::Value::String(r)),
        );
    }
    std::fs::write(
        format!("{path}.gabbro.json"),
        serde_json::to_string_pretty(&out).expect("json"),
    )
    .expect("write");
}

#[tokio::test]
#[ignore]
async fn module_load_cost() {
    for _ in 0..3 {
        let t = std::time::Instant::now();
        eval_with("@openfn/language-common", "return 1;")
            .await
            .expect("ok");
        eprintln!("common: runtime + parse + evaluate: {:?}", t.elapsed());
        let t = std::time::Instant::now();
        eval_with("@openfn/language-http", "return 1;")
            .await
            .expect("ok");
        eprintln!("http: runtime + parse + evaluate: {:?}", t.elapsed());
    }
}

#[tokio::test]
#[ignore]
async fn module_parse_vs_evaluate_cost() {
    let rt = AsyncRuntime::new().expect("runtime");
    rt.set_loader(
        TestResolver,
        TestLoader {
            config: HostConfig::default(),
        },
    )
    .await;
    let ctx = AsyncContext::full(&rt).await.expect("context");
    ctx.async_with(async |ctx| {
        for a in super::available() {
            let t = std::time::Instant::now();
            let m = Module::declare(ctx.clone(), a.name, a.source).expect("declare");
            let parsed = t.elapsed();
            let bytes = m
                .write(rquickjs::module::WriteOptions::default())
                .expect("write");
            let t = std::time::Instant::now();
            let _m2 = unsafe { Module::load(ctx.clone(), &bytes) }.expect("load");
            let loaded = t.elapsed();
            eprintln!(
                "{}: parse {:?}, load bytecode {:?} ({} bytes)",
                a.name,
                parsed,
                loaded,
                bytes.len()
            );
        }
    })
    .await;
}

#[tokio::test]
async fn validate_reports_like_ajv_and_caches_the_first_schema() {
    let v = common(
        r#"const s = await A.execute(
             A.validate({ type: 'object', required: ['a'] }, '$.data'),
             A.validate({ type: 'object', required: ['zzz'] }, '$.data'),
             A.validate({ $id: 'x', anyOf: [{ type: 'string' }, { type: 'number' }] }, st => true),
           )({ data: { b: 1 } });
           return s.validationErrors.map(v => v.errors.map(e => e.keyword + ' ' + e.message));"#,
    )
    .await;
    assert_eq!(
        v,
        serde_json::json!([
            ["required must have required property 'a'"],
            ["required must have required property 'a'"],
            [
                "type must be string",
                "type must be number",
                "anyOf must match a schema in anyOf"
            ]
        ])
    );
}
