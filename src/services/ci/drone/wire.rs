//! Wiring Drone, step by step (the list is in the `ci::drone` module doc).
//!
//! Architecture invariant: every step reads first and writes only what differs, so on a wired
//! lab the whole function performs reads only; every secret it learns goes to the lab state
//! before anything depends on it, so an interrupted run resumes instead of starting over.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::build::{BuildPlan, Why, build_plan};
use super::error::DroneWireError;
use super::login::{self, LoginRequest};
use super::oauth_app::{self, Plan};
use super::secrets::{self, Action, fingerprint};
use super::types::{Repo, RepoPatch, SecretCreate, SecretUpdate};
use super::*;
use crate::edges::output::steps::Steps;
use crate::edges::output::{Outcome, Progress};
use crate::edges::redact::Secret;
use crate::model::plan::wiring;
use crate::services::ci::{CiKind, CiReport, CiWiring, Workloads};
use crate::services::gitea::types::{CreateAccessTokenOption, CreateOAuth2ApplicationOptions};
use crate::services::gitea::web_login::{Consent, SignIn};
use crate::services::gitea::{Credentials, GiteaClient};

/// Name of the Gitea token the pipeline pushes images with.
pub const REGISTRY_TOKEN_NAME: &str = "drone-registry";
/// Name of the Gitea token the pipeline pushes to the GitOps repository with.
pub const GITOPS_TOKEN_NAME: &str = "drone-gitops";

/// `drone.json` in the lab state: nothing secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroneRecord {
    /// Fingerprint of the value last set, per pipeline secret.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
}

/// The OAuth client Drone runs with.
struct Client {
    id: String,
    secret: Secret,
    /// Created or regenerated in this run.
    changed: bool,
}

/// Wire Drone (see the `ci::drone` module doc).
pub async fn wire<W: Workloads>(
    w: &CiWiring<'_>,
    workloads: &W,
    progress: &dyn Progress,
) -> Result<CiReport, DroneWireError> {
    let mut steps = Steps::new(progress);
    let drone_url = w.ci.url().map_err(DroneWireError::Setup)?;
    let redirect_uri = drone_url
        .join("/login")
        .map_err(|e| DroneWireError::Setup(e.to_string()))?
        .to_string();
    let gitea = GiteaClient::new(&w.gitea)?;
    let api = gitea.with_credentials(Credentials::Token(w.gitea_token.clone()));
    let basic = gitea.with_credentials(Credentials::Basic {
        user: w.admin.user.clone(),
        password: w.admin.password.clone(),
    });
    let anon = DroneClient::new(&w.ci)?;

    let step = wiring::DRONE_OAUTH_APP;
    let t = steps.start(step, &format!("`{OAUTH_APP_NAME}` → {redirect_uri}"));
    let r = ensure_oauth_app(w, &api, &redirect_uri).await;
    let client = steps.end(step, t, r)?;

    let step = wiring::DRONE_CONFIG;
    let t = steps.start(
        step,
        &format!("Secret `{DRONE_OBJECT}` in `{}`", w.namespace),
    );
    let r = ensure_config(w, workloads, &client).await;
    let restarted = steps.end(step, t, r)?;

    let step = wiring::DRONE_READY;
    let t = steps.start(step, drone_url.as_str());
    let r = wait_ready(&anon, w.timeouts.ready, &steps, step).await;
    steps.end(step, t, r)?;

    let step = wiring::DRONE_LOGIN;
    let t = steps.start(step, &format!("as `{}`", w.admin.user));
    let relogin = client.changed || restarted;
    let r = ensure_login(w, &anon, &redirect_uri, relogin).await;
    let (drone, logged_in_now) = steps.end(step, t, r)?;

    let repo = RepoRef::new(&w.org, &w.app_repo);
    let step = wiring::DRONE_ACTIVATE;
    let t = steps.start(step, &format!("`{repo}`"));
    let r = ensure_active(w, &anon, &drone, &redirect_uri, &repo, logged_in_now).await;
    let (drone, found) = steps.end(step, t, r)?;

    let step = wiring::DRONE_TRUST;
    let t = steps.start(step, &format!("`{repo}`"));
    let r = ensure_trusted(&drone, &repo, &found).await;
    steps.end(step, t, r)?;

    let version = gitea.version().await?.version;
    let scopes = |fine: &[&str]| -> Option<Vec<String>> {
        match crate::services::gitea::decide::parse_version(&version) {
            Some((1, minor)) if minor >= 20 => Some(fine.iter().map(|s| s.to_string()).collect()),
            Some((1, 19)) => Some(vec!["all".into()]),
            Some((1, _)) | Some((0, _)) => None,
            _ => Some(fine.iter().map(|s| s.to_string()).collect()),
        }
    };
    let mut tokens = Vec::new();
    for (name, key, scope) in [
        (REGISTRY_TOKEN_NAME, STATE_REGISTRY_TOKEN, "write:package"),
        (GITOPS_TOKEN_NAME, STATE_GITOPS_TOKEN, "write:repository"),
    ] {
        let step = format!("gitea token {name}");
        let t = steps.start(&step, scope);
        let r = ensure_token(w, &basic, name, key, scopes(&[scope])).await;
        tokens.push(steps.end(&step, t, r)?);
    }

    let step = wiring::DRONE_SECRETS;
    let t = steps.start(step, &format!("`{repo}`"));
    let desired = vec![
        (
            SECRET_REGISTRY_USERNAME.to_string(),
            Secret::new(w.admin.user.clone()),
        ),
        (SECRET_REGISTRY_PASSWORD.to_string(), tokens[0].clone()),
        (SECRET_GITOPS_TOKEN.to_string(), tokens[1].clone()),
    ];
    let r = ensure_secrets(w, &drone, &repo, &desired).await;
    steps.end(step, t, r)?;

    let step = wiring::DRONE_BUILD;
    let t = steps.start(step, &format!("`{repo}` on `{}`", w.branch));
    let r = ensure_built(w, &drone, &api, &repo).await;
    steps.end(step, t, r)?;

    Ok(CiReport {
        ci: CiKind::Drone,
        steps: steps.reports,
    })
}

