//! YAML in and out — the only module that names the YAML library.
//!
//! The library is `yaml_serde`, the YAML organization's maintained fork of the archived
//! `serde_yaml` (same API and output: every snapshot and error text stayed as it was when it
//! replaced `serde_yaml` 0.9.34).
//!
//! Architecture invariant: no other module (nor test) imports the YAML library, so swapping it
//! is a one-file change; every caller goes through [`from_str`],
//! [`to_string`], [`documents`], [`each_document`] and [`YamlError`]. Dynamic documents are
//! `serde_json::Value`, except where the key order of a file must survive a rewrite
//! (kubeconfigs) or a lenient walk over any document (pipelines): those use [`Value`].
//!
//! Why not `serde-saphyr` (which `kube` brings): measured against this project it would change
//! what users see — its emitter double-quotes and folds long strings (26 of the 85 objects in
//! the render snapshots differ), its type errors carry no dotted key (`vm.cpus`) and other
//! wording (`invalid u32`), it reads YAML 1.1 `yes`/`on`/`no` as booleans and `010` as a number,
//! merges `<<` keys and refuses duplicate keys by default.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// An ordered dynamic YAML document: mappings keep their keys in file order.
pub type Value = yaml_serde::Value;

/// The mapping inside a [`Value`], keys in insertion order.
pub type Mapping = yaml_serde::Mapping;

/// A YAML parse or type error with its position, when the parser knows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    /// What is wrong, without the position (e.g. "vm: unknown field `cpu`, expected …").
    pub message: String,
    /// 1-based line, if known.
    pub line: Option<usize>,
    /// 1-based column, if known.
    pub column: Option<usize>,
    /// The parser's whole text, position included.
    full: String,
}

impl YamlError {
    fn from_lib(err: yaml_serde::Error) -> Self {
        let (line, column) = match err.location() {
            Some(loc) => (Some(loc.line()), Some(loc.column())),
            None => (None, None),
        };
        let full = err.to_string();
        let mut message = full.clone();
        // The library appends " at line L column C"; the position is kept separately.
        if let Some(idx) = message.find(" at line ") {
            message.truncate(idx);
        }
        YamlError {
            message,
            line,
            column,
            full,
        }
    }

    /// The parser's whole text, as it words it, position included (e.g. "… at line 3 column 5");
    /// the position is the one within the text that was parsed.
    pub fn full(&self) -> &str {
        &self.full
    }

    /// What kind of problem this is, with the dotted key it concerns.
    pub fn problem(&self) -> Problem {
        let (path, rest) = split_path(&self.message);
        if let Some(after) = rest.strip_prefix("unknown field `")
            && let Some(end) = after.find('`')
        {
            let field = &after[..end];
            let key = match path {
                Some(p) => format!("{p}.{field}"),
                None => field.to_string(),
            };
            // after[end..] is "`, expected one of `a`, `b`": the names are every other piece.
            let expected = after[end..]
                .split('`')
                .skip(2)
                .step_by(2)
                .map(str::to_string)
                .collect();
            return Problem::UnknownKey { key, expected };
        }
        let typed = [
            "invalid type",
            "invalid value",
            "invalid length",
            "unknown variant",
            "missing field",
        ];
        if path.is_some() || typed.iter().any(|t| rest.starts_with(t)) {
            return Problem::BadValue {
                key: path.map(str::to_string),
                message: rest.to_string(),
            };
        }
        Problem::Syntax {
            message: self.message.clone(),
        }
    }

    /// "line L, column C" when known.
    pub fn position(&self) -> Option<String> {
        match (self.line, self.column) {
            (Some(l), Some(c)) => Some(format!("line {l}, column {c}")),
            (Some(l), None) => Some(format!("line {l}")),
            _ => None,
        }
    }
}

