//! The embedded tera templates and how they are rendered: strict, YAML-escaped, deterministic.
//!
//! Architecture invariant: pure. Every template under `templates/` is compiled into the binary;
//! an undefined variable is an error; in `.yaml` templates every interpolated value is written
//! as a quoted YAML scalar, so no value (a password, a PEM block, a hostname) can change the
//! document's structure. The context is built in one place, `render::context`.

use tera::Tera;

use crate::edges::error::Diagnostic;
use crate::model::assets;

/// A template failed to parse or render.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// Syntax error or undefined variable, with position.
    #[error("template `{template}` line {line}: {message}")]
    At {
        /// Template name (path under `templates/`).
        template: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Anything else tera reports.
    #[error("template `{template}`: {message}")]
    Other {
        /// Template name.
        template: String,
        /// What is wrong.
        message: String,
    },
    /// A stack names a template that isn't there.
    #[error("template `{0}` does not exist")]
    Missing(String),
}

impl Diagnostic for TemplateError {
    fn hints(&self) -> Vec<String> {
        match self {
            TemplateError::At { message, .. } if message.contains("not defined") => vec![
                "templates may use only the variables `render::context` provides; run `homelab render --placeholder-secrets` to see them used".into(),
            ],
            TemplateError::Missing(_) => {
                vec!["templates live in `templates/` and are compiled into the binary".into()]
            }
            _ => Vec::new(),
        }
    }
}

fn convert(template: &str, err: tera::Error) -> TemplateError {
    match err.kind() {
        tera::ErrorKind::SyntaxError(r) | tera::ErrorKind::RenderingError(r) => {
            // tera says "Variable `x` is not defined. Available variables: a, b".
            let mut message = r
                .message()
                .trim_end_matches('.')
                .replace(". Available", "; available");
            if let Some(first) = message.get(..1) {
                message = first.to_lowercase() + &message[1..];
            }
            TemplateError::At {
                template: if r.filename().is_empty() {
                    template.to_string()
                } else {
                    r.filename().to_string()
                },
                line: r.span().start_line,
                message,
            }
        }
        tera::ErrorKind::TemplateNotFound(name) => TemplateError::Missing(name.clone()),
        other => TemplateError::Other {
            template: template.to_string(),
            message: other.to_string(),
        },
    }
}

/// Quote a value as a YAML double-quoted scalar (JSON string syntax).
fn yaml_escape(value: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    out.write_all(crate::edges::yaml::quote(value).as_bytes())
}

/// The compiled template set.
pub struct Templates {
    tera: Tera,
}

impl Templates {
    /// All embedded templates.
    pub fn embedded() -> Result<Templates, TemplateError> {
        Self::from_sources(
            assets::under("templates/")
                .map(|(path, text)| (path.strip_prefix("templates/").unwrap_or(path), text)),
        )
    }

    /// A template set from (name, source) pairs; names ending in `.yaml`/`.yml` are YAML-escaped.
    pub fn from_sources<'a>(
        sources: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Templates, TemplateError> {
        let mut tera = Tera::new();
        tera.set_escape_fn(yaml_escape);
        tera.autoescape_on([".yaml", ".yml"]);
        // `{{ value | b64 }}`: standard padded base64, for a Secret's `data`.
        tera.register_filter("b64", |x: &str, _: tera::Kwargs, _: &tera::State| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(x.as_bytes())
        });
        // `{{ image | registry }}`: the registry kaniko looks the image up in (the key of its
        // `--registry-map`, see `image_ref`).
        tera.register_filter("registry", |x: &str, _: tera::Kwargs, _: &tera::State| {
            crate::model::image_ref::registry_str(x)
        });
        let sources: Vec<(&str, &str)> = sources.into_iter().collect();
        tera.add_raw_templates(sources.iter().copied())
            .map_err(|e| convert(sources.first().map(|s| s.0).unwrap_or("?"), e))?;
        Ok(Templates { tera })
    }

    /// Render one template.
    pub fn render(&self, name: &str, ctx: &tera::Context) -> Result<String, TemplateError> {
        if !self.tera.contains_template(name) {
            return Err(TemplateError::Missing(name.to_string()));
        }
        let out = self.tera.render(name, ctx).map_err(|e| convert(name, e))?;
        Ok(normalise_newlines(&out))
    }

    /// Templates directly or indirectly under `dir/`, sorted, without partials (files whose name
    /// starts with `_`).
    pub fn in_dir(&self, dir: &str) -> Vec<String> {
        let prefix = format!("{dir}/");
        let mut names: Vec<String> = self
            .tera
            .get_template_names()
            .filter(|n| n.starts_with(&prefix))
            .filter(|n| !n.rsplit('/').next().unwrap_or("").starts_with('_'))
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }
}

