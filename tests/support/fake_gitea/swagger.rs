//! A small checker of requests (and the fake's own answers) against Gitea's OpenAPI document:
//! `contracts/gitea/swagger.v1.json`, Gitea 1.26.1's `swagger.v1.json` trimmed by
//! `scripts/derive-contracts` to the operations `contracts/gitea/operations.txt` lists (and the
//! paths that out-rank theirs), read at test time.
//!
//! It checks what a client can get wrong: the path and method exist, path and query parameters
//! are declared and of the declared type, a required body is present, and the body matches the
//! definition: required fields, field types, enums, arrays, `$ref`s, maps
//! (`additionalProperties`), and no field the definition does not have (Gitea ignores unknown
//! fields silently, so a misspelt field is a bug that only a strict check finds).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

#[derive(Clone, Debug)]
enum Seg {
    Lit(String),
    Param(String),
}

/// One operation of the document.
#[derive(Clone, Debug)]
pub struct Op {
    pub method: String,
    pub path: String,
    pub id: String,
    segs: Vec<Seg>,
    params: Vec<Value>,
    responses: Value,
    consumes: Option<Vec<String>>,
}

/// A request matched to its operation.
#[derive(Clone, Debug)]
pub struct Matched {
    pub op: Op,
    pub path_params: BTreeMap<String, String>,
}