/// A [`YamlError`] read as a problem with a document's keys or values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A key the target type does not have (`vm.cpu`), with the keys it does have.
    UnknownKey {
        /// Dotted path of the unknown key.
        key: String,
        /// The keys accepted at that level.
        expected: Vec<String>,
    },
    /// A value of the wrong type, or a missing required key.
    BadValue {
        /// Dotted path of the value, when known (`None` at the top level).
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// The text is not YAML.
    Syntax {
        /// Parser message.
        message: String,
    },
}

/// The library prefixes errors inside nested values with the dotted path and ": ".
fn split_path(message: &str) -> (Option<&str>, &str) {
    if let Some((head, tail)) = message.split_once(": ")
        && !head.is_empty()
        && head
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '-'))
    {
        return (Some(head), tail);
    }
    (None, message)
}

/// Deserialize one YAML document into `T`.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    yaml_serde::from_str(text).map_err(YamlError::from_lib)
}

/// Serialize `value` as one YAML document (no leading `---`).
///
/// The emitter follows YAML 1.2, where `no`, `yes`, `on`, `off`, `y` and `n` are plain strings;
/// Kubernetes reads manifests as YAML 1.1 (sigs.k8s.io/yaml over go-yaml v2), where they are
/// booleans. Such string values are written quoted, so `kubectl apply -f` of what homelab
/// writes reads what homelab meant (Argo CD's redis runs with the args `--appendonly "no"`).
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String, YamlError> {
    yaml_serde::to_string(value)
        .map(|t| quote_yaml11_booleans(&t))
        .map_err(YamlError::from_lib)
}

/// The words YAML 1.1 resolves to booleans that YAML 1.2 (and so the emitter) leaves plain.
const YAML11_BOOLEANS: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
    "OFF",
];

/// Quote plain scalar values (`key: no`, `- no`) that YAML 1.1 would read as booleans; block
/// scalars' content is left alone.
fn quote_yaml11_booleans(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // The indentation of the line that opened a block scalar (`key: |`, `- |-`) being read.
    let mut block: Option<usize> = None;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let indent = body.len() - body.trim_start_matches(' ').len();
        if let Some(at) = block {
            if body.trim().is_empty() || indent > at {
                out.push_str(line);
                continue;
            }
            block = None;
        }
        let opens_block = body.rsplit_once(' ').is_some_and(|(_, last)| {
            last.starts_with(['|', '>'])
                && last[1..]
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '-' || c == '+')
        });
        if opens_block {
            block = Some(indent);
            out.push_str(line);
            continue;
        }
        let quoted = [": ", "- "].iter().find_map(|sep| {
            let (head, word) = body.rsplit_once(sep)?;
            (YAML11_BOOLEANS.contains(&word)
                && (*sep == ": " || head.trim_start_matches(['-', ' ']).is_empty()))
            .then(|| format!("{head}{sep}'{word}'"))
        });
        match quoted {
            Some(q) => {
                out.push_str(&q);
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(line),
        }
    }
    out
}

/// Split a multi-document YAML stream into JSON values, skipping empty documents
/// (a lone `---`, comments only). Each document is returned with the 1-based line it starts on.
pub fn documents(text: &str) -> Result<Vec<(usize, serde_json::Value)>, YamlError> {
    let mut out = Vec::new();
    for (start_line, chunk) in split_documents(text) {
        let value: serde_json::Value = match yaml_serde::from_str(&chunk) {
            Ok(v) => v,
            Err(e) => {
                let mut err = YamlError::from_lib(e);
                err.line = err.line.map(|l| l + start_line - 1);
                return Err(err);
            }
        };
        if value.is_null() {
            continue;
        }
        out.push((start_line, value));
    }
    Ok(out)
}

/// Every document of a multi-document stream as the parser splits it, each parsed on its own:
/// a bad document does not hide the ones after it. Empty documents are `Null`. A syntax error
/// ends the stream there (the parser cannot resume after one; it would repeat it forever).
pub fn each_document(text: &str) -> Vec<Result<Value, YamlError>> {
    use serde::Deserialize as _;
    let mut out: Vec<Result<Value, YamlError>> = Vec::new();
    for doc in yaml_serde::Deserializer::from_str(text) {
        let next = Value::deserialize(doc).map_err(YamlError::from_lib);
        if let (Err(e), Some(Err(last))) = (&next, out.last())
            && e == last
        {
            break;
        }
        out.push(next);
    }
    out
}

