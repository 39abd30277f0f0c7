//! `homelab verify`: drive the lab's whole loop once and time each hop — commit a visible change
//! to the app repository through Gitea's contents API → the CI starts a build for that commit →
//! the build succeeds → the pipeline bumped the image tag in the GitOps repository → the
//! Application is Synced and Healthy at that revision → the app's HTTPS URL, trusted through the
//! lab CA only, serves the change.
//!
//! Place in the data flow: `Cluster ─verify─▶ VerifyReport`, the last step of `up` (unless
//! `--no-verify`) and the `verify` command. Architecture invariant: every wait is bounded and
//! reported (a watch for the Application; for HTTP servers, which have no watch, a retry whose
//! delay grows), each hop fails with its own error naming the object and why, and TLS is never
//! relaxed — the page is fetched with the lab CA as the only trust root. The page edits and
//! manifest reads ([`bump_version`], [`image_tag`]) are pure functions.

// A verify error is built at most once per run, with everything the user needs to see; its
// size does not matter.
#![allow(clippy::result_large_err)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use serde::Serialize;

use crate::ci::{BuildInfo, BuildState, Ci, CiError, FailedStep, RepoRef};
use crate::error::Diagnostic;
use crate::gitea::types::{Identity, UpdateFileOptions};
use crate::gitea::{Credentials, GiteaClient, GiteaError};
use crate::http::Endpoint;
use crate::output::{Outcome, Progress, human_duration};
use crate::redact::{Secret, redact_url};

/// The hops, in order, with the titles `plan` and the report show.
pub const HOPS: [&str; 6] = [
    "commit",
    "build started",
    "build succeeded",
    "tag bumped",
    "app synced",
    "app serves",
];

/// An Application by namespace and name.
#[derive(Clone, Debug, Serialize)]
pub struct AppRef {
    /// Namespace (`argocd`).
    pub namespace: String,
    /// Name (`nyan-cat`).
    pub name: String,
}

/// What verify drives.
#[derive(Clone)]
pub struct VerifyTarget {
    /// Gitea's public endpoint.
    pub gitea: crate::http::Endpoint,
    /// A Gitea token that may write the app repository (`gitea_token` from the lab state).
    pub gitea_token: Secret,
    /// The CI, with its API token.
    pub ci: Ci,
    /// Organisation (`lab`).
    pub org: String,
    /// App repository (`nyan-cat`).
    pub app_repo: String,
    /// GitOps repository (`gitops`).
    pub gitops_repo: String,
    /// Branch that deploys (`main`).
    pub branch: String,
    /// The page whose version marker changes (`index.html`).
    pub page_path: String,
    /// The manifest whose image tag the pipeline bumps (`apps/nyan-cat/deployment.yaml`).
    pub deployment_path: String,
    /// The image without tag (`gitea.<domain>/lab/nyan-cat`).
    pub image: String,
    /// The Application that deploys it.
    pub application: AppRef,
    /// The app's public endpoint (`https://nyan.<domain>`, lab CA).
    pub site: Endpoint,
}

/// Bounds on each wait, and how often HTTP servers are asked again.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// For builds already running to finish before the commit (so an older build cannot bump
    /// the tag after ours).
    pub settle: Duration,
    /// For the CI to start a build of the commit.
    pub build_start: Duration,
    /// For that build to finish.
    pub build_finish: Duration,
    /// For the GitOps repository to carry the new tag.
    pub bump: Duration,
    /// For the Application to be Synced and Healthy at that revision.
    pub sync: Duration,
    /// For the site to serve the change.
    pub serve: Duration,
    /// First delay between two asks of an HTTP server; it doubles up to `poll_max`.
    pub poll_min: Duration,
    /// Longest delay between two asks.
    pub poll_max: Duration,
    /// Lines of a failed step's log to show.
    pub log_lines: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            settle: Duration::from_secs(900),
            build_start: Duration::from_secs(120),
            build_finish: Duration::from_secs(900),
            bump: Duration::from_secs(60),
            sync: Duration::from_secs(300),
            serve: Duration::from_secs(180),
            poll_min: Duration::from_millis(500),
            poll_max: Duration::from_secs(5),
            log_lines: 20,
        }
    }
}

/// An Application's status, as verify reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AppStatus {
    /// `status.sync.status`: `Synced`, `OutOfSync`, `Unknown`.
    pub sync: String,
    /// `status.sync.revision`.
    pub revision: String,
    /// `status.health.status`.
    pub health: String,
    /// `status.health.message`.
    pub health_message: String,
    /// `status.operationState.phase`.
    pub operation_phase: String,
    /// `status.operationState.message`.
    pub operation_message: String,
}

