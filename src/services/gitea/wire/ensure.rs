//! The effects of Gitea wiring, one function per step: each reads Gitea (or the branch head),
//! asks [`crate::services::gitea::decide`] what to do, and writes only when the answer says so.
//!
//! Architecture invariant: effects go through the Gitea client, the git program and the
//! [`crate::services::gitea::pod_exec::PodExec`] seam; no decision is made here that a pure function could
//! make.

use std::collections::BTreeMap;

use super::{GiteaWireError, GiteaWiring, RepoSeed, cli_error};
use crate::edges::git::{self, GitAuth, GitRemote, ObjectFormat, PushRequest};
use crate::edges::output::Outcome;
use crate::edges::redact::Secret;
use crate::services::gitea::decide::*;
use crate::services::gitea::types::*;
use crate::services::gitea::{Created, Credentials, GiteaClient};

pub(super) async fn ensure_admin(
    w: &GiteaWiring<'_>,
    anon: &GiteaClient,
) -> Result<(Outcome, String), GiteaWireError> {
    let user = &w.admin.user;
    let basic = anon.with_credentials(Credentials::Basic {
        user: user.clone(),
        password: w.admin.password.clone(),
    });
    match basic.current_user().await {
        Ok(u) if u.is_admin => {
            return Ok((
                Outcome::Skipped,
                format!("`{user}` signs in as an administrator"),
            ));
        }
        Ok(_) => return Err(GiteaWireError::NotAdmin { user: user.clone() }),
        Err(e) if matches!(e.status(), Some(401 | 403)) => {}
        Err(e) => return Err(e.into()),
    }
    let create = admin_create_request(&w.cli, &w.admin);
    let out = w.pod.exec(&create).await?;
    let action = if out.success() {
        "created"
    } else if user_exists(&out) {
        // The user is there with another password (a lab state rebuilt against a kept Gitea
        // volume): the state's password wins.
        let reset = admin_reset_request(&w.cli, &w.admin);
        let out = w.pod.exec(&reset).await?;
        if !out.success() {
            return Err(cli_error(&reset, &out));
        }
        "reset the password of"
    } else {
        return Err(cli_error(&create, &out));
    };
    match basic.current_user().await {
        Ok(u) if u.is_admin => Ok((
            Outcome::Done,
            match action {
                "created" => format!("created `{user}` with the Gitea CLI"),
                _ => format!("reset the password of `{user}` with the Gitea CLI"),
            },
        )),
        Ok(_) => Err(GiteaWireError::NotAdmin { user: user.clone() }),
        Err(source) => Err(GiteaWireError::AdminLogin {
            user: user.clone(),
            action,
            source,
        }),
    }
}