/// Serialize several values as one multi-document stream, each document preceded by `---`.
pub fn to_documents<T: Serialize>(values: &[T]) -> Result<String, YamlError> {
    let mut out = String::new();
    for v in values {
        out.push_str("---\n");
        out.push_str(&to_string(v)?);
    }
    Ok(out)
}

/// Quote a string as a YAML double-quoted scalar (JSON string syntax is valid YAML), so any
/// value — passwords, PEM blocks, hostnames — lands in a template as exactly one scalar.
pub fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// Split on `---` document markers at column 0, remembering where each document starts.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (idx, line) in text.lines().enumerate() {
        let is_marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_marker {
            if !current.trim().is_empty() {
                docs.push((start, std::mem::take(&mut current)));
            }
            current.clear();
            start = idx + 2;
            // Content after the marker on the same line belongs to the new document.
            let rest = line[3..].trim_start();
            if !rest.is_empty() && !rest.starts_with('#') {
                current.push_str(rest);
                current.push('\n');
                start = idx + 1;
            }
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    if !current.trim().is_empty() {
        docs.push((start, current));
    }
    docs
}

#[cfg(test)]
mod tests {
    #[test]
    fn yaml_1_1_booleans_are_written_quoted_outside_block_scalars() {
        let v = serde_json::json!({
            "args": ["--appendonly", "no", "yes-really"],
            "switch": "off",
            "script": "a\n- no\nb: yes\n",
            "plain": "no way",
        });
        let text = super::to_string(&v).unwrap();
        assert_eq!(
            text,
            "args:\n- --appendonly\n- 'no'\n- yes-really\nplain: no way\nscript: |\n  a\n  - no\n  b: yes\nswitch: 'off'\n"
        );
        // And it reads back as written.
        let back: serde_json::Value = super::from_str(&text).unwrap();
        assert_eq!(back, v);
    }

    use super::*;

    #[test]
    fn splits_documents_and_keeps_start_lines() {
        let text = "a: 1\n---\n# only a comment\n---\nb: 2\nc: 3\n";
        let docs = documents(text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].0, 1);
        assert_eq!(docs[1].0, 5);
        assert_eq!(docs[1].1["c"], 3);
    }

    #[test]
    fn error_line_is_relative_to_the_whole_stream() {
        let text = "a: 1\n---\nb: [\n";
        let err = documents(text).unwrap_err();
        assert!(err.line.unwrap() >= 3, "{err:?}");
    }

    #[test]
    fn each_document_goes_on_after_a_bad_document_and_stops_at_a_syntax_error() {
        let docs = each_document("a: 1\n---\n*x\n---\nc: 3\n");
        assert_eq!(docs.len(), 4, "{docs:?}");
        assert!(docs[1].is_err());
        assert_eq!(docs[3].as_ref().unwrap()["c"].as_u64(), Some(3));
        let docs = each_document("a: 1\n---\nb: [\n---\nc: 3\n");
        assert_eq!(docs.len(), 2, "{docs:?}");
        let err = docs[1].as_ref().unwrap_err();
        assert!(err.full().contains(" at line 4 column 1"), "{}", err.full());
    }

    #[test]
    fn quote_escapes_newlines_and_quotes() {
        let q = quote("a\"b\nc: d");
        let back: String = from_str(&q).unwrap();
        assert_eq!(back, "a\"b\nc: d");
    }

    #[test]
    fn type_error_has_position_without_suffix() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct S {
            x: u32,
        }
        let err = from_str::<S>("x: 1\ny: 2\n").unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(err.message.contains("unknown field `y`"), "{}", err.message);
        assert!(!err.message.contains(" at line "));
    }
}
