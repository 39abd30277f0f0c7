//! Extension of the fake Gitea (drone branch): the repository contents API over the fake's real
//! bare repositories (`GET`/`PUT /repos/{owner}/{repo}/contents/{filepath}`), `GET …/branches/
//! {branch}`, `GET /user/repos` (what a CI's repository sync reads), and push webhooks: a file
//! committed through the API (or a push recorded with [`super::FakeGitea::notify_push`]) is
//! delivered to the repository's active hooks as Gitea's `push` event, over HTTPS trusting the
//! lab CA, asynchronously as Gitea's queue does.
//!
//! Commits are made with git plumbing in the bare repository (a temporary index, `commit-tree`,
//! `update-ref` against the old head), so what the API commits is what `git clone` sees.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use serde_json::{Value, json};

use super::super::http_kit::git_backend;
use super::super::http_kit::query::Page;
use super::{Data, FakeGitea, Shared, message, repo_json};

/// The operation ids of swagger.v1.json this module answers.
pub fn implements(op: &str) -> bool {
    matches!(
        op,
        "repoGetContents" | "repoUpdateFile" | "repoGetBranch" | "userCurrentListRepos"
    )
}

/// One webhook delivery as the fake made it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub url: String,
    pub event: String,
    /// The HTTP status, or the transport error.
    pub result: Result<u16, String>,
}

fn git(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&[u8]>,
) -> Result<String, String> {
    use std::io::Write;
    let mut cmd = Command::new("git");
    cmd.arg(format!("--git-dir={}", dir.display()))
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn repo_dir(shared: &Shared, owner: &str, repo: &str) -> PathBuf {
    shared.repos_root.join(owner).join(format!("{repo}.git"))
}

/// `(blob sha, content)` of `path` at `reference`, and the last commit that touched it.
pub fn read_file(dir: &Path, reference: &str, path: &str) -> Option<(String, Vec<u8>, String)> {
    let commit = git(
        dir,
        &[
            "rev-parse",
            "--verify",
            "-q",
            &format!("{reference}^{{commit}}"),
        ],
        &[],
        None,
    )
    .ok()?;
    let line = git(dir, &["ls-tree", &commit, "--", path], &[], None).ok()?;
    let (meta, _) = line.split_once('\t')?;
    let mut parts = meta.split_whitespace();
    let (_, kind, sha) = (parts.next()?, parts.next()?, parts.next()?);
    if kind != "blob" {
        return None;
    }
    let out = Command::new("git")
        .arg(format!("--git-dir={}", dir.display()))
        .args(["cat-file", "blob", sha])
        .output()
        .ok()?;
    let last = git(
        dir,
        &["log", "-1", "--format=%H", &commit, "--", path],
        &[],
        None,
    )
    .ok()?;
    Some((sha.to_string(), out.stdout, last))
}

/// Commit `content` as `path` on `branch` (whose head must still be `parent`); the new commit.
pub fn commit_file(
    dir: &Path,
    branch: &str,
    path: &str,
    content: &[u8],
    message: &str,
    author: (&str, &str),
) -> Result<String, String> {
    let parent = git(
        dir,
        &[
            "rev-parse",
            "--verify",
            "-q",
            &format!("refs/heads/{branch}"),
        ],
        &[],
        None,
    )?;
    let blob = git(dir, &["hash-object", "-w", "--stdin"], &[], Some(content))?;
    // A fresh index path: git wants to create the file itself.
    let index = tempfile::tempdir().unwrap();
    let index_path = index.path().join("index").display().to_string();
    let env = [("GIT_INDEX_FILE", index_path.as_str())];
    git(dir, &["read-tree", &parent], &env, None)?;
    git(
        dir,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("100644,{blob},{path}"),
        ],
        &env,
        None,
    )?;
    let tree = git(dir, &["write-tree"], &env, None)?;
    let people = [
        ("GIT_AUTHOR_NAME", author.0),
        ("GIT_AUTHOR_EMAIL", author.1),
        ("GIT_COMMITTER_NAME", author.0),
        ("GIT_COMMITTER_EMAIL", author.1),
    ];
    let commit = git(
        dir,
        &["commit-tree", &tree, "-p", &parent, "-m", message],
        &people,
        None,
    )?;
    git(
        dir,
        &[
            "update-ref",
            &format!("refs/heads/{branch}"),
            &commit,
            &parent,
        ],
        &[],
        None,
    )?;
    Ok(commit)
}

