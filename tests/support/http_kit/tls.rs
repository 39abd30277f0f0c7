//! HTTPS for the test servers: a server certificate from the lab CA (issued by the library's own
//! `homelab::model::tls::issue_leaf`, as cert-manager would), rustls server configurations, a listener
//! for axum that completes handshakes off the accept path, and an accept loop for hyper servers
//! (plain or TLS, optionally with client certificates) that stops on a notification.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use homelab::model::tls::{LabCa, LeafSpec};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A fresh lab CA called `name`, valid from now, its names constrained as
/// `homelab::model::tls::permitted_domains(domain)` says (the lab's domain, or the defaults).
pub fn lab_ca(name: &str, domain: Option<&str>) -> LabCa {
    homelab::model::tls::generate(
        name,
        &homelab::model::tls::permitted_domains(domain),
        time::OffsetDateTime::now_utc(),
    )
    .expect("a lab CA")
}

/// A server certificate (PEM) for `host` signed by `ca`, and its key (PEM); valid from an hour
/// ago, so a client's clock a little behind still accepts it.
pub fn leaf(ca: &LabCa, host: &str) -> (String, String) {
    let now = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let mut spec = LeafSpec::for_names(&[host], now);
    spec.common_name = Some(host.to_string());
    let leaf = homelab::model::tls::issue_leaf(ca, &spec).expect("a leaf from the lab CA");
    (leaf.cert_pem, leaf.key_pem.expose().to_string())
}

/// Every certificate of a PEM text.
pub fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The private key of a PEM text.
pub fn key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// The ring crypto provider every test server uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server speaking HTTP/1.1 with this certificate chain and key (PEM), no client certificates.
pub fn server_config(cert_pem: &str, key_pem: &str) -> rustls::ServerConfig {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs(cert_pem), key(key_pem))
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// [`server_config`] as an acceptor.
pub fn acceptor(cert_pem: &str, key_pem: &str) -> TlsAcceptor {
    TlsAcceptor::from(Arc::new(server_config(cert_pem, key_pem)))
}

/// Accepts TCP connections and hands over those whose TLS handshake succeeded.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Listen on a free port of 127.0.0.1 with this certificate chain and key (PEM).
    pub async fn bind(cert_pem: &str, key_pem: &str) -> TlsListener {
        let acceptor = acceptor(cert_pem, key_pem);
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = tcp.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let Ok((stream, addr)) = tcp.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    // A client that does not trust the certificate fails here; that is what
                    // some tests want to see, so it is not an error of the server.
                    if let Ok(tls) = acceptor.accept(stream).await {
                        let _ = tx.send((tls, addr)).await;
                    }
                });
            }
        });
        TlsListener { rx, local }
    }

    /// Listen for `host` with a leaf from `ca` ([`leaf`]).
    pub async fn for_host(ca: &LabCa, host: &str) -> TlsListener {
        let (cert, key) = leaf(ca, host);
        TlsListener::bind(&cert, &key).await
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// A byte stream a hyper server can serve: plain TCP or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// One accepted connection.
pub struct Conn {
    pub io: Box<dyn Io>,
    /// The client's certificate (DER), when it showed one over TLS.
    pub peer_cert: Option<Vec<u8>>,
}

/// Accept connections on `listener` until `shutdown` is notified, each served by `serve` on its
/// own task; with `tls`, after a TLS handshake (a client that fails it is dropped: it does not
/// trust the certificate, or has no client certificate the acceptor requires).
pub fn accept_loop<F, Fut>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: Arc<Notify>,
    serve: F,
) where
    F: Fn(Conn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
                _ = shutdown.notified() => return,
            };
            let (tls, serve) = (tls.clone(), serve.clone());
            tokio::spawn(async move {
                let Some(acceptor) = tls else {
                    serve(Conn {
                        io: Box::new(stream),
                        peer_cert: None,
                    })
                    .await;
                    return;
                };
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let peer_cert = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.to_vec());
                serve(Conn {
                    io: Box::new(stream),
                    peer_cert,
                })
                .await;
            });
        }
    });
}
