//! Glob patterns for `spec.source.directory.include` / `exclude`.
//!
//! Place in the data flow: [`super::manifests::read`] asks whether a file's path (relative to
//! the Application's `path`, `/`-separated) is included.
//!
//! Architecture invariant: pure; the syntax is Argo's (gobwas/glob without separators): `*`
//! matches any run of characters including `/` (so `*.yaml` matches `sub/a.yaml`), `**` is the
//! same, `?` one character, `[abc]`/`[a-z]`/`[!a]` a class, `{a,b}` alternatives.

use std::fmt;

/// A compiled pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    alternatives: Vec<Vec<Token>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Lit(char),
    Any,
    One,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A pattern that does not compile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobError(String);

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Glob {
    /// Compile `pattern`.
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        let mut alternatives = Vec::new();
        for alt in expand_braces(pattern)? {
            alternatives.push(tokens(&alt)?);
        }
        Ok(Glob { alternatives })
    }

    /// Does `path` match?
    pub fn matches(&self, path: &str) -> bool {
        let chars: Vec<char> = path.chars().collect();
        self.alternatives.iter().any(|t| match_tokens(t, &chars))
    }
}

fn expand_braces(p: &str) -> Result<Vec<String>, GlobError> {
    let Some(open) = p.find('{') else {
        if p.contains('}') {
            return Err(GlobError("unbalanced `}`".into()));
        }
        return Ok(vec![p.to_string()]);
    };
    // Find the matching close brace, honouring nesting.
    let mut depth = 0;
    let mut close = None;
    for (i, c) in p[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let close = close.ok_or_else(|| GlobError("unbalanced `{`".into()))?;
    let (head, inner, tail) = (&p[..open], &p[open + 1..close], &p[close + 1..]);
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    let mut out = Vec::new();
    for part in parts {
        for rest in expand_braces(&format!("{part}{tail}"))? {
            out.push(format!("{head}{rest}"));
        }
    }
    Ok(out)
}

fn tokens(p: &str) -> Result<Vec<Token>, GlobError> {
    let mut out = Vec::new();
    let mut it = p.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '*' => {
                while it.peek() == Some(&'*') {
                    it.next();
                }
                out.push(Token::Any);
            }
            '?' => out.push(Token::One),
            '\\' => out.push(Token::Lit(
                it.next().ok_or_else(|| GlobError("trailing `\\`".into()))?,
            )),
            '[' => {
                let negated = matches!(it.peek(), Some('!') | Some('^'));
                if negated {
                    it.next();
                }
                let mut ranges = Vec::new();
                loop {
                    let c = it.next().ok_or_else(|| GlobError("unclosed `[`".into()))?;
                    if c == ']' && !ranges.is_empty() {
                        break;
                    }
                    if it.peek() == Some(&'-') {
                        it.next();
                        match it.next() {
                            Some(']') => {
                                ranges.push((c, c));
                                ranges.push(('-', '-'));
                                break;
                            }
                            Some(hi) => ranges.push((c, hi)),
                            None => return Err(GlobError("unclosed `[`".into())),
                        }
                    } else {
                        ranges.push((c, c));
                    }
                }
                out.push(Token::Class { negated, ranges });
            }
            c => out.push(Token::Lit(c)),
        }
    }
    Ok(out)
}

fn match_tokens(t: &[Token], s: &[char]) -> bool {
    // Iterative matcher with one backtrack point per `*` (the classic wildcard algorithm).
    let (mut ti, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        let step = match t.get(ti) {
            Some(Token::Any) => {
                star = Some((ti, si));
                ti += 1;
                continue;
            }
            Some(Token::Lit(c)) => *c == s[si],
            Some(Token::One) => true,
            Some(Token::Class { negated, ranges }) => {
                ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&s[si])) != *negated
            }
            None => false,
        };
        if step {
            ti += 1;
            si += 1;
        } else if let Some((st, ss)) = star {
            ti = st + 1;
            si = ss + 1;
            star = Some((st, ss + 1));
        } else {
            return false;
        }
    }
    t[ti..].iter().all(|t| *t == Token::Any)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Glob::new(p).unwrap().matches(s)
    }

    #[test]
    fn star_crosses_directories_like_argo() {
        assert!(m("*.yaml", "a.yaml"));
        assert!(m("*.yaml", "sub/a.yaml"));
        assert!(!m("*.yaml", "a.yml"));
        assert!(m("env-use2/*", "env-use2/x/y.yaml"));
        assert!(m("**/*.yaml", "a/b/c.yaml"));
    }

    #[test]
    fn alternatives_classes_and_single_chars() {
        assert!(m("{config.yaml,env-use2/*}", "config.yaml"));
        assert!(m("{config.yaml,env-use2/*}", "env-use2/a.json"));
        assert!(!m("{config.yaml,env-use2/*}", "other.yaml"));
        assert!(m("{*.yml,*.yaml}", "x/y.yml"));
        assert!(m("app-?.yaml", "app-1.yaml"));
        assert!(m("app-[0-9].yaml", "app-7.yaml"));
        assert!(!m("app-[!0-9].yaml", "app-7.yaml"));
        assert!(m("a\\*b", "a*b"));
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert!(Glob::new("{a,b").is_err());
        assert!(Glob::new("[ab").is_err());
        assert!(Glob::new("a}").is_err());
    }
}
