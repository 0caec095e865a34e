//! The workflow diagram: triggers and jobs as boxes, edges as arrows, drawn
//! as server-side SVG with a simple layered layout (each node one row below
//! its deepest parent). No client library, nothing to download.

use std::collections::HashMap;

use crate::escape::escape_html;
use crate::queries::{EdgeRow, JobRow, TriggerRow};

const BOX_W: i64 = 200;
const BOX_H: i64 = 48;
const GAP_X: i64 = 40;
const GAP_Y: i64 = 56;
const MARGIN: i64 = 20;

struct Node {
    id: String,
    label: String,
    sub: String,
    href: Option<String>,
    class: &'static str,
    layer: usize,
}

fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn edge_label(e: &EdgeRow) -> String {
    if let Some(l) = e.condition_label.as_deref().filter(|l| !l.is_empty()) {
        return l.to_string();
    }
    match e.condition_type.as_str() {
        "on_job_success" => "on success".into(),
        "on_job_failure" => "on failure".into(),
        "js_expression" => "when…".into(),
        _ => String::new(),
    }
}

/// Renders the diagram. `job_href` gives each job box its link.
pub fn render(
    triggers: &[TriggerRow],
    jobs: &[JobRow],
    edges: &[EdgeRow],
    job_href: impl Fn(&str) -> String,
) -> String {
    let mut nodes: Vec<Node> = Vec::new();
    for t in triggers {
        let sub = match (t.kind.as_str(), t.enabled) {
            (_, false) => format!("{} (disabled)", t.kind),
            ("cron", _) => format!("cron {}", t.cron_expression.as_deref().unwrap_or("")),
            (k, _) => k.to_string(),
        };
        nodes.push(Node {
            id: t.id.clone(),
            label: if t.kind == "cron" {
                "Cron trigger".into()
            } else {
                "Webhook trigger".into()
            },
            sub,
            href: None,
            class: if t.enabled { "trigger" } else { "trigger off" },
            layer: 0,
        });
    }
    for j in jobs {
        nodes.push(Node {
            id: j.id.clone(),
            label: j.name.clone(),
            sub: j.adaptor.clone(),
            href: Some(job_href(&j.id)),
            class: "job",
            layer: 0,
        });
    }
    let index: HashMap<String, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.clone(), i))
        .collect();
    let links: Vec<(usize, usize, &EdgeRow)> = edges
        .iter()
        .filter_map(|e| {
            let src = e.source_trigger_id.as_ref().or(e.source_job_id.as_ref())?;
            Some((*index.get(src)?, *index.get(&e.target_job_id)?, e))
        })
        .collect();
    // Longest-path layering; at most n relaxation rounds, so a cycle cannot loop forever.
    let has_parent: Vec<bool> = (0..nodes.len())
        .map(|i| links.iter().any(|(_, t, _)| *t == i))
        .collect();
    for _ in 0..nodes.len() {
        let mut changed = false;
        for (s, t, _) in &links {
            let want = nodes[*s].layer + 1;
            if nodes[*t].layer < want && want < nodes.len().max(1) {
                nodes[*t].layer = want;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // Jobs nobody points at sit one row below the triggers when there are triggers.
    if !triggers.is_empty() {
        for (i, n) in nodes.iter_mut().enumerate() {
            if n.class == "job" && !has_parent[i] && n.layer == 0 {
                n.layer = 1;
            }
        }
    }
    let layers = nodes.iter().map(|n| n.layer).max().map_or(0, |m| m + 1);
    let mut pos: Vec<(i64, i64)> = vec![(0, 0); nodes.len()];
    let mut widest = 1;
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); layers];
    for (i, n) in nodes.iter().enumerate() {
        rows[n.layer].push(i);
    }
    for row in &rows {
        widest = widest.max(row.len());
    }
    let width = MARGIN * 2 + widest as i64 * BOX_W + (widest as i64 - 1) * GAP_X;
    for (l, row) in rows.iter().enumerate() {
        let row_w = row.len() as i64 * BOX_W + (row.len() as i64 - 1).max(0) * GAP_X;
        let x0 = (width - row_w) / 2;
        for (k, &i) in row.iter().enumerate() {
            pos[i] = (
                x0 + k as i64 * (BOX_W + GAP_X),
                MARGIN + l as i64 * (BOX_H + GAP_Y),
            );
        }
    }
    let height = MARGIN * 2 + layers.max(1) as i64 * BOX_H + (layers as i64 - 1).max(0) * GAP_Y;
    let mut svg = format!(
        r#"<svg class="diagram" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="Workflow diagram">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z"/></marker></defs>
"#
    );
    for (s, t, e) in &links {
        let (sx, sy) = (pos[*s].0 + BOX_W / 2, pos[*s].1 + BOX_H);
        let (tx, ty) = (pos[*t].0 + BOX_W / 2, pos[*t].1);
        let class = if e.enabled { "edge" } else { "edge off" };
        let (mx, my) = ((sx + tx) / 2, (sy + ty) / 2);
        svg.push_str(&format!(
            r#"<g class="{class}"><path d="M {sx} {sy} C {sx} {my}, {tx} {my}, {tx} {ty}" marker-end="url(#arrow)"/>"#
        ));
        let label = edge_label(e);
        if !label.is_empty() {
            svg.push_str(&format!(
                r#"<text x="{}" y="{}" class="edge-label">{}</text>"#,
                mx + 6,
                my + 4,
                escape_html(&short(&label, 24))
            ));
        }
        svg.push_str("</g>\n");
    }
    for (i, n) in nodes.iter().enumerate() {
        let (x, y) = pos[i];
        let inner = format!(
            r#"<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="8"/><text x="{}" y="{}" class="label">{}</text><text x="{}" y="{}" class="sub">{}</text><title>{}</title>"#,
            x + 12,
            y + 20,
            escape_html(&short(&n.label, 26)),
            x + 12,
            y + 38,
            escape_html(&short(&n.sub, 30)),
            escape_html(&n.label),
        );
        match &n.href {
            Some(h) => svg.push_str(&format!(
                r#"<a href="{}" class="node {}" data-id="{}">{inner}</a>"#,
                escape_html(h),
                n.class,
                escape_html(&n.id)
            )),
            None => svg.push_str(&format!(
                r#"<g class="node {}" data-id="{}">{inner}</g>"#,
                n.class,
                escape_html(&n.id)
            )),
        }
        svg.push('\n');
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, name: &str) -> JobRow {
        JobRow {
            id: id.into(),
            name: name.into(),
            adaptor: "@openfn/language-common@latest".into(),
        }
    }

    fn edge(src_t: Option<&str>, src_j: Option<&str>, target: &str) -> EdgeRow {
        EdgeRow {
            source_job_id: src_j.map(Into::into),
            source_trigger_id: src_t.map(Into::into),
            target_job_id: target.into(),
            condition_type: "on_job_success".into(),
            condition_label: None,
            enabled: true,
        }
    }

    #[test]
    fn draws_every_node_and_edge_and_escapes_names() {
        let t = vec![TriggerRow {
            id: "t".into(),
            kind: "webhook".into(),
            enabled: true,
            custom_path: None,
            cron_expression: None,
        }];
        let j = vec![job("a", "<b>first</b>"), job("b", "second")];
        let e = vec![edge(Some("t"), None, "a"), edge(None, Some("a"), "b")];
        let svg = render(&t, &j, &e, |id| format!("/jobs/{id}"));
        assert!(svg.contains("&lt;b&gt;first&lt;/b&gt;"));
        assert!(!svg.contains("<b>"));
        assert_eq!(svg.matches("class=\"edge\"").count(), 2);
        assert!(svg.contains("href=\"/jobs/b\""));
        assert!(svg.contains("on success"));
    }

    #[test]
    fn a_cycle_does_not_hang() {
        let j = vec![job("a", "a"), job("b", "b")];
        let e = vec![edge(None, Some("a"), "b"), edge(None, Some("b"), "a")];
        let svg = render(&[], &j, &e, |id| id.to_string());
        assert!(svg.starts_with("<svg"));
    }
}
