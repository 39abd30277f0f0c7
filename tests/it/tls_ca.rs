//! The lab CA (issue 4): what it is (parsed back with x509-parser), what it lets a leaf be
//! (verified with rustls-webpki, as rustls clients do), how it is kept in the lab state, and the
//! `ca path|show|regenerate` commands with their exact messages.

use crate::support::common;

use std::time::Duration;

use common::TestContext;
use homelab::edges::state::LabState;
use homelab::model::tls::{
    self, CA_CERT_FILE, CA_KEY_FILE, LabCa, Leaf, LeafSpec, TlsError, generate, issue_leaf,
    load_or_create, pem_to_der, permitted_domains,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

const DOMAIN: &str = "lab.example.test";

fn lab_ca(now: OffsetDateTime) -> LabCa {
    generate("workshop", &permitted_domains(Some(DOMAIN)), now).unwrap()
}

/// Verify `leaf` for `name` at `at` against `ca` as the only trust anchor, like a rustls client.
fn verify(ca: &LabCa, leaf: &Leaf, name: &str, at: OffsetDateTime) -> Result<(), webpki::Error> {
    let ca_der = CertificateDer::from(pem_to_der(&ca.cert_pem).unwrap());
    let anchor = webpki::anchor_from_trusted_cert(&ca_der)?;
    let leaf_der = CertificateDer::from(leaf.cert_der.clone());
    let ee = webpki::EndEntityCert::try_from(&leaf_der)?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(at.unix_timestamp() as u64));
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        time,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )?;
    ee.verify_is_valid_for_subject_name(&ServerName::try_from(name.to_string()).unwrap())
}

fn leaf_for(ca: &LabCa, names: &[&str], now: OffsetDateTime) -> Leaf {
    issue_leaf(ca, &LeafSpec::for_names(names, now)).unwrap()
}

#[test]
fn leaf_for_gitea_verifies_against_the_lab_ca() {
    let now = OffsetDateTime::now_utc();
    let ca = lab_ca(now);
    for host in [
        format!("gitea.{DOMAIN}"),
        "gitea.10.0.0.5.sslip.io".to_string(),
    ] {
        let leaf = leaf_for(&ca, &[&host], now);
        assert_eq!(verify(&ca, &leaf, &host, now), Ok(()), "{host}");
        assert_eq!(leaf.ca_pem, ca.cert_pem, "ca.crt is the issuing CA");
    }
}

#[test]
fn leaf_outside_the_name_constraints_is_rejected() {
    let now = OffsetDateTime::now_utc();
    let ca = lab_ca(now);
    // issue_leaf signs it, as cert-manager would; the client is what refuses it.
    let leaf = leaf_for(&ca, &["gitea.example.com"], now);
    assert_eq!(
        verify(&ca, &leaf, "gitea.example.com", now),
        Err(webpki::Error::NameConstraintViolation)
    );
    // A look-alike suffix is not under the permitted subtree either.
    let leaf = leaf_for(&ca, &["gitea.evil-lab.example.test"], now);
    assert_eq!(
        verify(&ca, &leaf, "gitea.evil-lab.example.test", now),
        Err(webpki::Error::NameConstraintViolation)
    );
}

#[test]
fn leaf_with_an_ip_address_is_rejected_by_the_excluded_ip_subtrees() {
    let now = OffsetDateTime::now_utc();
    let ca = lab_ca(now);
    let mut spec = LeafSpec::for_names(&[format!("gitea.{DOMAIN}")], now);
    spec.ip_addresses = vec!["10.0.0.5".parse().unwrap()];
    let leaf = issue_leaf(&ca, &spec).unwrap();
    assert_eq!(
        verify(&ca, &leaf, &format!("gitea.{DOMAIN}"), now),
        Err(webpki::Error::NameConstraintViolation)
    );
}

#[test]
fn expired_leaf_is_rejected() {
    let now = OffsetDateTime::now_utc();
    let ca = lab_ca(now - time::Duration::days(200));
    let host = format!("gitea.{DOMAIN}");
    // Issued 100 days ago for cert-manager's default 90 days.
    let leaf = issue_leaf(
        &ca,
        &LeafSpec::for_names(&[&host], now - time::Duration::days(100)),
    )
    .unwrap();
    assert!(
        matches!(
            verify(&ca, &leaf, &host, now),
            Err(webpki::Error::CertExpired { .. })
        ),
        "{:?}",
        verify(&ca, &leaf, &host, now)
    );
    // The same leaf was fine while it was valid.
    assert_eq!(
        verify(&ca, &leaf, &host, now - time::Duration::days(50)),
        Ok(())
    );
}

