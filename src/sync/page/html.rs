//! The lab page as HTML: one self-contained document (inline CSS, one small inline script, no
//! fonts, images or scripts from anywhere), readable on a projector and a phone.
//!
//! Architecture invariant: pure — [`render`] turns a [`LabPageState`] into text, escaping every
//! value and redacting URL credentials and token parameters in free text; nothing else reaches
//! the page. Status is always a word and a symbol, never only a colour.

use std::fmt::Write as _;

use super::{
    AppRow, CA_PATH, ComponentRow, Health, LabPageState, SyncRecord, VerifyRun, ca_file_name,
    trust_steps,
};
use crate::edges::redact::redact_url;

/// How often the open page asks for a fresh copy (the script), in seconds.
pub const POLL_SECONDS: u32 = 5;
/// Without JavaScript the page reloads itself this often, in seconds.
pub const REFRESH_SECONDS: u32 = 30;

/// Replaces the page's `<main>` with a fresh copy every few seconds, keeping open `<details>`.
/// Inline, so the Content-Security-Policy names it by its hash ([`script_hash`]).
pub const SCRIPT: &str = r#"(function(){var live=document.getElementById('live');function tick(){fetch(location.pathname,{cache:'no-store'}).then(function(r){if(!r.ok)throw new Error(r.status);return r.text();}).then(function(text){var next=new DOMParser().parseFromString(text,'text/html').getElementById('page');var cur=document.getElementById('page');if(!next||!cur)return;var open=[].map.call(cur.querySelectorAll('details[open]'),function(d){return d.id;});cur.innerHTML=next.innerHTML;open.forEach(function(id){var d=id&&document.getElementById(id);if(d)d.open=true;});live.textContent='Updates itself every 5 s.';}).catch(function(){live.textContent='The lab does not answer; trying again.';});}live.textContent='Updates itself every 5 s.';setInterval(tick,5000);})();"#;

