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