#[test]
fn leaf_for_another_name_or_from_another_ca_is_rejected() {
    let now = OffsetDateTime::now_utc();
    let ca = lab_ca(now);
    let leaf = leaf_for(&ca, &[&format!("gitea.{DOMAIN}")], now);
    assert!(matches!(
        verify(&ca, &leaf, &format!("drone.{DOMAIN}"), now),
        Err(webpki::Error::CertNotValidForName(_))
    ));
    // A regenerated CA has the same name but another key: old leaves no longer verify.
    let other = lab_ca(now);
    assert_eq!(
        verify(&other, &leaf, &format!("gitea.{DOMAIN}"), now),
        Err(webpki::Error::InvalidSignatureForPublicKey)
    );
}

#[test]
fn ca_certificate_carries_constraints_and_key_usages() {
    let ca = lab_ca(OffsetDateTime::now_utc());
    let der = pem_to_der(&ca.cert_pem).unwrap();
    let (_, cert) = X509Certificate::from_der(&der).unwrap();

    assert_eq!(
        cert.subject().to_string(),
        "CN=homelab CA (workshop), O=homelab"
    );
    assert_eq!(cert.subject(), cert.issuer(), "self-signed root");

    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(bc.critical);
    assert!(bc.value.ca);
    assert_eq!(bc.value.path_len_constraint, Some(0));

    let ku = cert.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert!(ku.value.key_cert_sign() && ku.value.crl_sign());
    assert!(!ku.value.key_encipherment());

    let nc = cert.name_constraints().unwrap().unwrap();
    assert!(nc.critical, "name constraints must be critical");
    let permitted: Vec<String> = nc
        .value
        .permitted_subtrees
        .as_ref()
        .unwrap()
        .iter()
        .map(|s| match &s.base {
            GeneralName::DNSName(d) => d.to_string(),
            other => panic!("unexpected permitted subtree {other:?}"),
        })
        .collect();
    assert_eq!(permitted, vec!["sslip.io", DOMAIN]);
    let excluded: Vec<Vec<u8>> = nc
        .value
        .excluded_subtrees
        .as_ref()
        .unwrap()
        .iter()
        .map(|s| match &s.base {
            GeneralName::IPAddress(b) => b.to_vec(),
            other => panic!("unexpected excluded subtree {other:?}"),
        })
        .collect();
    assert_eq!(
        excluded,
        vec![vec![0u8; 8], vec![0u8; 32]],
        "all IPv4 and IPv6"
    );

    let validity = cert.validity();
    let days = (validity.not_after.timestamp() - validity.not_before.timestamp()) / 86_400;
    assert_eq!(
        days,
        tls::CA_VALIDITY_DAYS,
        "long-lived (plus the 1 h backdating)"
    );
    assert!(cert.extensions().iter().any(|e| matches!(
        e.parsed_extension(),
        ParsedExtension::SubjectKeyIdentifier(_)
    )));

    let info = tls::inspect(&ca.cert_pem).unwrap();
    assert_eq!(info.key_algorithm, "ECDSA P-256");
    assert_eq!(info.excluded, vec!["IP 0.0.0.0/0", "IP ::/0"]);
    assert_eq!(info.sha256.len(), 32 * 3 - 1);
    assert_eq!(info.sha1.len(), 40);
}

