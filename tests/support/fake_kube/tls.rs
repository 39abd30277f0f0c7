//! HTTPS with client certificates for the fake API server, as microk8s serves its API: the
//! cluster's own CA (not the lab CA) signs the server certificate, issued for the node's IP
//! address, and the x509 client certificates `microk8s config` hands out. A client without a
//! certificate that CA signed fails the handshake, as with a real API server that has anonymous
//! access off.
//!
//! The client certificate's common name is the user the request log records (`admin` for the
//! microk8s kubeconfig), so tests can tell `homelab up`'s requests from the sync engine's.

use std::net::IpAddr;
use std::sync::Arc;

use super::http_kit::tls::{certs, key, provider};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

/// The cluster CA and what it signed for one API server.
#[derive(Clone)]
pub struct ClusterPki {
    /// The cluster CA certificate, PEM (`certificate-authority-data`).
    pub ca_pem: String,
    ca_key_pem: String,
    /// The API server's certificate and key, PEM.
    server_cert_pem: String,
    server_key_pem: String,
}

/// A client identity: certificate and key, PEM (`client-certificate-data`, `client-key-data`).
#[derive(Clone, Debug)]
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
}

fn validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(2);
}

impl ClusterPki {
    /// A fresh cluster CA and a server certificate for `ip` (and `127.0.0.1`, `localhost`).
    pub fn generate(ip: IpAddr) -> ClusterPki {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, "10.152.183.1");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut ca);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let ca_pem = ca_cert.pem();
        let ca_key_pem = ca_key.serialize_pem();

        let issuer = Issuer::from_ca_cert_pem(&ca_pem, KeyPair::from_pem(&ca_key_pem).unwrap())
            .expect("cluster CA");
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::IpAddress(ip));
        if ip != IpAddr::from([127, 0, 0, 1]) {
            params
                .subject_alt_names
                .push(rcgen::SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut params);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        ClusterPki {
            ca_pem,
            ca_key_pem,
            server_cert_pem: cert.pem(),
            server_key_pem: key.serialize_pem(),
        }
    }

    /// A client certificate for `user` (its common name), signed by the cluster CA.
    pub fn client(&self, user: &str) -> ClientCert {
        let issuer =
            Issuer::from_ca_cert_pem(&self.ca_pem, KeyPair::from_pem(&self.ca_key_pem).unwrap())
                .unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, user);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        ClientCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// The server side: the API server certificate, client certificates required.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let provider = provider();
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(&self.ca_pem) {
            roots.add(c).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&self.server_cert_pem), key(&self.server_key_pem))
            .unwrap();
        // kube-rs speaks HTTP/1.1 to the API server (and needs it for exec's upgrade).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// The common name of a peer certificate (DER), the user name Kubernetes takes from it.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}
