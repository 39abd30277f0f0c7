//! The effects of verify: walking the hops once against the lab — the commit through Gitea's
//! contents API, the CI's builds, the GitOps repository's manifest, the Application's watch and
//! the site over HTTPS — with a bounded wait on each, recording every hop in the report and
//! through the progress seam.
//!
//! Architecture invariant: every wait is bounded and reported (a watch for the Application; for
//! HTTP servers, which have no watch, a retry whose delay grows), and TLS is never relaxed — the
//! page is fetched with the lab CA as the only trust root. The page edits and the text of the
//! errors and the report are pure, in `page`, `error` and `report`.

use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::StreamExt as _;

use super::hops::{short, state_word};
use super::page::decode_content;
use super::{
    AppStatus, Applications, HOPS, Hop, VerifyError, VerifyFailure, VerifyOptions, VerifyReport,
    VerifyTarget, bump_version, image_tag, version_marker,
};
use crate::edges::output::{Outcome, Progress, human_duration};
use crate::edges::redact::redact_url;
use crate::services::ci::{BuildInfo, BuildState, RepoRef};
use crate::services::gitea::types::{Identity, UpdateFileOptions};
use crate::services::gitea::{Credentials, GiteaClient};

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

/// The walk so far: each hop reported through the progress seam as it ends, and kept in the
/// report.
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
    let http = crate::edges::http::client(&[&target.site], None, Duration::from_secs(30))
        .map_err(|e| unreachable(e.clone()))?;
    let mut last: Result<(u16, Option<String>), String>;
    let mut backoff = Backoff::new(opts, opts.serve);
    let served = loop {
        last = match http.get(&url).send().await {
            Err(e) => Err(crate::edges::http::error_chain(&e)),
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
