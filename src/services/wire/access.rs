//! How to reach the lab: its URLs and logins, as `homelab credentials` prints them and as the
//! summary card at the end of `up` shows them (without the secrets).
//!
//! Place in the data flow: built from the stack, the lab's domain and the lab state after wiring;
//! shown by `commands::credentials` and by `up`. Architecture invariant: pure; the summary card
//! never contains a secret, and the only text that does is [`LabAccess::credentials_text`] (and
//! its JSON twin), which only `homelab credentials` prints.

use std::path::PathBuf;

use serde::Serialize;

use crate::edges::redact::Secret;
use crate::model::render::{self, Domain, GITEA_ORG};
use crate::model::stack::Stack;

/// A lab URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LabUrl {
    /// The component (`gitea`, `drone`, `nyan-cat`).
    pub component: String,
    /// `https://<host>`.
    pub url: String,
}

/// What a person needs to reach the lab.
#[derive(Clone, Debug)]
pub struct LabAccess {
    /// Lab name.
    pub lab: String,
    /// Public URLs by component, in stack order; empty while the domain is not known.
    pub urls: Vec<LabUrl>,
    /// Gitea's host (the container registry answers there too).
    pub registry: Option<String>,
    /// Repositories in Gitea (`lab/gitops`, …).
    pub repos: Vec<String>,
    /// Gitea admin login.
    pub admin_user: String,
    /// Gitea admin password.
    pub admin_password: Secret,
    /// Whether an API token is stored.
    pub token_stored: bool,
    /// The file and key holding the token.
    pub token_file: PathBuf,
    /// The key in that file.
    pub token_key: String,
    /// Argo CD's admin login, when the stack runs Argo CD: its component and password.
    pub argocd: Option<(String, Secret)>,
}

/// Inputs of [`LabAccess::new`].
pub struct AccessInput<'a> {
    /// Lab name.
    pub lab: &'a str,
    /// The stack.
    pub stack: &'a Stack,
    /// The lab's domain; `None` when not known yet (the lab was never brought up).
    pub domain: Option<&'a Domain>,
    /// Gitea admin login.
    pub admin_user: &'a str,
    /// Gitea admin password.
    pub admin_password: Secret,
    /// Whether an API token is stored.
    pub token_stored: bool,
    /// The lab's secrets file.
    pub secrets_file: PathBuf,
    /// Argo CD's admin password (`argocd_admin_password`, set through `argocd-secret`), when
    /// the stack runs Argo CD.
    pub argocd_admin_password: Option<Secret>,
}

impl LabAccess {
    /// Build the view. Pure.
    pub fn new(input: AccessInput<'_>) -> LabAccess {
        let hosts = input
            .domain
            .map(|d| render::hosts(input.stack, d))
            .unwrap_or_default();
        let urls = input
            .stack
            .components
            .iter()
            .filter_map(|c| {
                hosts.get(&c.name).map(|h| LabUrl {
                    component: c.name.clone(),
                    url: format!("https://{h}"),
                })
            })
            .collect();
        let mut repos: Vec<String> = input
            .stack
            .components
            .iter()
            .flat_map(|c| c.repos.keys().map(|r| format!("{GITEA_ORG}/{r}")))
            .collect();
        repos.sort();
        repos.dedup();
        LabAccess {
            lab: input.lab.to_string(),
            urls,
            registry: hosts.get("gitea").cloned(),
            repos,
            admin_user: input.admin_user.to_string(),
            admin_password: input.admin_password,
            token_stored: input.token_stored,
            token_file: input.secrets_file,
            token_key: crate::services::gitea::decide::GITEA_TOKEN_KEY.to_string(),
            argocd: input
                .argocd_admin_password
                .and_then(|p| argocd_component(input.stack).map(|c| (c, p))),
        }
    }

    fn url_of(&self, component: &str) -> Option<&str> {
        self.urls
            .iter()
            .find(|u| u.component == component)
            .map(|u| u.url.as_str())
    }

    fn width(&self) -> usize {
        self.urls
            .iter()
            .map(|u| u.component.len())
            .max()
            .unwrap_or(0)
            .max(8)
    }

