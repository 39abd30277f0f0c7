//! Gitea push webhooks: signature check, replay protection, size cap, and which Applications a
//! push concerns.
//!
//! Place in the data flow: HTTP `POST /webhook` (in [`super::server`]) → [`Webhook::check`] →
//! a refresh of the Applications whose `repoURL` is the pushed repository. A webhook only ever
//! triggers a refresh; what gets deployed still comes from git.
//!
//! Architecture invariant: checks run cheapest-and-safest first — size, then the HMAC-SHA256
//! signature (`X-Gitea-Signature`, hex, compared in constant time), and only then the delivery
//! id is remembered, so an unsigned request can neither trigger work nor poison the replay set.
//! Every rejection is counted by reason.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

/// The signature header Gitea sends.
pub const SIGNATURE_HEADER: &str = "X-Gitea-Signature";
/// The delivery id header Gitea sends (a UUID per delivery; retries reuse it).
pub const DELIVERY_HEADER: &str = "X-Gitea-Delivery";
/// The event header.
pub const EVENT_HEADER: &str = "X-Gitea-Event";
/// Default body cap: a push payload lists at most a few commits; 1 MiB is generous.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// Delivery ids remembered for replay detection.
pub const DEFAULT_REMEMBERED: usize = 4096;

/// Why a delivery was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// Body larger than the cap (HTTP 413).
    Oversized,
    /// Missing or wrong signature (HTTP 401).
    BadSignature,
    /// A delivery id seen before (HTTP 409).
    Replayed,
    /// Not a push payload we can read (HTTP 400).
    Malformed,
}

impl Rejection {
    /// HTTP status for this rejection.
    pub fn http_status(self) -> u16 {
        match self {
            Rejection::Oversized => 413,
            Rejection::BadSignature => 401,
            Rejection::Replayed => 409,
            Rejection::Malformed => 400,
        }
    }

    /// Short reason, for logs and the response body.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Oversized => "body too large",
            Rejection::BadSignature => "bad signature",
            Rejection::Replayed => "replayed delivery",
            Rejection::Malformed => "not a push event",
        }
    }
}

/// Counters, by outcome.
#[derive(Debug, Default)]
pub struct Counters {
    /// Accepted deliveries.
    pub accepted: AtomicU64,
    /// Oversized bodies.
    pub oversized: AtomicU64,
    /// Bad or missing signatures.
    pub bad_signature: AtomicU64,
    /// Replays.
    pub replayed: AtomicU64,
    /// Unreadable payloads.
    pub malformed: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
pub struct CountersSnapshot {
    /// Accepted.
    pub accepted: u64,
    /// Oversized.
    pub oversized: u64,
    /// Bad signature.
    pub bad_signature: u64,
    /// Replayed.
    pub replayed: u64,
    /// Malformed.
    pub malformed: u64,
}

impl Counters {
    /// Read all counters.
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            accepted: self.accepted.load(Ordering::Relaxed),
            oversized: self.oversized.load(Ordering::Relaxed),
            bad_signature: self.bad_signature.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
        }
    }

    fn count(&self, r: Rejection) {
        let c = match r {
            Rejection::Oversized => &self.oversized,
            Rejection::BadSignature => &self.bad_signature,
            Rejection::Replayed => &self.replayed,
            Rejection::Malformed => &self.malformed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// A push, as far as the engine cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// `refs/heads/main`.
    pub git_ref: String,
    /// The new commit.
    pub after: String,
    /// Every URL the repository is known by (clone_url, html_url, ssh_url).
    pub repo_urls: Vec<String>,
    /// `owner/name` (`repository.full_name`).
    pub full_name: Option<String>,
}

impl Push {
    /// Does this push concern an Application with this `repoURL`?
    ///
    /// Gitea names the repository by its public `ROOT_URL` (`https://gitea.<domain>/…`), while an
    /// in-cluster Application fetches it through the Service (`http://gitea-http.gitea.svc…`,
    /// as the lab's own does): the same repository path counts too. A signed push only ever asks
    /// for a refresh, so a repository of that name elsewhere costs one fetch, nothing more.
    pub fn concerns(&self, repo_url: &str) -> bool {
        let want = normalize_repo_url(repo_url);
        if self.repo_urls.iter().any(|u| normalize_repo_url(u) == want) {
            return true;
        }
        let path = want
            .split_once("://")
            .map_or(want.as_str(), |(_, r)| r)
            .split_once('/')
            .map_or("", |(_, p)| p)
            .to_ascii_lowercase();
        self.full_name.as_deref().is_some_and(|n| {
            let n = n.trim_matches('/').to_ascii_lowercase();
            !n.is_empty() && (path == n || path.ends_with(&format!("/{n}")))
        })
    }
}

/// Webhook settings.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// The shared secret (from the Secret named in the Deployment).
    pub secret: crate::edges::redact::Secret,
    /// Body cap in bytes.
    pub max_body: usize,
    /// How many delivery ids to remember.
    pub remembered: usize,
}