impl AppStatus {
    /// From an Application object's JSON.
    pub fn from_object(obj: &serde_json::Value) -> AppStatus {
        let s = |p: &str| {
            obj.pointer(p)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        AppStatus {
            sync: s("/status/sync/status"),
            revision: s("/status/sync/revision"),
            health: s("/status/health/status"),
            health_message: s("/status/health/message"),
            operation_phase: s("/status/operationState/phase"),
            operation_message: s("/status/operationState/message"),
        }
    }

    fn describe(&self) -> String {
        let mut out = format!(
            "sync `{}` at `{}`, health `{}`",
            or_unset(&self.sync),
            short(&self.revision),
            or_unset(&self.health)
        );
        if !self.health_message.is_empty() {
            out.push_str(&format!(" ({})", self.health_message));
        }
        if !self.operation_phase.is_empty() {
            out.push_str(&format!(", last operation `{}`", self.operation_phase));
            if !self.operation_message.is_empty() {
                out.push_str(&format!(": {}", self.operation_message));
            }
        }
        out
    }
}

fn or_unset(s: &str) -> &str {
    if s.is_empty() { "unset" } else { s }
}

fn short(sha: &str) -> &str {
    if sha.is_empty() {
        "no revision"
    } else {
        &sha[..sha.len().min(7)]
    }
}

/// Where Application statuses come from: a watch of one object (`None` while it is missing).
/// The implementation over kube-rs is [`KubeApplications`]; tests replace it.
pub trait Applications: Send + Sync {
    /// Every state of the Application as it changes, starting with the current one.
    fn watch(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxStream<'static, Result<Option<AppStatus>, String>>;
}

/// [`Applications`] over kube-rs (`argoproj.io/v1alpha1 Application`).
pub struct KubeApplications {
    client: ::kube::Client,
}

impl KubeApplications {
    /// Over this client.
    pub fn new(client: ::kube::Client) -> KubeApplications {
        KubeApplications { client }
    }
}

impl Applications for KubeApplications {
    fn watch(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxStream<'static, Result<Option<AppStatus>, String>> {
        use ::kube::api::{ApiResource, DynamicObject, GroupVersionKind};
        let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application");
        let ar = ApiResource::from_gvk_with_plural(&gvk, "applications");
        let api: ::kube::Api<DynamicObject> =
            ::kube::Api::namespaced_with(self.client.clone(), namespace, &ar);
        ::kube::runtime::watcher::watch_object(api, name)
            .map(|r| {
                r.map(|o| {
                    o.map(|o| AppStatus::from_object(&serde_json::to_value(&o).unwrap_or_default()))
                })
                .map_err(|e| e.to_string())
            })
            .boxed()
    }
}

/// One hop of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Hop {
    /// One of [`HOPS`].
    pub hop: &'static str,
    /// Whether it got through.
    pub ok: bool,
    /// Time it took (until it failed, for a failed hop).
    pub elapsed_ms: u128,
    /// What was seen.
    pub detail: String,
}

/// What verify saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Every hop passed.
    pub ok: bool,
    /// The hops walked, in order (up to and including a failed one).
    pub hops: Vec<Hop>,
    /// The version marker committed.
    pub version: String,
    /// The app commit.
    pub commit: String,
    /// The build of it.
    pub build: Option<i64>,
    /// From the first hop's start to the last hop's end.
    pub total_ms: u128,
}

impl VerifyReport {
    /// The report as text, one line per hop with its time.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for h in &self.hops {
            out.push_str(&format!(
                "{} {:<16} {:>8}  {}\n",
                if h.ok { "✓" } else { "✗" },
                h.hop,
                human_duration(Duration::from_millis(h.elapsed_ms as u64)),
                h.detail.lines().next().unwrap_or_default()
            ));
        }
        out.push_str(&format!(
            "{} in {}\n",
            if self.ok {
                "the loop works"
            } else {
                "the loop is broken"
            },
            human_duration(Duration::from_millis(self.total_ms as u64))
        ));
        out
    }
}

