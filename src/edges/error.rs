//! The error every command returns, and how it is printed: `error: …`, then `hint: …` lines.
//!
//! Architecture invariant: domain modules define their own `thiserror` enums and implement
//! [`Diagnostic`] to attach hints; they convert into [`Error`] with `?`. Only `main` prints errors.
//! Messages name the object, put commands and paths in backticks, and end without a period.

use std::fmt;

/// A domain error that knows what the user can do about it.
pub trait Diagnostic: std::error::Error {
    /// Advice lines printed after the error, each as `hint: …`.
    fn hints(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The top-level error: a message, the chain of causes, and hints.
pub struct Error {
    message: String,
    causes: Vec<String>,
    hints: Vec<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Result with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error from a plain message.
    pub fn msg(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            causes: Vec::new(),
            hints: Vec::new(),
            source: None,
        }
    }

    /// Add a hint line.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    /// Wrap this error under a higher-level message; the old message becomes a cause.
    pub fn context(mut self, message: impl Into<String>) -> Self {
        let old = std::mem::replace(&mut self.message, message.into());
        self.causes.insert(0, old);
        self
    }

    /// The top message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The hints.
    pub fn hints(&self) -> &[String] {
        &self.hints
    }

    /// The causes, outermost first.
    pub fn causes(&self) -> &[String] {
        &self.causes
    }

    /// The domain error this was made from, if any, for callers that branch on it.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.source.as_deref().and_then(|s| s.downcast_ref::<E>())
    }

    /// Render as the CLI prints it (without colour).
    pub fn render(&self) -> String {
        let mut out = format!("error: {}", self.message);
        for cause in &self.causes {
            for (i, line) in cause.lines().enumerate() {
                if i == 0 {
                    out.push_str(&format!("\n  caused by: {line}"));
                } else {
                    out.push_str(&format!("\n    {line}"));
                }
            }
        }
        for hint in &self.hints {
            out.push_str(&format!("\nhint: {hint}"));
        }
        out
    }
}

impl<E> From<E> for Error
where
    E: Diagnostic + Send + Sync + 'static,
{
    fn from(err: E) -> Self {
        let hints = err.hints();
        let message = err.to_string();
        let mut causes = Vec::new();
        let mut src = std::error::Error::source(&err);
        while let Some(s) = src {
            let text = s.to_string();
            if !message.contains(&text) {
                causes.push(text);
            }
            src = s.source();
        }
        Error {
            message,
            causes,
            hints,
            source: Some(Box::new(err)),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        for c in &self.causes {
            write!(f, ": {c}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// Attach context to any fallible result.
pub trait ResultExt<T> {
    /// On error, wrap it under `message`.
    fn context(self, message: impl Into<String>) -> Result<T>;
    /// Like [`ResultExt::context`], with the message built lazily.
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn context(self, message: impl Into<String>) -> Result<T> {
        self.map_err(|e| e.into().context(message))
    }
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| e.into().context(f()))
    }
}

/// I/O errors name the path they happened on.
#[derive(Debug, thiserror::Error)]
#[error("{action} `{path}`")]
pub struct IoError {
    /// What was being done ("read", "write", "create directory").
    pub action: &'static str,
    /// The path it was done to.
    pub path: std::path::PathBuf,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

impl Diagnostic for IoError {
    fn hints(&self) -> Vec<String> {
        match self.source.kind() {
            std::io::ErrorKind::PermissionDenied => vec![format!(
                "check the permissions of `{}` and its parent directory",
                self.path.display()
            )],
            std::io::ErrorKind::NotFound if self.action == "read" => {
                vec![format!("check that `{}` exists", self.path.display())]
            }
            _ => Vec::new(),
        }
    }
}

/// Shorthand to build an [`IoError`] mapper: `fs::read(p).map_err(io_err("read", p))`.
pub fn io_err(
    action: &'static str,
    path: impl AsRef<std::path::Path>,
) -> impl FnOnce(std::io::Error) -> IoError {
    let path = path.as_ref().to_path_buf();
    move |source| IoError {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_error_causes_and_hints() {
        let e = Error::msg("inner problem")
            .context("apply `Deployment/gitea` in `gitea`")
            .hint("run `homelab status`");
        assert_eq!(
            e.render(),
            "error: apply `Deployment/gitea` in `gitea`\n  caused by: inner problem\nhint: run `homelab status`"
        );
    }
}