impl Templates {
    /// The partials directly in `dir/` that are not YAML (`_Corefile`): rendered first and given
    /// to the directory's templates as `partials.<name without the underscore>`, so a whole
    /// file (a Corefile, a script) can be written into a YAML value, quoted as every value is.
    pub fn text_partials_in(&self, dir: &str) -> Vec<(String, String)> {
        let prefix = format!("{dir}/_");
        let mut out: Vec<(String, String)> = self
            .tera
            .get_template_names()
            .filter(|n| n.starts_with(&prefix) && !n[prefix.len()..].contains('/'))
            .filter(|n| !n.ends_with(".yaml") && !n.ends_with(".yml"))
            .map(|n| (n[prefix.len()..].to_string(), n.to_string()))
            .collect();
        out.sort();
        out
    }
}

/// CRLF → LF, and exactly one trailing newline.
fn normalise_newlines(s: &str) -> String {
    let mut out = s.replace("\r\n", "\n");
    while out.ends_with("\n\n") {
        out.pop();
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_values_are_quoted_and_cannot_inject_keys() {
        let t = Templates::from_sources([("x.yaml", "password: {{ pw }}\n")]).unwrap();
        let mut ctx = tera::Context::new();
        ctx.insert("pw", "a\nb: c");
        let out = t.render("x.yaml", &ctx).unwrap();
        assert_eq!(out, "password: \"a\\nb: c\"\n");
    }

    #[test]
    fn non_yaml_templates_are_not_escaped() {
        let t = Templates::from_sources([("Dockerfile", "FROM {{ image }}\n")]).unwrap();
        let mut ctx = tera::Context::new();
        ctx.insert("image", "nginx:1.29");
        assert_eq!(t.render("Dockerfile", &ctx).unwrap(), "FROM nginx:1.29\n");
    }

    #[test]
    fn text_partials_are_listed_by_their_name() {
        let t = Templates::from_sources([
            ("a/_Corefile", "x"),
            ("a/_p.yaml", "y"),
            ("a/b/_q", "z"),
            ("a/c.yaml", "w"),
        ])
        .unwrap();
        assert_eq!(
            t.text_partials_in("a"),
            vec![("Corefile".to_string(), "a/_Corefile".to_string())]
        );
    }

    #[test]
    fn raw_blocks_keep_go_template_braces() {
        let t =
            Templates::from_sources([("_x", "{% raw %}{{ .Name }}{% endraw %} {{ v }}")]).unwrap();
        let mut ctx = tera::Context::new();
        ctx.insert("v", "1.2.3.4");
        assert_eq!(t.render("_x", &ctx).unwrap(), "{{ .Name }} 1.2.3.4\n");
    }

    #[test]
    fn partials_are_not_listed() {
        let t =
            Templates::from_sources([("a/_p.yaml", "x"), ("a/b.yaml", "y"), ("ab/c.yaml", "z")])
                .unwrap();
        assert_eq!(t.in_dir("a"), vec!["a/b.yaml".to_string()]);
    }
}