/// A hop failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A Gitea call failed.
    #[error("{hop}: {source}")]
    Gitea {
        /// The hop.
        hop: &'static str,
        /// The error.
        #[source]
        source: GiteaError,
    },
    /// A CI call failed.
    #[error("{hop}: {source}")]
    Ci {
        /// The hop.
        hop: &'static str,
        /// The error.
        #[source]
        source: CiError,
    },
    /// A file verify edits or reads is missing.
    #[error("{hop}: `{path}` does not exist in `{repo}` on `{branch}`")]
    FileMissing {
        /// The hop.
        hop: &'static str,
        /// owner/name.
        repo: String,
        /// Path.
        path: String,
        /// Branch.
        branch: String,
    },
    /// The page has no single version marker.
    #[error(
        "commit: `{path}` in `{repo}` has {count} elements with `id=\"version\"`; verify changes exactly one"
    )]
    NoMarker {
        /// owner/name.
        repo: String,
        /// Path.
        path: String,
        /// How many.
        count: usize,
    },
    /// Builds already running did not finish.
    #[error("commit: build #{number} of `{repo}` was still {state} after {}; verify waits for it so an older build cannot bump the tag after the new one", human_duration(*.after))]
    Busy {
        /// owner/name.
        repo: String,
        /// The build.
        number: i64,
        /// Its state.
        state: String,
        /// The bound.
        after: Duration,
    },
    /// No build of the commit appeared.
    #[error("build started: {ci} started no build of `{repo}` commit `{}` within {}", short(.commit), human_duration(*.after))]
    NoBuild {
        /// CI name.
        ci: &'static str,
        /// owner/name.
        repo: String,
        /// The commit.
        commit: String,
        /// The bound.
        after: Duration,
    },
    /// The build failed.
    #[error("build succeeded: build #{number} of `{repo}` ended `{status}`{}{}", failed_step_text(.step), error_text(.error))]
    BuildFailed {
        /// owner/name.
        repo: String,
        /// Number.
        number: i64,
        /// CI status word.
        status: String,
        /// The CI's error for builds that could not start.
        error: String,
        /// Web page.
        link: String,
        /// The failed step with its log tail.
        step: Option<FailedStep>,
    },
    /// The build did not finish.
    #[error("build succeeded: build #{number} of `{repo}` was still {state} after {}", human_duration(*.after))]
    BuildTimeout {
        /// owner/name.
        repo: String,
        /// Number.
        number: i64,
        /// Last state.
        state: String,
        /// Web page.
        link: String,
        /// The bound.
        after: Duration,
    },
    /// The GitOps repository does not deploy the new image.
    #[error("tag bumped: `{path}` in `{repo}` deploys {} instead of `{image}:{}` after {}", found_text(.found), short(.expected), human_duration(*.after))]
    NotBumped {
        /// owner/name.
        repo: String,
        /// Path.
        path: String,
        /// Image without tag.
        image: String,
        /// Expected tag.
        expected: String,
        /// Tag found.
        found: Option<String>,
        /// The bound.
        after: Duration,
    },
    /// The Application did not reach the revision, Synced and Healthy.
    #[error("app synced: Application `{name}` in `{namespace}` is not Synced and Healthy at `{}` after {}: {}", short(.revision), human_duration(*.after), status_text(.status))]
    NotSynced {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The GitOps revision expected.
        revision: String,
        /// The last status seen.
        status: Option<AppStatus>,
        /// The bound.
        after: Duration,
    },
    /// The Application could not be watched.
    #[error("app synced: watch Application `{name}` in `{namespace}`: {detail}")]
    Watch {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Why.
        detail: String,
    },
    /// The site did not answer (DNS, TCP, TLS).
    #[error("app serves: {url} did not answer within {}: {detail}", human_duration(*.after))]
    SiteUnreachable {
        /// URL.
        url: String,
        /// The last transport error.
        detail: String,
        /// The bound.
        after: Duration,
    },
    /// The site answered but not with the change.
    #[error("app serves: {url} still serves {} after {} (expected version `{expected}`)", served_text(.served, *.status), human_duration(*.after))]
    Stale {
        /// URL.
        url: String,
        /// Expected version.
        expected: String,
        /// The version served, when the page had one.
        served: Option<String>,
        /// The HTTP status last seen.
        status: u16,
        /// The bound.
        after: Duration,
    },
}