async fn ensure_oauth_app(
    w: &CiWiring<'_>,
    api: &GiteaClient,
    redirect_uri: &str,
) -> Result<(Outcome, String, Client), DroneWireError> {
    let secrets = w.state.secrets()?;
    let stored_id = secrets.get(STATE_CLIENT_ID).expose().to_string();
    let stored_secret = secrets.get(STATE_CLIENT_SECRET);
    let apps = api.list_oauth2_apps().await?;
    let want = oauth_app::Desired {
        name: OAUTH_APP_NAME.into(),
        redirect_uri: redirect_uri.into(),
    };
    let (plan, duplicates) = oauth_app::plan(
        &apps,
        &want,
        &oauth_app::Stored {
            client_id: stored_id.clone(),
            has_secret: !stored_secret.is_empty(),
        },
    );
    let options = CreateOAuth2ApplicationOptions {
        name: OAUTH_APP_NAME.into(),
        redirect_uris: vec![redirect_uri.into()],
        confidential_client: true,
        skip_secondary_authorization: None,
    };
    let mut notes = Vec::new();
    for id in &duplicates {
        api.delete_oauth2_app(*id).await?;
        notes.push(format!("deleted a duplicate app `{OAUTH_APP_NAME}` ({id})"));
    }
    let (app, verb) = match plan {
        Plan::Keep { client_id, .. } => {
            let detail = format!(
                "`{OAUTH_APP_NAME}` (client id `{client_id}`) is registered for {redirect_uri}"
            );
            let outcome = if duplicates.is_empty() {
                Outcome::Skipped
            } else {
                Outcome::Done
            };
            notes.insert(0, detail);
            return Ok((
                outcome,
                notes.join("; "),
                Client {
                    id: client_id,
                    secret: stored_secret,
                    changed: false,
                },
            ));
        }
        Plan::Create => (
            api.create_oauth2_app(&options).await?,
            "created".to_string(),
        ),
        Plan::Update { id, reason } => (
            api.update_oauth2_app(id, &options).await?,
            format!("updated ({reason}); Gitea issued a new client secret"),
        ),
    };
    if app.client_secret.is_empty() || app.client_id.is_empty() {
        return Err(DroneWireError::NoSecretValue {
            call: format!("{verb} the OAuth2 application `{OAUTH_APP_NAME}`"),
        });
    }
    // The state first: a crash after this point still knows the secret Gitea will never show
    // again.
    w.state.store_secrets(&[
        (STATE_CLIENT_ID, &app.client_id),
        (STATE_CLIENT_SECRET, app.client_secret.expose()),
    ])?;
    notes.insert(
        0,
        format!(
            "{verb} `{OAUTH_APP_NAME}` (client id `{}`) for {redirect_uri}",
            app.client_id
        ),
    );
    Ok((
        Outcome::Done,
        notes.join("; "),
        Client {
            id: app.client_id,
            secret: app.client_secret,
            changed: true,
        },
    ))
}

