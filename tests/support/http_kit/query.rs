//! Query strings and the two ways the faked servers page a list: Gitea's numbered pages
//! (`page`, 1-based, and `limit`) and kube-apiserver's `limit` with an opaque `continue` token
//! (here the offset of the next item).

/// The decoded `name=value` pairs of a query string (or an `x-www-form-urlencoded` body), in
/// order; `+` is a space.
pub fn pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The first value of `name`.
pub fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|q| q.0 == name).map(|q| q.1.as_str())
}

/// A Gitea page: `page` (from 1; 0 reads as 1) of `limit` items.
#[derive(Clone, Copy, Debug)]
pub struct Page {
    pub page: usize,
    pub limit: usize,
}

impl Page {
    /// The page a Gitea list call asks for: `page` defaults to 1, `limit` to
    /// `default_limit` (Gitea's `[api] DEFAULT_PAGING_NUM`, 30, for the calls homelab makes).
    pub fn gitea(pairs: &[(String, String)], default_limit: usize) -> Page {
        let number = |name: &str| get(pairs, name).and_then(|v| v.parse().ok());
        Page {
            page: number("page").unwrap_or(1),
            limit: number("limit").unwrap_or(default_limit),
        }
    }

    /// The items of this page.
    pub fn of<T>(self, items: impl IntoIterator<Item = T>) -> impl Iterator<Item = T> {
        items
            .into_iter()
            .skip((self.page.max(1) - 1) * self.limit)
            .take(self.limit)
    }
}

/// One chunk of a kube-apiserver list and what the list's `metadata` says about the rest.
pub struct Chunk<T> {
    pub items: Vec<T>,
    /// The `continue` token of the next chunk, when items remain.
    pub next: Option<String>,
    /// `remainingItemCount`, when items remain.
    pub remaining: usize,
}

/// The chunk a list call with `limit` (none or 0: everything) and `continue` asks for.
pub fn chunk<T>(items: Vec<T>, limit: Option<&str>, token: Option<&str>) -> Chunk<T> {
    let limit: usize = limit
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let offset: usize = token.and_then(|c| c.parse().ok()).unwrap_or(0);
    let total = items.len();
    let items: Vec<T> = items.into_iter().skip(offset).take(limit).collect();
    let end = offset + items.len();
    Chunk {
        next: (end < total).then(|| end.to_string()),
        remaining: total.saturating_sub(end),
        items,
    }
}
