//! The two Hub requests a download needs, over HTTP(S) with `ureq` (the platform's TLS:
//! no C toolchain on macOS and Windows, the system OpenSSL on Linux):
//! - `GET /api/models/REPO/revision/REV` (`/api/datasets/…`): the commit and the repo's files;
//! - `GET /REPO/resolve/COMMIT/FILE` (`/datasets/REPO/…`): the file, after a redirect to a CDN for
//!   large (LFS) files.
//!   The blob is named by the first response's `X-Linked-Etag` (the LFS sha256) or `ETag`, as
//!   `huggingface_hub` names it.

use std::io::{Read, Write};
use std::path::Path;

use serde::Deserialize;
use ureq::Agent;
use ureq::http::Response;

use super::{HubSettings, RepoKind};
use crate::error::{Error, Result};

/// A repo revision: its commit and files.
pub struct RevisionInfo {
    pub sha: String,
    pub files: Vec<String>,
}

#[derive(Deserialize)]
struct RawRevision {
    sha: String,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
}

/// An HTTP client for one endpoint and token.
pub struct Client {
    /// Redirects not followed: the first response carries the file's metadata.
    direct: Agent,
    /// Redirects followed (the CDN leg of a download).
    follow: Agent,
    endpoint: String,
    token: Option<String>,
}

fn agent(max_redirects: u32) -> Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::NativeTls)
        .build();
    Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(max_redirects)
        .user_agent(concat!("minordpo/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls)
        .build()
        .into()
}

fn header<'a>(response: &'a Response<ureq::Body>, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

impl Client {
    pub fn new(hub: &HubSettings) -> Self {
        Self {
            direct: agent(0),
            follow: agent(10),
            endpoint: hub.endpoint.clone(),
            token: hub.token.clone(),
        }
    }

    /// `GET url` with the token (only towards the endpoint: never to a CDN).
    fn get(&self, agent: &Agent, url: &str, repo: &str) -> Result<Response<ureq::Body>> {
        let mut request = agent.get(url);
        if let Some(token) = &self.token
            && url.starts_with(&self.endpoint)
        {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        request
            .call()
            .map_err(|e| Error::hub(repo, format!("cannot reach {}: {e}", self.endpoint)))
    }

    /// A failed response as an error that says what to do.
    fn status_error(&self, repo: &str, what: &str, response: &mut Response<ureq::Body>) -> Error {
        let status = response.status().as_u16();
        let code = header(response, "x-error-code")
            .unwrap_or_default()
            .to_string();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        let detail = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_default();
        let hint = match (status, code.as_str(), &self.token) {
            (_, "GatedRepo", _) | (403, _, _) => {
                "gated: accept its license on the Hub, then set HF_TOKEN to a token with access"
            }
            (_, "RevisionNotFound", _) => "no such revision",
            (_, "EntryNotFound", _) => "no such file",
            (401, _, None) => "not found, or private or gated: set HF_TOKEN if you have access",
            (401, _, Some(_)) => "not found, or your token has no access",
            (404, _, _) => "not found",
            _ => "request failed",
        };
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(" ({detail})")
        };
        Error::hub(repo, format!("{what}: HTTP {status}: {hint}{detail}"))
    }

    /// The commit `revision` points at and the repo's files.
    pub fn revision(&self, kind: RepoKind, repo: &str, revision: &str) -> Result<RevisionInfo> {
        let api = kind.plural();
        let url = format!("{}/api/{api}/{repo}/revision/{revision}", self.endpoint);
        let mut response = self.get(&self.follow, &url, repo)?;
        if !response.status().is_success() {
            return Err(self.status_error(repo, &format!("revision `{revision}`"), &mut response));
        }
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| Error::hub(repo, format!("revision `{revision}`: {e}")))?;
        let raw: RawRevision = serde_json::from_str(&text)
            .map_err(|e| Error::hub(repo, format!("revision `{revision}`: bad reply: {e}")))?;
        Ok(RevisionInfo {
            sha: raw.sha,
            files: raw.siblings.into_iter().map(|s| s.rfilename).collect(),
        })
    }

    /// Downloads `file` of `repo` at `commit` into `blobs/ETAG` (unless that blob exists) and
    /// returns the ETag, with a progress bar for large files.
    pub fn download(
        &self,
        kind: RepoKind,
        repo: &str,
        commit: &str,
        file: &str,
        blobs: &Path,
    ) -> Result<String> {
        let prefix = match kind {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
        };
        let url = format!("{}/{prefix}{repo}/resolve/{commit}/{file}", self.endpoint);
        let what = format!("file `{file}`");
        let mut response = self.get(&self.direct, &url, repo)?;
        let status = response.status();
        if !(status.is_success() || status.is_redirection()) {
            return Err(self.status_error(repo, &what, &mut response));
        }
        let etag = header(&response, "x-linked-etag")
            .or_else(|| header(&response, "etag"))
            .map(|e| e.trim_start_matches("W/").trim_matches('"').to_string())
            .filter(|e| !e.is_empty() && !e.contains(['/', '\\', '.']))
            .ok_or_else(|| Error::hub(repo, format!("{what}: the reply has no ETag")))?;
        let blob = blobs.join(&etag);
        if blob.is_file() {
            return Ok(etag);
        }
        if status.is_redirection() {
            let location = header(&response, "location")
                .ok_or_else(|| Error::hub(repo, format!("{what}: redirect without Location")))?;
            let location = match location.starts_with('/') {
                true => format!("{}{location}", self.endpoint),
                false => location.to_string(),
            };
            response = self.get(&self.follow, &location, repo)?;
            if !response.status().is_success() {
                return Err(self.status_error(repo, &what, &mut response));
            }
        }
        let length = header(&response, "content-length").and_then(|l| l.parse::<u64>().ok());
        let partial = blobs.join(format!("{etag}.incomplete"));
        let result = write_body(&mut response, &partial, length, file);
        let result =
            result.and_then(|()| std::fs::rename(&partial, &blob).map_err(|e| Error::io(&blob, e)));
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result.map_err(|e| Error::hub(repo, format!("{what}: {e}")))?;
        Ok(etag)
    }
}

/// Streams the body to `path`, with a progress bar when it is large and stderr is a terminal.
fn write_body(
    response: &mut Response<ureq::Body>,
    path: &Path,
    length: Option<u64>,
    name: &str,
) -> Result<()> {
    let bar = match length {
        Some(n) if n > 10 << 20 => {
            let bar = indicatif::ProgressBar::new(n);
            let style = indicatif::ProgressStyle::with_template(
                "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("a valid template");
            bar.set_style(style);
            bar.set_message(name.to_string());
            Some(bar)
        }
        _ => None,
    };
    let mut out = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut reader = response.body_mut().with_config().limit(u64::MAX).reader();
    let mut buffer = vec![0u8; 1 << 16];
    let mut written = 0u64;
    loop {
        let n = reader.read(&mut buffer).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        out.write_all(&buffer[..n])
            .map_err(|e| Error::io(path, e))?;
        written += n as u64;
        if let Some(bar) = &bar {
            bar.set_position(written);
        }
    }
    out.sync_all().map_err(|e| Error::io(path, e))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match length {
        Some(n) if n != written => Err(Error::Invalid(format!(
            "download ended after {written} of {n} bytes"
        ))),
        _ => Ok(()),
    }
}