fn not_found() -> (u16, Value) {
    (
        404,
        json!({"errors": [], "message": "not found", "url": ""}),
    )
}

fn contents_json(
    base: &str,
    owner: &str,
    repo: &str,
    path: &str,
    sha: &str,
    content: &[u8],
    last: &str,
) -> Value {
    let name = path.rsplit('/').next().unwrap_or(path);
    json!({
        "type": "file",
        "name": name,
        "path": path,
        "sha": sha,
        "last_commit_sha": last,
        "size": content.len(),
        "encoding": "base64",
        "content": base64::engine::general_purpose::STANDARD.encode(content),
        "url": format!("{base}/api/v1/repos/{owner}/{repo}/contents/{path}"),
        "html_url": format!("{base}/{owner}/{repo}/src/branch/main/{path}"),
    })
}

/// Answer a contents, branch or repository-list call for `doer`.
pub fn operation(
    shared: &Shared,
    m: &super::swagger::Matched,
    query: &[(String, String)],
    body: &Value,
    doer: &str,
    data: &mut Data,
) -> (u16, Value) {
    let p = |k: &str| m.path_params.get(k).cloned().unwrap_or_default();
    let base = shared.base_url.lock().unwrap().clone();
    if m.op.id == "userCurrentListRepos" {
        // The lab's admin owns the organisation: every repository is theirs to see.
        let is_admin = data.users.get(doer).is_some_and(|u| u.is_admin);
        let list: Vec<Value> = data
            .repos
            .values()
            .filter(|r| is_admin || r.owner == doer)
            .map(|r| {
                let mut v = repo_json(shared, r, false);
                v["permissions"] = json!({"admin": true, "push": true, "pull": true});
                v
            })
            .collect();
        let list: Vec<Value> = Page::gitea(query, 30).of(list).collect();
        return (200, Value::Array(list));
    }
    let (owner, repo) = (p("owner"), p("repo"));
    let Some(r) = data.repos.get(&format!("{owner}/{repo}")).cloned() else {
        return not_found();
    };
    let dir = repo_dir(shared, &owner, &repo);
    match m.op.id.as_str() {
        "repoGetBranch" => {
            let branch = p("branch");
            match git(
                &dir,
                &[
                    "rev-parse",
                    "--verify",
                    "-q",
                    &format!("refs/heads/{branch}"),
                ],
                &[],
                None,
            ) {
                Ok(sha) => (
                    200,
                    json!({"name": branch, "commit": {"id": sha, "message": "", "url": format!("{base}/{owner}/{repo}/commit/{sha}")}, "protected": false}),
                ),
                Err(_) => not_found(),
            }
        }
        "repoGetContents" => {
            let reference = query
                .iter()
                .find(|q| q.0 == "ref")
                .map(|q| q.1.clone())
                .unwrap_or_else(|| r.default_branch.clone());
            let path = p("filepath");
            match read_file(&dir, &reference, &path) {
                Some((sha, content, last)) => (
                    200,
                    contents_json(&base, &owner, &repo, &path, &sha, &content, &last),
                ),
                None => not_found(),
            }
        }
        "repoUpdateFile" => {
            let path = p("filepath");
            let branch = body["branch"]
                .as_str()
                .unwrap_or(&r.default_branch)
                .to_string();
            let Some((current, _, _)) = read_file(&dir, &format!("refs/heads/{branch}"), &path)
            else {
                return not_found();
            };
            if body["sha"].as_str() != Some(current.as_str()) {
                return message(
                    422,
                    &format!(
                        "sha does not match [given: {}, expected: {current}]",
                        body["sha"].as_str().unwrap_or("")
                    ),
                );
            }
            let Ok(content) = base64::engine::general_purpose::STANDARD
                .decode(body["content"].as_str().unwrap_or_default())
            else {
                return message(422, "content is not valid base64");
            };
            let msg = body["message"]
                .as_str()
                .unwrap_or("Update file")
                .to_string();
            let author = (
                body["author"]["name"].as_str().unwrap_or(doer).to_string(),
                body["author"]["email"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or(format!("{doer}@example.test")),
            );
            let before = git(
                &dir,
                &["rev-parse", &format!("refs/heads/{branch}")],
                &[],
                None,
            )
            .unwrap_or_default();
            let commit =
                match commit_file(&dir, &branch, &path, &content, &msg, (&author.0, &author.1)) {
                    Ok(c) => c,
                    Err(e) => return message(500, &e),
                };
            let (sha, content, last) = read_file(&dir, &commit, &path).unwrap();
            deliver_push(
                shared, data, &owner, &repo, &branch, &before, &commit, &msg, doer,
            );
            (
                200,
                json!({
                    "content": contents_json(&base, &owner, &repo, &path, &sha, &content, &last),
                    "commit": {"sha": commit, "message": msg, "url": format!("{base}/api/v1/repos/{owner}/{repo}/git/commits/{commit}")},
                }),
            )
        }
        other => unreachable!("{other} is not a contents operation"),
    }
}

/// Deliver a `push` event to the repository's active hooks (in the background, like Gitea's
/// webhook queue), signed as Gitea signs them: `X-Gitea-Signature` (and `X-Hub-Signature-256`)
/// is the hex HMAC-SHA256 of the body with the hook's secret, `X-Gitea-Delivery` a fresh id.
/// Gitea also sends the Gogs headers (`X-Gogs-Event`, `X-Gogs-Delivery`, `X-Gogs-Signature`, the
/// same values) for receivers written for Gogs (go-gitea/gitea 1.26 services/webhook/deliver.go;
/// docs usage/webhooks.md): Argo CD's `/api/webhook` recognises Gitea by them.
/// A target that `[webhook] ALLOWED_HOST_LIST` does not admit is refused without a request, as
/// Gitea refuses it.
#[allow(clippy::too_many_arguments)]
pub(super) fn deliver_push(
    shared: &Shared,
    data: &Data,
    owner: &str,
    repo: &str,
    branch: &str,
    before: &str,
    after: &str,
    msg: &str,
    pusher: &str,
) {
    let hooks: Vec<super::FakeHook> = data
        .hooks
        .get(&format!("{owner}/{repo}"))
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|h| h.active)
        .collect();
    let base = shared.base_url.lock().unwrap().clone();
    let payload = json!({
        "ref": format!("refs/heads/{branch}"),
        "before": before,
        "after": after,
        "compare_url": format!("{base}/{owner}/{repo}/compare/{before}...{after}"),
        "commits": [{"id": after, "message": msg}],
        "total_commits": 1,
        "head_commit": {"id": after, "message": msg},
        "repository": {"name": repo, "full_name": format!("{owner}/{repo}"), "owner": {"login": owner}, "default_branch": "main", "clone_url": format!("{base}/{owner}/{repo}.git"), "html_url": format!("{base}/{owner}/{repo}")},
        "pusher": {"login": pusher},
        "sender": {"login": pusher},
    });
    let body = serde_json::to_vec(&payload).unwrap();
    let client = shared.hook_client.lock().unwrap().clone();
    let dns = shared.cluster_dns.lock().unwrap().clone();
    let allowed = shared.allowed_hosts.lock().unwrap().clone();
    for h in hooks {
        let url = h.config.get("url").cloned().unwrap_or_default();
        let secret = h.config.get("secret").cloned().unwrap_or_default();
        let signature = if secret.is_empty() {
            String::new()
        } else {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
            hex::encode(ring::hmac::sign(&key, &body).as_ref())
        };
        let client = client.clone();
        let body = body.clone();
        let log = shared.deliveries.clone();
        let dns = dns.clone();
        let allowed = allowed.clone();
        tokio::spawn(async move {
            let result = match (client, allowed_host(&url, allowed.as_deref())) {
                (_, Err(e)) => Err(e),
                (None, _) => Err("the test gave the fake no way to reach hooks".to_string()),
                (Some(c), Ok(())) => {
                    let (target, host) = route(&url, dns.as_ref());
                    let delivery = random_id();
                    let mut req = c
                        .post(&target)
                        .header("Content-Type", "application/json")
                        .header("X-Gitea-Event", "push")
                        .header("X-Gitea-Event-Type", "push")
                        .header("X-Gitea-Delivery", &delivery)
                        .header("X-Gitea-Signature", &signature)
                        .header("X-Gogs-Event", "push")
                        .header("X-Gogs-Event-Type", "push")
                        .header("X-Gogs-Delivery", &delivery)
                        .header("X-Gogs-Signature", &signature)
                        .header("X-Hub-Signature-256", format!("sha256={signature}"))
                        .body(body);
                    if let Some(h) = host {
                        req = req.header("Host", h);
                    }
                    match req.send().await {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            Ok((status, r.text().await.unwrap_or_default()))
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
            };
            let result = result.map(|(status, _body)| status);
            log.lock().unwrap().push(Delivery {
                url,
                event: "push".into(),
                result,
            });
        });
    }
}

fn random_id() -> String {
    let b = homelab::edges::state::random_bytes(16).unwrap();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// `ALLOWED_HOST_LIST` as Gitea reads it for a target it cannot resolve to a public address
/// (every target here is an in-cluster name): only a host-name glob can admit it.
fn allowed_host(url: &str, allowed: Option<&[String]>) -> Result<(), String> {
    let Some(list) = allowed else { return Ok(()) };
    let host = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let glob = |pattern: &str| match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix),
        None => host == pattern,
    };
    if list
        .iter()
        .map(|p| p.trim())
        .any(|p| p == "*" || (p.contains('.') && glob(p)))
    {
        return Ok(());
    }
    Err(format!(
        "webhook can only call allowed HTTP servers (check your webhook.ALLOWED_HOST_LIST setting), deny '{host}'"
    ))
}

/// The address an in-cluster URL reaches (a Service's `host:port`, resolved by the cluster the
/// fake's pod runs in), and the Host header it keeps.
fn route(url: &str, dns: Option<&super::ClusterDns>) -> (String, Option<String>) {
    let (Ok(mut u), Some(dns)) = (reqwest::Url::parse(url), dns) else {
        return (url.to_string(), None);
    };
    let authority = format!(
        "{}:{}",
        u.host_str().unwrap_or_default(),
        u.port_or_known_default().unwrap_or(0)
    );
    match dns(&authority) {
        Some(addr) => {
            let host = u.host_str().map(str::to_string);
            let _ = u.set_ip_host(addr.ip());
            let _ = u.set_port(Some(addr.port()));
            (u.to_string(), host)
        }
        None => (url.to_string(), None),
    }
}

impl FakeGitea {
    /// Resolve in-cluster webhook targets (`<service>.<ns>.svc.cluster.local:<port>`) with
    /// `dns`: the cluster network the fake's pod would be on.
    pub fn cluster_dns(&self, dns: super::ClusterDns) {
        *self.shared.cluster_dns.lock().unwrap() = Some(dns);
        if self.shared.hook_client.lock().unwrap().is_none() {
            self.deliver_hooks_to(&[]);
        }
    }

    /// Gitea's `[webhook] ALLOWED_HOST_LIST`, comma-separated (unset: every host).
    pub fn allow_hook_hosts(&self, list: &str) {
        *self.shared.allowed_hosts.lock().unwrap() =
            Some(list.split(',').map(|s| s.trim().to_string()).collect());
    }

    /// Let the fake deliver webhooks to HTTPS hosts signed by its CA, pinned to addresses.
    pub fn deliver_hooks_to(&self, hosts: &[(&str, std::net::SocketAddr)]) {
        let tls = homelab::edges::http::rustls_config(Some(&self.ca.cert_pem)).unwrap();
        let mut b = reqwest::Client::builder().tls_backend_preconfigured(tls);
        for (h, a) in hosts {
            b = b.resolve(h, *a);
        }
        *self.shared.hook_client.lock().unwrap() = Some(b.build().unwrap());
    }

    /// The webhook deliveries made so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.deliveries.lock().unwrap().clone()
    }

    /// Commit a file straight into a repository (as a `git push` would), delivering the push
    /// event; returns the new commit.
    pub fn commit_file(
        &self,
        owner: &str,
        repo: &str,
        path: &str,
        content: &str,
        msg: &str,
    ) -> String {
        let dir = self.repo_dir(owner, repo);
        let before = git(&dir, &["rev-parse", "refs/heads/main"], &[], None).unwrap_or_default();
        let commit = commit_file(
            &dir,
            "main",
            path,
            content.as_bytes(),
            msg,
            ("Drone CI", "drone@example.test"),
        )
        .unwrap();
        let data = self.data();
        deliver_push(
            &self.shared,
            &data,
            owner,
            repo,
            "main",
            &before,
            &commit,
            msg,
            "drone",
        );
        commit
    }

    /// A file's text at `main`.
    pub fn file(&self, owner: &str, repo: &str, path: &str) -> Option<String> {
        read_file(&self.repo_dir(owner, repo), "refs/heads/main", path)
            .map(|(_, c, _)| String::from_utf8_lossy(&c).into_owned())
    }

    /// The head of `main`.
    pub fn head(&self, owner: &str, repo: &str) -> String {
        git(
            &self.repo_dir(owner, repo),
            &["rev-parse", "refs/heads/main"],
            &[],
            None,
        )
        .unwrap()
    }

    /// Create a repository in an organisation with these files as its first commit on `main`.
    pub fn seed_repo(&self, owner: &str, repo: &str, files: &[(&str, &str)]) -> String {
        {
            let mut d = self.data();
            if !d.orgs.contains_key(owner) {
                let id = d.id();
                d.orgs.insert(owner.into(), id);
            }
            let id = d.id();
            d.repos.insert(
                format!("{owner}/{repo}"),
                super::Repo {
                    id,
                    owner: owner.into(),
                    name: repo.into(),
                    private: false,
                    default_branch: "main".into(),
                    object_format: "sha1".into(),
                },
            );
        }
        git_backend::init_bare(&self.shared.repos_root, owner, repo, "sha1");
        let dir = self.repo_dir(owner, repo);
        let index = tempfile::tempdir().unwrap();
        let index_path = index.path().join("index").display().to_string();
        let env = [("GIT_INDEX_FILE", index_path.as_str())];
        for (path, content) in files {
            let blob = git(
                &dir,
                &["hash-object", "-w", "--stdin"],
                &[],
                Some(content.as_bytes()),
            )
            .unwrap();
            git(
                &dir,
                &[
                    "update-index",
                    "--add",
                    "--cacheinfo",
                    &format!("100644,{blob},{path}"),
                ],
                &env,
                None,
            )
            .unwrap();
        }
        let tree = git(&dir, &["write-tree"], &env, None).unwrap();
        let people = [
            ("GIT_AUTHOR_NAME", "homelab"),
            ("GIT_AUTHOR_EMAIL", "homelab@example.test"),
            ("GIT_COMMITTER_NAME", "homelab"),
            ("GIT_COMMITTER_EMAIL", "homelab@example.test"),
        ];
        let commit = git(&dir, &["commit-tree", &tree, "-m", "Seed"], &people, None).unwrap();
        git(&dir, &["update-ref", "refs/heads/main", &commit], &[], None).unwrap();
        commit
    }
}
