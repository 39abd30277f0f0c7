//! `pods/{name}/exec` over a websocket, as the API server (and the kubelet behind it) serve it
//! to kube-rs's `Api::exec`: the `v5.channel.k8s.io` or `v4.channel.k8s.io` subprotocol, binary
//! frames whose first byte is the channel (0 stdin, 1 stdout, 2 stderr, 3 the exit `Status` as
//! JSON, 255 "close channel" in v5), a one-byte frame per output channel when the stream opens.
//!
//! The command does not run in a container: a test-provided [`ExecHandler`] plays the program
//! (e.g. the Gitea CLI against the fake Gitea). The fake reads stdin to its end first (v5's
//! close frame, or the socket closing in v4), then runs the handler and sends its output and
//! status. Refused like the API server refuses: no upgrade (400), no command (400), no stream
//! asked for (400), unknown pod (404), unknown or ambiguous container (400), a pod that is not
//! Running (400).

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper::{HeaderMap, Method, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::Inner;
use super::server::Body;
use super::store::ApiError;

/// One command run in a pod.
#[derive(Clone, Debug)]
pub struct ExecCall {
    pub namespace: String,
    pub pod: String,
    /// The container it ran in (the pod's only one when the request named none).
    pub container: String,
    pub command: Vec<String>,
    /// What the client sent on stdin, when it asked for stdin.
    pub stdin: Option<Vec<u8>>,
}

/// How it ended.
#[derive(Clone, Debug, Default)]
pub struct ExecResult {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Plays the programs run in pods.
pub type ExecHandler = Arc<dyn Fn(ExecCall) -> BoxFuture<'static, ExecResult> + Send + Sync>;

const SUBPROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

fn refuse(code: u16, reason: &'static str, message: String) -> Response<Body> {
    let e = ApiError::new(code, reason, message);
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
            bytes::Bytes::from(serde_json::to_vec(&e.status()).unwrap()),
        )))
        .unwrap()
}

/// Answer an exec request: refuse it, or switch protocols and run the command.
pub fn handle(
    inner: &Arc<Inner>,
    namespace: &str,
    pod: &str,
    method: &Method,
    query: &[(String, String)],
    headers: &HeaderMap,
    upgrade: OnUpgrade,
) -> Response<Body> {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let flag = |k: &str| {
        query
            .iter()
            .any(|(n, v)| n == k && (v == "true" || v == "1"))
    };
    if !matches!(*method, Method::GET | Method::POST) {
        return refuse(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported"),
        );
    }
    if !header("upgrade").eq_ignore_ascii_case("websocket")
        || !header("connection")
            .to_ascii_lowercase()
            .contains("upgrade")
    {
        return refuse(400, "BadRequest", "Upgrade request required".into());
    }
    let command: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if command.is_empty() {
        return refuse(
            400,
            "BadRequest",
            "you must specify at least 1 command".into(),
        );
    }
    let (stdin, stdout, stderr) = (flag("stdin"), flag("stdout"), flag("stderr"));
    if !stdin && !stdout && !stderr {
        return refuse(
            400,
            "BadRequest",
            "you must specify at least one of stdin, stdout, stderr".into(),
        );
    }
    let obj = {
        let store = inner.store.lock().unwrap();
        store
            .objects
            .get(&(String::new(), "pods".into(), namespace.into(), pod.into()))
            .cloned()
    };
    let Some(obj) = obj else {
        return refuse(404, "NotFound", format!("pods \"{pod}\" not found"));
    };
    let containers: Vec<String> = obj
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let container = match query.iter().find(|(k, _)| k == "container") {
        Some((_, c)) if containers.contains(c) => c.clone(),
        Some((_, c)) => {
            return refuse(
                400,
                "BadRequest",
                format!("container {c} is not valid for pod {pod}"),
            );
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return refuse(
                400,
                "BadRequest",
                format!(
                    "a container name must be specified for pod {pod}, choose one of: [{}]",
                    containers.join(" ")
                ),
            );
        }
    };
    let phase = obj
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    if phase != "Running" {
        return refuse(
            400,
            "BadRequest",
            format!("unable to upgrade connection: pod {pod} is {phase}, not Running"),
        );
    }
    let offered = header("sec-websocket-protocol");
    let Some(protocol) = offered
        .split(',')
        .map(str::trim)
        .find(|p| SUBPROTOCOLS.contains(p))
        .map(str::to_string)
    else {
        return refuse(
            400,
            "BadRequest",
            format!("the fake speaks only {SUBPROTOCOLS:?}, the client offered `{offered}`"),
        );
    };
    let key = header("sec-websocket-key");
    let handler = inner.exec.lock().unwrap().clone();
    let call = ExecCall {
        namespace: namespace.into(),
        pod: pod.into(),
        container,
        command,
        stdin: stdin.then(Vec::new),
    };
    let v5 = protocol.starts_with("v5");
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        run(ws, call, handler, v5, stdout, stderr).await;
    });
    Response::builder()
        .status(101)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .header("sec-websocket-protocol", protocol)
        .body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
            bytes::Bytes::new(),
        )))
        .unwrap()
}

async fn run<S>(
    mut ws: WebSocketStream<S>,
    mut call: ExecCall,
    handler: Option<ExecHandler>,
    v5: bool,
    stdout: bool,
    stderr: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // The stream opens with a one-byte frame per channel the server writes to.
    for ch in [1u8, 2, 3] {
        if ws.send(Message::binary(vec![ch])).await.is_err() {
            return;
        }
    }
    let mut closed = false;
    if let Some(buf) = call.stdin.as_mut() {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Binary(b)) if b.first() == Some(&0) => buf.extend_from_slice(&b[1..]),
                Ok(Message::Binary(b)) if v5 && b.as_ref() == [255, 0] => break,
                Ok(Message::Close(_)) | Err(_) => {
                    closed = true;
                    break;
                }
                Ok(_) => {}
            }
        }
    }
    let result = match handler {
        Some(h) => h(call.clone()).await,
        None => ExecResult {
            code: 127,
            stdout: Vec::new(),
            stderr: format!("{}: not found\n", call.command[0]).into_bytes(),
        },
    };
    if closed {
        // v4 can only say "end of stdin" by closing the socket: the output has nowhere to go.
        return;
    }
    let mut frames = Vec::new();
    if stdout && !result.stdout.is_empty() {
        frames.push([&[1u8][..], &result.stdout].concat());
    }
    if stderr && !result.stderr.is_empty() {
        frames.push([&[2u8][..], &result.stderr].concat());
    }
    let status = if result.code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command {:?}, exit code {}",
                call.command, result.code
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": result.code.to_string()}]},
        })
    };
    frames.push([&[3u8][..], &serde_json::to_vec(&status).unwrap()].concat());
    for f in frames {
        if ws.send(Message::binary(f)).await.is_err() {
            return;
        }
    }
    let _ = ws.close(None).await;
}
