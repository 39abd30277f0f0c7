//! The git source: a shallow fetch of one revision (branch, tag, commit or `HEAD`) into a local
//! checkout per repository, with real `git` run through homelab's one git runner
//! (`crate::edges::git::Git::command`) and its [`GitAuth`].
//!
//! Place in the data flow: Application `spec.source` → [`GitSource::with_checkout`] → a
//! directory at a commit → [`super::manifests::read`].
//!
//! Architecture invariant: credentials never appear in a URL or an argument. The token goes to
//! git as an `Authorization` header scoped to the repository's origin through
//! `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n`, and the CA bundle file through
//! `GIT_SSL_CAINFO` — environment variables, which `Cmd` never logs; URLs in messages are
//! redacted. The user's and the system's git configuration are not read (no credential helper
//! can prompt or differ between the laptop and the cluster), stdin is null and
//! `GIT_TERMINAL_PROMPT=0`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::edges::error::Diagnostic;
use crate::edges::git::{Git, GitSetup};
use crate::edges::process::{Cmd, ProcessError};
use crate::edges::redact::redact_url;

/// How to authenticate to a repository: the one [`crate::edges::git::GitAuth`], here under its old path.
pub use crate::edges::git::GitAuth;

/// A checkout at a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkout {
    /// Working tree.
    pub dir: PathBuf,
    /// Full commit SHA.
    pub commit: String,
}

/// Fetching failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The repository could not be reached or read (network, auth, TLS, not a repository).
    #[error("fetch `{url}`: {message}")]
    Unreachable {
        /// URL, credentials redacted.
        url: String,
        /// git's message.
        message: String,
    },
    /// The repository answered, but has no such branch, tag or commit.
    #[error("revision `{revision}` not found in `{url}`")]
    RevisionNotFound {
        /// URL, credentials redacted.
        url: String,
        /// The targetRevision.
        revision: String,
    },
    /// A local git step failed.
    #[error(transparent)]
    Git(#[from] ProcessError),
    /// The work directory could not be prepared.
    #[error("prepare `{path}`: {message}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Error.
        message: String,
    },
}

impl Diagnostic for SourceError {
    fn hints(&self) -> Vec<String> {
        match self {
            SourceError::Unreachable { .. } => vec![
                "check `spec.source.repoURL`, that the git server is up, and the repository credentials (an Argo CD repository Secret in `argocd`)".into(),
            ],
            SourceError::RevisionNotFound { .. } => vec![
                "check `spec.source.targetRevision`: a branch, a tag or a full commit SHA that was pushed".into(),
            ],
            _ => Vec::new(),
        }
    }
}

/// Fetches repositories into a work directory, one checkout per repository URL.
#[derive(Clone)]
pub struct GitSource {
    work: PathBuf,
    git: Git,
    timeout: Duration,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl GitSource {
    /// A source keeping its checkouts under `work`.
    pub fn new(work: impl Into<PathBuf>) -> GitSource {
        GitSource {
            work: work.into(),
            git: Git::at("git"),
            timeout: Duration::from_secs(120),
            locks: Arc::default(),
        }
    }

    /// Use this git binary.
    pub fn with_git(mut self, git: impl Into<PathBuf>) -> GitSource {
        self.git = Git::at(git);
        self
    }

    fn dir_for(&self, url: &str) -> PathBuf {
        let h = crate::edges::digest::sha256_hex(url.as_bytes());
        self.work.join(&h[..16])
    }

    /// Fetch `revision` of `url` and check it out; then run `read` on the checkout while no other
    /// fetch of the same repository can move it.
    pub async fn with_checkout<T>(
        &self,
        url: &str,
        revision: &str,
        auth: &GitAuth,
        read: impl FnOnce(&Checkout) -> T,
    ) -> Result<T, SourceError> {
        let lock = self
            .locks
            .lock()
            .expect("source locks")
            .entry(url.to_string())
            .or_default()
            .clone();
        let _guard = lock.lock().await;
        let checkout = self.fetch(url, revision, auth).await?;
        Ok(read(&checkout))
    }

    /// Resolve and check out `revision` (must hold the repository's lock).
    async fn fetch(
        &self,
        url: &str,
        revision: &str,
        auth: &GitAuth,
    ) -> Result<Checkout, SourceError> {
        let dir = self.dir_for(url);
        let shown = redact_url(url);
        if !dir.join(".git").exists() {
            std::fs::create_dir_all(&dir).map_err(|e| SourceError::Io {
                path: dir.clone(),
                message: e.to_string(),
            })?;
            self.git("create a local repository for the sync source", &dir, auth)
                .args(["init", "--quiet"])
                .run_async()
                .await?;
            // The URL as given: credentials in it would be git's business, but we never add any.
            self.git("point the local repository at the sync source", &dir, auth)
                .args(["remote", "add", "origin", url])
                .run_async()
                .await?;
        }
        let rev = if revision.is_empty() {
            "HEAD"
        } else {
            revision
        };
        let is_sha = rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit());
        let have = is_sha
            && self
                .git("check for a commit locally", &dir, auth)
                .args(["cat-file", "-e", &format!("{rev}^{{commit}}")])
                .run_unchecked_async()
                .await?
                .success();
        if !have {
            let fetched = self
                .git(&format!("fetch `{rev}` of `{shown}`"), &dir, auth)
                .args([
                    "fetch",
                    "--quiet",
                    "--depth",
                    "1",
                    "--no-tags",
                    "origin",
                    rev,
                ])
                .timeout(self.timeout)
                .run_unchecked_async()
                .await?;
            if !fetched.success() {
                let stderr = fetched.stderr.trim().to_string();
                if is_missing_ref(&stderr) {
                    // A tag is fetched by its full name when a bare name is not a branch.
                    if !is_sha && self.fetch_tag(&dir, rev, auth).await? {
                        return self.check_out(&dir, "FETCH_HEAD", auth).await;
                    }
                    return Err(SourceError::RevisionNotFound {
                        url: shown,
                        revision: rev.to_string(),
                    });
                }
                return Err(SourceError::Unreachable {
                    url: shown,
                    message: redact_url(&last_line(&stderr)),
                });
            }
            return self.check_out(&dir, "FETCH_HEAD", auth).await;
        }
        self.check_out(&dir, rev, auth).await
    }