#[test]
fn leaf_is_shaped_like_cert_managers() {
    let now = OffsetDateTime::now_utc();
    let ca = lab_ca(now);
    let host = format!("gitea.{DOMAIN}");
    let leaf = leaf_for(&ca, &[&host], now);
    let (_, cert) = X509Certificate::from_der(&leaf.cert_der).unwrap();
    let ca_der = pem_to_der(&ca.cert_pem).unwrap();
    let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();

    assert_eq!(cert.issuer(), ca_cert.subject());
    assert_eq!(
        cert.subject().to_string(),
        "",
        "no common name unless asked"
    );
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::DNSName(host.as_str())]
    );
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    assert!(!cert.is_ca());
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86_400;
    assert_eq!(days, tls::LEAF_DEFAULT_DAYS);

    let aki = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.clone(),
            _ => None,
        })
        .expect("authority key identifier");
    let ski = ca_cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(aki.0, ski.0);

    // A requested lifetime beyond the CA's is cut at the CA's notAfter, as cert-manager does.
    let mut long = LeafSpec::for_names(&[&host], now);
    long.validity = time::Duration::days(365 * 20);
    let long = issue_leaf(&ca, &long).unwrap();
    let (_, long) = X509Certificate::from_der(&long.cert_der).unwrap();
    assert_eq!(
        long.validity().not_after.timestamp(),
        ca_cert.validity().not_after.timestamp()
    );
    assert!(!leaf.key_pem.expose().is_empty());
    assert_eq!(format!("{:?}", leaf.key_pem), "<redacted>");
}

#[cfg(unix)]
fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn ca_survives_reruns_and_is_private() {
    let tmp = tempfile::tempdir().unwrap();
    let state = LabState::at("workshop", tmp.path().join("workshop"));
    let first = load_or_create(&state, Some(DOMAIN)).unwrap();
    // Later runs: same domain, a host under it, the default sslip.io domain, no domain.
    for domain in [
        Some(DOMAIN),
        Some("team1.lab.example.test"),
        Some("10.1.2.3.sslip.io"),
        None,
    ] {
        let again = load_or_create(&state, domain).unwrap();
        assert_eq!(again.cert_pem, first.cert_pem, "{domain:?}");
        assert_eq!(again.key_pem, first.key_pem);
    }
    // `down` without `--purge` keeps the state directory, so the next `up` loads the same CA.
    let after_down = load_or_create(&LabState::at("workshop", state.dir()), Some(DOMAIN)).unwrap();
    assert_eq!(after_down.cert_pem, first.cert_pem);
    #[cfg(unix)]
    {
        assert_eq!(mode(state.dir()), 0o700);
        assert_eq!(mode(&state.path("ca")), 0o700);
        assert_eq!(mode(&state.path(CA_KEY_FILE)), 0o600);
        assert_eq!(mode(&state.path(CA_CERT_FILE)), 0o600);
    }
    // `down --purge` removes the state; the next run makes a new CA.
    state.purge().unwrap();
    let fresh = load_or_create(&state, Some(DOMAIN)).unwrap();
    assert_ne!(fresh.cert_pem, first.cert_pem);
}

#[test]
fn domain_outside_the_stored_ca_is_an_error_not_a_new_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let state = LabState::at("workshop", tmp.path().join("workshop"));
    let ca = load_or_create(&state, Some(DOMAIN)).unwrap();
    let err = load_or_create(&state, Some("other.test")).unwrap_err();
    assert!(matches!(err, TlsError::DomainNotCovered { .. }), "{err}");
    let err = homelab::edges::error::Error::from(err);
    let path = state.path(CA_CERT_FILE).display().to_string();
    assert_eq!(
        err.render(),
        format!(
            "error: domain `other.test` is outside the name constraints of the lab CA `{path}`, which may only issue for `sslip.io`, `lab.example.test`\n\
             hint: use a domain under `sslip.io`, `lab.example.test` with `--domain`\n\
             hint: or replace the lab CA with one that covers `other.test`: `homelab ca regenerate --domain other.test` (run `homelab untrust` first if you trusted the old one)"
        )
    );
    let unchanged = std::fs::read_to_string(state.path(CA_CERT_FILE)).unwrap();
    assert_eq!(unchanged, ca.cert_pem, "the stored CA is untouched");
}

