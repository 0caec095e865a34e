//! Compiles OpenFn's job DSL into an ES module the executor can load.
//!
//! The transforms are OpenFn's (reference/openfn-kit.md §4), applied as text
//! edits on the original source located with oxc, so line numbers in stack
//! traces stay those of the user's code:
//! - **lazy state**: `$.a.b` becomes `state.a.b` and the argument of the
//!   enclosing call is wrapped as `state => …` (unless it already is an arrow
//!   of `state`);
//! - **promises**: a top-level `op().then(f).catch(g)` becomes
//!   `defer(op(), p => p.then(f).catch(g))` (a `.catch` directly on the
//!   operation becomes defer's third argument);
//! - **top-level operations**: every top-level call statement becomes an
//!   element of the default-exported array, in order. Each is wrapped in a
//!   thunk left in place and called from the array at the end, so the array
//!   is evaluated after the module's declarations, as in OpenFn;
//! - **imports**: names used but never declared that the adaptor exports are
//!   imported from it, and the adaptor is re-exported (`export *`) so that
//!   its `execute` reaches the executor.

use oxc_allocator::Allocator;
use oxc_ast::AstKind;
use oxc_ast::ast::{Expression, Statement};
use oxc_parser::Parser;
use oxc_semantic::SemanticBuilder;
use oxc_span::{GetSpan, SourceType, Span};

/// Module that provides `defer` to compiled jobs (see `engine/glue.js`).
pub const RUNTIME_MODULE: &str = "gabbro:runtime";

/// One top-level operation, as OpenFn's source map lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperationInfo {
    /// Callee name for plain calls (`get`), `None` for method calls.
    pub name: Option<String>,
    /// 1-based line of the operation in the job source.
    pub line: u32,
}

#[derive(Clone, Debug)]
pub struct CompiledJob {
    /// ES module source.
    pub code: String,
    pub operations: Vec<OperationInfo>,
    /// Text the compiler inserted at the start of a line's content: `(line,
    /// column, length)`, 1-based line, 0-based columns in the generated code.
    /// Subtracting them maps a position in the generated code back to the
    /// user's column (lines are never added). Lazy-state edits are not
    /// listed: they shift columns by a few characters at most.
    pub column_shifts: Vec<(u32, u32, u32)>,
}

/// A job that does not compile: message and 1-based line, 0-based column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileError {
    pub message: String,
    pub line: u32,
    pub column: u32,
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}:{})", self.message, self.line, self.column)
    }
}

/// The adaptor a job is compiled against: its module name and export list.
pub struct AdaptorExports<'a> {
    pub module: &'a str,
    pub exports: &'a [&'a str],
}

