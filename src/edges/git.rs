//! git over HTTPS with the real `git`: the one runner every git command of homelab goes through
//! (`Git::command`, with one [`GitAuth`]); on top of it, read a remote branch head, fetch a
//! remote tree, push the lab repositories' seed content; plus the pure computation of a git tree
//! id from file content. The sync engine's fetches ([`crate::sync::source`]) use the same runner.
//!
//! Place in the data flow: `gitea::wire` pushes the `repos` rendered by `render` into Gitea with
//! it. Architecture invariant: a credential never appears in a URL or an argument. The CA file
//! (`GIT_SSL_CAINFO`, and `http.sslCAInfo` for the seed pushes), the token (an `Authorization`
//! header in `http.extraHeader`) and the pinned address (`http.curloptResolve`) reach git through
//! `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n` and other variables in its
//! environment, which [`Cmd`] never logs; stdin is null, prompts and askpass helpers are off, so
//! a refused credential fails fast instead of waiting for a person.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;

use crate::edges::error::Diagnostic;
use crate::edges::process::{Cmd, ProcessError};
use crate::edges::redact::{Secret, redact_url};
use crate::edges::tools::{Tool, ToolNotFound};

/// How long one git network command may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(120);

/// A repository on a git server reached over HTTPS.
#[derive(Clone, Debug)]
pub struct GitRemote {
    /// Clone URL without credentials, e.g. `https://gitea.10.0.0.5.sslip.io/lab/gitops.git`.
    pub url: String,
    /// Credentials, and the CA to trust (the lab CA; `None` leaves git's own trust alone).
    pub auth: GitAuth,
    /// Connect to this address instead of resolving the URL's host.
    pub resolve: Option<SocketAddr>,
}

/// How to authenticate to a repository over HTTPS, and whom to trust: for the seed pushes to
/// Gitea and for the sync engine's fetches alike.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GitAuth {
    /// HTTP basic user name (`git` when unset; Gitea accepts any with a token; Argo's repo
    /// Secrets carry one).
    pub username: Option<String>,
    /// Password or access token, sent as a basic `Authorization` header when set.
    pub password: Option<Secret>,
    /// PEM bundle of CAs to trust for HTTPS (the lab CA).
    pub ca_pem: Option<String>,
}

/// How [`Git::command`] prepares one command, beyond what every git command gets.
#[derive(Clone, Debug, Default)]
pub(crate) struct GitSetup<'a> {
    /// Credentials: a basic `Authorization` header when a password is set.
    pub auth: Option<&'a GitAuth>,
    /// Send that header only to this origin (`https://host:port/`), so a redirect elsewhere
    /// never carries it; `None` sends it to every URL of the command.
    pub header_scope: Option<String>,
    /// The CA bundle file to trust, as `GIT_SSL_CAINFO` (which beats `http.sslCAInfo`, and
    /// corporate setups often export it).
    pub ca_file: Option<&'a Path>,
    /// Also name the CA file in `http.sslCAInfo`, with verification forced on.
    pub ca_in_config: bool,
    /// Configuration set before the credentials.
    pub config: Vec<(String, String)>,
    /// Ignore the user's global git configuration too (the system's is always ignored).
    pub ignore_global_config: bool,
}

/// Who commits.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
}

/// The hash a repository uses for object ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ObjectFormat {
    /// SHA-1 (git's default, 40 hex digits).
    #[default]
    Sha1,
    /// SHA-256 (64 hex digits).
    Sha256,
}

impl ObjectFormat {
    /// From Gitea's `object_format_name` (empty means SHA-1).
    pub fn from_name(name: &str) -> ObjectFormat {
        if name.eq_ignore_ascii_case("sha256") {
            ObjectFormat::Sha256
        } else {
            ObjectFormat::Sha1
        }
    }

    fn name(self) -> &'static str {
        match self {
            ObjectFormat::Sha1 => "sha1",
            ObjectFormat::Sha256 => "sha256",
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ObjectFormat::Sha1 => {
                ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data)
                    .as_ref()
                    .to_vec()
            }
            ObjectFormat::Sha256 => <sha2::Sha256 as sha2::Digest>::digest(data).to_vec(),
        }
    }
}

