//! Fixture builders: the inputs many tests build the same way (the default stack, a render of
//! it, an endpoint pinned to a fake), with the values the tests share, so that a test spells out only what it is about.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use homelab::edges::http::Endpoint;

use homelab::edges::state::Secrets;
use homelab::model::render::{Domain, Manifests, RenderInput};
use homelab::model::stack::Stack;
use homelab::model::templates::Templates;
use homelab::model::tls::LabCa;

/// The Gitea admin the tests' labs have.
pub const GITEA_ADMIN: &str = "lab-admin";
/// The microk8s channel the tests render for.
pub const CHANNEL: &str = "1.36/stable";

/// An endpoint at `base_url` that trusts `ca` and connects to `addr` whatever the name resolves
/// to: how the tests reach a fake served on 127.0.0.1 under a lab name.
pub fn pinned_endpoint(base_url: String, ca: &LabCa, addr: SocketAddr) -> Endpoint {
    Endpoint {
        base_url,
        ca_pem: Some(ca.cert_pem.clone()),
        resolve: Some(addr),
    }
}

/// A stack of this repository (`stacks/<name>`), as `homelab` loads it.
pub fn stack(name: &str) -> Stack {
    homelab::model::stack::load(name, Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// What `render` takes for `lab`: the tests' Gitea admin and channel, no node IP yet.
pub fn render_input<'a>(
    lab: &'a str,
    stack: &'a Stack,
    domain: &'a Domain,
    secrets: &'a Secrets,
    ca: &'a LabCa,
    upstream: &'a BTreeMap<String, String>,
) -> RenderInput<'a> {
    RenderInput {
        lab,
        stack,
        domain,
        secrets,
        ca,
        gitea_admin_user: GITEA_ADMIN,
        channel: CHANNEL.into(),
        node_ip: None,
        upstream,
    }
}

/// `stack` rendered from the embedded templates for `lab` with `ca`, placeholder secrets and
/// `upstream` as the downloaded manifests.
pub fn render(
    lab: &str,
    stack: &Stack,
    domain: &Domain,
    ca: &LabCa,
    upstream: &BTreeMap<String, String>,
) -> Manifests {
    let secrets = Secrets::placeholders();
    homelab::model::render::render(
        &Templates::embedded().unwrap(),
        &render_input(lab, stack, domain, &secrets, ca, upstream),
    )
    .unwrap()
}

/// `stack` rendered for `lab` with placeholder secrets and CA, nothing downloaded (what
/// `homelab render` shows before a lab exists).
pub fn render_placeholders(lab: &str, stack: &Stack, domain: &Domain) -> Manifests {
    render(
        lab,
        stack,
        domain,
        &homelab::model::tls::placeholder(),
        &BTreeMap::new(),
    )
}

/// Where the `argocd` stack downloads Argo CD's install manifest.
pub const ARGOCD_INSTALL_URL: &str =
    "https://raw.githubusercontent.com/argoproj/argo-cd/v3.5.1/manifests/install.yaml";

/// Argo CD v3.5.1's install manifest in the form `contracts/argocd/install.yaml` keeps it: every
/// object, with the fields the lab relies on (see its header and `contracts/README.md`).
pub fn argocd_install() -> String {
    std::fs::read_to_string(crate::support::common::contracts_dir().join("argocd/install.yaml"))
        .unwrap()
}

/// Put `text` in the cache as the download of `url`, pinned in `lab`'s lock, as `homelab
/// prepare` leaves it (content-addressed cache, sha256 in `lock.json`).
pub fn seed_upstream(ctx: &crate::support::common::TestContext, lab: &str, url: &str, text: &str) {
    let sha = homelab::edges::digest::sha256_hex(text.as_bytes());
    let cached = homelab::cluster::upstream::cache_path(&ctx.cache_dir(), &sha);
    std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
    std::fs::write(&cached, text).unwrap();
    let state = ctx.state_dir(lab);
    std::fs::create_dir_all(&state).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let lock_path = state.join(homelab::cluster::upstream::LOCK_FILE);
    let mut lock: serde_json::Value = std::fs::read_to_string(&lock_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| serde_json::json!({"upstream": {}}));
    lock["upstream"][url] = serde_json::json!({"sha256": sha});
    std::fs::write(&lock_path, serde_json::to_string_pretty(&lock).unwrap()).unwrap();
}

/// Apply `obj` as a test's setup does: server-side as `test-setup`, taking over conflicts.
pub async fn apply_setup(applier: &homelab::cluster::apply::Applier, obj: serde_json::Value) {
    use homelab::cluster::apply::{ApplyOptions, Manifest};
    applier
        .apply(
            &[Manifest {
                origin: "test".into(),
                object: obj,
            }],
            &ApplyOptions {
                field_manager: "test-setup".into(),
                force_conflicts: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
}
