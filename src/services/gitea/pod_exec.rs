//! Running a command inside a pod: the seam through which the Gitea CLI creates the admin user.
//!
//! Place in the data flow: `gitea::wire` asks a [`PodExec`] to run `gitea admin user …` in the
//! Gitea pod; [`KubePodExec`] does it through the Kubernetes API (`pods/exec` over a websocket),
//! tests use a recording fake. Architecture invariant: secrets go to the command on stdin, never
//! in its argv: the argv travels in the exec URL, which kube-rs logs at debug level.

use futures::future::BoxFuture;

use crate::edges::error::Diagnostic;
use crate::edges::redact::Secret;

/// A command to run in a pod.
#[derive(Clone, Debug)]
pub struct ExecRequest {
    /// Why it runs, for messages ("create the Gitea admin user").
    pub summary: String,
    /// The argv (no secrets: see the module doc).
    pub argv: Vec<String>,
    /// The command as shown in messages and logs.
    pub display: String,
    /// Fed on stdin, then stdin is closed.
    pub stdin: Option<Secret>,
}

/// How a command in a pod ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code; `None` when the runtime did not say.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl ExecOutput {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// The command could not be run at all (the exit code of a command that ran is in
/// [`ExecOutput`]).
#[derive(Debug, thiserror::Error)]
pub enum PodExecError {
    /// No ready pod matched.
    #[error("{summary}: no running pod in namespace `{namespace}` matches `{selector}`")]
    NoPod {
        /// Why the command was to run.
        summary: String,
        /// Namespace.
        namespace: String,
        /// Label selector.
        selector: String,
    },
    /// The Kubernetes API refused or failed.
    #[error("{summary}: exec in pod `{namespace}/{pod}` failed: {message}")]
    Exec {
        /// Why the command was to run.
        summary: String,
        /// Namespace.
        namespace: String,
        /// Pod.
        pod: String,
        /// The error.
        message: String,
    },
    /// Listing pods failed.
    #[error("{summary}: list pods in namespace `{namespace}`: {message}")]
    List {
        /// Why the command was to run.
        summary: String,
        /// Namespace.
        namespace: String,
        /// The error.
        message: String,
    },
}

impl Diagnostic for PodExecError {
    fn hints(&self) -> Vec<String> {
        match self {
            PodExecError::NoPod { namespace, .. } => vec![format!(
                "check Gitea's pod with `kubectl -n {namespace} get pods`; `homelab up` waits for it to be Ready before wiring"
            )],
            PodExecError::Exec { .. } | PodExecError::List { .. } => vec![
                "check that your kubeconfig's user may `create` on `pods/exec` in that namespace"
                    .into(),
            ],
        }
    }
}

/// Runs commands in a pod.
pub trait PodExec: Send + Sync {
    /// Run `req` and report its exit code and output.
    fn exec<'a>(&'a self, req: &'a ExecRequest) -> BoxFuture<'a, Result<ExecOutput, PodExecError>>;
}

/// [`PodExec`] through the Kubernetes API: the first Running pod matching a label selector.
#[derive(Clone)]
pub struct KubePodExec {
    /// The client.
    pub client: kube::Client,
    /// Namespace (`gitea`).
    pub namespace: String,
    /// Label selector of the pod.
    pub selector: String,
    /// Container name; `None` for the pod's only (or default) container.
    pub container: Option<String>,
}

impl KubePodExec {
    async fn find_pod(&self, summary: &str) -> Result<String, PodExecError> {
        use k8s_openapi::api::core::v1::Pod;
        use kube::api::{Api, ListParams};
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = pods
            .list(&ListParams::default().labels(&self.selector))
            .await
            .map_err(|e| PodExecError::List {
                summary: summary.to_string(),
                namespace: self.namespace.clone(),
                message: e.to_string(),
            })?;
        let ready = |p: &Pod| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().is_some_and(|s| {
                    s.phase.as_deref() == Some("Running")
                        && s.conditions.as_ref().is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                })
        };
        list.items
            .iter()
            .filter(|p| ready(p))
            .filter_map(|p| p.metadata.name.clone())
            .min()
            .ok_or_else(|| PodExecError::NoPod {
                summary: summary.to_string(),
                namespace: self.namespace.clone(),
                selector: self.selector.clone(),
            })
    }

    async fn run(&self, req: &ExecRequest) -> Result<ExecOutput, PodExecError> {
        use k8s_openapi::api::core::v1::Pod;
        use kube::api::{Api, AttachParams};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let pod = self.find_pod(&req.summary).await?;
        let fail = |message: String| PodExecError::Exec {
            summary: req.summary.clone(),
            namespace: self.namespace.clone(),
            pod: pod.clone(),
            message,
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut params = AttachParams::default()
            .stdin(req.stdin.is_some())
            .stdout(true)
            .stderr(true);
        if let Some(c) = &self.container {
            params = params.container(c.clone());
        }
        let mut attached = pods
            .exec(&pod, req.argv.clone(), &params)
            .await
            .map_err(|e| fail(e.to_string()))?;
        if let Some(secret) = &req.stdin {
            let mut stdin = attached
                .stdin()
                .ok_or_else(|| fail("no stdin stream".into()))?;
            stdin
                .write_all(format!("{}\n", secret.expose()).as_bytes())
                .await
                .map_err(|e| fail(e.to_string()))?;
            stdin.shutdown().await.map_err(|e| fail(e.to_string()))?;
        }
        let mut stdout = attached.stdout();
        let mut stderr = attached.stderr();
        let status = attached.take_status();
        let read_out = async {
            let mut buf = Vec::new();
            if let Some(s) = stdout.as_mut() {
                let _ = s.read_to_end(&mut buf).await;
            }
            buf
        };
        let read_err = async {
            let mut buf = Vec::new();
            if let Some(s) = stderr.as_mut() {
                let _ = s.read_to_end(&mut buf).await;
            }
            buf
        };
        let (out, err) = tokio::join!(read_out, read_err);
        let status = match status {
            Some(s) => s.await,
            None => None,
        };
        attached.join().await.map_err(|e| fail(e.to_string()))?;
        Ok(ExecOutput {
            code: status.as_ref().map(exit_code),
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
        })
    }
}

/// The exit code in the status the API server sends at the end of an exec: `Success`, or
/// `Failure` with a cause `ExitCode` whose message is the number.
pub fn exit_code(status: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Status) -> i32 {
    if status.status.as_deref() == Some("Success") {
        return 0;
    }
    status
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|causes| {
            causes
                .iter()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
                .and_then(|c| c.message.as_deref())
                .and_then(|m| m.trim().parse().ok())
        })
        .unwrap_or(1)
}

impl PodExec for KubePodExec {
    fn exec<'a>(&'a self, req: &'a ExecRequest) -> BoxFuture<'a, Result<ExecOutput, PodExecError>> {
        tracing::debug!(summary = %req.summary, "exec `{}` in a pod of `{}`", req.display, self.namespace);
        Box::pin(self.run(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};

    #[test]
    fn exit_code_comes_from_the_status_cause() {
        let ok = Status {
            status: Some("Success".into()),
            ..Default::default()
        };
        assert_eq!(exit_code(&ok), 0);
        let failed = Status {
            status: Some("Failure".into()),
            reason: Some("NonZeroExitCode".into()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".into()),
                    message: Some("3".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(exit_code(&failed), 3);
    }
}
