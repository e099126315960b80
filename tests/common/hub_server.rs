//! A small Hugging Face Hub on 127.0.0.1 for the tests: the two endpoints a model download uses,
//! answered the way the Hub answers them.
//!
//! - `GET /api/models/ORG/NAME/revision/REV`: `{"sha", "siblings": [{"rfilename"}]}`; 404 with
//!   `X-Error-Code: RepoNotFound` / `RevisionNotFound`, 401 with `GatedRepo` for a gated repo asked
//!   without `Authorization: Bearer TOKEN`.
//! - `GET /ORG/NAME/resolve/REV/FILE`: small files with `ETag` and `X-Repo-Commit`; `.safetensors`
//!   and `.parquet` files (LFS on the Hub) as a 302 to `/cdn/…` with `X-Linked-Etag` and
//!   `X-Linked-Size`, as the Hub redirects to its CDN. `HEAD` answers the same headers;
//!   `Range: bytes=A-B` gives a 206.
//! - Datasets the same under `/api/datasets/…` and `/datasets/ORG/NAME/resolve/…` (registered as
//!   `datasets/ORG/NAME`).
//!
//! Every request path is recorded, so tests can assert what was (not) downloaded.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The commit every served repo is at.
pub const COMMIT: &str = "0c0ffee0c0ffee0c0ffee0c0ffee0c0ffee0c0ff";
/// The token a gated repo accepts.
pub const TOKEN: &str = "hf_test_token";

/// One repo: the directory whose files it serves, whether it is gated, and extra file names it
/// lists (files a model download must skip, such as `pytorch_model.bin`).
pub struct Repo {
    pub dir: PathBuf,
    pub gated: bool,
    pub extra: Vec<&'static str>,
}

/// A running server; stopped when dropped.
pub struct HubServer {
    pub endpoint: String,
    pub requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    port: u16,
}

/// A stable content hash as hex (FNV-1a; the real Hub sends git and sha256 hashes).
fn etag(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    format!("{hash:016x}")
}

struct Reply {
    status: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn json_reply(status: &'static str, code: Option<&str>, body: String) -> Reply {
    let mut headers = vec![("Content-Type".into(), "application/json".into())];
    if let Some(code) = code {
        headers.push(("X-Error-Code".into(), code.into()));
    }
    Reply {
        status,
        headers,
        body: body.into_bytes(),
    }
}

/// What a request asks for.
enum Route<'a> {
    /// `api/{models,datasets}/ORG/NAME/revision/REV`
    Revision {
        repo: String,
        rev: &'a str,
    },
    /// `[datasets/]ORG/NAME/resolve/REV/FILE`, or its CDN leg `cdn/[datasets/]ORG/NAME/REV/FILE`
    File {
        repo: String,
        rev: &'a str,
        file: &'a str,
        cdn: bool,
    },
    Unknown,
}

/// Parses a request path; dataset repos are named `datasets/ORG/NAME`.
fn route(path: &str) -> Route<'_> {
    let path = path.trim_start_matches('/');
    let (cdn, path) = match path.strip_prefix("cdn/") {
        Some(rest) => (true, rest),
        None => (false, path),
    };
    if let Some(rest) = path.strip_prefix("api/") {
        let (kind, rest) = rest.split_once('/').unwrap_or(("", ""));
        let prefix = if kind == "datasets" { "datasets/" } else { "" };
        let parts: Vec<&str> = rest.splitn(4, '/').collect();
        return match parts.as_slice() {
            [org, name, "revision", rev] if !cdn => Route::Revision {
                repo: format!("{prefix}{org}/{name}"),
                rev,
            },
            _ => Route::Unknown,
        };
    }
    let (prefix, path) = match path.strip_prefix("datasets/") {
        Some(rest) => ("datasets/", rest),
        None => ("", path),
    };
    let parts: Vec<&str> = path.splitn(if cdn { 4 } else { 5 }, '/').collect();
    match (cdn, parts.as_slice()) {
        (false, [org, name, "resolve", rev, file]) | (true, [org, name, rev, file]) => {
            Route::File {
                repo: format!("{prefix}{org}/{name}"),
                rev,
                file,
                cdn,
            }
        }
        _ => Route::Unknown,
    }
}