fn failed_step_text(step: &Option<FailedStep>) -> String {
    match step {
        None => String::new(),
        Some(s) => {
            let mut out = format!(
                " at step `{}` (stage `{}`, exit code {})",
                s.step, s.stage, s.exit_code
            );
            if !s.error.is_empty() {
                out.push_str(&format!(": {}", s.error));
            }
            if !s.log_tail.is_empty() {
                out.push_str(&format!(
                    "\nlast {} lines of its log:\n{}",
                    s.log_tail.len(),
                    s.log_tail
                        .iter()
                        .map(|l| format!("  | {l}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                ));
            }
            out
        }
    }
}

fn error_text(error: &str) -> String {
    if error.is_empty() {
        String::new()
    } else {
        format!(": {error}")
    }
}

fn found_text(found: &Option<String>) -> String {
    match found {
        Some(t) => format!("tag `{t}`"),
        None => "no such image".into(),
    }
}

fn status_text(status: &Option<AppStatus>) -> String {
    match status {
        Some(s) => s.describe(),
        None => "it does not exist".into(),
    }
}

fn served_text(served: &Option<String>, status: u16) -> String {
    match served {
        Some(v) => format!("version `{v}`"),
        None if status == 200 => "a page without a version marker".into(),
        None => format!("HTTP {status}"),
    }
}

impl VerifyError {
    /// The hop that failed.
    pub fn hop(&self) -> &'static str {
        match self {
            VerifyError::Gitea { hop, .. } | VerifyError::Ci { hop, .. } => hop,
            VerifyError::FileMissing { hop, .. } => hop,
            VerifyError::NoMarker { .. } | VerifyError::Busy { .. } => HOPS[0],
            VerifyError::NoBuild { .. } => HOPS[1],
            VerifyError::BuildFailed { .. } | VerifyError::BuildTimeout { .. } => HOPS[2],
            VerifyError::NotBumped { .. } => HOPS[3],
            VerifyError::NotSynced { .. } | VerifyError::Watch { .. } => HOPS[4],
            VerifyError::SiteUnreachable { .. } | VerifyError::Stale { .. } => HOPS[5],
        }
    }
}

impl Diagnostic for VerifyError {
    fn hints(&self) -> Vec<String> {
        match self {

            VerifyError::Gitea { source, .. } => source.hints(),
            VerifyError::Ci { source, .. } => source.hints(),
            VerifyError::FileMissing { .. } => vec![
                "the lab repositories are seeded by `homelab up`; run it again if they were changed by hand".into(),
            ],
            VerifyError::NoMarker { .. } => vec![
                "keep exactly one element with `id=\"version\"` in the page (the repository's README says so)".into(),
            ],
            VerifyError::Busy { .. } => vec![
                "cancel the build in Drone, or run `homelab verify` again once it finished".into(),
            ],
            VerifyError::NoBuild { .. } => vec![
                "check that the repository is active in Drone and that Gitea delivers its webhook (repository settings → Webhooks → recent deliveries); Gitea's `[webhook] ALLOWED_HOST_LIST` must admit Drone's in-cluster host".into(),
            ],
            VerifyError::BuildFailed { link, .. } | VerifyError::BuildTimeout { link, .. } => {
                vec![format!("the build's page: {link}")]
            }
            VerifyError::NotBumped { .. } => vec![
                "the pipeline's `deploy` step pushes the new tag with the `gitops_token` secret: look at that step's log in Drone".into(),
            ],
            VerifyError::NotSynced {
                namespace, name, ..
            }
            | VerifyError::Watch {
                namespace, name, ..
            } => vec![format!(
                "see the sync engine's view with `kubectl -n {namespace} get application {name} -o yaml`"
            )],
            VerifyError::SiteUnreachable { detail, .. } if detail.contains("certificate") => vec![
                "the site's certificate is not signed by the lab CA: check `kubectl -n nyan-cat get certificate`".into(),
            ],
            VerifyError::SiteUnreachable { .. } => vec![
                "check the ingress (`homelab status`) and the app's pods (`kubectl -n nyan-cat get pods`)".into(),
            ],
            VerifyError::Stale { .. } => vec![
                "the Application is synced but the pods may still be the old ones: `kubectl -n nyan-cat get pods`".into(),
            ],
        }
    }
}

/// verify failed: the report up to the failed hop, and why.
#[derive(Debug)]
pub struct VerifyFailure {
    /// What was walked.
    pub report: VerifyReport,
    /// Why it stopped.
    pub error: VerifyError,
}

/// The page's version marker: the text of the one element with `id="version"`.
pub fn version_marker(html: &str) -> Result<(std::ops::Range<usize>, String), usize> {
    let needle = ["id=\"version\"", "id='version'"];
    let mut found = Vec::new();
    for n in needle {
        let mut from = 0;
        while let Some(i) = html[from..].find(n) {
            found.push(from + i);
            from += i + n.len();
        }
    }
    if found.len() != 1 {
        return Err(found.len());
    }
    let at = found[0];
    let open_end = html[at..].find('>').map(|i| at + i + 1).ok_or(0usize)?;
    let close = html[open_end..]
        .find('<')
        .map(|i| open_end + i)
        .ok_or(0usize)?;
    Ok((open_end..close, html[open_end..close].trim().to_string()))
}

/// The version after `current`: `v1` → `v2`, `build-9` → `build-10`; text without a trailing
/// number gets `-2`.
pub fn next_version(current: &str) -> String {
    let digits = current
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if digits == 0 {
        return format!("{current}-2");
    }
    let (prefix, n) = current.split_at(current.len() - digits);
    match n.parse::<u64>() {
        Ok(n) => format!("{prefix}{}", n + 1),
        Err(_) => format!("{current}-2"),
    }
}

/// The page with its version marker bumped: `(new page, old version, new version)`.
pub fn bump_version(html: &str) -> Result<(String, String, String), usize> {
    let (range, old) = version_marker(html)?;
    let new = next_version(&old);
    let mut page = String::with_capacity(html.len() + 4);
    page.push_str(&html[..range.start]);
    page.push_str(&new);
    page.push_str(&html[range.end..]);
    Ok((page, old, new))
}

/// The tag of `image` in a manifest (any container of any document), if it is there.
pub fn image_tag(manifest: &str, image: &str) -> Option<String> {
    fn walk(v: &crate::yaml::Value, image: &str, out: &mut Option<String>) {
        match v {
            crate::yaml::Value::Mapping(m) => {
                for (k, x) in m {
                    if k.as_str() == Some("image")
                        && let Some(s) = x.as_str()
                        && let Some(tag) = s.strip_prefix(image).and_then(|r| r.strip_prefix(':'))
                    {
                        *out = Some(tag.to_string());
                    }
                    walk(x, image, out);
                }
            }
            crate::yaml::Value::Sequence(s) => s.iter().for_each(|x| walk(x, image, out)),
            _ => {}
        }
    }
    let mut out = None;
    for v in crate::yaml::each_document(manifest).into_iter().flatten() {
        walk(&v, image, &mut out);
    }
    out
}

/// The bounded wait for HTTP servers, which have no watch: ask, then wait a delay that grows
/// from `poll_min` to `poll_max`, until the bound would pass.
struct Backoff {
    started: Instant,
    delay: Duration,
    max: Duration,
    timeout: Duration,
}

impl Backoff {
    fn new(opts: &VerifyOptions, timeout: Duration) -> Backoff {
        Backoff {
            started: Instant::now(),
            delay: opts.poll_min,
            max: opts.poll_max,
            timeout,
        }
    }

    /// Sleep before the next ask; `false` when the bound is reached instead.
    async fn next(&mut self) -> bool {
        if self.started.elapsed() + self.delay > self.timeout {
            return false;
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(self.max);
        true
    }
}

struct Walk<'p> {
    progress: &'p dyn Progress,
    report: VerifyReport,
    started: Instant,
}

impl Walk<'_> {
    fn hop<T>(
        &mut self,
        hop: &'static str,
        t: Instant,
        r: Result<(String, T), VerifyError>,
    ) -> Result<T, VerifyError> {
        let elapsed = t.elapsed();
        match r {
            Ok((detail, v)) => {
                self.progress.finish(hop, Outcome::Done, elapsed, &detail);
                self.report.hops.push(Hop {
                    hop,
                    ok: true,
                    elapsed_ms: elapsed.as_millis(),
                    detail,
                });
                Ok(v)
            }
            Err(e) => {
                self.progress
                    .finish(hop, Outcome::Failed, elapsed, &e.to_string());
                self.report.hops.push(Hop {
                    hop,
                    ok: false,
                    elapsed_ms: elapsed.as_millis(),
                    detail: e.to_string(),
                });
                Err(e)
            }
        }
    }

    fn start(&self, hop: &'static str, detail: &str) -> Instant {
        self.progress.start(hop, detail);
        Instant::now()
    }
}

/// Walk the loop once. On success the report has every hop; on failure, the hops up to the one
/// that failed and its error.
pub async fn verify<A: Applications + ?Sized>(
    target: &VerifyTarget,
    apps: &A,
    opts: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport, Box<VerifyFailure>> {
    let mut walk = Walk {
        progress,
        report: VerifyReport::default(),
        started: Instant::now(),
    };
    let result = walk_loop(target, apps, opts, &mut walk).await;
    walk.report.total_ms = walk.started.elapsed().as_millis();
    match result {
        Ok(()) => {
            walk.report.ok = true;
            Ok(walk.report)
        }
        Err(error) => Err(Box::new(VerifyFailure {
            report: walk.report,
            error,
        })),
    }
}

async fn walk_loop<A: Applications + ?Sized>(
    target: &VerifyTarget,
    apps: &A,
    opts: &VerifyOptions,
    walk: &mut Walk<'_>,
) -> Result<(), VerifyError> {
    let gitea = GiteaClient::new(&target.gitea)
        .map_err(|source| VerifyError::Gitea {
            hop: HOPS[0],
            source,
        })?
        .with_credentials(Credentials::Token(target.gitea_token.clone()));
    let app = RepoRef::new(&target.org, &target.app_repo);

    let t = walk.start(HOPS[0], &format!("`{}` in `{app}`", target.page_path));
    let r = commit(target, &gitea, &app, opts, walk.progress).await;
    let (commit, version) = walk.hop(HOPS[0], t, r)?;
    walk.report.commit = commit.clone();
    walk.report.version = version.clone();

    let t = walk.start(HOPS[1], &format!("commit {}", short(&commit)));
    let r = build_started(target, &app, &commit, opts).await;
    let build = walk.hop(HOPS[1], t, r)?;
    walk.report.build = Some(build.number);

    let t = walk.start(HOPS[2], &format!("build #{}", build.number));
    let r = build_succeeded(target, &app, &build, opts, walk.progress).await;
    walk.hop(HOPS[2], t, r)?;

    let t = walk.start(HOPS[3], &format!("`{}`", target.deployment_path));
    let r = tag_bumped(target, &gitea, &commit, opts).await;
    let revision = walk.hop(HOPS[3], t, r)?;

    let a = &target.application;
    let t = walk.start(
        HOPS[4],
        &format!("Application `{}` in `{}`", a.name, a.namespace),
    );
    let r = app_synced(target, apps, &revision, opts, walk.progress).await;
    walk.hop(HOPS[4], t, r)?;

    let t = walk.start(HOPS[5], &target.site.base_url);
    let r = app_serves(target, &version, opts).await;
    walk.hop(HOPS[5], t, r)?;
    Ok(())
}

fn decode_content(c: &crate::gitea::types::ContentsResponse) -> String {
    let raw: String = c
        .content
        .as_deref()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn commit(
    target: &VerifyTarget,
    gitea: &GiteaClient,
    app: &RepoRef,
    opts: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<(String, (String, String)), VerifyError> {
    let hop = HOPS[0];
    let ci_err = |source| VerifyError::Ci { hop, source };
    let gitea_err = |source| VerifyError::Gitea { hop, source };
    // An older build still running could bump the tag after ours: let it finish first.
    let mut waited: Option<(i64, Instant)> = None;
    let mut backoff = Backoff::new(opts, opts.settle);
    loop {
        let builds = target.ci.recent_builds(app).await.map_err(ci_err)?;
        let Some(b) = builds.iter().find(|b| !b.state.is_done()) else {
            break;
        };
        if waited.is_none() {
            waited = Some((b.number, Instant::now()));
        }
        progress.update(
            hop,
            &format!("waiting for build #{} to finish first", b.number),
        );
        if !backoff.next().await {
            return Err(VerifyError::Busy {
                repo: app.to_string(),
                number: b.number,
                state: state_word(&b.state),
                after: opts.settle,
            });
        }
    }
    let file = gitea
        .get_contents(&app.owner, &app.name, &target.page_path, &target.branch)
        .await
        .map_err(gitea_err)?
        .ok_or_else(|| VerifyError::FileMissing {
            hop,
            repo: app.to_string(),
            path: target.page_path.clone(),
            branch: target.branch.clone(),
        })?;
    let page = decode_content(&file);
    let (new_page, old, new) = bump_version(&page).map_err(|count| VerifyError::NoMarker {
        repo: app.to_string(),
        path: target.page_path.clone(),
        count,
    })?;
    let answer = gitea
        .update_file(
            &app.owner,
            &app.name,
            &target.page_path,
            &UpdateFileOptions {
                content: base64::engine::general_purpose::STANDARD.encode(new_page.as_bytes()),
                sha: file.sha.clone(),
                message: format!("homelab verify: version {old} → {new}"),
                branch: target.branch.clone(),
                author: Some(Identity {
                    name: "homelab verify".into(),
                    email: format!("verify@{}", target.gitea.host().unwrap_or_default()),
                }),
            },
        )
        .await
        .map_err(gitea_err)?;
    let sha = answer.commit.map(|c| c.sha).unwrap_or_default();
    let mut detail = format!("version {old} → {new} in commit {}", short(&sha));
    if let Some((n, since)) = waited {
        detail.push_str(&format!(
            " (after waiting {} for build #{n})",
            human_duration(since.elapsed())
        ));
    }
    Ok((detail, (sha, new)))
}

fn state_word(s: &BuildState) -> String {
    match s {
        BuildState::Queued => "queued".into(),
        BuildState::Running => "running".into(),
        BuildState::Succeeded => "success".into(),
        BuildState::Failed(w) => w.clone(),
    }
}

async fn build_started(
    target: &VerifyTarget,
    app: &RepoRef,
    commit: &str,
    opts: &VerifyOptions,
) -> Result<(String, BuildInfo), VerifyError> {
    let hop = HOPS[1];
    let mut backoff = Backoff::new(opts, opts.build_start);
    let found = loop {
        let builds = target
            .ci
            .recent_builds(app)
            .await
            .map_err(|source| VerifyError::Ci { hop, source })?;
        if let Some(b) = builds.into_iter().find(|b| b.commit == commit) {
            break Some(b);
        }
        if !backoff.next().await {
            break None;
        }
    };
    match found {
        Some(b) => Ok((format!("build #{} ({}, {})", b.number, b.event, b.link), b)),
        None => Err(VerifyError::NoBuild {
            ci: target.ci.kind().name(),
            repo: app.to_string(),
            commit: commit.into(),
            after: opts.build_start,
        }),
    }
}

async fn build_succeeded(
    target: &VerifyTarget,
    app: &RepoRef,
    build: &BuildInfo,
    opts: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<(String, ()), VerifyError> {
    let hop = HOPS[2];
    let ci_err = |source| VerifyError::Ci { hop, source };
    let mut last = build.clone();
    let mut backoff = Backoff::new(opts, opts.build_finish);
    let done = loop {
        let b = target.ci.build(app, build.number).await.map_err(ci_err)?;
        if b.state != last.state {
            progress.update(
                hop,
                &format!("build #{} {}", b.number, state_word(&b.state)),
            );
        }
        last = b.clone();
        if b.state.is_done() {
            break Some(b);
        }
        if !backoff.next().await {
            break None;
        }
    };
    let Some(b) = done else {
        return Err(VerifyError::BuildTimeout {
            repo: app.to_string(),
            number: build.number,
            state: state_word(&last.state),
            link: build.link.clone(),
            after: opts.build_finish,
        });
    };
    match &b.state {
        BuildState::Succeeded => Ok((format!("build #{} succeeded", b.number), ())),
        other => {
            let step = target
                .ci
                .failed_step(app, b.number, opts.log_lines)
                .await
                .map_err(ci_err)?;
            Err(VerifyError::BuildFailed {
                repo: app.to_string(),
                number: b.number,
                status: state_word(other),
                error: b.error.clone(),
                link: b.link.clone(),
                step,
            })
        }
    }
}

async fn tag_bumped(
    target: &VerifyTarget,
    gitea: &GiteaClient,
    commit: &str,
    opts: &VerifyOptions,
) -> Result<(String, String), VerifyError> {
    let hop = HOPS[3];
    let gitea_err = |source| VerifyError::Gitea { hop, source };
    let repo = RepoRef::new(&target.org, &target.gitops_repo);
    let mut found: Option<String>;
    let mut backoff = Backoff::new(opts, opts.bump);
    let bumped = loop {
        let file = gitea
            .get_contents(
                &repo.owner,
                &repo.name,
                &target.deployment_path,
                &target.branch,
            )
            .await
            .map_err(gitea_err)?
            .ok_or_else(|| VerifyError::FileMissing {
                hop,
                repo: repo.to_string(),
                path: target.deployment_path.clone(),
                branch: target.branch.clone(),
            })?;
        found = image_tag(&decode_content(&file), &target.image);
        if found.as_deref() == Some(commit) {
            break Some(());
        }
        if !backoff.next().await {
            break None;
        }
    };
    if bumped.is_none() {
        return Err(VerifyError::NotBumped {
            repo: repo.to_string(),
            path: target.deployment_path.clone(),
            image: target.image.clone(),
            expected: commit.into(),
            found,
            after: opts.bump,
        });
    }
    let head = gitea
        .get_branch(&repo.owner, &repo.name, &target.branch)
        .await
        .map_err(gitea_err)?
        .and_then(|b| b.commit)
        .map(|c| c.id)
        .unwrap_or_default();
    Ok((
        format!(
            "`{}` deploys `{}:{}` (`{repo}` at {})",
            target.deployment_path,
            target.image,
            short(commit),
            short(&head)
        ),
        head,
    ))
}

async fn app_synced<A: Applications + ?Sized>(
    target: &VerifyTarget,
    apps: &A,
    revision: &str,
    opts: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<(String, ()), VerifyError> {
    let hop = HOPS[4];
    let a = &target.application;
    let mut stream = apps.watch(&a.namespace, &a.name);
    let mut last: Option<AppStatus> = None;
    let deadline = tokio::time::Instant::now() + opts.sync;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) | Ok(None) => {
                return Err(VerifyError::NotSynced {
                    namespace: a.namespace.clone(),
                    name: a.name.clone(),
                    revision: revision.into(),
                    status: last,
                    after: opts.sync,
                });
            }
            Ok(Some(Err(detail))) => {
                return Err(VerifyError::Watch {
                    namespace: a.namespace.clone(),
                    name: a.name.clone(),
                    detail,
                });
            }
            Ok(Some(Ok(status))) => {
                if let Some(s) = &status {
                    if s.sync == "Synced" && s.health == "Healthy" && s.revision == revision {
                        return Ok((format!("Synced and Healthy at {}", short(revision)), ()));
                    }
                    progress.update(hop, &s.describe());
                }
                last = status;
            }
        }
    }
}

async fn app_serves(
    target: &VerifyTarget,
    version: &str,
    opts: &VerifyOptions,
) -> Result<(String, ()), VerifyError> {
    let url = target.site.base_url.trim_end_matches('/').to_string() + "/";
    let shown = redact_url(&url);
    let unreachable = |detail: String| VerifyError::SiteUnreachable {
        url: shown.clone(),
        detail,
        after: opts.serve,
    };
    // The lab CA is the only trust root: a certificate it did not sign fails here, by design.
    let http = crate::http::client(&[&target.site], None, Duration::from_secs(30))
        .map_err(|e| unreachable(e.clone()))?;
    let mut last: Result<(u16, Option<String>), String>;
    let mut backoff = Backoff::new(opts, opts.serve);
    let served = loop {
        last = match http.get(&url).send().await {
            Err(e) => Err(crate::http::error_chain(&e)),
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                Ok((status, version_marker(&body).ok().map(|(_, v)| v)))
            }
        };
        if matches!(&last, Ok((200, Some(v))) if v == version) {
            break Some(());
        }
        if !backoff.next().await {
            break None;
        }
    };
    match (served, last) {
        (Some(()), _) => Ok((format!("serves version {version}"), ())),
        (None, Err(detail)) => Err(unreachable(detail)),
        (None, Ok((status, served))) => Err(VerifyError::Stale {
            url: shown,
            expected: version.into(),
            served,
            status,
            after: opts.serve,
        }),
    }
}

/// What [`target_for_lab`] needs: the lab as `up` (or the `verify` command) knows it.
pub struct LabVerify<'a> {
    /// The stack (host names, the app's namespaces).
    pub stack: &'a crate::stack::Stack,
    /// The lab's domain.
    pub domain: &'a crate::render::Domain,
    /// The first node's IP: connections go there instead of through DNS (routers that drop
    /// private-IP answers for `*.sslip.io`); `None` resolves names normally.
    pub node_ip: Option<std::net::IpAddr>,
    /// The port of the node's ingress (443; see `Settings::ingress_port`).
    pub ingress_port: u16,
    /// The lab state (Gitea and CI tokens).
    pub state: &'a crate::state::LabState,
    /// The lab CA, PEM: the only trust root.
    pub ca_pem: &'a str,
    /// The CI the lab runs.
    pub ci: crate::ci::CiKind,
}

/// The verify target of a lab built by `up`: the stack's host names under the domain, the
/// tokens the wiring stored, the NyanCat names the templates use.
pub fn target_for_lab(l: &LabVerify<'_>) -> Result<VerifyTarget, crate::error::Error> {
    let hosts = crate::render::hosts(l.stack, l.domain);
    let host = |c: &str| {
        hosts.get(c).cloned().ok_or_else(|| {
            crate::error::Error::msg(format!(
                "stack `{}` has no `{c}` component with a host name; verify needs it",
                l.stack.name
            ))
        })
    };
    let pin = l
        .node_ip
        .map(|ip| std::net::SocketAddr::new(ip, l.ingress_port));
    let endpoint = |h: String| Endpoint {
        base_url: format!("https://{h}"),
        ca_pem: Some(l.ca_pem.to_string()),
        resolve: pin,
    };
    let gitea_host = host("gitea")?;
    let gitea = crate::http::Endpoint {
        base_url: format!("https://{gitea_host}"),
        ca_pem: Some(l.ca_pem.to_string()),
        resolve: pin,
    };
    let ci_host = host(match l.ci {
        crate::ci::CiKind::Drone => "drone",
    })?;
    let ci = crate::ci::client_from_state(l.ci, &endpoint(ci_host), l.state)?;
    let gitea_token = l.state.secrets()?.get(crate::wire::gitea::GITEA_TOKEN_KEY);
    if gitea_token.is_empty() {
        return Err(crate::error::Error::msg(format!(
            "the lab state has no Gitea API token (`{}` in `secrets.json`)",
            crate::wire::gitea::GITEA_TOKEN_KEY
        ))
        .hint("run `homelab up`: its wiring creates the token"));
    }
    let org = crate::render::GITEA_ORG.to_string();
    let app_namespace = l
        .stack
        .component("nyan-cat")
        .and_then(|c| c.namespace.clone())
        .unwrap_or_else(|| "argocd".into());
    Ok(VerifyTarget {
        gitea,
        gitea_token,
        ci,
        image: format!("{gitea_host}/{org}/nyan-cat"),
        org,
        app_repo: "nyan-cat".into(),
        gitops_repo: "gitops".into(),
        branch: "main".into(),
        page_path: "index.html".into(),
        deployment_path: "apps/nyan-cat/deployment.yaml".into(),
        application: AppRef {
            namespace: app_namespace,
            name: "nyan-cat".into(),
        },
        site: endpoint(host("nyan-cat")?),
    })
}

/// What `up` calls last (unless `--no-verify`): verify the lab, reporting hops through
/// `progress`. The outer error means verify could not start (no tokens in the lab state, no host
/// names); the inner one is a hop that failed, with the report up to it.
pub async fn run_for_lab(
    l: &LabVerify<'_>,
    kube: ::kube::Client,
    opts: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<Result<VerifyReport, Box<VerifyFailure>>, crate::error::Error> {
    let target = target_for_lab(l)?;
    Ok(verify(&target, &KubeApplications::new(kube), opts, progress).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_marker_is_bumped_in_place() {
        let page = "<p class=\"version\">version <span id=\"version\">v1</span></p>";
        let (new, old, next) = bump_version(page).unwrap();
        assert_eq!((old.as_str(), next.as_str()), ("v1", "v2"));
        assert_eq!(
            new,
            "<p class=\"version\">version <span id=\"version\">v2</span></p>"
        );
        assert_eq!(version_marker(&new).unwrap().1, "v2");
    }

    #[test]
    fn zero_or_two_markers_are_refused() {
        assert_eq!(bump_version("<p>no marker</p>").unwrap_err(), 0);
        assert_eq!(
            bump_version("<b id=\"version\">1</b><i id='version'>2</i>").unwrap_err(),
            2
        );
    }

    #[test]
    fn next_versions() {
        assert_eq!(next_version("v9"), "v10");
        assert_eq!(next_version("build-41"), "build-42");
        assert_eq!(next_version("beta"), "beta-2");
        assert_eq!(next_version(""), "-2");
    }

    #[test]
    fn image_tags_are_read_from_any_container() {
        let yaml = "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: \"gitea.x/lab/nyan-cat:abc123\"\n        - name: side\n          image: busybox:1.36\n";
        assert_eq!(
            image_tag(yaml, "gitea.x/lab/nyan-cat").as_deref(),
            Some("abc123")
        );
        assert_eq!(image_tag(yaml, "gitea.x/lab/other"), None);
        assert_eq!(
            image_tag(yaml, "gitea.x/lab/nyan"),
            None,
            "a prefix is not the image"
        );
    }

    #[test]
    fn app_status_is_read_from_the_object() {
        let obj = serde_json::json!({"status": {"sync": {"status": "Synced", "revision": "abc"}, "health": {"status": "Progressing", "message": "1 of 1 updated"}}});
        let s = AppStatus::from_object(&obj);
        assert_eq!(s.sync, "Synced");
        assert_eq!(s.health, "Progressing");
        assert!(
            s.describe()
                .contains("health `Progressing` (1 of 1 updated)"),
            "{}",
            s.describe()
        );
    }
}