/// A git operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// git is not installed.
    #[error(transparent)]
    NotFound(#[from] ToolNotFound),
    /// A git command failed.
    #[error(transparent)]
    Command(#[from] ProcessError),
    /// A seed file path would leave the repository.
    #[error("seed file path `{path}` of `{repo}` is not a plain relative path")]
    BadPath {
        /// The repository.
        repo: String,
        /// The path.
        path: String,
    },
    /// A scratch directory could not be prepared.
    #[error("{action} `{path}` for git: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// git printed something homelab does not understand.
    #[error("{summary}: unexpected output from git: {output}")]
    Output {
        /// What git was asked.
        summary: String,
        /// What it printed.
        output: String,
    },
}

impl Diagnostic for GitError {
    fn hints(&self) -> Vec<String> {
        match self {
            GitError::NotFound(e) => e.hints(),
            GitError::Command(e) => {
                let stderr = e.output().map(|o| o.stderr.as_str()).unwrap_or_default();
                if stderr.contains("SSL certificate") || stderr.contains("certificate verif") {
                    vec!["git does not trust Gitea's certificate: it must be issued by the lab CA (`kubectl -n gitea get certificate`)".into()]
                } else if stderr.contains("Authentication failed")
                    || stderr.contains("could not read Username")
                    || stderr.contains("401")
                {
                    vec!["Gitea refused the stored token for git: run `homelab up` again to replace it".into()]
                } else if stderr.contains("non-fast-forward")
                    || stderr.contains("fetch first")
                    || stderr.contains("rejected")
                {
                    vec![
                        "someone pushed to the repository meanwhile; run `homelab up` again".into(),
                    ]
                } else {
                    e.hints()
                }
            }
            _ => Vec::new(),
        }
    }
}

/// The git id of the tree holding exactly `files` (path → text, mode 100644), as `git add -A &&
/// git write-tree` would compute it. Pure.
pub fn tree_id(
    repo: &str,
    files: &BTreeMap<String, String>,
    format: ObjectFormat,
) -> Result<String, GitError> {
    #[derive(Default)]
    struct Dir {
        files: BTreeMap<String, Vec<u8>>,
        dirs: BTreeMap<String, Dir>,
    }
    fn object(format: ObjectFormat, kind: &str, body: &[u8]) -> Vec<u8> {
        let mut data = format!("{kind} {}\0", body.len()).into_bytes();
        data.extend_from_slice(body);
        format.hash(&data)
    }
    fn write(dir: &Dir, format: ObjectFormat) -> Vec<u8> {
        // git orders entries by name, comparing a directory as if its name ended in `/`.
        let mut entries: Vec<(Vec<u8>, &str, Vec<u8>)> = Vec::new();
        for (name, content) in &dir.files {
            entries.push((
                name.as_bytes().to_vec(),
                "100644",
                object(format, "blob", content),
            ));
        }
        for (name, sub) in &dir.dirs {
            let mut key = name.as_bytes().to_vec();
            key.push(b'/');
            entries.push((key, "40000", write(sub, format)));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut body = Vec::new();
        for (key, mode, id) in entries {
            let name = key.strip_suffix(b"/").unwrap_or(&key);
            body.extend_from_slice(mode.as_bytes());
            body.push(b' ');
            body.extend_from_slice(name);
            body.push(0);
            body.extend_from_slice(&id);
        }
        object(format, "tree", &body)
    }
    let mut root = Dir::default();
    for (path, text) in files {
        let parts = check_path(repo, path)?;
        let (file, dirs) = parts.split_last().expect("checked non-empty");
        let mut d = &mut root;
        for p in dirs {
            d = d.dirs.entry((*p).to_string()).or_default();
        }
        d.files
            .insert((*file).to_string(), text.as_bytes().to_vec());
    }
    Ok(hex::encode(write(&root, format)))
}

fn check_path<'a>(repo: &str, path: &'a str) -> Result<Vec<&'a str>, GitError> {
    let parts: Vec<&str> = path.split('/').collect();
    let bad = path.is_empty()
        || path.contains('\\')
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == ".." || *p == ".git");
    if bad {
        return Err(GitError::BadPath {
            repo: repo.to_string(),
            path: path.to_string(),
        });
    }
    Ok(parts)
}