pub(super) async fn ensure_token(
    w: &GiteaWiring<'_>,
    anon: &GiteaClient,
    version: &str,
) -> Result<(Outcome, String, Secret), GiteaWireError> {
    let user = &w.admin.user;
    let name = &w.token_name;
    let scopes = token_scopes(version);
    let basic = anon.with_credentials(Credentials::Basic {
        user: user.clone(),
        password: w.admin.password.clone(),
    });
    let stored = w.state.secrets()?.get(GITEA_TOKEN_KEY);
    let listed = basic.list_tokens(user).await?;
    let ours = listed.iter().find(|t| &t.name == name);
    if !stored.is_empty()
        && let Some(t) = ours
        && (t.token_last_eight.is_empty() || stored.expose().ends_with(&t.token_last_eight))
        && scopes_cover(t.scopes.as_ref(), scopes.as_ref())
    {
        match anon
            .with_credentials(Credentials::Token(stored.clone()))
            .current_user()
            .await
        {
            Ok(u) if &u.login == user => {
                return Ok((
                    Outcome::Skipped,
                    format!("the stored token `{name}` works"),
                    stored,
                ));
            }
            Ok(_) => {}
            Err(e) if e.status() == Some(401) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let replaced = ours.is_some();
    if replaced {
        // Gitea refuses a second token with the same name (400), and the old value is gone
        // from the state or no longer good enough: the old token goes.
        basic.delete_token(user, name).await?;
    }
    let created = basic
        .create_token(
            user,
            &CreateAccessTokenOption {
                name: name.clone(),
                scopes: scopes.clone(),
            },
        )
        .await?;
    if created.sha1.is_empty() {
        return Err(GiteaWireError::TokenMissing { name: name.clone() });
    }
    w.state
        .store_secrets(&[(GITEA_TOKEN_KEY, created.sha1.expose())])?;
    let scopes_text = match &scopes {
        Some(s) => s.join(", "),
        None => "full access: this Gitea has no token scopes".into(),
    };
    let verb = if replaced { "replaced" } else { "created" };
    Ok((
        Outcome::Done,
        format!("{verb} token `{name}` ({scopes_text})"),
        created.sha1,
    ))
}

pub(super) async fn ensure_org(
    w: &GiteaWiring<'_>,
    api: &GiteaClient,
) -> Result<(Outcome, String), GiteaWireError> {
    if api.get_org(&w.org).await?.is_some() {
        return Ok((Outcome::Skipped, format!("`{}` exists", w.org)));
    }
    let created = api
        .create_org(&CreateOrgOption {
            username: w.org.clone(),
            full_name: Some("homelab lab".into()),
            description: Some("Repositories of the homelab GitOps lab".into()),
            visibility: Visibility::Public,
        })
        .await?;
    Ok(match created {
        Created::Created(_) => (Outcome::Done, format!("created `{}`", w.org)),
        Created::Exists => (Outcome::Skipped, format!("`{}` exists", w.org)),
    })
}

pub(super) async fn ensure_repo(
    w: &GiteaWiring<'_>,
    api: &GiteaClient,
    seed: &RepoSeed,
) -> Result<(Outcome, String, Repository), GiteaWireError> {
    let full = format!("{}/{}", w.org, seed.name);
    if let Some(repo) = api.get_repo(&w.org, &seed.name).await? {
        return Ok((Outcome::Skipped, format!("`{full}` exists"), repo));
    }
    let created = api
        .create_org_repo(
            &w.org,
            &CreateRepoOption {
                name: seed.name.clone(),
                description: Some(seed.description.clone()),
                private: seed.private,
                auto_init: false,
                default_branch: DEFAULT_BRANCH.into(),
                object_format_name: Some("sha1".into()),
            },
        )
        .await?;
    match created {
        Created::Created(repo) => Ok((Outcome::Done, format!("created `{full}`"), repo)),
        Created::Exists => {
            let repo = api.get_repo(&w.org, &seed.name).await?.unwrap_or_default();
            Ok((Outcome::Skipped, format!("`{full}` exists"), repo))
        }
    }
}

pub(super) async fn ensure_content(
    w: &GiteaWiring<'_>,
    token: &Secret,
    seed: &RepoSeed,
    repo: &Repository,
    record: &mut GiteaRecord,
    warnings: &mut Vec<String>,
) -> Result<(Outcome, String), GiteaWireError> {
    let full = format!("{}/{}", w.org, seed.name);
    let format = ObjectFormat::from_name(&repo.object_format_name);
    let branch = if repo.default_branch.is_empty() {
        DEFAULT_BRANCH
    } else {
        repo.default_branch.as_str()
    };
    let seed_tree = git::tree_id(&full, &seed.files, format)?;
    let remote = GitRemote {
        url: format!(
            "{}/{}/{}.git",
            w.endpoint.base_url.trim_end_matches('/'),
            w.org,
            seed.name
        ),
        auth: GitAuth {
            username: Some(w.admin.user.clone()),
            password: Some(token.clone()),
            ca_pem: w.endpoint.ca_pem.clone(),
        },
        resolve: w.endpoint.resolve,
    };
    let head = w.git.remote_head(&remote, branch).await?;
    let action = seed_action(&seed_tree, head.as_deref(), record.repos.get(&full));
    let push = |parent: Option<String>, message: &'static str| {
        let remote = remote.clone();
        let files = &seed.files;
        let full = full.clone();
        async move {
            w.git
                .push_tree(
                    &remote,
                    &PushRequest {
                        repo: &full,
                        files,
                        branch,
                        parent: parent.as_deref(),
                        message,
                        author: &w.author,
                        format,
                    },
                )
                .await
        }
    };
    let diverged = |warnings: &mut Vec<String>| {
        warnings.push(format!(
            "`{full}` has commits homelab did not make and differs from homelab's seed; it was left as it is"
        ));
        (
            Outcome::Skipped,
            "kept: the branch has commits homelab did not make".to_string(),
        )
    };
    match action {
        SeedAction::UpToDate => Ok((Outcome::Skipped, "content is up to date".into())),
        SeedAction::Initial => {
            let pushed = push(None, "Seed the lab repository (homelab)").await?;
            record.repos.insert(
                full.clone(),
                SeedRecord {
                    commit: pushed.commit,
                    tree: pushed.tree,
                    foreign: None,
                },
            );
            Ok((
                Outcome::Done,
                format!("pushed {} files to `{branch}`", seed.files.len()),
            ))
        }
        SeedAction::Update { parent } => {
            let pushed = push(Some(parent), "Update the lab repository to homelab's seed").await?;
            record.repos.insert(
                full.clone(),
                SeedRecord {
                    commit: pushed.commit,
                    tree: pushed.tree,
                    foreign: None,
                },
            );
            Ok((Outcome::Done, format!("updated `{branch}` to the new seed")))
        }
        SeedAction::Diverged { .. } => Ok(diverged(warnings)),
        SeedAction::MovedOn { .. } => Ok((
            Outcome::Skipped,
            "moved on from homelab's seed; nothing new to push".into(),
        )),
        SeedAction::Inspect { head } => {
            let remote_tree = w.git.remote_tree(&remote, branch, format).await?;
            let entry = record.repos.entry(full.clone()).or_default();
            if remote_tree.tree == seed_tree {
                *entry = SeedRecord {
                    commit: remote_tree.commit,
                    tree: remote_tree.tree,
                    foreign: None,
                };
                Ok((Outcome::Skipped, "content matches the seed".into()))
            } else {
                entry.foreign = Some((head, remote_tree.tree));
                Ok(diverged(warnings))
            }
        }
    }
}

pub(super) async fn ensure_webhook(
    w: &GiteaWiring<'_>,
    api: &GiteaClient,
    record: &mut GiteaRecord,
) -> Result<(Outcome, String), GiteaWireError> {
    let org = &w.org;
    let repo = &w.webhook.repo;
    let key = format!("{org}/{repo}");
    let fingerprint = secret_fingerprint(&w.webhook.secret);
    let secret_changed = record.webhook_secrets.get(&key) != Some(&fingerprint);
    let hooks = api.list_hooks(org, repo).await?;
    let plan = plan_hook(&hooks, &w.webhook.url, secret_changed);
    let mut config = BTreeMap::from([
        ("url".to_string(), w.webhook.url.clone()),
        ("content_type".to_string(), "json".to_string()),
        ("http_method".to_string(), "post".to_string()),
    ]);
    config.insert("secret".into(), w.webhook.secret.expose().to_string());
    let events = vec!["push".to_string()];
    for id in &plan.delete {
        api.delete_hook(org, repo, *id).await?;
    }
    let create = |config: BTreeMap<String, String>| CreateHookOption {
        kind: "gitea".into(),
        config,
        events: events.clone(),
        active: true,
        branch_filter: Some("*".into()),
    };
    let detail = match plan.action {
        HookAction::Keep(_) if plan.delete.is_empty() => {
            return Ok((Outcome::Skipped, "the webhook is in place".into()));
        }
        HookAction::Keep(_) => format!("removed {} duplicate webhooks", plan.delete.len()),
        HookAction::Create => {
            api.create_hook(org, repo, &create(config)).await?;
            "created the push webhook".to_string()
        }
        HookAction::Replace(id) => {
            api.delete_hook(org, repo, id).await?;
            api.create_hook(org, repo, &create(config)).await?;
            "replaced a webhook of another type".to_string()
        }
        HookAction::Update(id) => {
            api.edit_hook(
                org,
                repo,
                id,
                &EditHookOption {
                    config,
                    events: events.clone(),
                    active: true,
                    branch_filter: Some("*".into()),
                },
            )
            .await?;
            "updated the webhook".to_string()
        }
    };
    record.webhook_secrets.insert(key, fingerprint);
    Ok((Outcome::Done, detail))
}
