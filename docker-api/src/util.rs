//! Small helpers shared by the endpoint modules: lenient JSON decoding, filters and
//! path escaping.

use std::collections::BTreeMap;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::{Deserialize, Deserializer, Serialize};

/// Decodes `null` as the type's default: Docker sends `null` for many empty lists
/// and maps (`Labels`, `RepoTags`, `BuildCache`).
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Characters escaped in a path segment. Image references keep their `/`, `:` and
/// `@`, which the daemon's router expects literally.
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// Escapes a name (container, image reference, volume) for use inside a path.
pub(crate) fn path(name: &str) -> String {
    utf8_percent_encode(name, PATH).to_string()
}

/// Docker's `filters` parameter: a map from filter name to accepted values
/// (`label=key=value`, `name=...`, `dangling=true`, `container=<id>`).
///
/// ```
/// let f = docker_api::Filters::new().label("app=web").add("status", "running");
/// assert!(!f.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// No filters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one accepted value for a filter.
    pub fn add(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.entry(name.into()).or_default().push(value.into());
        self
    }

    /// Adds a `label` filter: `key` (label present) or `key=value`.
    pub fn label(self, label: impl Into<String>) -> Self {
        self.add("label", label)
    }

    /// True when no filter is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Splits an image reference into repository and tag or digest:
/// `localhost:5000/app:1` -> (`localhost:5000/app`, `Some("1")`),
/// `app@sha256:..` -> (`app`, `Some("sha256:..")`), `app` -> (`app`, `None`).
pub(crate) fn split_reference(reference: &str) -> (&str, Option<&str>) {
    if let Some((repo, digest)) = reference.split_once('@') {
        return (repo, Some(digest));
    }
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(i) => (
            &reference[..name_start + i],
            Some(&reference[name_start + i + 1..]),
        ),
        None => (reference, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_references() {
        assert_eq!(
            split_reference("localhost:5000/app:1"),
            ("localhost:5000/app", Some("1"))
        );
        assert_eq!(
            split_reference("localhost:5000/app"),
            ("localhost:5000/app", None)
        );
        assert_eq!(
            split_reference("app@sha256:abc"),
            ("app", Some("sha256:abc"))
        );
        assert_eq!(split_reference("busybox"), ("busybox", None));
        assert_eq!(split_reference("busybox:local"), ("busybox", Some("local")));
    }

    #[test]
    fn escapes_paths_but_keeps_reference_punctuation() {
        assert_eq!(
            path("localhost:5000/a/b@sha256:0"),
            "localhost:5000/a/b@sha256:0"
        );
        assert_eq!(path("a b?c#d"), "a%20b%3Fc%23d");
    }

    #[test]
    fn null_lists_decode_as_empty() {
        #[derive(Deserialize)]
        struct T {
            #[serde(default, deserialize_with = "nullable")]
            v: Vec<String>,
        }
        let t: T = serde_json::from_str(r#"{"v":null}"#).unwrap();
        assert!(t.v.is_empty());
        let t: T = serde_json::from_str(r#"{}"#).unwrap();
        assert!(t.v.is_empty());
    }
}
