//! The `deploy` and `pull` subcommands.

use anyhow::Context;
use std::path::PathBuf;

use crate::{client, merge, spec};

/// Where the server is and how to authenticate.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Base URL of the gabbro server.
    #[arg(long, env = "GABBRO_SERVER", default_value = "http://127.0.0.1:4000")]
    pub server: String,
    /// API token. Without one, `./gabbro-data/admin.token` is used when it exists.
    #[arg(long, env = "GABBRO_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Deploy a project.yaml to a server.
#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    /// The project.yaml to deploy.
    pub file: PathBuf,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Write a server's project back as project.yaml.
#[derive(clap::Args, Debug)]
pub struct PullArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The project's name or id (needed when the server has more than one).
    #[arg(long)]
    pub project: Option<String>,
    /// Write the project.yaml to this file instead of standard output.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
}

/// The token to use: the flag or `GABBRO_TOKEN`, else the local admin token
/// that `gabbro serve` writes into its default data directory.
pub fn resolve_token(given: Option<&str>) -> anyhow::Result<String> {
    if let Some(t) = given {
        return Ok(t.trim().to_string());
    }
    let local = std::path::Path::new("gabbro-data").join("admin.token");
    match std::fs::read_to_string(&local) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => anyhow::bail!(
            "no API token: pass --token or set GABBRO_TOKEN (a local server writes one to <data-dir>/admin.token)"
        ),
    }
}

pub async fn deploy(args: DeployArgs) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let base = args.file.parent().map(|p| p.to_path_buf());
    let spec = match spec::parse_project_yaml(&text, base.as_deref()) {
        Ok(s) => s,
        Err(errors) => {
            eprintln!("{} is not a valid project:", args.file.display());
            for (field, messages) in errors.fields() {
                for m in messages {
                    eprintln!("  {field}: {m}");
                }
            }
            return Ok(2);
        }
    };
    let token = resolve_token(args.server.token.as_deref())?;
    let client = client::Client::new(&args.server.server, &token)?;
    let existing = match client.find_project(&spec.name).await? {
        Some(id) => client.get_provision(&id).await?,
        None => None,
    };
    let doc = merge::spec_to_document(&spec, existing.as_ref());
    let stored = match client.post_provision(&doc).await? {
        Ok(stored) => stored,
        Err(errors) => {
            eprintln!("the server refused project {:?}:", spec.name);
            for (field, messages) in errors {
                for m in messages {
                    eprintln!("  {field}: {m}");
                }
            }
            return Ok(2);
        }
    };
    let verb = match &existing {
        None => "created",
        Some(before) if unchanged(before, &stored) => "unchanged",
        Some(_) => "updated",
    };
    println!("project {:?} {verb} (id {})", stored.name, stored.id);
    for wf in &stored.workflows {
        println!("workflow {:?} (id {})", wf.name, wf.id);
        for t in &wf.triggers {
            match t.kind.as_str() {
                "webhook" => {
                    let path = t.custom_path.as_deref().unwrap_or(&t.id);
                    let state = if t.enabled { "" } else { " (disabled)" };
                    println!("  webhook: POST {}/i/{path}{state}", client.base());
                }
                "cron" => println!(
                    "  cron: {}{}",
                    t.cron_expression.as_deref().unwrap_or(""),
                    if t.enabled { "" } else { " (disabled)" }
                ),
                _ => {}
            }
        }
    }
    Ok(0)
}

pub async fn pull(args: PullArgs) -> anyhow::Result<i32> {
    let token = resolve_token(args.server.token.as_deref())?;
    let client = client::Client::new(&args.server.server, &token)?;
    let projects = client.list_projects().await?;
    let chosen = match &args.project {
        Some(wanted) => projects
            .iter()
            .find(|p| &p.id == wanted || &p.name == wanted),
        None if projects.len() == 1 => projects.first(),
        None if projects.is_empty() => anyhow::bail!("the server has no projects"),
        None => {
            let names: Vec<&str> = projects.iter().map(|p| p.name.as_str()).collect();
            anyhow::bail!(
                "the server has several projects; choose one with --project ({})",
                names.join(", ")
            )
        }
    };
    let Some(project) = chosen else {
        anyhow::bail!(
            "no project named {:?} on the server",
            args.project.unwrap_or_default()
        );
    };
    let Some(doc) = client.get_provision(&project.id).await? else {
        anyhow::bail!("project {} disappeared from the server", project.id);
    };
    let yaml = spec::to_project_yaml(&merge::document_to_spec(&doc));
    match &args.output {
        Some(path) => {
            std::fs::write(path, &yaml)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{yaml}"),
    }
    Ok(0)
}

/// Same workflows at the same versions, same name and description: the
/// deploy changed nothing (the server made no new snapshot).
fn unchanged(before: &crate::ProjectDocument, after: &crate::ProjectDocument) -> bool {
    let versions = |d: &crate::ProjectDocument| {
        let mut v: Vec<(String, Option<i64>)> = d
            .workflows
            .iter()
            .map(|w| (w.id.clone(), w.lock_version))
            .collect();
        v.sort();
        v
    };
    before.name == after.name
        && before.description == after.description
        && before.project_credentials.len() == after.project_credentials.len()
        && versions(before) == versions(after)
}
