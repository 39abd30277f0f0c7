//! The edges every layer above goes through, each one seam: processes, git, HTTPS, the lab's
//! state on disk, upstream downloads, YAML, redaction, output and progress, errors.

pub mod digest;
pub mod error;
pub mod git;
pub mod http;
pub mod output;
pub mod process;
pub mod redact;
pub mod state;
pub mod tools;
pub mod yaml;