/// The webhook checker: configuration, replay memory and counters.
pub struct Webhook {
    cfg: WebhookConfig,
    seen: Mutex<(HashSet<String>, VecDeque<String>)>,
    /// Outcome counters.
    pub counters: Counters,
}

impl Webhook {
    /// A checker.
    pub fn new(cfg: WebhookConfig) -> Self {
        Webhook {
            cfg,
            seen: Mutex::new((HashSet::new(), VecDeque::new())),
            counters: Counters::default(),
        }
    }

    /// The body cap, so the HTTP layer can stop reading early.
    pub fn max_body(&self) -> usize {
        self.cfg.max_body
    }

    /// Check one delivery. `body_len` is the full length even if the HTTP layer stopped
    /// reading (so an oversized body is reported as such).
    pub fn check(
        &self,
        body: &[u8],
        body_len: usize,
        signature: Option<&str>,
        delivery: Option<&str>,
    ) -> Result<Push, Rejection> {
        let r = self.check_inner(body, body_len, signature, delivery);
        match &r {
            Ok(_) => {
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.counters.count(*e),
        }
        r
    }

    fn check_inner(
        &self,
        body: &[u8],
        body_len: usize,
        signature: Option<&str>,
        delivery: Option<&str>,
    ) -> Result<Push, Rejection> {
        if body_len > self.cfg.max_body || body.len() > self.cfg.max_body {
            return Err(Rejection::Oversized);
        }
        if !verify_signature(self.cfg.secret.expose().as_bytes(), body, signature) {
            return Err(Rejection::BadSignature);
        }
        if let Some(id) = delivery.filter(|s| !s.is_empty()) {
            let mut seen = self.seen.lock().expect("webhook replay set");
            let (set, order) = &mut *seen;
            if set.contains(id) {
                return Err(Rejection::Replayed);
            }
            set.insert(id.to_string());
            order.push_back(id.to_string());
            while order.len() > self.cfg.remembered {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
        parse_push(body).ok_or(Rejection::Malformed)
    }
}

/// HMAC-SHA256 of `body` with `secret`, as lowercase hex (what Gitea sends).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Check a hex signature in constant time (the comparison is `hmac`'s `verify_slice`).
pub fn verify_signature(secret: &[u8], body: &[u8], signature: Option<&str>) -> bool {
    let Some(sig) = signature else { return false };
    // Tolerate the `sha256=` prefix GitHub-style senders use.
    let sig = sig.trim().trim_start_matches("sha256=");
    let Ok(bytes) = hex::decode(sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&bytes).is_ok()
}

fn parse_push(body: &[u8]) -> Option<Push> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let repo = v.get("repository")?;
    let repo_urls: Vec<String> = ["clone_url", "html_url", "ssh_url"]
        .iter()
        .filter_map(|k| repo[*k].as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if repo_urls.is_empty() {
        return None;
    }
    Some(Push {
        git_ref: v["ref"].as_str().unwrap_or_default().to_string(),
        after: v["after"].as_str().unwrap_or_default().to_string(),
        repo_urls,
        full_name: repo["full_name"].as_str().map(str::to_string),
    })
}

/// A repository URL reduced to what identifies it: no scheme credentials, lowercase host, no
/// trailing `/` or `.git` (so `https://Gitea.lab/lab/gitops.git` = `https://gitea.lab/lab/gitops`).
pub fn normalize_repo_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    let url = url.strip_suffix(".git").unwrap_or(url);
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = match rest.split_once('@') {
        Some((_, after)) if !after.contains('@') => after,
        _ => rest,
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    format!("{scheme}://{}/{path}", host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edges::redact::Secret;

    fn hook() -> Webhook {
        Webhook::new(WebhookConfig {
            secret: Secret::new("s3cret"),
            max_body: 1000,
            remembered: 2,
        })
    }

    const BODY: &[u8] = br#"{"ref":"refs/heads/main","after":"abc","repository":{"clone_url":"https://gitea.lab/lab/gitops.git","html_url":"https://gitea.lab/lab/gitops"}}"#;

    #[test]
    fn a_signed_push_is_accepted_once() {
        let h = hook();
        let sig = sign(b"s3cret", BODY);
        let push = h.check(BODY, BODY.len(), Some(&sig), Some("d-1")).unwrap();
        assert_eq!(push.after, "abc");
        assert!(push.concerns("https://GITEA.lab/lab/gitops/"));
        assert!(push.concerns("https://user:tok@gitea.lab/lab/gitops.git"));
        assert!(!push.concerns("https://gitea.lab/lab/other.git"));
        assert_eq!(
            h.check(BODY, BODY.len(), Some(&sig), Some("d-1")),
            Err(Rejection::Replayed)
        );
        assert_eq!(h.counters.snapshot().accepted, 1);
        assert_eq!(h.counters.snapshot().replayed, 1);
    }

    #[test]
    fn a_push_named_by_gitea_s_root_url_concerns_an_application_on_its_service_url() {
        let h = hook();
        let body = br#"{"ref":"refs/heads/main","after":"abc","repository":{"full_name":"lab/gitops","clone_url":"https://gitea.10.0.0.5.sslip.io/lab/gitops.git","html_url":"https://gitea.10.0.0.5.sslip.io/lab/gitops"}}"#;
        let sig = sign(b"s3cret", body);
        let push = h.check(body, body.len(), Some(&sig), Some("d-1")).unwrap();
        assert!(push.concerns("http://gitea-http.gitea.svc.cluster.local:3000/lab/gitops.git"));
        assert!(push.concerns("http://gitea-http.gitea.svc:3000/Lab/GitOps"));
        assert!(!push.concerns("http://gitea-http.gitea.svc.cluster.local:3000/lab/nyan-cat.git"));
        assert!(!push.concerns("http://gitea-http.gitea.svc.cluster.local:3000/gitops.git"));
    }

    #[test]
    fn bad_missing_or_foreign_signatures_are_rejected_and_counted() {
        let h = hook();
        let wrong = sign(b"other", BODY);
        assert_eq!(
            h.check(BODY, BODY.len(), Some(&wrong), Some("d-1")),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            h.check(BODY, BODY.len(), None, Some("d-2")),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            h.check(BODY, BODY.len(), Some("zz-not-hex"), Some("d-3")),
            Err(Rejection::BadSignature)
        );
        // A rejected delivery id is not remembered: the genuine delivery still goes through.
        let good = sign(b"s3cret", BODY);
        assert!(h.check(BODY, BODY.len(), Some(&good), Some("d-1")).is_ok());
        assert_eq!(h.counters.snapshot().bad_signature, 3);
    }

    #[test]
    fn oversized_bodies_are_rejected_before_anything_else() {
        let h = hook();
        let big = vec![b'x'; 1001];
        let sig = sign(b"s3cret", &big);
        assert_eq!(
            h.check(&big, big.len(), Some(&sig), None),
            Err(Rejection::Oversized)
        );
        assert_eq!(
            h.check(&big[..10], 5000, Some(&sig), None),
            Err(Rejection::Oversized)
        );
        assert_eq!(h.counters.snapshot().oversized, 2);
        assert_eq!(Rejection::Oversized.http_status(), 413);
    }

    #[test]
    fn the_replay_memory_is_bounded() {
        let h = hook();
        let sig = sign(b"s3cret", BODY);
        for id in ["a", "b", "c"] {
            h.check(BODY, BODY.len(), Some(&sig), Some(id)).unwrap();
        }
        // "a" fell out of a memory of 2.
        assert!(h.check(BODY, BODY.len(), Some(&sig), Some("a")).is_ok());
        assert_eq!(
            h.check(BODY, BODY.len(), Some(&sig), Some("c")),
            Err(Rejection::Replayed)
        );
    }

    #[test]
    fn signed_garbage_is_malformed() {
        let h = hook();
        let body = b"{\"zen\":\"ping\"}";
        let sig = sign(b"s3cret", body);
        assert_eq!(
            h.check(body, body.len(), Some(&sig), None),
            Err(Rejection::Malformed)
        );
    }
}
