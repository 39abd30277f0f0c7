//! The page and manifest logic of verify: the NyanCat page's version marker
//! ([`version_marker`], [`bump_version`]), the image tag a GitOps manifest deploys
//! ([`image_tag`]), and the text of a file as Gitea's contents API returns it.
//!
//! Architecture invariant: pure functions over text, no I/O.

use base64::Engine as _;

/// The page's version marker: the text of the one element with `id="version"`.
pub fn version_marker(html: &str) -> Result<(std::ops::Range<usize>, String), usize> {
    let needle = ["id=\"version\"", "id='version'"];
    let mut found = Vec::new();
    for n in needle {
        let mut from = 0;
        while let Some(i) = html[from..].find(n) {
            found.push(from + i);
            from += i + n.len();
        }
    }
    if found.len() != 1 {
        return Err(found.len());
    }
    let at = found[0];
    let open_end = html[at..].find('>').map(|i| at + i + 1).ok_or(0usize)?;
    let close = html[open_end..]
        .find('<')
        .map(|i| open_end + i)
        .ok_or(0usize)?;
    Ok((open_end..close, html[open_end..close].trim().to_string()))
}

/// The version after `current`: `v1` → `v2`, `build-9` → `build-10`; text without a trailing
/// number gets `-2`.
pub fn next_version(current: &str) -> String {
    let digits = current
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if digits == 0 {
        return format!("{current}-2");
    }
    let (prefix, n) = current.split_at(current.len() - digits);
    match n.parse::<u64>() {
        Ok(n) => format!("{prefix}{}", n + 1),
        Err(_) => format!("{current}-2"),
    }
}

/// The page with its version marker bumped: `(new page, old version, new version)`.
pub fn bump_version(html: &str) -> Result<(String, String, String), usize> {
    let (range, old) = version_marker(html)?;
    let new = next_version(&old);
    let mut page = String::with_capacity(html.len() + 4);
    page.push_str(&html[..range.start]);
    page.push_str(&new);
    page.push_str(&html[range.end..]);
    Ok((page, old, new))
}

/// The tag of `image` in a manifest (any container of any document), if it is there.
pub fn image_tag(manifest: &str, image: &str) -> Option<String> {
    fn walk(v: &crate::edges::yaml::Value, image: &str, out: &mut Option<String>) {
        match v {
            crate::edges::yaml::Value::Mapping(m) => {
                for (k, x) in m {
                    if k.as_str() == Some("image")
                        && let Some(s) = x.as_str()
                        && let Some(tag) = s.strip_prefix(image).and_then(|r| r.strip_prefix(':'))
                    {
                        *out = Some(tag.to_string());
                    }
                    walk(x, image, out);
                }
            }
            crate::edges::yaml::Value::Sequence(s) => s.iter().for_each(|x| walk(x, image, out)),
            _ => {}
        }
    }
    let mut out = None;
    for v in crate::edges::yaml::each_document(manifest)
        .into_iter()
        .flatten()
    {
        walk(&v, image, &mut out);
    }
    out
}

/// The text of a file as Gitea's contents API returns it (base64, perhaps wrapped).
pub(super) fn decode_content(c: &crate::services::gitea::types::ContentsResponse) -> String {
    let raw: String = c
        .content
        .as_deref()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_marker_is_bumped_in_place() {
        let page = "<p class=\"version\">version <span id=\"version\">v1</span></p>";
        let (new, old, next) = bump_version(page).unwrap();
        assert_eq!((old.as_str(), next.as_str()), ("v1", "v2"));
        assert_eq!(
            new,
            "<p class=\"version\">version <span id=\"version\">v2</span></p>"
        );
        assert_eq!(version_marker(&new).unwrap().1, "v2");
    }

    #[test]
    fn zero_or_two_markers_are_refused() {
        assert_eq!(bump_version("<p>no marker</p>").unwrap_err(), 0);
        assert_eq!(
            bump_version("<b id=\"version\">1</b><i id='version'>2</i>").unwrap_err(),
            2
        );
    }

    #[test]
    fn next_versions() {
        assert_eq!(next_version("v9"), "v10");
        assert_eq!(next_version("build-41"), "build-42");
        assert_eq!(next_version("beta"), "beta-2");
        assert_eq!(next_version(""), "-2");
    }

    #[test]
    fn image_tags_are_read_from_any_container() {
        let yaml = "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: \"gitea.x/lab/nyan-cat:abc123\"\n        - name: side\n          image: busybox:1.36\n";
        assert_eq!(
            image_tag(yaml, "gitea.x/lab/nyan-cat").as_deref(),
            Some("abc123")
        );
        assert_eq!(image_tag(yaml, "gitea.x/lab/other"), None);
        assert_eq!(
            image_tag(yaml, "gitea.x/lab/nyan"),
            None,
            "a prefix is not the image"
        );
    }

    #[test]
    fn gitea_contents_are_decoded_across_line_breaks() {
        let file = crate::services::gitea::types::ContentsResponse {
            content: Some("PHA+\ndjE8L3A+\n".into()),
            ..Default::default()
        };
        assert_eq!(decode_content(&file), "<p>v1</p>");
        assert_eq!(
            decode_content(&crate::services::gitea::types::ContentsResponse::default()),
            ""
        );
    }
}