/// A private scratch directory removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Result<Scratch, GitError> {
        let suffix = crate::edges::state::random_bytes(8)
            .map(hex::encode)
            .unwrap_or_else(|_| std::process::id().to_string());
        let dir = std::env::temp_dir().join(format!("homelab-git-{suffix}"));
        let io = |action| {
            let path = dir.clone();
            move |source| GitError::Io {
                action,
                path,
                source,
            }
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(io("create directory"))?;
        }
        #[cfg(not(unix))]
        std::fs::create_dir(&dir).map_err(io("create directory"))?;
        Ok(Scratch { dir })
    }

    fn write(&self, rel: &str, bytes: &[u8]) -> Result<PathBuf, GitError> {
        let p = self.dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|source| GitError::Io {
                action: "create directory",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(&p, bytes).map_err(|source| GitError::Io {
            action: "write",
            path: p.clone(),
            source,
        })?;
        Ok(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What [`Git::push_tree`] should commit.
#[derive(Clone, Debug)]
pub struct PushRequest<'a> {
    /// `owner/name`, for messages.
    pub repo: &'a str,
    /// The complete tree: path → text.
    pub files: &'a BTreeMap<String, String>,
    /// Branch to update.
    pub branch: &'a str,
    /// The remote head the new commit goes on top of; `None` for the first commit.
    pub parent: Option<&'a str>,
    /// Commit message.
    pub message: &'a str,
    /// Author and committer.
    pub author: &'a Identity,
    /// Object format of the remote repository.
    pub format: ObjectFormat,
}

/// A remote head and the tree it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteTree {
    /// Commit id.
    pub commit: String,
    /// Its tree id.
    pub tree: String,
}

/// The git program.
#[derive(Clone, Debug)]
pub struct Git {
    program: PathBuf,
}

impl Git {
    /// git from PATH.
    pub fn find() -> Result<Git, GitError> {
        Ok(Git {
            program: Tool::Git.find()?,
        })
    }

    /// git at an explicit path.
    pub fn at(program: impl Into<PathBuf>) -> Git {
        Git {
            program: program.into(),
        }
    }

    /// The one place a git command is built: stdin null (through [`Cmd`]), prompts, askpass
    /// helpers and ssh passwords off, the system configuration ignored, messages in English
    /// (read by the callers), and credentials and trust in the environment only.
    pub(crate) fn command(&self, summary: impl Into<String>, setup: GitSetup<'_>) -> Cmd {
        let mut config = setup.config;
        if let Some(ca) = setup.ca_file
            && setup.ca_in_config
        {
            config.push(("http.sslCAInfo".into(), ca.display().to_string()));
            config.push(("http.sslVerify".into(), "true".into()));
        }
        if let Some(auth) = setup.auth
            && let Some(pw) = &auth.password
        {
            let user = auth.username.as_deref().unwrap_or("git");
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", pw.expose()));
            let key = match setup.header_scope.as_deref() {
                Some(scope) if !scope.is_empty() => format!("http.{scope}.extraHeader"),
                _ => "http.extraHeader".to_string(),
            };
            config.push((key, format!("Authorization: Basic {basic}")));
        }
        let mut cmd = Cmd::new(&self.program, summary)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_ASKPASS", "")
            .env("SSH_ASKPASS", "")
            .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
            .env("LC_ALL", "C");
        if setup.ignore_global_config {
            cmd = cmd.env("GIT_CONFIG_GLOBAL", "/dev/null");
        }
        if let Some(ca) = setup.ca_file {
            cmd = cmd.env("GIT_SSL_CAINFO", ca);
        }
        cmd = cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
        for (i, (k, v)) in config.into_iter().enumerate() {
            cmd = cmd
                .env(format!("GIT_CONFIG_KEY_{i}"), k)
                .env(format!("GIT_CONFIG_VALUE_{i}"), v);
        }
        cmd
    }

    /// A git command talking to `remote` from `scratch`, with trust and credentials in its
    /// environment.
    fn cmd(&self, scratch: &Scratch, remote: &GitRemote, summary: String) -> Result<Cmd, GitError> {
        let mut config: Vec<(String, String)> = vec![
            // Forget credential helpers: none may store the token or ask for another one.
            ("credential.helper".into(), String::new()),
            // A user's global hooks must not run on homelab's scratch repositories.
            (
                "core.hooksPath".into(),
                scratch.dir.join("no-hooks").display().to_string(),
            ),
            ("commit.gpgSign".into(), "false".into()),
            ("core.autocrlf".into(), "false".into()),
        ];
        let ca_file = match &remote.auth.ca_pem {
            Some(pem) => Some(scratch.write("lab-ca.pem", pem.as_bytes())?),
            None => None,
        };
        if let Some(addr) = remote.resolve
            && let Ok(url) = reqwest::Url::parse(&remote.url)
            && let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default())
        {
            let ip = match addr.ip() {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            };
            config.push((
                "http.curloptResolve".into(),
                format!("{host}:{}:{ip}", addr.port()),
            ));
            // Connect to the pinned port too, as the HTTP clients do: curl's resolve table is
            // per port, so a pin to another port also moves the URL there.
            if addr.port() != port {
                let base = format!("{}://{host}", url.scheme());
                config.push((
                    format!("url.{base}:{}/.insteadOf", addr.port()),
                    format!("{base}/"),
                ));
            }
        }
        let setup = GitSetup {
            auth: Some(&remote.auth),
            header_scope: None,
            ca_file: ca_file.as_deref(),
            ca_in_config: true,
            config,
            ignore_global_config: false,
        };
        Ok(self.command(summary, setup).timeout(GIT_TIMEOUT))
    }

    /// The commit id `branch` points at on the remote; `None` when the branch (or every branch,
    /// in a new repository) is missing. One `GET …/info/refs`: protocol v0 advertises refs in
    /// that answer, where v2 would need a second request.
    pub async fn remote_head(
        &self,
        remote: &GitRemote,
        branch: &str,
    ) -> Result<Option<String>, GitError> {
        let scratch = Scratch::new()?;
        let summary = format!("read branch `{branch}` of `{}`", redact_url(&remote.url));
        let out = self
            .cmd(&scratch, remote, summary.clone())?
            .args(["-c", "protocol.version=0", "ls-remote", "--heads", "--"])
            .arg(&remote.url)
            .arg(format!("refs/heads/{branch}"))
            .dir(&scratch.dir)
            .run_async()
            .await?;
        let wanted = format!("refs/heads/{branch}");
        for line in out.stdout.lines() {
            if let Some((id, name)) = line.split_once('\t')
                && name == wanted
            {
                if !is_object_id(id) {
                    return Err(GitError::Output {
                        summary,
                        output: line.to_string(),
                    });
                }
                return Ok(Some(id.to_string()));
            }
        }
        Ok(None)
    }

    fn local(
        &self,
        scratch: &Scratch,
        remote: &GitRemote,
        summary: String,
    ) -> Result<Cmd, GitError> {
        let repo = scratch.dir.join("repo");
        Ok(self
            .cmd(scratch, remote, summary)?
            .arg(format!("--git-dir={}", repo.join(".git").display()))
            .arg(format!("--work-tree={}", repo.display()))
            .dir(&scratch.dir))
    }

    async fn init(
        &self,
        scratch: &Scratch,
        remote: &GitRemote,
        format: ObjectFormat,
    ) -> Result<(), GitError> {
        let mut cmd = self
            .cmd(scratch, remote, "prepare a scratch repository".into())?
            .args(["init", "-q"]);
        if format != ObjectFormat::Sha1 {
            cmd = cmd.arg(format!("--object-format={}", format.name()));
        }
        cmd.arg(scratch.dir.join("repo")).run_async().await?;
        Ok(())
    }

    async fn fetch(
        &self,
        scratch: &Scratch,
        remote: &GitRemote,
        branch: &str,
    ) -> Result<RemoteTree, GitError> {
        let shown = redact_url(&remote.url);
        self.local(
            scratch,
            remote,
            format!("fetch branch `{branch}` of `{shown}`"),
        )?
        .args(["fetch", "-q", "--no-tags", "--depth=1", "--"])
        .arg(&remote.url)
        .arg(format!("refs/heads/{branch}"))
        .run_async()
        .await?;
        let summary = format!("read the fetched head of `{shown}`");
        let out = self
            .local(scratch, remote, summary.clone())?
            .args(["rev-parse", "FETCH_HEAD", "FETCH_HEAD^{tree}"])
            .run_async()
            .await?;
        let ids: Vec<&str> = out.stdout.split_whitespace().collect();
        match ids.as_slice() {
            [commit, tree] if is_object_id(commit) && is_object_id(tree) => Ok(RemoteTree {
                commit: commit.to_string(),
                tree: tree.to_string(),
            }),
            _ => Err(GitError::Output {
                summary,
                output: out.stdout.trim().to_string(),
            }),
        }
    }

    /// The head of `branch` on the remote and the tree it holds (a shallow fetch: a read).
    pub async fn remote_tree(
        &self,
        remote: &GitRemote,
        branch: &str,
        format: ObjectFormat,
    ) -> Result<RemoteTree, GitError> {
        let scratch = Scratch::new()?;
        self.init(&scratch, remote, format).await?;
        self.fetch(&scratch, remote, branch).await
    }

    /// Commit exactly `files` on top of `parent` (or as a first commit) and push it to `branch`,
    /// never forcing: if the remote moved meanwhile the push is refused. Returns the pushed
    /// commit and tree.
    pub async fn push_tree(
        &self,
        remote: &GitRemote,
        req: &PushRequest<'_>,
    ) -> Result<RemoteTree, GitError> {
        let scratch = Scratch::new()?;
        self.init(&scratch, remote, req.format).await?;
        for (path, text) in req.files {
            check_path(req.repo, path)?;
            scratch.write(&format!("repo/{path}"), text.as_bytes())?;
        }
        let shown = redact_url(&remote.url);
        if let Some(parent) = req.parent {
            let fetched = self.fetch(&scratch, remote, req.branch).await?;
            if fetched.commit != parent {
                return Err(GitError::Output {
                    summary: format!("update `{}`", req.repo),
                    output: format!(
                        "branch `{}` moved from {parent} to {} while homelab was preparing its commit; run `homelab up` again",
                        req.branch, fetched.commit
                    ),
                });
            }
        }
        self.local(
            &scratch,
            remote,
            format!("stage the content of `{}`", req.repo),
        )?
        .args(["add", "-A", "."])
        .run_async()
        .await?;
        let summary = format!("record the tree of `{}`", req.repo);
        let tree = self
            .local(&scratch, remote, summary.clone())?
            .arg("write-tree")
            .run_async()
            .await?
            .stdout
            .trim()
            .to_string();
        if !is_object_id(&tree) {
            return Err(GitError::Output {
                summary,
                output: tree,
            });
        }
        let summary = format!("commit the content of `{}`", req.repo);
        let mut commit = self
            .local(&scratch, remote, summary.clone())?
            .args(["commit-tree", &tree, "-m", req.message])
            .env("GIT_AUTHOR_NAME", &req.author.name)
            .env("GIT_AUTHOR_EMAIL", &req.author.email)
            .env("GIT_COMMITTER_NAME", &req.author.name)
            .env("GIT_COMMITTER_EMAIL", &req.author.email);
        if let Some(parent) = req.parent {
            commit = commit.args(["-p", parent]);
        }
        let commit = commit.run_async().await?.stdout.trim().to_string();
        if !is_object_id(&commit) {
            return Err(GitError::Output {
                summary,
                output: commit,
            });
        }
        self.local(
            &scratch,
            remote,
            format!("push the content of `{}` to `{shown}`", req.repo),
        )?
        .args(["push", "-q", "--"])
        .arg(&remote.url)
        .arg(format!("{commit}:refs/heads/{}", req.branch))
        .run_async()
        .await?;
        Ok(RemoteTree { commit, tree })
    }
}

