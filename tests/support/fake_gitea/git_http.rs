//! git's smart HTTP protocol served by the real `git http-backend` as a CGI program, over bare
//! repositories in a temp directory, the way Gitea serves `/<owner>/<repo>.git/…`.

use std::path::Path;
use std::process::Stdio;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Create a bare repository `<root>/<owner>/<name>.git` with `main` as HEAD.
pub fn init_bare(root: &Path, owner: &str, name: &str, object_format: &str) {
    let dir = root.join(owner).join(format!("{name}.git"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new("git")
        .args(["init", "-q", "--bare", "--initial-branch=main"])
        .arg(format!("--object-format={object_format}"))
        .arg(&dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `git http-backend` for one request and turn its CGI answer into a response.
pub async fn serve(
    root: &Path,
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    remote_user: Option<&str>,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REQUEST_METHOD", method)
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(u) = remote_user {
        // http-backend enables receive-pack only for an authenticated user.
        cmd.env("REMOTE_USER", u);
    }
    let mut child = cmd.spawn().expect("git http-backend starts");
    let mut stdin = child.stdin.take().unwrap();
    let body = body.to_vec();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
        drop(stdin);
    });
    let mut stdout = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .await
        .unwrap();
    let mut stderr = Vec::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .await
        .unwrap();
    let _ = writer.await;
    let _ = child.wait().await;
    let split = find_header_end(&stdout);
    let Some((head_end, body_start)) = split else {
        return Response::builder()
            .status(500)
            .body(format!("http-backend: {}", String::from_utf8_lossy(&stderr)).into())
            .unwrap();
    };
    let head = String::from_utf8_lossy(&stdout[..head_end]).into_owned();
    let mut resp = Response::builder().status(200);
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            let code: u16 = v
                .split_whitespace()
                .next()
                .unwrap_or("500")
                .parse()
                .unwrap_or(500);
            resp = resp.status(StatusCode::from_u16(code).unwrap());
        } else if let Ok(value) = HeaderValue::from_str(v) {
            resp = resp.header(k, value);
        }
    }
    resp.body(stdout[body_start..].to_vec().into()).unwrap()
}

fn find_header_end(out: &[u8]) -> Option<(usize, usize)> {
    if let Some(i) = out.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some((i, i + 4));
    }
    out.windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2))
}
