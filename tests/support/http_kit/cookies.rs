//! Cookies: the `Cookie` headers of a request as a map, and `Set-Cookie` on an answer.

use std::collections::BTreeMap;

use http::{HeaderMap, Response};

/// Every `name=value` of every `Cookie` header (a later one wins).
pub fn cookies(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for v in headers.get_all("cookie") {
        for part in v.to_str().unwrap_or("").split(';') {
            if let Some((k, v)) = part.trim().split_once('=') {
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    out
}

/// Append one `Set-Cookie` header per cookie line.
pub fn set_cookies<B>(response: &mut Response<B>, cookies: &[String]) {
    for c in cookies {
        response
            .headers_mut()
            .append("set-cookie", c.parse().unwrap());
    }
}
