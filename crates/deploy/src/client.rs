//! The HTTP calls `deploy` and `pull` make.

use anyhow::Context;
use serde::Deserialize;
use std::collections::BTreeMap;

use crate::document::ProjectDocument;

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

#[derive(Debug, Deserialize)]
pub struct ProjectSummary {
    pub id: String,
    pub name: String,
}

#[derive(Deserialize)]
struct Data<T> {
    data: T,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    error: Option<String>,
}

impl Client {
    pub fn new(base: &str, token: &str) -> anyhow::Result<Self> {
        // reqwest is built without a default TLS provider; install ring once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("gabbro/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .header("accept", "application/json")
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        check_auth(&resp, &url)?;
        Ok(resp)
    }

    pub async fn list_projects(&self) -> anyhow::Result<Vec<ProjectSummary>> {
        let resp = self.get("/api/projects").await?;
        let resp = ok(resp, "listing projects").await?;
        Ok(resp
            .json::<Data<Vec<ProjectSummary>>>()
            .await
            .context("unexpected reply listing projects")?
            .data)
    }

    pub async fn find_project(&self, name: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .list_projects()
            .await?
            .into_iter()
            .find(|p| p.name == name)
            .map(|p| p.id))
    }

    /// The server's provisioning document of a project, or None if it has none.
    pub async fn get_provision(&self, id: &str) -> anyhow::Result<Option<ProjectDocument>> {
        let resp = self.get(&format!("/api/provision/{id}")).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = ok(resp, "fetching the project").await?;
        Ok(Some(
            resp.json::<Data<ProjectDocument>>()
                .await
                .context("unexpected project document")?
                .data,
        ))
    }

    /// Post a document: the stored project, or the server's field errors.
    pub async fn post_provision(
        &self,
        doc: &ProjectDocument,
    ) -> anyhow::Result<Result<ProjectDocument, BTreeMap<String, Vec<String>>>> {
        let url = format!("{}/api/provision", self.base);
        let resp = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .json(doc)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        check_auth(&resp, &url)?;
        if resp.status() == reqwest::StatusCode::UNPROCESSABLE_ENTITY {
            let body: ErrorBody = resp.json().await.context("unexpected error reply")?;
            let mut errors = body.errors;
            if let Some(e) = body.error {
                errors.entry("document".into()).or_default().push(e);
            }
            return Ok(Err(errors));
        }
        let resp = ok(resp, "deploying").await?;
        Ok(Ok(resp
            .json::<Data<ProjectDocument>>()
            .await
            .context("unexpected reply to the deploy")?
            .data))
    }
}

fn check_auth(resp: &reqwest::Response, url: &str) -> anyhow::Result<()> {
    match resp.status().as_u16() {
        401 => anyhow::bail!("{url}: 401 Unauthorized — check --token / GABBRO_TOKEN"),
        403 => anyhow::bail!("{url}: 403 Forbidden — the token may not do this"),
        _ => Ok(()),
    }
}

async fn ok(resp: reqwest::Response, what: &str) -> anyhow::Result<reqwest::Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    anyhow::bail!("{what} failed: {status} {text}")
}