/// The pod-template annotations that pin Drone's pods to this client.
pub fn client_annotations(client_id: &str, client_secret: &Secret) -> BTreeMap<String, String> {
    let fp = fingerprint(SECRET_KEY_CLIENT_SECRET, client_secret);
    BTreeMap::from([
        (ANNOTATION_CLIENT_ID.to_string(), client_id.to_string()),
        (
            ANNOTATION_SECRET_FINGERPRINT.to_string(),
            fp.trim_start_matches("sha256:")[..16].to_string(),
        ),
    ])
}

async fn ensure_config<W: Workloads>(
    w: &CiWiring<'_>,
    workloads: &W,
    client: &Client,
) -> Result<(Outcome, String, bool), DroneWireError> {
    let ns = &w.namespace;
    let missing = |kind| DroneWireError::MissingObject {
        kind,
        name: DRONE_OBJECT.into(),
        namespace: ns.clone(),
    };
    let data = workloads
        .secret_data(ns, DRONE_OBJECT)
        .await?
        .ok_or_else(|| missing("Secret"))?;
    let want = BTreeMap::from([
        (
            SECRET_KEY_CLIENT_ID.to_string(),
            Secret::new(client.id.clone()),
        ),
        (SECRET_KEY_CLIENT_SECRET.to_string(), client.secret.clone()),
    ]);
    let secret_differs = want.iter().any(|(k, v)| data.get(k) != Some(v));
    if secret_differs {
        workloads.apply_secret_data(ns, DRONE_OBJECT, &want).await?;
    }
    let annotations = workloads
        .pod_template_annotations(ns, DRONE_OBJECT)
        .await?
        .ok_or_else(|| missing("Deployment"))?;
    let want_annotations = client_annotations(&client.id, &client.secret);
    let stale = want_annotations
        .iter()
        .any(|(k, v)| annotations.get(k) != Some(v));
    if stale {
        workloads
            .roll_deployment(ns, DRONE_OBJECT, &want_annotations, w.timeouts.rollout)
            .await?;
    }
    let detail = match (secret_differs, stale) {
        (false, false) => "Drone runs with the current OAuth client".to_string(),
        (true, false) => {
            "wrote the OAuth client into Secret `drone`; Drone already runs with it".into()
        }
        (_, true) => "wrote the OAuth client into Secret `drone` and restarted Drone".into(),
    };
    let outcome = if secret_differs || stale {
        Outcome::Done
    } else {
        Outcome::Skipped
    };
    Ok((outcome, detail, stale))
}