/// Every file below `dir` (`/`-separated), plus the repo's extra names, sorted.
fn files_of(repo: &Repo) -> Vec<String> {
    let mut names = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(prefix) = stack.pop() {
        for entry in std::fs::read_dir(repo.dir.join(&prefix)).unwrap() {
            let entry = entry.unwrap();
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.path().is_dir() {
                stack.push(format!("{name}/"));
            } else {
                names.push(name);
            }
        }
    }
    names.extend(repo.extra.iter().map(|s| s.to_string()));
    names.sort();
    names
}

fn answer(
    repos: &HashMap<String, Repo>,
    path: &str,
    auth: Option<&str>,
    range: Option<&str>,
) -> Reply {
    let not_found = |code: &str| {
        json_reply(
            "404 Not Found",
            Some(code),
            r#"{"error": "not found"}"#.into(),
        )
    };
    let authorized = |repo: &Repo| !repo.gated || auth == Some(&format!("Bearer {TOKEN}"));
    let gated = || {
        let body = r#"{"error": "Access to this repo is restricted."}"#.to_string();
        json_reply("401 Unauthorized", Some("GatedRepo"), body)
    };
    let (name, rev, file, cdn) = match route(path) {
        Route::Revision { repo, rev } => (repo, rev, None, false),
        Route::File {
            repo,
            rev,
            file,
            cdn,
        } => (repo, rev, Some(file), cdn),
        Route::Unknown => return not_found("EntryNotFound"),
    };
    let Some(repo) = repos.get(&name) else {
        return not_found("RepoNotFound");
    };
    if !cdn && !authorized(repo) {
        return gated();
    }
    if rev != "main" && rev != COMMIT {
        return not_found("RevisionNotFound");
    }
    let Some(file) = file else {
        let siblings: Vec<String> = files_of(repo)
            .iter()
            .map(|f| format!(r#"{{"rfilename": "{f}"}}"#))
            .collect();
        let id = name.trim_start_matches("datasets/");
        let body = format!(
            r#"{{"id": "{id}", "sha": "{COMMIT}", "siblings": [{}]}}"#,
            siblings.join(", ")
        );
        return json_reply("200 OK", None, body);
    };
    let Ok(bytes) = std::fs::read(repo.dir.join(file)) else {
        return not_found("EntryNotFound");
    };
    let tag = format!("\"{}\"", etag(&bytes));
    let mut headers = vec![("X-Repo-Commit".to_string(), COMMIT.to_string())];
    if !cdn && (file.ends_with(".safetensors") || file.ends_with(".parquet")) {
        headers.push(("X-Linked-Etag".into(), tag));
        headers.push(("X-Linked-Size".into(), bytes.len().to_string()));
        headers.push(("Location".into(), format!("/cdn/{name}/{COMMIT}/{file}")));
        return Reply {
            status: "302 Found",
            headers,
            body: Vec::new(),
        };
    }
    headers.push(("ETag".into(), tag));
    let span = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
    match span {
        Some((start, end)) if start <= end && end < bytes.len() => {
            let total = bytes.len();
            headers.push((
                "Content-Range".into(),
                format!("bytes {start}-{end}/{total}"),
            ));
            Reply {
                status: "206 Partial Content",
                headers,
                body: bytes[start..=end].to_vec(),
            }
        }
        _ => Reply {
            status: "200 OK",
            headers,
            body: bytes,
        },
    }
}

fn serve(stream: TcpStream, repos: &HashMap<String, Repo>, requests: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut fields = request_line.split_whitespace();
    let (method, path) = (fields.next().unwrap_or(""), fields.next().unwrap_or("/"));
    requests.lock().unwrap().push(path.to_string());
    let reply = answer(
        repos,
        path,
        headers.get("authorization").map(String::as_str),
        headers.get("range").map(String::as_str),
    );
    let mut out = stream;
    let mut head = format!(
        "HTTP/1.1 {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = out.write_all(head.as_bytes());
    if method != "HEAD" {
        let _ = out.write_all(&reply.body);
    }
    let _ = out.flush();
}

impl HubServer {
    /// Serves `repos` (`ORG/NAME` → repo) on a free loopback port.
    pub fn start(repos: Vec<(&str, Repo)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let repos: HashMap<String, Repo> =
            repos.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, flag) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    serve(stream, &repos, &log);
                }
            }
        });
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            requests,
            stop,
            thread: Some(thread),
            port,
        }
    }

    /// The request paths so far.
    pub fn paths(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept loop
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