pub struct Swagger {
    base_path: String,
    ops: Vec<Op>,
    definitions: Value,
    responses: Value,
    query_auth: Vec<String>,
    consumes: Vec<String>,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(hex) = std::str::from_utf8(&b[i + 1..i + 3])
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Swagger {
    pub fn load(path: &Path) -> Swagger {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read `{}`: {e}", path.display()));
        let doc: Value = serde_json::from_str(&text).expect("swagger.v1.json is JSON");
        let mut ops = Vec::new();
        for (path, methods) in doc["paths"].as_object().expect("paths") {
            let shared = methods
                .get("parameters")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (method, op) in methods.as_object().unwrap() {
                if method == "parameters" {
                    continue;
                }
                let segs = path
                    .trim_start_matches('/')
                    .split('/')
                    .map(|s| {
                        if s.starts_with('{') && s.ends_with('}') {
                            Seg::Param(s[1..s.len() - 1].to_string())
                        } else {
                            Seg::Lit(s.to_string())
                        }
                    })
                    .collect();
                let mut params = shared.clone();
                params.extend(
                    op.get("parameters")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                );
                ops.push(Op {
                    method: method.to_uppercase(),
                    path: path.clone(),
                    id: op["operationId"].as_str().unwrap_or_default().to_string(),
                    segs,
                    params,
                    responses: op["responses"].clone(),
                    consumes: op.get("consumes").and_then(|c| {
                        c.as_array().map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str().map(str::to_string))
                                .collect()
                        })
                    }),
                });
            }
        }
        let query_auth = doc["securityDefinitions"]
            .as_object()
            .map(|m| {
                m.values()
                    .filter(|d| d["in"] == "query")
                    .filter_map(|d| d["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Swagger {
            base_path: doc["basePath"].as_str().unwrap_or("").to_string(),
            ops,
            definitions: doc["definitions"].clone(),
            responses: doc["responses"].clone(),
            query_auth,
            consumes: doc["consumes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// Check one request. `path` is the full path (with the base path), `query` decoded pairs.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Matched, Vec<String>> {
        let Some(rest) = path.strip_prefix(&self.base_path) else {
            return Err(vec![format!(
                "`{path}` is outside the API base path `{}`",
                self.base_path
            )]);
        };
        let segs: Vec<String> = rest
            .trim_start_matches('/')
            .split('/')
            .map(percent_decode)
            .collect();
        let mut candidates: Vec<(usize, &Op, BTreeMap<String, String>)> = Vec::new();
        for op in &self.ops {
            // Gitea routes `{filepath}` as `*`: the rest of the path, slashes included
            // (drone branch: the contents API takes `apps/nyan-cat/deployment.yaml`).
            let rest_param = matches!(op.segs.last(), Some(Seg::Param(p)) if p == "filepath");
            let segs: Vec<String> = if rest_param && segs.len() > op.segs.len() {
                let keep = op.segs.len() - 1;
                let mut s = segs[..keep].to_vec();
                s.push(segs[keep..].join("/"));
                s
            } else {
                segs.clone()
            };
            if op.segs.len() != segs.len() {
                continue;
            }
            let mut literal = 0;
            let mut params = BTreeMap::new();
            let ok = op.segs.iter().zip(&segs).all(|(t, s)| match t {
                Seg::Lit(l) => {
                    literal += 1;
                    l == s
                }
                Seg::Param(p) => {
                    params.insert(p.clone(), s.clone());
                    !s.is_empty()
                }
            });
            if ok {
                candidates.push((literal, op, params));
            }
        }
        if candidates.is_empty() {
            return Err(vec![format!(
                "no path in the API matches `{method} {path}`"
            )]);
        }
        let best = candidates.iter().map(|c| c.0).max().unwrap();
        let Some((_, op, path_params)) = candidates
            .iter()
            .filter(|c| c.0 == best)
            .find(|c| c.1.method == method)
        else {
            let allowed: Vec<&str> = candidates
                .iter()
                .filter(|c| c.0 == best)
                .map(|c| c.1.method.as_str())
                .collect();
            return Err(vec![format!(
                "`{method}` is not an operation of `{}` (it has {})",
                candidates.iter().find(|c| c.0 == best).unwrap().1.path,
                allowed.join(", ")
            )]);
        };
        let mut errors = Vec::new();
        for (name, value) in path_params {
            if let Some(p) = op
                .params
                .iter()
                .find(|p| p["in"] == "path" && p["name"] == *name)
            {
                self.check_scalar(p, value, &format!("path parameter `{name}`"), &mut errors);
            } else {
                errors.push(format!("path parameter `{name}` is not declared"));
            }
        }
        for (name, value) in query {
            if let Some(p) = op
                .params
                .iter()
                .find(|p| p["in"] == "query" && p["name"] == *name)
            {
                self.check_scalar(p, value, &format!("query parameter `{name}`"), &mut errors);
            } else if !self.query_auth.contains(name) {
                errors.push(format!(
                    "query parameter `{name}` is not declared for `{} {}`",
                    op.method, op.path
                ));
            }
        }
        for p in op
            .params
            .iter()
            .filter(|p| p["in"] == "query" && p["required"] == true)
        {
            let name = p["name"].as_str().unwrap_or_default();
            if !query.iter().any(|(k, _)| k == name) {
                errors.push(format!("required query parameter `{name}` is missing"));
            }
        }
        let body_param = op.params.iter().find(|p| p["in"] == "body");
        match (body_param, body) {
            (None, Some(_)) => errors.push(format!(
                "`{} {}` takes no body, but one was sent",
                op.method, op.path
            )),
            (Some(p), None) if p["required"] == true => errors.push(format!(
                "`{} {}` requires a body (`{}`), none was sent",
                op.method,
                op.path,
                p["schema"]["$ref"].as_str().unwrap_or("?")
            )),
            (Some(p), Some(b)) => {
                let consumes = op.consumes.clone().unwrap_or_else(|| self.consumes.clone());
                let ct = content_type
                    .unwrap_or("")
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim();
                if !consumes.iter().any(|c| c == ct) {
                    errors.push(format!(
                        "body sent as `{ct}`, the operation consumes {consumes:?}"
                    ));
                }
                self.validate(&p["schema"], b, "body", true, &mut errors);
            }
            _ => {}
        }
        if errors.is_empty() {
            Ok(Matched {
                op: (*op).clone(),
                path_params: path_params.clone(),
            })
        } else {
            Err(errors)
        }
    }

    /// Check an answer the fake is about to send against the documented response schema.
    pub fn check_response(&self, op: &Op, status: u16, body: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        let Some(resp) = op.responses.get(status.to_string()) else {
            return errors;
        };
        let resp = match resp.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.trim_start_matches("#/responses/");
                self.responses[name].clone()
            }
            None => resp.clone(),
        };
        if let Some(schema) = resp.get("schema") {
            self.validate(
                schema,
                body,
                &format!("{} answer {status}", op.id),
                false,
                &mut errors,
            );
        }
        errors
    }

    fn check_scalar(&self, p: &Value, value: &str, at: &str, errors: &mut Vec<String>) {
        match p["type"].as_str() {
            Some("integer") if value.parse::<i64>().is_err() => {
                errors.push(format!("{at} is `{value}`, not an integer"))
            }
            Some("boolean") if value != "true" && value != "false" => {
                errors.push(format!("{at} is `{value}`, not a boolean"))
            }
            _ => {}
        }
        if let Some(e) = p["enum"].as_array()
            && !e.iter().any(|v| v == value)
        {
            errors.push(format!("{at} is `{value}`, not one of {e:?}"));
        }
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.trim_start_matches("#/definitions/");
                let d = &self.definitions[name];
                assert!(!d.is_null(), "swagger $ref `{r}` resolves to nothing");
                self.resolve(d)
            }
            None => schema,
        }
    }

    /// Validate `value` against `schema`. `strict`: unknown object fields are errors.
    pub fn validate(
        &self,
        schema: &Value,
        value: &Value,
        at: &str,
        strict: bool,
        errors: &mut Vec<String>,
    ) {
        let schema = self.resolve(schema);
        let ty = schema["type"].as_str().or_else(|| {
            if schema.get("properties").is_some() || schema.get("additionalProperties").is_some() {
                Some("object")
            } else {
                None
            }
        });
        let type_error = |expected: &str| format!("{at} should be {expected}, got `{value}`");
        match ty {
            Some("object") => {
                let Some(obj) = value.as_object() else {
                    errors.push(type_error("an object"));
                    return;
                };
                if let Some(req) = schema["required"].as_array() {
                    for r in req.iter().filter_map(Value::as_str) {
                        if !obj.contains_key(r) {
                            errors.push(format!("{at}: required field `{r}` is missing"));
                        }
                    }
                }
                let props = schema["properties"].as_object();
                for (k, v) in obj {
                    let field = format!("{at}.{k}");
                    if let Some(p) = props.and_then(|p| p.get(k)) {
                        self.validate(p, v, &field, strict, errors);
                    } else if let Some(ap) =
                        schema.get("additionalProperties").filter(|a| a.is_object())
                    {
                        self.validate(ap, v, &field, strict, errors);
                    } else if strict {
                        errors.push(format!("{at}: field `{k}` is not in the definition"));
                    }
                }
            }
            Some("array") => match value.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.validate(
                            &schema["items"],
                            item,
                            &format!("{at}[{i}]"),
                            strict,
                            errors,
                        );
                    }
                }
                None => errors.push(type_error("an array")),
            },
            Some("string") if !value.is_string() => errors.push(type_error("a string")),
            Some("integer") if !(value.is_i64() || value.is_u64()) => {
                errors.push(type_error("an integer"))
            }
            Some("number") if !value.is_number() => errors.push(type_error("a number")),
            Some("boolean") if !value.is_boolean() => errors.push(type_error("a boolean")),
            _ => {}
        }
        if let Some(e) = schema["enum"].as_array()
            && !e.contains(value)
        {
            errors.push(format!("{at} is `{value}`, not one of {e:?}"));
        }
    }
}