    async fn fetch_tag(&self, dir: &Path, rev: &str, auth: &GitAuth) -> Result<bool, SourceError> {
        let out = self
            .git("fetch a tag", dir, auth)
            .args([
                "fetch",
                "--quiet",
                "--depth",
                "1",
                "--no-tags",
                "origin",
                &format!("refs/tags/{rev}"),
            ])
            .timeout(self.timeout)
            .run_unchecked_async()
            .await?;
        Ok(out.success())
    }

    async fn check_out(
        &self,
        dir: &Path,
        rev: &str,
        auth: &GitAuth,
    ) -> Result<Checkout, SourceError> {
        let commit = self
            .git("resolve the fetched commit", dir, auth)
            .args(["rev-parse", "--verify", &format!("{rev}^{{commit}}")])
            .run_async()
            .await?
            .stdout
            .trim()
            .to_string();
        let current = self
            .git("read the checked-out commit", dir, auth)
            .args(["rev-parse", "--verify", "--quiet", "HEAD"])
            .run_unchecked_async()
            .await?;
        if current.stdout.trim() != commit {
            self.git("check out the fetched commit", dir, auth)
                .args(["checkout", "--quiet", "--force", "--detach", &commit])
                .run_async()
                .await?;
            // Files a previous revision had and git does not track would otherwise be read.
            self.git("clean the checkout", dir, auth)
                .args(["clean", "-ffdxq"])
                .run_async()
                .await?;
        }
        Ok(Checkout {
            dir: dir.to_path_buf(),
            commit,
        })
    }

    /// A git command in `dir` with the isolation and credentials described in the module doc.
    fn git(&self, summary: &str, dir: &Path, auth: &GitAuth) -> Cmd {
        let mut ca_file = None;
        if let Some(pem) = &auth.ca_pem {
            // `GIT_SSL_CAINFO` rather than `http.sslCAInfo`: git 2.47 with libcurl-gnutls was seen
            // to ignore the config key and verify against the system bundle only. The file holds
            // the system bundle too, so public hosts stay trusted.
            let path = self.work.join(format!(
                "ca-{}.pem",
                &crate::edges::digest::sha256_hex(pem.as_bytes())[..12]
            ));
            if !path.exists() {
                let mut bundle = SYSTEM_CA_BUNDLES
                    .iter()
                    .find_map(|p| std::fs::read_to_string(p).ok())
                    .unwrap_or_default();
                if !bundle.is_empty() && !bundle.ends_with('\n') {
                    bundle.push('\n');
                }
                bundle.push_str(pem);
                let _ = std::fs::write(&path, bundle);
            }
            ca_file = Some(path);
        }
        let setup = GitSetup {
            auth: Some(auth),
            // Scoped to the remote's origin, so a redirect elsewhere never carries it.
            header_scope: origin_of(&self.remote_url(dir)),
            ca_file: ca_file.as_deref(),
            ca_in_config: false,
            config: Vec::new(),
            // No credential helper can prompt or differ between the laptop and the cluster.
            ignore_global_config: true,
        };
        self.git.command(summary, setup).arg("-C").arg(dir)
    }

    fn remote_url(&self, dir: &Path) -> String {
        // Read straight from the config file: no subprocess, and it is our own file.
        std::fs::read_to_string(dir.join(".git/config"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .map(str::trim)
                    .find_map(|l| l.strip_prefix("url = ").map(str::to_string))
            })
            .unwrap_or_default()
    }
}

/// Where distributions keep the system CA bundle.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// `https://host:port/` of an http(s) URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split('/').next()?;
    let host = authority.rsplit('@').next()?;
    Some(format!("{scheme}://{host}/"))
}

fn is_missing_ref(stderr: &str) -> bool {
    stderr.contains("couldn't find remote ref")
        || stderr.contains("not our ref")
        || stderr.contains("no such remote ref")
        || stderr.contains("unadvertised object")
        || stderr.contains("Could not find remote branch")
}

fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("git failed without a message")
        .trim()
        .trim_start_matches("fatal: ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_port() {
        assert_eq!(
            origin_of("https://u:p@gitea.lab:3000/lab/gitops.git").as_deref(),
            Some("https://gitea.lab:3000/")
        );
        assert_eq!(origin_of("file:///tmp/repo"), None);
    }

    #[test]
    fn errors_are_told_apart() {
        assert!(is_missing_ref("fatal: couldn't find remote ref nope"));
        assert!(!is_missing_ref(
            "fatal: unable to access 'x': Could not resolve host"
        ));
        assert_eq!(
            last_line("warning: a\nfatal: repository 'x' not found\n"),
            "repository 'x' not found"
        );
    }
}