#[test]
fn expired_or_mismatched_ca_is_refused_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let state = LabState::at("workshop", tmp.path().join("workshop"));
    let long_ago = OffsetDateTime::now_utc() - time::Duration::days(tls::CA_VALIDITY_DAYS + 10);
    let old = generate("workshop", &permitted_domains(None), long_ago).unwrap();
    state
        .write(CA_KEY_FILE, old.key_pem.expose().as_bytes())
        .unwrap();
    state.write(CA_CERT_FILE, old.cert_pem.as_bytes()).unwrap();
    let err = load_or_create(&state, None).unwrap_err();
    assert!(matches!(err, TlsError::Expired { .. }), "{err}");
    assert_eq!(
        homelab::edges::error::Error::from(err).hints(),
        [
            "run `homelab ca regenerate` to replace it (run `homelab untrust` first if you trusted it)"
        ]
    );

    let other = generate(
        "workshop",
        &permitted_domains(None),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    state
        .write(CA_KEY_FILE, other.key_pem.expose().as_bytes())
        .unwrap();
    let err = load_or_create(&state, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the lab CA key `{}` does not belong to the certificate `{}`",
            state.path(CA_KEY_FILE).display(),
            state.path(CA_CERT_FILE).display()
        )
    );
}

// ---- CLI: `homelab ca …` ----

/// `ca show --output json`, plus the text output with fingerprints and dates replaced.
fn show(ctx: &TestContext) -> (serde_json::Value, String) {
    let run = ctx.homelab(&["ca", "show", "--output", "json"]);
    run.success();
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let run = ctx.homelab(&["ca", "show"]);
    run.success();
    let mut text = run.stdout.clone();
    for (key, marker) in [
        ("sha256", "[SHA256]"),
        ("not_before", "[NOT-BEFORE]"),
        ("not_after", "[NOT-AFTER]"),
    ] {
        text = text.replace(json[key].as_str().unwrap(), marker);
    }
    (json, text)
}

