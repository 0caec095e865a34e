//! project.yaml and provisioning documents: parsing, validation that names
//! the field, and the round trip deploy → pull.

use gabbro_deploy::document::parse_document;
use gabbro_deploy::merge::{document_to_spec, spec_to_document};
use gabbro_deploy::spec::{parse_project_yaml, to_project_yaml};
use serde_json::json;
use std::path::PathBuf;

fn shared_dir() -> PathBuf {
    match std::env::var_os("GABBRO_SHARED_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

fn example() -> String {
    std::fs::read_to_string(shared_dir().join("examples/project.yaml"))
        .expect("shared/examples/project.yaml")
}

#[test]
fn the_example_project_parses_with_its_custom_path_and_edges() {
    let spec = parse_project_yaml(&example(), None).expect("valid");
    assert_eq!(spec.name, "clinic-sync");
    let (key, wf) = &spec.workflows[0];
    assert_eq!(key, "register-patients");
    assert_eq!(wf.jobs.len(), 3);
    assert_eq!(
        wf.triggers[0].1.custom_path.as_deref(),
        Some("clinic-register")
    );
    assert_eq!(wf.edges[2].1.condition_type, "on_job_failure");
}

#[test]
fn a_document_built_from_the_example_is_valid() {
    let spec = parse_project_yaml(&example(), None).unwrap();
    let doc = spec_to_document(&spec, None);
    let value = serde_json::to_value(&doc).unwrap();
    let parsed = parse_document(&value).expect("the server accepts what deploy sends");
    assert_eq!(parsed, doc);
}

#[test]
fn deploying_again_against_the_stored_document_keeps_every_id() {
    let spec = parse_project_yaml(&example(), None).unwrap();
    let first = spec_to_document(&spec, None);
    let second = spec_to_document(&spec, Some(&first));
    assert_eq!(first, second);
}

#[test]
fn pull_writes_back_what_was_deployed() {
    let spec = parse_project_yaml(&example(), None).unwrap();
    let doc = spec_to_document(&spec, None);
    let yaml = to_project_yaml(&document_to_spec(&doc));
    assert!(yaml.contains("custom_path: clinic-register"), "{yaml}");
    let again = parse_project_yaml(&yaml, None).expect("pulled yaml parses");
    assert_eq!(again, spec);
}

#[test]
fn unsupported_openfn_fields_are_rejected_by_name() {
    let yaml = r#"
name: p
workflows:
  w:
    name: w
    jobs:
      a: { name: a, adaptor: '@openfn/language-common@latest', body: 'fn(s => s)' }
    triggers:
      hook: { type: webhook, webhook_reply: after_completion }
      tick: { type: cron, cron_expression: '0 * * * *', cron_cursor_job: a }
      k: { type: kafka }
    edges:
      hook->a: { source_trigger: hook, target_job: a, condition_type: always }
"#;
    let errors = parse_project_yaml(yaml, None).unwrap_err();
    let text = errors.to_string();
    assert!(
        errors.has("workflows.w.triggers.hook.webhook_reply"),
        "{text}"
    );
    assert!(
        errors.has("workflows.w.triggers.tick.cron_cursor_job"),
        "{text}"
    );
    assert!(errors.has("workflows.w.triggers.k.type"), "{text}");
    assert!(text.contains("unsupported"), "{text}");
}

#[test]
fn unknown_yaml_fields_and_dangling_references_name_the_field() {
    let yaml = r#"
name: p
colour: blue
workflows:
  w:
    jobs:
      a: { name: a, body: 'x', credential: nope }
    edges:
      e: { source_job: a, target_job: b }
"#;
    let errors = parse_project_yaml(yaml, None).unwrap_err();
    assert!(errors.has("colour"), "{errors}");
    assert!(errors.has("workflows.w.jobs.a.credential"), "{errors}");
    assert!(errors.has("workflows.w.edges.e.target_job"), "{errors}");
}

#[test]
fn invalid_yaml_is_reported_not_panicked_on() {
    assert!(parse_project_yaml("name: [unclosed", None).is_err());
    assert!(parse_project_yaml("- just a list", None).is_err());
}

fn minimal_document() -> serde_json::Value {
    json!({
        "id": "8f4a7a3e-8f65-4a09-b3cb-2b6a0e0c5d11",
        "name": "p",
        "workflows": [{
            "id": "0b8c5c1e-5f0e-4b43-8d1a-55b1a1c4f0a2",
            "name": "w",
            "jobs": [{"id": "7d0c8a8e-4b4a-4a4e-9a59-0b2b6c0d1e2f", "name": "a", "adaptor": "@openfn/language-common@latest", "body": "fn(s => s)"}],
            "triggers": [{"id": "c7c7d0a0-3f5b-4d6e-9b8a-1a2b3c4d5e6f", "type": "cron", "cron_expression": "*/5 * * * *", "enabled": true}],
            "edges": [{"id": "1e2d3c4b-5a69-4788-9a0b-c1d2e3f4a5b6", "source_trigger_id": "c7c7d0a0-3f5b-4d6e-9b8a-1a2b3c4d5e6f", "target_job_id": "7d0c8a8e-4b4a-4a4e-9a59-0b2b6c0d1e2f", "condition_type": "always", "enabled": true}]
        }],
        "project_credentials": []
    })
}

#[test]
fn a_lightning_style_document_is_accepted_with_its_metadata() {
    let mut doc = minimal_document();
    doc["inserted_at"] = json!("2023-08-25T08:57:31");
    doc["workflows"][0]["version_history"] = json!(["cli:abc"]);
    doc["workflows"][0]["triggers"][0]["webhook_reply"] = json!(null);
    parse_document(&doc).expect("valid");
}

#[test]
fn document_errors_name_the_field() {
    let mut doc = minimal_document();
    doc["workflows"][0]["triggers"][0]["cron_expression"] = json!("every minute");
    doc["workflows"][0]["edges"][0]["condition_type"] = json!("on_job_success");
    doc["workflows"][0]["jobs"][0]["kafka"] = json!(1);
    doc["workflows"][0]["jobs"][0]["id"] = json!("not-a-uuid");
    let errors = parse_document(&doc).unwrap_err();
    assert!(errors.has("workflows[w].jobs[a].kafka"), "{errors}");
    // Unknown fields stop validation early; fix and look again.
    doc["workflows"][0]["jobs"][0]
        .as_object_mut()
        .unwrap()
        .remove("kafka");
    let errors = parse_document(&doc).unwrap_err();
    assert!(
        errors.has("workflows[w].triggers[cron].cron_expression"),
        "{errors}"
    );
    assert!(
        errors.has("workflows[w].edges[1e2d3c4b-5a69-4788-9a0b-c1d2e3f4a5b6].condition_type"),
        "{errors}"
    );
    assert!(errors.has("workflows[w].jobs[a].id"), "{errors}");
}

#[test]
fn kafka_and_sync_webhooks_are_refused_in_documents() {
    let mut doc = minimal_document();
    doc["workflows"][0]["triggers"][0]["kafka_configuration"] = json!({"hosts": [["h", "9092"]]});
    let errors = parse_document(&doc).unwrap_err();
    assert!(
        errors.has("workflows[w].triggers[cron].kafka_configuration"),
        "{errors}"
    );
    let mut doc = minimal_document();
    doc["collections"] = json!([{"id": "x", "name": "c"}]);
    assert!(parse_document(&doc).unwrap_err().has("collections"));
}
