//! git's smart HTTP protocol served by the real `git http-backend` as a CGI program, over the
//! repositories under a root folder (`GIT_PROJECT_ROOT`), the way Gitea serves
//! `/<owner>/<repo>.git/…`; and the git commands the test servers run, kept away from the
//! user's and the system's git configuration.

use std::path::Path;
use std::process::Stdio;

use http::{HeaderMap, HeaderValue, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `git` with no system or global configuration (and a fixed author), so tests see the same
/// git on every machine.
pub fn git_command() -> std::process::Command {
    let mut cmd = std::process::Command::new("git");
    cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.test")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.test")
        .stdin(Stdio::null());
    cmd
}

/// Run `git -C dir args…` (a work tree or a bare repository); panics with git's error when it
/// fails, else its output as it is.
pub fn git_output(dir: &Path, args: &[&str]) -> String {
    let out = git_command()
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// [`git_output`], trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    git_output(dir, args).trim().to_string()
}

/// Create a bare repository `<root>/<owner>/<name>.git` with `main` as HEAD.
pub fn init_bare(root: &Path, owner: &str, name: &str, object_format: &str) {
    let dir = root.join(owner).join(format!("{name}.git"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = git_command()
        .args(["init", "-q", "--bare", "--initial-branch=main"])
        .arg(format!("--object-format={object_format}"))
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `git http-backend` for one request on the repositories under `root` and turn its CGI
/// answer into a response. `remote_user` is the authenticated user, if any: http-backend enables
/// receive-pack (push) only for one.
pub async fn serve(
    root: &Path,
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    remote_user: Option<&str>,
) -> Response<Vec<u8>> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
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
        .env("CONTENT_TYPE", header("content-type").unwrap_or(""))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Protocol v2 and gzip-compressed requests, when the client asks for them.
    if let Some(p) = header("git-protocol") {
        cmd.env("GIT_PROTOCOL", p);
    }
    if let Some(e) = header("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", e);
    }
    if let Some(u) = remote_user {
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
    let mut stderr = Vec::new();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let (r1, r2) = tokio::join!(out.read_to_end(&mut stdout), err.read_to_end(&mut stderr));
    r1.unwrap();
    r2.unwrap();
    let _ = writer.await;
    let _ = child.wait().await;
    let Some((head_end, body_start)) = header_end(&stdout) else {
        return Response::builder()
            .status(500)
            .body(format!("http-backend: {}", String::from_utf8_lossy(&stderr)).into_bytes())
            .unwrap();
    };
    // CGI: headers (`Status:` among them), a blank line, the body.
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
            resp = resp.header(k.trim(), value);
        }
    }
    resp.body(stdout[body_start..].to_vec()).unwrap()
}

fn header_end(out: &[u8]) -> Option<(usize, usize)> {
    if let Some(i) = out.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some((i, i + 4));
    }
    out.windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2))
}