async fn wait_ready(
    drone: &DroneClient,
    timeout: Duration,
    steps: &Steps<'_>,
    step: &str,
) -> Result<(Outcome, String, ()), DroneWireError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        // An HTTP server has no watch: a bounded retry with a growing delay is the wait.
        match drone.healthz().await {
            Ok(()) => {
                return Ok((
                    Outcome::Skipped,
                    format!("answers at {}", drone.base_url()),
                    (),
                ));
            }
            Err(e) if started.elapsed() + delay > timeout => {
                return Err(DroneWireError::NotReady {
                    url: drone.base_url().to_string(),
                    after: timeout,
                    last: e.to_string(),
                });
            }
            Err(e) => steps.update(
                step,
                &format!(
                    "waiting for Drone ({} of {}): {e}",
                    crate::edges::output::human_duration(started.elapsed()),
                    crate::edges::output::human_duration(timeout)
                ),
            ),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn ensure_login(
    w: &CiWiring<'_>,
    anon: &DroneClient,
    redirect_uri: &str,
    force: bool,
) -> Result<(Outcome, String, (DroneClient, bool)), DroneWireError> {
    let stored = w.state.secrets()?.get(STATE_DRONE_TOKEN);
    if !stored.is_empty() && !force {
        let drone = anon.with_token(stored);
        if let Some(user) = drone.current_user().await?
            && user.login == w.admin.user
        {
            return Ok((
                Outcome::Skipped,
                format!("the stored API token works (`{}`)", user.login),
                (drone, false),
            ));
        }
    }
    let drone = login_and_store(w, anon, redirect_uri).await?;
    Ok((Outcome::Done, drone.1, (drone.0, true)))
}

async fn login_and_store(
    w: &CiWiring<'_>,
    anon: &DroneClient,
    redirect_uri: &str,
) -> Result<(DroneClient, String), DroneWireError> {
    let outcome = login::login(&LoginRequest {
        drone: w.ci.clone(),
        gitea: w.gitea.clone(),
        user: w.admin.user.clone(),
        password: w.admin.password.clone(),
        redirect_uri: redirect_uri.into(),
    })
    .await?;
    if outcome.login != w.admin.user {
        return Err(DroneWireError::WrongUser {
            expected: w.admin.user.clone(),
            got: outcome.login,
        });
    }
    w.state
        .store_secrets(&[(STATE_DRONE_TOKEN, outcome.token.expose())])?;
    let how = match outcome.sign_in {
        SignIn::WithCsrf => "signed in to Gitea (form with `_csrf`)",
        SignIn::WithoutCsrf => "signed in to Gitea (no `_csrf`, Gitea ≥ 1.26)",
        SignIn::Already => "Gitea session already signed in",
    };
    let consent = match outcome.consent {
        Consent::GrantedNow => "granted access on the consent page",
        Consent::AlreadyGranted => "access was granted before",
    };
    Ok((
        anon.with_token(outcome.token),
        format!(
            "logged in through Gitea as `{}`: {how}, {consent}; API token stored",
            w.admin.user
        ),
    ))
}

async fn ensure_active(
    w: &CiWiring<'_>,
    anon: &DroneClient,
    drone: &DroneClient,
    redirect_uri: &str,
    repo: &RepoRef,
    logged_in_now: bool,
) -> Result<(Outcome, String, (DroneClient, Repo)), DroneWireError> {
    let mut drone = drone.clone();
    let mut notes = Vec::new();
    let found = match drone.repo(&repo.owner, &repo.name).await? {
        Some(r) => r,
        None => {
            let synced = match drone.sync_repos().await {
                Ok(list) => list,
                // A Drone whose database was rebuilt keeps the API token (DRONE_USER_CREATE)
                // but lost the Gitea OAuth token the sync uses: log in once more, then retry.
                Err(e) if !logged_in_now && e.status().is_some_and(|s| s >= 500) => {
                    let (again, how) = login_and_store(w, anon, redirect_uri).await?;
                    notes.push(how);
                    drone = again;
                    drone.sync_repos().await?
                }
                Err(e) => return Err(e.into()),
            };
            notes.push(format!("synced {} repositories from Gitea", synced.len()));
            match drone.repo(&repo.owner, &repo.name).await? {
                Some(r) => r,
                None => {
                    return Err(DroneWireError::NotSynced {
                        repo: repo.to_string(),
                        seen: synced.into_iter().map(|r| r.slug).collect(),
                    });
                }
            }
        }
    };
    if found.active {
        notes.push(format!("`{repo}` is active"));
        let outcome = if notes.len() > 1 {
            Outcome::Done
        } else {
            Outcome::Skipped
        };
        return Ok((outcome, notes.join("; "), (drone, found)));
    }
    let r = drone.activate_repo(&repo.owner, &repo.name).await?;
    notes.push(format!(
        "activated `{repo}` (pipeline `{}`; Drone added its webhook to Gitea)",
        if r.config_path.is_empty() {
            ".drone.yml"
        } else {
            &r.config_path
        }
    ));
    Ok((Outcome::Done, notes.join("; "), (drone, r)))
}

/// Trust the repository when Drone does not yet (look first: a trusted one sees no PATCH).
async fn ensure_trusted(
    drone: &DroneClient,
    repo: &RepoRef,
    found: &Repo,
) -> Result<(Outcome, String, ()), DroneWireError> {
    if found.trusted {
        return Ok((Outcome::Skipped, format!("`{repo}` is trusted"), ()));
    }
    let patch = RepoPatch {
        trusted: Some(true),
    };
    let after = drone.update_repo(&repo.owner, &repo.name, &patch).await?;
    if !after.trusted {
        // Drone answers 200 either way (handler/api/repos/update.go applies `trusted` for
        // administrators only): the answer is the only place the refusal shows.
        let me = drone.current_user().await?;
        return Err(DroneWireError::NotTrusted {
            repo: repo.to_string(),
            user: me.as_ref().map(|u| u.login.clone()).unwrap_or_default(),
            admin: me.is_some_and(|u| u.admin),
        });
    }
    Ok((
        Outcome::Done,
        format!(
            "marked `{repo}` trusted: its pipeline mounts the lab CA from a ConfigMap, which drone-runner-kube allows trusted repositories only"
        ),
        (),
    ))
}

async fn ensure_token(
    w: &CiWiring<'_>,
    basic: &GiteaClient,
    name: &str,
    key: &str,
    scopes: Option<Vec<String>>,
) -> Result<(Outcome, String, Secret), DroneWireError> {
    let user = &w.admin.user;
    let stored = w.state.secrets()?.get(key);
    let listed = basic.list_tokens(user).await?;
    let existing = listed.iter().find(|t| t.name == name);
    let covers = |have: &Option<Vec<String>>| match (have, &scopes) {
        (_, None) | (None, _) => true,
        (Some(have), Some(need)) => {
            have.iter().any(|s| s == "all") || need.iter().all(|n| have.contains(n))
        }
    };
    if let Some(t) = existing
        && !stored.is_empty()
        && (t.token_last_eight.is_empty() || stored.expose().ends_with(&t.token_last_eight))
        && covers(&t.scopes)
    {
        return Ok((
            Outcome::Skipped,
            format!("the stored token `{name}` of `{user}` is current"),
            stored,
        ));
    }
    if existing.is_some() {
        // Its value is gone from the state (or it lacks a scope): Gitea refuses a second token
        // of the same name, so the old one goes.
        basic.delete_token(user, name).await?;
    }
    let created = basic
        .create_token(
            user,
            &CreateAccessTokenOption {
                name: name.into(),
                scopes: scopes.clone(),
            },
        )
        .await?;
    if created.sha1.is_empty() {
        return Err(DroneWireError::NoSecretValue {
            call: format!("create the API token `{name}` of `{user}`"),
        });
    }
    w.state.store_secrets(&[(key, created.sha1.expose())])?;
    let verb = if existing.is_some() {
        "replaced"
    } else {
        "created"
    };
    Ok((
        Outcome::Done,
        format!(
            "{verb} token `{name}` of `{user}` ({})",
            scopes
                .map(|s| s.join(", "))
                .unwrap_or_else(|| "no scopes on this Gitea".into())
        ),
        created.sha1,
    ))
}

async fn ensure_secrets(
    w: &CiWiring<'_>,
    drone: &DroneClient,
    repo: &RepoRef,
    desired: &[(String, Secret)],
) -> Result<(Outcome, String, ()), DroneWireError> {
    let (owner, name) = (&repo.owner, &repo.name);
    let existing: BTreeSet<String> = drone
        .list_secrets(owner, name)
        .await?
        .into_iter()
        .map(|s| s.name)
        .collect();
    let before: DroneRecord = w.state.read_json(RECORD_FILE)?.unwrap_or_default();
    let mut record = before.clone();
    let mut done = BTreeMap::<&str, Vec<String>>::new();
    for (secret, action) in secrets::plan(&existing, desired, &before.secrets) {
        let value = &desired
            .iter()
            .find(|(n, _)| *n == secret)
            .expect("planned from desired")
            .1;
        let update = SecretUpdate {
            data: value.expose().to_string(),
        };
        match action {
            Action::Keep => {
                done.entry("unchanged").or_default().push(secret.clone());
                continue;
            }
            Action::Update => {
                drone.update_secret(owner, name, &secret, &update).await?;
                done.entry("updated").or_default().push(secret.clone());
            }
            Action::Create => {
                let create = SecretCreate {
                    name: secret.clone(),
                    data: value.expose().to_string(),
                    pull_request: false,
                };
                match drone.create_secret(owner, name, &create).await {
                    Ok(()) => done.entry("created").or_default().push(secret.clone()),
                    // Created by someone else since the listing (Drone's duplicate answer is a
                    // 500): update it instead of failing or posting twice.
                    Err(e) if e.status() == Some(500) => {
                        let now: BTreeSet<String> = drone
                            .list_secrets(owner, name)
                            .await?
                            .into_iter()
                            .map(|s| s.name)
                            .collect();
                        if !now.contains(&secret) {
                            return Err(e.into());
                        }
                        drone.update_secret(owner, name, &secret, &update).await?;
                        done.entry("updated").or_default().push(secret.clone());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        record
            .secrets
            .insert(secret.clone(), fingerprint(&secret, value));
    }
    if record != before {
        w.state.write_json(RECORD_FILE, &record)?;
    }
    let wrote = done.contains_key("created") || done.contains_key("updated");
    let detail = ["created", "updated", "unchanged"]
        .iter()
        .filter_map(|k| {
            done.get(k).map(|names| {
                format!(
                    "{k} {}",
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        })
        .collect::<Vec<_>>()
        .join("; ");
    let outcome = if wrote {
        Outcome::Done
    } else {
        Outcome::Skipped
    };
    Ok((outcome, detail, ()))
}

async fn ensure_built(
    w: &CiWiring<'_>,
    drone: &DroneClient,
    gitea: &GiteaClient,
    repo: &RepoRef,
) -> Result<(Outcome, String, ()), DroneWireError> {
    let head = gitea
        .get_branch(&repo.owner, &repo.name, &w.branch)
        .await?
        .and_then(|b| b.commit)
        .map(|c| c.id)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| DroneWireError::NoBranch {
            repo: repo.to_string(),
            branch: w.branch.clone(),
        })?;
    let short = &head[..head.len().min(7)];
    let builds = drone.list_builds(&repo.owner, &repo.name).await?;
    let why = match build_plan(&builds, &head) {
        BuildPlan::Built(n) => {
            return Ok((
                Outcome::Skipped,
                format!(
                    "build #{n} of `{short}` (the head of `{}`) succeeded",
                    w.branch
                ),
                (),
            ));
        }
        // One that is queued or running will tell; a second would race it to bump the tag.
        BuildPlan::Underway(n, status) => {
            return Ok((
                Outcome::Skipped,
                format!("build #{n} of `{short}` is {status}; no second build started"),
                (),
            ));
        }
        BuildPlan::Start(Why::NeverBuilt) => format!("`{repo}` never built"),
        BuildPlan::Start(Why::HeadNotBuilt) => {
            format!("no build of `{short}`, the head of `{}`, yet", w.branch)
        }
        BuildPlan::Start(Why::HeadFailed(n)) => {
            // The list does not carry the stages; the build itself says why it failed.
            let reason = match drone.build(&repo.owner, &repo.name, n).await {
                Ok(b) => {
                    let error = build_error(&b);
                    if error.is_empty() {
                        format!("`{}`", b.status)
                    } else {
                        format!("`{}`: {error}", b.status)
                    }
                }
                Err(e) => {
                    tracing::debug!("read build #{n}: {e}");
                    "failed".into()
                }
            };
            format!("build #{n} of `{short}` ended {reason}")
        }
    };
    match drone
        .create_build(&repo.owner, &repo.name, &w.branch)
        .await?
    {
        Some(b) => Ok((
            Outcome::Done,
            format!(
                "{why}: started build #{} of `{}` ({})",
                b.number,
                w.branch,
                drone.build_link(&repo.owner, &repo.name, b.number)
            ),
            (),
        )),
        None => Err(DroneWireError::FirstBuildSkipped {
            repo: repo.to_string(),
            branch: w.branch.clone(),
        }),
    }
}