    /// The card `up` ends with: URLs, repositories, and where the logins are. No secrets.
    pub fn summary_card(&self) -> String {
        let w = self.width();
        let mut out = format!("Lab `{}` is ready\n", self.lab);
        for u in &self.urls {
            out.push_str(&format!("  {:<w$}  {}", u.component, u.url));
            if self.argocd.as_ref().is_some_and(|(c, _)| *c == u.component) {
                out.push_str(&format!(" (Argo CD, user `{ARGOCD_ADMIN}`)"));
            }
            out.push('\n');
        }
        if !self.repos.is_empty() {
            out.push_str(&format!("  {:<w$}  {}\n", "repos", self.repos.join(", ")));
        }
        out.push_str("Logins, passwords and the API token: run `homelab credentials`\n");
        out
    }

    /// What `homelab credentials` prints: URLs and logins, the password included.
    pub fn credentials_text(&self) -> String {
        let w = self.width();
        let mut out = format!("Lab `{}`\n", self.lab);
        if self.urls.is_empty() {
            out.push_str("  URLs are not known yet: run `homelab up`\n");
        }
        let gitea = self.url_of("gitea").unwrap_or("(not known yet)");
        out.push_str(&format!("  {:<w$}  {gitea}\n", "gitea"));
        out.push_str(&format!("    user       {}\n", self.admin_user));
        out.push_str(&format!(
            "    password   {}\n",
            self.admin_password.expose()
        ));
        if self.token_stored {
            out.push_str(&format!(
                "    API token  key `{}` in `{}`\n",
                self.token_key,
                crate::edges::output::human::tilde(&self.token_file)
            ));
        } else {
            out.push_str("    API token  not created yet: run `homelab up`\n");
        }
        if let Some(reg) = &self.registry {
            out.push_str(&format!(
                "    registry   {reg} (`docker login {reg} -u {}` with the password or the token)\n",
                self.admin_user
            ));
        }
        for u in &self.urls {
            if u.component == "gitea" {
                continue;
            }
            out.push_str(&format!("  {:<w$}  {}", u.component, u.url));
            if u.component == "drone" {
                out.push_str(&format!(
                    " (sign in through Gitea as `{}`)",
                    self.admin_user
                ));
            }
            out.push('\n');
            if let Some((c, password)) = &self.argocd
                && *c == u.component
            {
                out.push_str(&format!("    user       {ARGOCD_ADMIN}\n"));
                out.push_str(&format!("    password   {}\n", password.expose()));
            }
        }
        if !self.repos.is_empty() {
            out.push_str(&format!("  {:<w$}  {}\n", "repos", self.repos.join(", ")));
        }
        out
    }

    /// The JSON twin of [`LabAccess::credentials_text`].
    pub fn credentials_json(&self) -> serde_json::Value {
        serde_json::json!({
            "lab": self.lab,
            "urls": self.urls,
            "repos": self.repos,
            "gitea": {
                "url": self.url_of("gitea"),
                "user": self.admin_user,
                "password": self.admin_password.expose(),
                "token": {
                    "stored": self.token_stored,
                    "file": self.token_file,
                    "key": self.token_key,
                },
                "registry": self.registry,
            },
            "drone": {"url": self.url_of("drone")},
            "argocd": self.argocd.as_ref().map(|(c, password)| serde_json::json!({
                "url": self.url_of(c),
                "user": ARGOCD_ADMIN,
                "password": password.expose(),
            })),
        })
    }
}

/// Argo CD's built-in administrator (`admin.enabled` in argocd-cm).
pub const ARGOCD_ADMIN: &str = "admin";

/// The component that runs upstream Argo CD (its templates are `templates/argocd/`), if any.
pub fn argocd_component(stack: &Stack) -> Option<String> {
    stack
        .components
        .iter()
        .find(|c| c.source.templates.as_deref() == Some("argocd"))
        .map(|c| c.name.clone())
}

/// The lab's domain as last wired: the host of Gitea's recorded URL without the Gitea
/// component's hostname label (`https://gitea.10.0.0.5.sslip.io` → `10.0.0.5.sslip.io`).
pub fn domain_from_gitea_url(stack: &Stack, gitea_url: &str) -> Option<Domain> {
    let label = stack.component("gitea")?.hostname.as_ref()?;
    let host = reqwest::Url::parse(gitea_url).ok()?.host_str()?.to_string();
    let domain = host.strip_prefix(&format!("{label}."))?;
    Some(Domain {
        name: domain.to_string(),
        known: true,
    })
}