fn is_object_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The pure tree id must be what real git computes, including git's odd ordering of a
    /// directory `a` (compared as `a/`) against files `a.txt` and `a-b`.
    #[test]
    fn tree_id_matches_git_write_tree() {
        let f = files(&[
            ("README.md", "# hi\n"),
            ("a.txt", "dot\n"),
            ("a-b", "dash\n"),
            ("a/b/c.yaml", "kind: X\n"),
            ("a/z", ""),
            (".drone.yml", "kind: pipeline\n"),
        ]);
        for format in [ObjectFormat::Sha1, ObjectFormat::Sha256] {
            let tmp = std::env::temp_dir().join(format!(
                "homelab-tree-test-{}-{}",
                std::process::id(),
                format.name()
            ));
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp).unwrap();
            for (p, t) in &f {
                let path = tmp.join(p);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, t).unwrap();
            }
            let git = |args: &[&str]| {
                Cmd::new("git", "tree id test")
                    .args(args)
                    .env("GIT_CONFIG_NOSYSTEM", "1")
                    .dir(&tmp)
                    .run()
                    .unwrap()
                    .stdout
            };
            git(&["init", "-q", &format!("--object-format={}", format.name())]);
            git(&["-c", "core.autocrlf=false", "add", "-A", "."]);
            let expected = git(&["write-tree"]).trim().to_string();
            assert_eq!(tree_id("t", &f, format).unwrap(), expected, "{format:?}");
            std::fs::remove_dir_all(&tmp).unwrap();
        }
    }

    #[test]
    fn paths_that_leave_the_repository_are_refused() {
        for bad in ["../x", "a//b", "/abs", ".git/config", "a\\b", ""] {
            let err = tree_id("lab/x", &files(&[(bad, "x")]), ObjectFormat::Sha1).unwrap_err();
            assert!(err.to_string().contains("lab/x"), "{err}");
        }
    }
}
