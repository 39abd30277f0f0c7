//! Words for people: ages ("3 min ago"), durations, paths under the home directory as `~/…`,
//! and text wrapped at word boundaries to the terminal's width.
//!
//! Architecture invariant: pure functions over their arguments (the current time, the home
//! directory and the width are parameters), so each is unit-tested with fixed values; only the
//! thin wrappers [`tilde`] and [`terminal_width`] read the environment. JSON output never goes
//! through here: programs get full RFC 3339 times and absolute paths.

use std::path::Path;
use std::time::Duration;

use time::OffsetDateTime;

/// How long ago `then` was, seen at `now`: `just now`, `40 s ago`, `3 min ago`, `2 h ago`,
/// `5 days ago`. A time in the future (a clock that moved back) reads `just now`.
pub fn age(then: OffsetDateTime, now: OffsetDateTime) -> String {
    let secs = (now - then).whole_seconds();
    match secs {
        s if s < 10 => "just now".to_string(),
        s if s < 60 => format!("{s} s ago"),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 48 * 3600 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

/// [`age`] of an RFC 3339 time as the lab state records it; the text itself when it does not
/// parse (an older or hand-edited record is shown, not hidden).
pub fn age_of(rfc3339: &str, now: OffsetDateTime) -> String {
    match OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339) {
        Ok(then) => age(then, now),
        Err(_) => rfc3339.to_string(),
    }
}

/// `0.4s`, `12.0s`, `2m03s`, `1h02m`: the one way durations read for people.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = d.as_secs() / 60;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

/// `path` with the home directory `home` written as `~` (`~/.kube/config`); other paths as
/// they are. Only whole components match (`/home/al` does not shorten `/home/alex`).
pub fn tilde_with(path: &Path, home: Option<&Path>) -> String {
    if let Some(home) = home.filter(|h| h.is_absolute() && h.parent().is_some())
        && let Ok(rest) = path.strip_prefix(home)
    {
        return if rest.as_os_str().is_empty() {
            "~".to_string()
        } else {
            format!("~/{}", rest.display())
        };
    }
    path.display().to_string()
}

/// `path` for people: under `$HOME` as `~/…` (see [`tilde_with`]).
pub fn tilde(path: &Path) -> String {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    tilde_with(path, home.as_deref())
}

/// `text` with every path under `home` that starts a word written as `~/…` (messages that
/// name a file). Only where a shell would expand `~` again — at the start, after a space, a
/// backtick or a parenthesis — so a command copied from a message still works (`sql:/home/…`
/// and quoted paths stay whole).
pub fn tilde_in_with(text: &str, home: Option<&Path>) -> String {
    let Some(home) = home.filter(|h| h.is_absolute() && h.parent().is_some()) else {
        return text.to_string();
    };
    let home = format!("{}/", home.display().to_string().trim_end_matches('/'));
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(&home) {
        let starts_word = match rest[..i].chars().next_back() {
            None => out.chars().next_back().is_none_or(starts_a_word),
            Some(c) => starts_a_word(c),
        };
        out.push_str(&rest[..i]);
        out.push_str(if starts_word { "~/" } else { &home });
        rest = &rest[i + home.len()..];
    }
    out.push_str(rest);
    out
}

fn starts_a_word(c: char) -> bool {
    c.is_whitespace() || matches!(c, '`' | '(')
}

/// `text` for people, paths under `$HOME` as `~/…` (see [`tilde_in_with`]).
pub fn tilde_in(text: &str) -> String {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    tilde_in_with(text, home.as_deref())
}

/// Columns of the terminal on stderr; `None` off a terminal.
pub fn terminal_width() -> Option<usize> {
    let (_, cols) = console::Term::stderr().size_checked()?;
    Some(cols as usize)
}

/// Display width of `text` in terminal columns (not bytes: `✓` and `…` are one column).
pub fn width(text: &str) -> usize {
    console::measure_text_width(text)
}

/// `text` broken at spaces into lines no wider than `width` columns, the first after `first`
/// (already on the line), the others after `indent` spaces. A word longer than a whole line
/// gets a line of its own and is never cut: a path or URL broken in the middle cannot be
/// copied.
pub fn wrap(first: &str, text: &str, indent: usize, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = first.to_string();
    let mut empty = true;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let wanted = self::width(&line) + usize::from(!empty) + self::width(word);
        if !empty && wanted > width {
            lines.push(line);
            line = " ".repeat(indent);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    lines.push(line.trim_end().to_string());
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-05 09:00:00 UTC);

    #[test]
    fn ages_read_in_the_largest_unit_that_fits() {
        let ago = |secs: i64| age(NOW - time::Duration::seconds(secs), NOW);
        assert_eq!(ago(0), "just now");
        assert_eq!(ago(9), "just now");
        assert_eq!(ago(40), "40 s ago");
        assert_eq!(ago(3 * 60 + 59), "3 min ago");
        assert_eq!(ago(2 * 3600 + 5), "2 h ago");
        assert_eq!(ago(47 * 3600), "47 h ago");
        assert_eq!(ago(5 * 86_400 + 7), "5 days ago");
        // A clock that moved back does not show a negative age.
        assert_eq!(ago(-300), "just now");
    }

    #[test]
    fn recorded_times_become_ages_and_odd_ones_are_shown_as_they_are() {
        assert_eq!(age_of("2026-12-05T08:54:19.125873689Z", NOW), "5 min ago");
        assert_eq!(age_of("yesterday", NOW), "yesterday");
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(duration(Duration::from_millis(1400)), "1.4s");
        assert_eq!(duration(Duration::from_millis(59_940)), "59.9s");
        assert_eq!(duration(Duration::from_secs(123)), "2m03s");
        assert_eq!(duration(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn paths_under_home_start_with_a_tilde() {
        let home = Path::new("/home/alex");
        let t = |p: &str| tilde_with(Path::new(p), Some(home));
        assert_eq!(t("/home/alex/.kube/config"), "~/.kube/config");
        assert_eq!(t("/home/alex"), "~");
        assert_eq!(t("/home/alexandra/x"), "/home/alexandra/x");
        assert_eq!(t("/etc/ssl/certs"), "/etc/ssl/certs");
        assert_eq!(t("relative/file"), "relative/file");
        // No home, or `/` as home (a container's root user): paths stay whole.
        assert_eq!(tilde_with(Path::new("/x/y"), None), "/x/y");
        assert_eq!(tilde_with(Path::new("/x/y"), Some(Path::new("/"))), "/x/y");
    }

    #[test]
    fn messages_name_files_under_home_with_a_tilde() {
        let home = Some(Path::new("/home/alex"));
        assert_eq!(
            tilde_in_with(
                "kept `/home/alex/.local/share/homelab/t` and `/home/alexa/x`",
                home
            ),
            "kept `~/.local/share/homelab/t` and `/home/alexa/x`"
        );
        assert_eq!(
            tilde_in_with("/home/alex/a", Some(Path::new("/"))),
            "/home/alex/a"
        );
    }

    #[test]
    fn wrapping_breaks_between_words_only() {
        assert_eq!(wrap("✓ ab  ", "one two", 6, 20), ["✓ ab  one two"]);
        assert_eq!(
            wrap("✓ ab  ", "one two three four", 6, 16),
            ["✓ ab  one two", "      three four"]
        );
        // A word wider than a line keeps its own line, whole.
        assert_eq!(
            wrap("x ", "see ~/.local/share/homelab/t/ca/ca.crt now", 2, 20),
            ["x see", "  ~/.local/share/homelab/t/ca/ca.crt", "  now"]
        );
        for line in wrap("✓ step  ", &"word ".repeat(40), 9, 30) {
            assert!(width(&line) <= 30, "{line}");
        }
    }
}
