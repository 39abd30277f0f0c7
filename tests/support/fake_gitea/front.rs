//! The ingress in front of Gitea as a lab sees it right after deploy, for tests of the first
//! call's wait: a port that refuses connections (the controller is not listening yet), then
//! serves a certificate no lab client trusts (the NGINX Ingress Controller's default server,
//! before cert-manager has written the Secret the Ingress names), an HTTP error answer (no ready
//! backend), and at last passes every connection through to the fake Gitea. The test switches
//! between these with [`FrontDoor::set`]; a switch takes effect for the next connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::super::http_kit::tls::{acceptor, lab_ca, leaf};
use super::HOST;
use homelab::model::tls::LabCa;

/// What the door does with a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Door {
    /// Nothing listens: connections are refused.
    Closed,
    /// TLS with a certificate for Gitea's name from a CA the lab does not know.
    WrongCert,
    /// TLS with the right certificate, then this HTTP status for every request.
    Status(u16),
    /// Every connection is passed through to the backend.
    Open,
}

/// A port the test controls, in front of a backend.
pub struct FrontDoor {
    pub addr: SocketAddr,
    backend: SocketAddr,
    wrong: TlsAcceptor,
    right: TlsAcceptor,
    mode: Arc<Mutex<Door>>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Connections accepted, per mode, for assertions.
    pub accepted: Arc<Mutex<Vec<Door>>>,
}

impl FrontDoor {
    /// A closed door on a free port of 127.0.0.1; `ca` signs the right certificate.
    pub async fn closed(ca: &LabCa) -> FrontDoor {
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let (cert, key) = leaf(ca, HOST);
        let other = lab_ca("not the lab", None);
        let (wrong_cert, wrong_key) = leaf(&other, HOST);
        FrontDoor {
            addr,
            backend: addr,
            wrong: acceptor(&wrong_cert, &wrong_key),
            right: acceptor(&cert, &key),
            mode: Arc::new(Mutex::new(Door::Closed)),
            task: Mutex::new(None),
            accepted: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Pass connections through to `backend` once the door is [`Door::Open`].
    pub fn backend(mut self, backend: SocketAddr) -> FrontDoor {
        self.backend = backend;
        self
    }

    /// Change what the door does (from the next connection on).
    pub async fn set(&self, door: Door) {
        *self.mode.lock().unwrap() = door.clone();
        if door == Door::Closed {
            let task = self.task.lock().unwrap().take();
            if let Some(t) = task {
                // The listener goes with the task: wait until it is gone, so the port refuses.
                t.abort();
                let _ = t.await;
            }
            return;
        }
        if self.task.lock().unwrap().is_some() {
            return;
        }
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        let listener = socket.listen(64).unwrap();
        let (wrong, right, backend, accepted, mode) = (
            self.wrong.clone(),
            self.right.clone(),
            self.backend,
            self.accepted.clone(),
            self.mode.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let door = mode.lock().unwrap().clone();
                accepted.lock().unwrap().push(door.clone());
                let (wrong, right) = (wrong.clone(), right.clone());
                tokio::spawn(async move { serve(stream, door, wrong, right, backend).await });
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }
}

impl Drop for FrontDoor {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }
}

async fn serve(
    mut stream: TcpStream,
    door: Door,
    wrong: TlsAcceptor,
    right: TlsAcceptor,
    backend: SocketAddr,
) {
    match door {
        Door::Closed => {}
        // The client refuses the certificate: the handshake fails on its side.
        Door::WrongCert => {
            let _ = wrong.accept(stream).await;
        }
        Door::Status(code) => {
            let Ok(mut tls) = right.accept(stream).await else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let body = format!("<html><body>{code}</body></html>");
            let reason = axum::http::StatusCode::from_u16(code)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error");
            let answer = format!(
                "HTTP/1.1 {code} {reason}\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(answer.as_bytes()).await;
            let _ = tls.shutdown().await;
        }
        Door::Open => {
            let Ok(mut to) = TcpStream::connect(backend).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut stream, &mut to).await;
        }
    }
}
