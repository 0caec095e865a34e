//! `/api/openapi.json`: an OpenAPI 3.1 description of what this server
//! serves. A test checks that its paths and methods are exactly the
//! router's ([`crate::routes::routes`]).

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

fn op(summary: &str, auth: bool, params: &[(&str, &str, &str)], responses: Value) -> Value {
    let parameters: Vec<Value> = params
        .iter()
        .map(|(name, place, desc)| {
            json!({"name": name, "in": place, "required": *place == "path", "description": desc, "schema": {"type": "string"}})
        })
        .collect();
    let mut o = json!({"summary": summary, "parameters": parameters, "responses": responses});
    if auth {
        o["security"] = json!([{"bearer": []}]);
    } else {
        o["security"] = json!([]);
    }
    o
}

fn ok(desc: &str) -> Value {
    json!({"200": {"description": desc, "content": {"application/json": {}}}})
}

fn with_errors(mut base: Value, codes: &[(&str, &str)]) -> Value {
    for (code, desc) in codes {
        base[*code] = json!({"description": desc});
    }
    base
}

const ID: (&str, &str, &str) = ("id", "path", "the record's id (UUID)");

pub fn document() -> Value {
    let authed = |summary: &str, params: &[(&str, &str, &str)], desc: &str| {
        op(
            summary,
            true,
            params,
            with_errors(
                ok(desc),
                &[
                    ("401", "no or unknown bearer token"),
                    ("404", "not found or not visible to this token"),
                ],
            ),
        )
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "gabbro orchestrator API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Webhooks, provisioning (Lightning's /api/provision) and the read API of gabbro serve. See docs/api.md."
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/health": {"get": op("200 as soon as the API accepts requests", false, &[], ok("{\"status\":\"ok\"}"))},
            "/metrics": {"get": op("Prometheus metrics (text exposition format)", false, &[], json!({"200": {"description": "metrics", "content": {"text/plain": {}}}}))},
            "/api/openapi.json": {"get": op("This document", false, &[], ok("the OpenAPI document"))},
            "/i/{id}": {
                "get": op("Whether a webhook answers at this id or custom path", false, &[("id", "path", "trigger id or custom_path")],
                    with_errors(ok("the webhook exists"), &[("404", "no such webhook")])),
                "post": op("Start a work order: the body (JSON or form) becomes the input dataclip", false,
                    &[("id", "path", "trigger id or custom_path"), ("Idempotency-Key", "header", "a retried request with the same key returns the first work order")],
                    with_errors(ok("{\"work_order_id\": \"…\"}, with x-meta-work-order-id and x-meta-run-id headers; sent after the commit"), &[
                        ("400", "malformed JSON"), ("401", "the webhook needs credentials and none were sent"),
                        ("403", "trigger_disabled"), ("404", "unknown webhook, or wrong credentials"),
                        ("413", "body larger than --max-dataclip-size-mb"), ("415", "content type other than JSON or a form"),
                        ("503", "overloaded or database unavailable; see Retry-After")]))
            },
            "/api/provision": {"post": op("Create or update a project from Lightning's provisioning document", true, &[],
                json!({"201": {"description": "{\"data\": document} as stored"}, "400": {"description": "malformed JSON"},
                       "401": {"description": "no or unknown bearer token"}, "403": {"description": "not allowed"},
                       "422": {"description": "{\"errors\": {\"field path\": [\"message\"]}}"}}))},
            "/api/provision/{id}": {"get": authed("A project as a provisioning document", &[ID], "{\"data\": document}")},
            "/api/projects": {"get": authed("Projects visible to the token", &[], "{\"data\": [project]}")},
            "/api/projects/{id}": {"get": authed("One project", &[ID], "{\"data\": project}")},
            "/api/projects/{id}/workflows": {"get": authed("A project's workflows", &[ID], "{\"data\": [workflow]}")},
            "/api/workflows/{id}": {"get": authed("A workflow with its jobs, triggers and edges", &[ID], "{\"data\": workflow}")},
            "/api/work_orders": {"get": authed("Work orders, newest first, keyset-paginated",
                &[("state", "query", "work order state"), ("workflow_id", "query", "workflow"), ("project_id", "query", "project"),
                  ("inserted_after", "query", "ISO-8601 or µs; inclusive"), ("inserted_before", "query", "ISO-8601 or µs; exclusive"),
                  ("limit", "query", "1–500, default 50"), ("cursor", "query", "next_cursor of the previous page")],
                "{\"data\": [work order], \"next_cursor\": string|null}")},
            "/api/work_orders/{id}": {"get": authed("A work order with its runs, oldest first", &[ID], "work order with runs[{id, state, …}]")},
            "/api/runs/{id}": {"get": authed("A run with its steps in execution order", &[ID],
                "run: state, error_type, steps[{id, job_id, exit_reason, input_dataclip_id, output_dataclip_id, …}]")},
            "/api/runs/{id}/log_lines": {"get": authed("A run's log lines in time order, paged",
                &[ID, ("limit", "query", "1–5000, default 500"), ("cursor", "query", "next_cursor of the previous page")],
                "{\"data\": [log line], \"next_cursor\": string|null}")},
            "/api/dataclips/{id}": {"get": authed("A dataclip's body as stored (410 if wiped)", &[ID], "the body JSON")}
        }
    })
}

pub async fn serve() -> Response {
    axum::Json(document()).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let served: BTreeSet<(String, String)> = crate::routes::routes()
            .into_iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        let doc = super::document();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let missing: Vec<_> = served.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&served).collect();
        assert!(
            missing.is_empty(),
            "served but not in openapi.json: {missing:?}"
        );
        assert!(
            extra.is_empty(),
            "in openapi.json but not served: {extra:?}"
        );
    }
}