#[test]
fn ca_show_and_path_before_and_after_the_ca_exists() {
    let ctx = TestContext::new();
    let run = ctx.homelab(&["ca", "show"]);
    run.failure(1);
    assert_eq!(
        run.stderr,
        "error: lab `homelab` has no CA yet (no `~/.local/share/homelab/homelab/ca/ca.crt`)\nhint: `homelab up` creates it (so do `homelab render` and `homelab trust`, without a VM)\n"
    );
    ctx.homelab(&["ca", "path"]).failure(1);
    assert!(
        !ctx.state_dir("homelab").join(CA_CERT_FILE).exists(),
        "read-only commands create nothing"
    );

    ctx.homelab(&["trust", "--domain", DOMAIN]).success();
    let (json, text) = show(&ctx);
    assert_eq!(
        text,
        "CA of lab `homelab`\n  certificate  ~/.local/share/homelab/homelab/ca/ca.crt\n  key          ~/.local/share/homelab/homelab/ca/ca.key (never printed)\n  subject      CN=homelab CA (homelab), O=homelab\n  SHA-256      [SHA256]\n  valid        [NOT-BEFORE] to [NOT-AFTER]\n  constraints  permitted DNS sslip.io, lab.example.test; excluded IP 0.0.0.0/0, IP ::/0\n  CA           yes (path length 0)\n  key usages   digitalSignature, keyCertSign, cRLSign\n  algorithm    ECDSA P-256\n"
    );
    let sha = json["sha256"].as_str().unwrap().to_string();
    assert_eq!(sha.len(), 95);
    let mut json = json;
    for key in ["sha256", "sha1", "not_before", "not_after"] {
        json[key] = format!("[{key}]").into();
    }
    assert_eq!(
        json,
        serde_json::json!({
            "lab": "homelab",
            "certificate": "[HOME]/.local/share/homelab/homelab/ca/ca.crt",
            "key": "[HOME]/.local/share/homelab/homelab/ca/ca.key",
            "subject": "CN=homelab CA (homelab), O=homelab",
            "common_name": "homelab CA (homelab)",
            "sha256": "[sha256]",
            "sha1": "[sha1]",
            "not_before": "[not_before]",
            "not_after": "[not_after]",
            "permitted_dns": ["sslip.io", "lab.example.test"],
            "excluded": ["IP 0.0.0.0/0", "IP ::/0"],
            "key_usages": ["digitalSignature", "keyCertSign", "cRLSign"],
            "is_ca": true,
            "path_len": 0,
            "key_algorithm": "ECDSA P-256",
        })
    );
    let key = std::fs::read_to_string(ctx.state_dir("homelab").join(CA_KEY_FILE)).unwrap();
    let all = format!(
        "{}{}",
        ctx.homelab(&["ca", "show"]).stdout,
        ctx.homelab(&["ca", "show", "--output", "json"]).stdout
    );
    assert!(!all.contains("PRIVATE KEY") && !all.contains(key.lines().nth(1).unwrap()));

    let run = ctx.homelab(&["ca", "path"]);
    run.success();
    assert_eq!(
        run.stdout,
        "[HOME]/.local/share/homelab/homelab/ca/ca.crt\n"
    );
    let run = ctx.homelab(&["ca", "path", "--key"]);
    assert_eq!(
        run.stdout,
        "[HOME]/.local/share/homelab/homelab/ca/ca.key\n"
    );
    let run = ctx.homelab(&["ca", "path", "--output", "json", "--lab", "homelab"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap(),
        serde_json::json!({
            "certificate": "[HOME]/.local/share/homelab/homelab/ca/ca.crt",
            "key": "[HOME]/.local/share/homelab/homelab/ca/ca.key",
        })
    );
}

#[test]
fn new_domain_needs_a_deliberate_regenerate() {
    let ctx = TestContext::new();
    ctx.homelab(&["trust", "--domain", DOMAIN]).success();
    let (before, _) = show(&ctx);

    let run = ctx.homelab(&["trust", "--domain", "other.test"]);
    run.failure(1);
    assert_eq!(
        run.stderr,
        "error: domain `other.test` is outside the name constraints of the lab CA `~/.local/share/homelab/homelab/ca/ca.crt`, which may only issue for `sslip.io`, `lab.example.test`\nhint: use a domain under `sslip.io`, `lab.example.test` with `--domain`\nhint: or replace the lab CA with one that covers `other.test`: `homelab ca regenerate --domain other.test` (run `homelab untrust` first if you trusted the old one)\n"
    );
    let (unchanged, _) = show(&ctx);
    assert_eq!(unchanged["sha256"], before["sha256"]);

    // While this computer's ledger records the old CA, replacing it is refused.
    let ledger = ctx.state_dir("homelab").join("trust-ledger.json");
    std::fs::write(
        &ledger,
        r#"{"version":1,"entries":[{"id":"system","title":"system trust store (Debian/Ubuntu)","ca_sha256":"AA","applied":[],"undo":[]}]}"#,
    )
    .unwrap();
    let run = ctx.homelab(&["ca", "regenerate", "--domain", "other.test"]);
    run.failure(1);
    assert_eq!(
        run.stderr,
        "error: this computer still trusts the current CA of lab `homelab` (system trust store (Debian/Ubuntu))\nhint: run `homelab untrust` first, then run this again (and `homelab trust --apply` for the new CA)\n"
    );
    std::fs::remove_file(&ledger).unwrap();

    let run = ctx.homelab(&["ca", "regenerate", "--domain", "other.test"]);
    run.success();
    let (after, _) = show(&ctx);
    assert_ne!(after["sha256"], before["sha256"]);
    assert_eq!(
        after["permitted_dns"],
        serde_json::json!(["sslip.io", "other.test"])
    );
    let old = before["sha256"].as_str().unwrap();
    let new = after["sha256"].as_str().unwrap();
    assert_eq!(
        run.stdout,
        format!(
            "new CA for lab `homelab`\n  old SHA-256  {old}\n  new SHA-256  {new}\n  permitted    sslip.io, other.test\nnext: `homelab up` (it issues the lab's certificates again from the new CA), then `homelab trust --apply` on each computer that should trust it\n"
        )
    );
    // A lab on Multipass VMs: they trust the CA they were launched with, so they are rebuilt.
    std::fs::write(
        ctx.state_dir("homelab").join("cluster.json"),
        r#"{"provider":"multipass","context":"homelab"}"#,
    )
    .unwrap();
    let run = ctx.homelab(&["ca", "regenerate", "--domain", "other.test"]);
    run.success();
    assert!(
        run.stdout.ends_with("next: `homelab up --recreate` (the lab's VMs trust the CA they were launched with, so they are built again), then `homelab trust --apply` on each computer that should trust it\n"),
        "{}",
        run.stdout
    );
    ctx.homelab(&["trust", "--domain", "other.test"]).success();
    ctx.homelab(&["trust", "--domain", DOMAIN]).failure(1);
}