/// Compiles `source` against `adaptors` (the first one is re-exported).
pub fn compile(source: &str, adaptors: &[AdaptorExports<'_>]) -> Result<CompiledJob, CompileError> {
    let allocator = Allocator::default();
    let parsed = Parser::new(&allocator, source, SourceType::mjs()).parse();
    if let Some(diag) = parsed.diagnostics.errors().next() {
        let offset = diag.labels.first().map(|l| l.offset()).unwrap_or(0);
        return Err(error_at(source, offset, message_of(&diag.message)));
    }
    if parsed.panicked {
        return Err(error_at(source, 0, "Unexpected token".into()));
    }
    let program = &parsed.program;
    let built = SemanticBuilder::new()
        .with_build_nodes(true)
        .with_check_syntax_error(true)
        .build(program);
    if let Some(diag) = built.diagnostics.errors().next() {
        let offset = diag.labels.first().map(|l| l.offset()).unwrap_or(0);
        return Err(error_at(source, offset, message_of(&diag.message)));
    }
    let semantic = built.semantic;

    let mut edits = Edits::default();
    lazy_state(source, &semantic, &mut edits)?;

    // Unresolved names that an adaptor exports get imported from it.
    let unresolved: Vec<&str> = semantic
        .scoping()
        .root_unresolved_references()
        .keys()
        .map(|k| k.as_str())
        .collect();
    let mut imports: Vec<(&str, Vec<&str>)> = Vec::new();
    for name in &unresolved {
        if let Some(a) = adaptors.iter().find(|a| a.exports.contains(name)) {
            match imports.iter_mut().find(|(m, _)| *m == a.module) {
                Some((_, names)) => names.push(name),
                None => imports.push((a.module, vec![name])),
            }
        }
    }

    // Top-level statements: which ones become operations.
    let body = &program.body;
    let default_export = body
        .iter()
        .position(|s| matches!(s, Statement::ExportDefaultDeclaration(_)));
    let moves_ops = match default_export {
        None => true,
        Some(i) => i + 1 == body.len() && default_export_is_array(&body[i]),
    };

    let mut out = String::with_capacity(source.len() + 256);
    let mut operations = Vec::new();
    let mut op_calls = Vec::new();
    let mut uses_defer = false;
    let mut prefix_shifts: Vec<(u32, u32, u32)> = Vec::new();
    let mut cursor = 0u32;
    for stmt in body.iter() {
        let Statement::ExpressionStatement(es) = stmt else {
            continue;
        };
        if !moves_ops {
            break;
        }
        let Expression::CallExpression(call) = es.expression.without_parentheses() else {
            continue;
        };
        let expr_span = es.expression.span();
        out.push_str(&edits.render(source, cursor, stmt.span().start));
        let (text, name) = match promise_chain(call) {
            Some(chain) => {
                uses_defer = true;
                (chain.render(source, &edits), Some("defer".to_string()))
            }
            None => (
                edits.render(source, expr_span.start, expr_span.end),
                match &call.callee {
                    Expression::Identifier(id) => Some(id.name.to_string()),
                    _ => None,
                },
            ),
        };
        let k = operations.len();
        let prefix = format!("const __gabbro_op{k} = () => (");
        let (line, column) = line_col(source, stmt.span().start);
        prefix_shifts.push((line, column, prefix.encode_utf16().count() as u32));
        out.push_str(&prefix);
        out.push_str(&text);
        out.push_str(");");
        op_calls.push(format!("__gabbro_op{k}()"));
        operations.push(OperationInfo {
            name,
            line: line_of(source, expr_span.start),
        });
        cursor = stmt.span().end;
    }

    match default_export {
        Some(i) if moves_ops && !op_calls.is_empty() => {
            // `export default [a, b]` last: append the operations to it.
            let array = default_export_array(&body[i]).unwrap_or(body[i].span());
            out.push_str(&edits.render(source, cursor, array.end - 1));
            if !array_is_empty(&body[i]) {
                out.push_str(", ");
            }
            out.push_str(&op_calls.join(", "));
            out.push_str(&edits.render(source, array.end - 1, source.len() as u32));
        }
        Some(_) => out.push_str(&edits.render(source, cursor, source.len() as u32)),
        None => {
            out.push_str(&edits.render(source, cursor, source.len() as u32));
            out.push_str(&format!("\nexport default [{}];\n", op_calls.join(", ")));
        }
    }

    // Imports go on the first line, so the job's own lines keep their numbers.
    let mut header = String::new();
    for (module, names) in &imports {
        header.push_str(&format!(
            "import {{ {} }} from {};",
            names.join(", "),
            js_string(module)
        ));
    }
    if let Some(first) = adaptors.first() {
        header.push_str(&format!("export * from {};", js_string(first.module)));
    }
    if uses_defer {
        header.push_str(&format!(
            "import {{ defer as __gabbro_defer }} from {};",
            js_string(RUNTIME_MODULE)
        ));
    }
    let header_len = header.encode_utf16().count() as u32;
    let mut column_shifts = Vec::new();
    if header_len > 0 {
        column_shifts.push((1, 0, header_len));
    }
    for (line, column, len) in prefix_shifts {
        let at = if line == 1 {
            column + header_len
        } else {
            column
        };
        column_shifts.push((line, at, len));
    }
    header.push_str(&out);
    Ok(CompiledJob {
        code: header,
        operations,
        column_shifts,
    })
}

fn default_export_array(stmt: &Statement<'_>) -> Option<Span> {
    match stmt {
        Statement::ExportDefaultDeclaration(d) => match d.declaration.as_expression() {
            Some(Expression::ArrayExpression(a)) => Some(a.span),
            _ => None,
        },
        _ => None,
    }
}

fn default_export_is_array(stmt: &Statement<'_>) -> bool {
    default_export_array(stmt).is_some()
}

fn array_is_empty(stmt: &Statement<'_>) -> bool {
    match stmt {
        Statement::ExportDefaultDeclaration(d) => match d.declaration.as_expression() {
            Some(Expression::ArrayExpression(a)) => a.elements.is_empty(),
            _ => true,
        },
        _ => true,
    }
}

fn js_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Parser messages as acorn words them where they differ only in form.
fn message_of(msg: &str) -> String {
    let m = msg.trim_end_matches('.');
    if m.starts_with("Unexpected token") || m.starts_with("Expected") {
        "Unexpected token".into()
    } else {
        m.to_string()
    }
}

fn error_at(source: &str, offset: u32, message: String) -> CompileError {
    let (line, column) = line_col(source, offset);
    CompileError {
        message,
        line,
        column,
    }
}

fn line_of(source: &str, offset: u32) -> u32 {
    line_col(source, offset).0
}

/// 1-based line, 0-based column (in UTF-16 units, as acorn counts).
fn line_col(source: &str, offset: u32) -> (u32, u32) {
    let offset = (offset as usize).min(source.len());
    let before = &source[..floor_char_boundary(source, offset)];
    let line = before.matches('\n').count() as u32 + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].encode_utf16().count() as u32;
    (line, column)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

// ---------------------------------------------------------------- text edits

/// Point edits on the source: replacements (`start..end` → text) and
/// insertions (`start == end`). `order` sorts edits at the same offset:
/// wrapping openings (outer first), then replacements, then closings (inner
/// first).
#[derive(Default)]
struct Edits {
    list: Vec<Edit>,
    wrapped: Vec<Span>,
}

struct Edit {
    start: u32,
    end: u32,
    order: (u8, i64),
    text: String,
}

impl Edits {
    fn rename(&mut self, span: Span, text: &str) {
        if self
            .list
            .iter()
            .any(|e| e.order.0 == 1 && e.start == span.start)
        {
            return;
        }
        self.list.push(Edit {
            start: span.start,
            end: span.end,
            order: (1, 0),
            text: text.into(),
        });
    }

    fn wrap(&mut self, span: Span, open: &str, close: &str) {
        if self.wrapped.contains(&span) {
            return;
        }
        self.wrapped.push(span);
        self.list.push(Edit {
            start: span.start,
            end: span.start,
            order: (0, -(span.end as i64)),
            text: open.into(),
        });
        self.list.push(Edit {
            start: span.end,
            end: span.end,
            order: (2, -(span.start as i64)),
            text: close.into(),
        });
    }

    /// The source between `from` and `to` with the edits inside it applied.
    fn render(&self, source: &str, from: u32, to: u32) -> String {
        let mut inside: Vec<&Edit> = self
            .list
            .iter()
            .filter(|e| match e.order.0 {
                0 => from <= e.start && e.start < to,
                2 => from < e.start && e.start <= to,
                _ => from <= e.start && e.end <= to,
            })
            .collect();
        inside.sort_by_key(|e| (e.start, e.order));
        let mut out = String::new();
        let mut cursor = from as usize;
        for e in inside {
            let start = e.start as usize;
            if start >= cursor {
                out.push_str(&source[cursor..start]);
                cursor = start;
            }
            out.push_str(&e.text);
            cursor = cursor.max(e.end as usize);
        }
        if cursor < to as usize {
            out.push_str(&source[cursor..to as usize]);
        }
        out
    }
}

// ---------------------------------------------------------------- lazy state

fn lazy_state(
    source: &str,
    semantic: &oxc_semantic::Semantic<'_>,
    edits: &mut Edits,
) -> Result<(), CompileError> {
    // `$` declared anywhere in the job is an ordinary variable.
    if semantic.scoping().symbol_names().any(|n| n == "$") {
        return Ok(());
    }
    let nodes = semantic.nodes();
    for node in nodes.iter() {
        let AstKind::IdentifierReference(id) = node.kind() else {
            continue;
        };
        if id.name != "$" {
            continue;
        }
        // Climb to the outermost member expression of which `$` is the root.
        let mut current = node.id();
        let mut current_span = id.span;
        let mut is_member = false;
        loop {
            let parent = nodes.parent_node(current);
            let object_span = match parent.kind() {
                AstKind::StaticMemberExpression(m) => Some(m.object.span()),
                AstKind::ComputedMemberExpression(m) => Some(m.object.span()),
                AstKind::PrivateFieldExpression(m) => Some(m.object.span()),
                _ => None,
            };
            if object_span == Some(current_span) {
                current = parent.id();
                current_span = parent.kind().span();
                is_member = true;
            } else {
                break;
            }
        }
        if !is_member {
            continue;
        }
        edits.rename(id.span, "state");

        // Walk up to the call this expression is an argument (or callee) of.
        let mut last = current;
        let mut root = nodes.parent_id(current);
        loop {
            let kind = nodes.kind(root);
            if matches!(kind, AstKind::CallExpression(_)) {
                break;
            }
            if matches!(kind, AstKind::Program(_)) {
                return Err(error_at(
                    source,
                    id.span.start,
                    "Lazy State Error: invalid state operator: must be be passed as an argument to an operator".into(),
                ));
            }
            last = root;
            root = nodes.parent_id(root);
            let parent_kind = nodes.kind(root);
            if parent_kind.is_statement() || parent_kind.is_declaration() {
                return Err(error_at(
                    source,
                    id.span.start,
                    "Lazy State Error: invalid state operator: must be inside an expression".into(),
                ));
            }
        }
        let last_kind = nodes.kind(last);
        let arrow = match last_kind {
            AstKind::ArrowFunctionExpression(a) => Some(a),
            AstKind::ParenthesizedExpression(p) => match p.expression.without_parentheses() {
                Expression::ArrowFunctionExpression(a) => Some(&**a),
                _ => None,
            },
            _ => None,
        };
        match arrow {
            Some(a) if a.params.items.len() == 1 && a.params.rest.is_none() => {
                let param = &a.params.items[0];
                let name = param
                    .pattern
                    .get_identifier_name()
                    .map(|n| n.to_string())
                    .unwrap_or_default();
                if name != "state" {
                    return Err(error_at(
                        source,
                        a.span.start,
                        format!(
                            "Lazy State Error: parameter \"{name}\" should be called \"state\""
                        ),
                    ));
                }
            }
            Some(a) => {
                return Err(error_at(
                    source,
                    a.span.start,
                    "Lazy State Error: parent has wrong arity".into(),
                ));
            }
            // Parenthesised, so an object literal stays an expression body.
            None => edits.wrap(last_kind.span(), "(state => (", "))"),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- promises

/// A top-level `op().then(..).catch(..)` chain.
struct PromiseChain {
    /// The whole chain expression.
    whole: Span,
    /// The operation call at its root.
    op: Span,
    /// A `.catch(handler)` directly on the operation: the call and the handler.
    catch_on_op: Option<(Span, Span)>,
}

fn is_then_or_catch(expr: &Expression<'_>) -> Option<(&'static str, Span)> {
    if let Expression::StaticMemberExpression(m) = expr {
        let name = m.property.name.as_str();
        if name == "then" {
            return Some(("then", m.object.span()));
        }
        if name == "catch" {
            return Some(("catch", m.object.span()));
        }
    }
    None
}

fn promise_chain(call: &oxc_ast::ast::CallExpression<'_>) -> Option<PromiseChain> {
    is_then_or_catch(&call.callee)?;
    // Walk down the callee chain to the operation call.
    let mut parents: Vec<&oxc_ast::ast::CallExpression<'_>> = Vec::new();
    let mut next = call;
    while let Expression::StaticMemberExpression(m) = &next.callee {
        let name = m.property.name.as_str();
        if name != "then" && name != "catch" {
            break;
        }
        match m.object.without_parentheses() {
            Expression::CallExpression(inner) => {
                parents.push(next);
                next = inner;
            }
            _ => return None,
        }
    }
    let op = next;
    if is_then_or_catch(&op.callee).is_some() {
        return None;
    }
    let catch_on_op = parents.last().and_then(|p| match &p.callee {
        Expression::StaticMemberExpression(m) if m.property.name == "catch" => {
            p.arguments.first().map(|a| (p.span, a.span()))
        }
        _ => None,
    });
    Some(PromiseChain {
        whole: call.span,
        op: op.span,
        catch_on_op,
    })
}

impl PromiseChain {
    fn render(&self, source: &str, edits: &Edits) -> String {
        let op = edits.render(source, self.op.start, self.op.end);
        match self.catch_on_op {
            Some((catch_call, handler)) => {
                let handler = edits.render(source, handler.start, handler.end);
                if catch_call == self.whole {
                    format!("__gabbro_defer({op}, undefined, {handler})")
                } else {
                    let rest = edits.render(source, catch_call.end, self.whole.end);
                    format!("__gabbro_defer({op}, p => p{rest}, {handler})")
                }
            }
            None => {
                let rest = edits.render(source, self.op.end, self.whole.end);
                format!("__gabbro_defer({op}, p => p{rest})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMON: AdaptorExports<'static> = AdaptorExports {
        module: "@openfn/language-common",
        exports: &["fn", "each", "get", "execute", "assert"],
    };

    fn c(src: &str) -> CompiledJob {
        compile(src, &[COMMON]).unwrap()
    }

    #[test]
    fn moves_top_level_calls_into_the_default_export() {
        let job = c("const x = 1;\nfn(s => s);\nhttp.get('/x');\n");
        assert!(job.code.starts_with("import { fn } from \"@openfn/language-common\";export * from \"@openfn/language-common\";const x = 1;"), "{}", job.code);
        assert!(
            job.code
                .contains("const __gabbro_op0 = () => (fn(s => s));"),
            "{}",
            job.code
        );
        assert!(
            job.code
                .contains("const __gabbro_op1 = () => (http.get('/x'));"),
            "{}",
            job.code
        );
        assert!(
            job.code
                .ends_with("export default [__gabbro_op0(), __gabbro_op1()];\n"),
            "{}",
            job.code
        );
        assert_eq!(
            job.operations,
            vec![
                OperationInfo {
                    name: Some("fn".into()),
                    line: 2
                },
                OperationInfo {
                    name: None,
                    line: 3
                },
            ]
        );
    }

    #[test]
    fn wraps_lazy_state_arguments() {
        let job =
            c("get($.data.url, { h: $.configuration.id });\nfnIf($.a && $.b, fn(state => state));");
        assert!(
            job.code.contains(
                "get((state => (state.data.url)), (state => ({ h: state.configuration.id })))"
            ),
            "{}",
            job.code
        );
        assert!(
            job.code
                .contains("fnIf((state => (state.a && state.b)), fn(state => state))"),
            "{}",
            job.code
        );
    }

    #[test]
    fn lazy_state_in_a_computed_member_and_as_a_callee() {
        let job = c(
            "cursor($.data.items[$.data.items.length - 1].updated);\nassert($.data.items.every(i => i.ok));",
        );
        assert!(
            job.code.contains(
                "cursor((state => (state.data.items[state.data.items.length - 1].updated)))"
            ),
            "{}",
            job.code
        );
        assert!(
            job.code
                .contains("assert((state => (state.data.items.every))(i => i.ok))"),
            "{}",
            job.code
        );
    }

    #[test]
    fn lazy_state_arrow_parameter_must_be_state() {
        let err = compile("fn(s => ({ ...s, x: $.data.a }));", &[COMMON]).unwrap_err();
        assert_eq!(
            err.message,
            "Lazy State Error: parameter \"s\" should be called \"state\""
        );
        assert_eq!((err.line, err.column), (1, 3));
        assert!(compile("fn(state => ({ ...state, x: $.data.a }));", &[COMMON]).is_ok());
    }

    #[test]
    fn promise_chains_become_defer() {
        let job = c("fn(a).then(b).catch(c);\nfn(x).catch(y);\nfn(q).catch(r).then(t);");
        assert!(
            job.code
                .contains("__gabbro_defer(fn(a), p => p.then(b).catch(c))"),
            "{}",
            job.code
        );
        assert!(
            job.code.contains("__gabbro_defer(fn(x), undefined, y)"),
            "{}",
            job.code
        );
        assert!(
            job.code
                .contains("__gabbro_defer(fn(q), p => p.then(t), r)"),
            "{}",
            job.code
        );
        assert!(
            job.code
                .contains("import { defer as __gabbro_defer } from \"gabbro:runtime\";")
        );
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let err = compile(
            "fn(state => {\n  state.data.x = 1;\n  return state\n);",
            &[COMMON],
        )
        .unwrap_err();
        assert_eq!((err.line, err.column), (4, 0), "{err}");
    }

    #[test]
    fn appends_to_an_explicit_trailing_default_export() {
        let job = c("fn(a);\nexport default [fn(b)];");
        assert!(
            job.code.contains("export default [fn(b), __gabbro_op0()];"),
            "{}",
            job.code
        );
    }
}
