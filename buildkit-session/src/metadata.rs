//! Reading the gRPC metadata the daemon sends with session calls.

use tonic::metadata::MetadataMap;

/// Every value of `key`; when `<key>-encoded: 1` is present the values are
/// URL-query-unescaped, as upstream encodes values that are not printable ASCII.
pub(crate) fn values(md: &MetadataMap, key: &str) -> Vec<String> {
    let encoded = md
        .get(format!("{key}-encoded").as_str())
        .and_then(|v| v.to_str().ok())
        .is_some_and(go_true);
    md.get_all(key)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| {
            if encoded {
                query_unescape(v)
            } else {
                v.to_string()
            }
        })
        .collect()
}

/// True for what Go's `strconv.ParseBool` reads as true.
pub(crate) fn go_true(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// The first value of `key`, decoded as [`values`] does.
pub(crate) fn first(md: &MetadataMap, key: &str) -> Option<String> {
    values(md, key).into_iter().next()
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte; invalid input is kept.
pub(crate) fn query_unescape(v: &str) -> String {
    let spaced = v.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_encoded_values() {
        let mut md = MetadataMap::new();
        md.append("exclude-patterns", "a%2Fb+c".parse().unwrap());
        md.append("exclude-patterns", "%E2%9C%93".parse().unwrap());
        md.append("exclude-patterns-encoded", "1".parse().unwrap());
        md.append("dir-name", "context".parse().unwrap());
        assert_eq!(values(&md, "exclude-patterns"), vec!["a/b c", "\u{2713}"]);
        assert_eq!(first(&md, "dir-name").as_deref(), Some("context"));
        assert!(values(&md, "followpaths").is_empty());
    }
}