/// `sha256-…` of [`SCRIPT`], for the Content-Security-Policy.
pub fn script_hash() -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(SCRIPT.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The Content-Security-Policy the page is served with: nothing loads from anywhere but the lab
/// itself, and the only script is the one above.
pub fn content_security_policy() -> String {
    format!(
        "default-src 'none'; style-src 'unsafe-inline'; script-src '{}'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        script_hash()
    )
}

const CSS: &str = r#"
:root{--fg:#1a1a1a;--muted:#4a4a4a;--bg:#ffffff;--line:#c8c8c8;--ok:#0b6b2e;--ok-bg:#e4f3e8;--bad:#a3121b;--bad-bg:#fde7e8;--warn:#7a4600;--warn-bg:#fff1d6;--unk:#3d3d3d;--unk-bg:#ececec;--link:#0b4fb3}
*{box-sizing:border-box}
html{font-size:112.5%}
body{margin:0;color:var(--fg);background:var(--bg);font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;line-height:1.45}
header,main,footer{max-width:72rem;margin:0 auto;padding:0 1rem}
header{padding-top:1rem}
h1{font-size:1.8rem;margin:.4rem 0}
h2{font-size:1.35rem;margin:2rem 0 .6rem;border-bottom:2px solid var(--line);padding-bottom:.2rem}
h3{font-size:1.1rem;margin:1rem 0 .4rem}
a{color:var(--link)}
code{font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,monospace;font-size:.92em;overflow-wrap:anywhere}
pre{background:#f3f3f3;padding:.6rem .8rem;overflow-x:auto;border-radius:4px}
.muted{color:var(--muted)}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;vertical-align:top;padding:.4rem .6rem;border-bottom:1px solid var(--line)}
th{font-weight:600}
.badge{display:inline-block;white-space:nowrap;padding:.05rem .5rem;border-radius:1rem;font-weight:600;border:1px solid currentColor}
.ok{color:var(--ok);background:var(--ok-bg)}
.bad{color:var(--bad);background:var(--bad-bg)}
.warn{color:var(--warn);background:var(--warn-bg)}
.unk{color:var(--unk);background:var(--unk-bg)}
details summary{cursor:pointer;color:var(--link)}
.timeline{list-style:none;padding:0;margin:0}
.timeline li{display:grid;grid-template-columns:7rem 1fr 6rem;gap:.6rem;align-items:center;padding:.3rem 0;border-bottom:1px solid var(--line)}
.track{position:relative;height:1.4rem;background:#f1f1f1;border-radius:3px}
.bar{position:absolute;top:0;bottom:0;min-width:3px;border-radius:3px}
.bar.ok{background:var(--ok)}
.bar.bad{background:repeating-linear-gradient(45deg,var(--bad),var(--bad) 6px,#d9434b 6px,#d9434b 12px)}
.hop-detail{grid-column:1/-1;font-size:.9rem;color:var(--muted);margin:0}
.dur{text-align:right;font-variant-numeric:tabular-nums}
.os{margin:.6rem 0}
@media (max-width:40rem){html{font-size:100%}th,td{padding:.35rem .3rem}.timeline li{grid-template-columns:5rem 1fr 4.5rem}.hide-narrow{display:none}}
@media print{#live{display:none}}
"#;

/// Escape text for HTML (content and quoted attribute values).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Free text from the cluster: URL credentials and `token=` values redacted, then escaped.
fn text(s: &str) -> String {
    let redacted: Vec<String> = s
        .split(' ')
        .map(|w| {
            if w.contains("://") || w.contains('=') {
                redact_url(w)
            } else {
                w.to_string()
            }
        })
        .collect();
    esc(&redacted.join(" "))
}

/// A link only for `http(s)` URLs (nothing else can become a `href`).
fn link(url: &str) -> String {
    let url = redact_url(url);
    if url.starts_with("https://") || url.starts_with("http://") {
        format!("<a href=\"{0}\">{0}</a>", esc(&url))
    } else {
        esc(&url)
    }
}

/// (class, symbol) for a status word.
fn tone(word: &str) -> (&'static str, &'static str) {
    match word {
        "Healthy" | "Synced" | "Succeeded" | "passed" => ("ok", "✓"),
        "Degraded" | "Failed" | "Error" | "SyncFailed" | "Missing" | "failed" => ("bad", "✗"),
        "Progressing" | "Running" | "OutOfSync" | "Suspended" | "Pruned" | "PruneSkipped" => {
            ("warn", "●")
        }
        _ => ("unk", "?"),
    }
}

fn badge(word: &str) -> String {
    let word = if word.is_empty() { "Unknown" } else { word };
    let (class, symbol) = tone(word);
    format!(
        "<span class=\"badge {class}\"><span aria-hidden=\"true\">{symbol}</span> {}</span>",
        esc(word)
    )
}

fn health_word(h: Health) -> &'static str {
    match h {
        Health::Healthy => "Healthy",
        Health::Progressing => "Progressing",
        Health::Degraded => "Degraded",
        Health::Missing => "Missing",
        Health::None => "",
        Health::Unknown => "Unknown",
    }
}

fn short(rev: &str) -> &str {
    &rev[..rev.len().min(8)]
}

fn seconds(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// `2026-12-05T08:54:19.125Z` → `2026-12-05 08:54:19 UTC` (people do not need nanoseconds).
fn when(ts: &str) -> String {
    if ts.is_empty() {
        return "—".into();
    }
    let t = ts.trim_end_matches('Z').replacen('T', " ", 1);
    let t = t.split('.').next().unwrap_or(&t);
    format!("<time datetime=\"{}\">{} UTC</time>", esc(ts), esc(t))
}

/// The whole page.
pub fn render(s: &LabPageState) -> String {
    let mut o = String::with_capacity(16 * 1024);
    let lab = esc(&s.lab);
    let _ = write!(
        o,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<meta name=\"color-scheme\" content=\"light\">\n<title>Lab {lab} · homelab</title>\n<noscript><meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\"></noscript>\n<style>{CSS}</style>\n</head>\n<body>\n<header>\n<h1>Lab <code>{lab}</code></h1>\n<p class=\"muted\">The lab at <code>{}</code>, as its sync engine sees it. <span id=\"live\" role=\"status\">Reload the page for news (it reloads itself every {REFRESH_SECONDS} s).</span></p>\n</header>\n<main id=\"page\">\n",
        esc(&s.domain)
    );
    let _ = writeln!(
        o,
        "<p class=\"muted\">Read at {}.</p>",
        when(&s.generated_at)
    );
    if !s.problems.is_empty() {
        o.push_str(
            "<div role=\"alert\"><p><strong>Some of the lab could not be read:</strong></p><ul>",
        );
        for p in &s.problems {
            let _ = write!(o, "<li>{}</li>", text(p));
        }
        o.push_str("</ul></div>\n");
    }
    components(&mut o, &s.components);
    applications(&mut o, &s.applications);
    verify(&mut o, s.verify.as_ref());
    history(&mut o, &s.history);
    trust(&mut o, s);
    o.push_str("<section aria-labelledby=\"logins\">\n<h2 id=\"logins\">Logins</h2>\n<p>Passwords and tokens are never shown on this page. On the computer that ran <code>homelab up</code>, <code>homelab credentials</code> prints every login of the lab (Gitea's admin, its API token, Drone through Gitea).</p>\n</section>\n");
    o.push_str("</main>\n<footer><p class=\"muted\">Served by the lab's sync engine. <code>homelab open</code> opens this page; <code>homelab status</code> shows the same from a terminal.</p></footer>\n");
    let _ = write!(o, "<script>{SCRIPT}</script>\n</body>\n</html>\n");
    o
}

fn components(o: &mut String, rows: &[ComponentRow]) {
    o.push_str("<section aria-labelledby=\"components\">\n<h2 id=\"components\">Components</h2>\n");
    if rows.is_empty() {
        o.push_str("<p>No components listed (the <code>homelab-lab</code> ConfigMap is missing; <code>homelab up</code> writes it).</p>\n</section>\n");
        return;
    }
    o.push_str("<div class=\"scroll\"><table>\n<thead><tr><th scope=\"col\">Component</th><th scope=\"col\">Address</th><th scope=\"col\">Health</th><th scope=\"col\" class=\"hide-narrow\">Workloads</th></tr></thead>\n<tbody>\n");
    for c in rows {
        let health = match c.health {
            Health::None => "<span class=\"muted\">no workload of its own</span>".to_string(),
            h => badge(health_word(h)),
        };
        let _ = writeln!(
            o,
            "<tr><th scope=\"row\">{}<br><span class=\"muted\">{}</span></th><td>{}</td><td>{health}</td><td class=\"hide-narrow\">{}</td></tr>",
            esc(&c.name),
            text(&c.description),
            if c.url.is_empty() {
                "<span class=\"muted\">inside the cluster</span>".into()
            } else {
                link(&c.url)
            },
            text(&c.detail),
        );
    }
    o.push_str("</tbody>\n</table></div>\n</section>\n");
}

fn applications(o: &mut String, apps: &[AppRow]) {
    o.push_str(
        "<section aria-labelledby=\"applications\">\n<h2 id=\"applications\">Applications</h2>\n",
    );
    if apps.is_empty() {
        o.push_str("<p>No Applications yet.</p>\n</section>\n");
        return;
    }
    o.push_str("<div class=\"scroll\"><table id=\"applications-table\">\n<thead><tr><th scope=\"col\">Application</th><th scope=\"col\">Sync</th><th scope=\"col\">Health</th><th scope=\"col\">Revision</th><th scope=\"col\">Last sync</th></tr></thead>\n<tbody>\n");
    for a in apps {
        let last = match &a.last_sync {
            None => "<span class=\"muted\">never</span>".to_string(),
            Some(l) => {
                let mut cell = format!(
                    "{} {}",
                    badge(&l.phase),
                    when(if l.finished_at.is_empty() {
                        &l.started_at
                    } else {
                        &l.finished_at
                    })
                );
                let _ = write!(
                    cell,
                    "<details id=\"sync-{0}\"><summary>{1} resource{2}</summary>",
                    esc(&a.name),
                    l.resources.len(),
                    if l.resources.len() == 1 { "" } else { "s" }
                );
                if !l.message.is_empty() {
                    let _ = write!(cell, "<p>{}</p>", text(&l.message));
                }
                if !l.resources.is_empty() {
                    cell.push_str("<ul>");
                    for r in &l.resources {
                        let ns = if r.namespace.is_empty() {
                            String::new()
                        } else {
                            format!(" in <code>{}</code>", esc(&r.namespace))
                        };
                        let _ = write!(
                            cell,
                            "<li>{} <code>{}/{}</code>{ns}{}</li>",
                            badge(&r.status),
                            esc(&r.kind),
                            esc(&r.name),
                            if r.message.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", text(&r.message))
                            }
                        );
                    }
                    cell.push_str("</ul>");
                }
                cell.push_str("</details>");
                cell
            }
        };
        let mut name = format!(
            "{}<br><span class=\"muted\"><code>{}</code>{}</span>",
            esc(&a.name),
            text(&a.repo),
            if a.path.is_empty() {
                String::new()
            } else {
                format!(" <code>{}</code>", esc(&a.path))
            }
        );
        for c in &a.conditions {
            let _ = write!(
                name,
                "<br><span class=\"badge bad\"><span aria-hidden=\"true\">!</span> {}</span>",
                text(c)
            );
        }
        let _ = writeln!(
            o,
            "<tr><th scope=\"row\">{name}</th><td>{}</td><td>{}</td><td><code>{}</code></td><td>{last}</td></tr>",
            badge(&a.sync),
            badge(&a.health),
            if a.revision.is_empty() {
                "—".into()
            } else {
                esc(short(&a.revision))
            },
        );
    }
    o.push_str("</tbody>\n</table></div>\n</section>\n");
}

fn verify(o: &mut String, run: Option<&VerifyRun>) {
    o.push_str("<section aria-labelledby=\"verify\">\n<h2 id=\"verify\">The last verify</h2>\n");
    let Some(v) = run else {
        o.push_str("<p>No verify recorded yet: <code>homelab verify</code> walks the loop (commit → build → bump → sync → serve) and shows it here.</p>\n</section>\n");
        return;
    };
    let _ = writeln!(
        o,
        "<p>{} {} in {}, ended {}{}.</p>",
        badge(if v.ok { "passed" } else { "failed" }),
        if v.ok {
            "The loop works"
        } else {
            "The loop is broken"
        },
        seconds(v.total_ms),
        when(&v.finished_at),
        if v.version.is_empty() {
            String::new()
        } else {
            format!(", version <code>{}</code>", esc(&v.version))
        }
    );
    if !v.error.is_empty() {
        let _ = writeln!(o, "<p><strong>Why:</strong> {}</p>", text(&v.error));
    }
    let total: u64 = v.hops.iter().map(|h| h.elapsed_ms).sum::<u64>().max(1);
    o.push_str("<ol class=\"timeline\" aria-label=\"Each hop's time, in order\">\n");
    let mut start = 0u64;
    for h in &v.hops {
        let left = start as f64 * 100.0 / total as f64;
        let width = h.elapsed_ms as f64 * 100.0 / total as f64;
        start += h.elapsed_ms;
        let word = if h.ok { "passed" } else { "failed" };
        let _ = writeln!(
            o,
            "<li class=\"hop hop-{word}\"><span><strong>{}</strong><br>{}</span><span class=\"track\" role=\"img\" aria-label=\"{} {word}, {}\"><span class=\"bar {}\" style=\"left:{left:.1}%;width:{width:.1}%\"></span></span><span class=\"dur\">{}</span><p class=\"hop-detail\">{}</p></li>",
            esc(&h.hop),
            badge(word),
            esc(&h.hop),
            seconds(h.elapsed_ms),
            if h.ok { "ok" } else { "bad" },
            seconds(h.elapsed_ms),
            text(h.detail.lines().next().unwrap_or_default()),
        );
    }
    o.push_str("</ol>\n</section>\n");
}

fn history(o: &mut String, records: &[SyncRecord]) {
    o.push_str("<section aria-labelledby=\"history\">\n<h2 id=\"history\">Recent syncs</h2>\n");
    if records.is_empty() {
        o.push_str("<p>No sync since the engine started.</p>\n</section>\n");
        return;
    }
    o.push_str("<div class=\"scroll\"><table>\n<thead><tr><th scope=\"col\">When</th><th scope=\"col\">Application</th><th scope=\"col\">Result</th><th scope=\"col\">Revision</th><th scope=\"col\" class=\"hide-narrow\">Changes</th></tr></thead>\n<tbody>\n");
    for r in records {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td class=\"hide-narrow\">{} applied, {} pruned</td></tr>",
            when(&r.at),
            esc(&r.app),
            badge(&r.phase),
            esc(short(&r.revision)),
            r.applied,
            r.pruned
        );
    }
    o.push_str("</tbody>\n</table></div>\n<p class=\"muted\">The engine remembers its last syncs since it started.</p>\n</section>\n");
}

fn trust(o: &mut String, s: &LabPageState) {
    o.push_str("<section aria-labelledby=\"trust\">\n<h2 id=\"trust\">Trust the lab on this computer</h2>\n<p>Every lab address has a certificate from the lab's own CA. Once this computer trusts that CA, browsers and git accept them without warnings.</p>\n<p>On the computer that ran <code>homelab up</code>: <code>homelab trust --apply</code> does all of it (and <code>homelab untrust</code> undoes it).</p>\n");
    match &s.ca {
        Some(ca) => {
            let _ = writeln!(
                o,
                "<p>On any other computer: <a href=\"{CA_PATH}\" download=\"{0}\">download the lab CA certificate</a> (<code>{0}</code>, the public certificate only; SHA-256 <code>{1}</code>), then:</p>",
                esc(&ca_file_name(&s.lab)),
                esc(&ca.sha256)
            );
        }
        None => o.push_str("<p>The engine has no copy of the CA certificate to offer here; <code>homelab ca path</code> names its file on the computer that ran <code>homelab up</code>.</p>\n"),
    }
    for t in trust_steps(&s.lab) {
        let _ = write!(o, "<div class=\"os\"><h3>{}</h3><pre><code>", esc(t.os));
        for c in &t.commands {
            let _ = writeln!(o, "{}", esc(c));
        }
        o.push_str("</code></pre>");
        if !t.note.is_empty() {
            let _ = write!(o, "<p class=\"muted\">{}</p>", esc(t.note));
        }
        o.push_str("</div>\n");
    }
    o.push_str("<p>Firefox keeps its own certificates: Settings → Privacy &amp; Security → Certificates → View Certificates → Authorities → Import.</p>\n</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_credentials_in_urls_are_redacted() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        let t = text("clone https://lab:s3cret@gitea.lab/x.git?token=abc failed");
        assert!(!t.contains("s3cret") && !t.contains("abc"), "{t}");
        assert_eq!(link("javascript:alert(1)"), "javascript:alert(1)");
    }

    #[test]
    fn the_script_hash_is_the_base64_sha256_of_the_inline_script() {
        let h = script_hash();
        assert!(
            h.starts_with("sha256-") && h.len() == "sha256-".len() + 44,
            "{h}"
        );
        assert!(content_security_policy().contains(&h));
        assert!(render(&LabPageState::default()).contains(&format!("<script>{SCRIPT}</script>")));
    }
}
