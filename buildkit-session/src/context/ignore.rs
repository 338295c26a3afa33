//! `.dockerignore` files and the pattern matcher BuildKit applies to include and
//! exclude patterns (the semantics of moby's patternmatcher: last match wins, `!`
//! re-includes, `**` spans directories, a pattern also matches everything below a
//! matching directory).

use regex::Regex;

use crate::error::{Error, Result};

/// Reads a `.dockerignore` file's text into patterns: comments and blank lines
/// dropped, each pattern cleaned, a leading `/` removed, `!` kept.
pub fn parse_dockerignore(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut p = String::new();
        if !pattern.is_empty() {
            p = clean_path(pattern);
            if p.len() > 1 && p.starts_with('/') {
                p.remove(0);
            }
        }
        out.push(if invert { format!("!{p}") } else { p });
    }
    out
}

/// Lexical path cleaning as Go's `path.Clean`: no `.`, resolved `..`, single slashes,
/// no trailing slash; `""` becomes `"."`.
pub fn clean_path(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for comp in p.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Exact,
    /// `prefix/**`: everything starting with the prefix.
    Prefix(String),
    /// `**/suffix`.
    Suffix(String),
    Regex(Regex),
}

/// One pattern of a [`PatternMatcher`].
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    dirs: usize,
    exclusion: bool,
    kind: Kind,
}

impl Pattern {
    /// The cleaned pattern, without its `!`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True for a `!` (re-include) pattern.
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    fn compile(text: &str) -> Result<Kind> {
        let bad = || Error::Invalid(format!("invalid pattern {text:?}"));
        let mut re = String::from("^");
        let mut kind = 0u8; // 0 exact, 1 prefix, 2 suffix, 3 regex
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        let mut first = true;
        while i < chars.len() {
            let ch = chars[i];
            i += 1;
            match ch {
                '*' if chars.get(i) == Some(&'*') => {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    if i >= chars.len() {
                        if kind == 0 {
                            kind = 1;
                        } else {
                            re.push_str(".*");
                            kind = 3;
                        }
                    } else {
                        re.push_str("(.*/)?");
                        kind = 3;
                    }
                    if first {
                        kind = 2;
                    }
                }
                '*' => {
                    re.push_str("[^/]*");
                    kind = 3;
                }
                '?' => {
                    re.push_str("[^/]");
                    kind = 3;
                }
                '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                    re.push('\\');
                    re.push(ch);
                }
                '\\' => match chars.get(i) {
                    Some(&next) => {
                        i += 1;
                        if next.is_ascii_punctuation() {
                            re.push('\\');
                            re.push(next);
                        } else {
                            re.push_str(&regex::escape(&next.to_string()));
                        }
                        kind = 3;
                    }
                    None => return Err(bad()),
                },
                '[' | ']' => {
                    re.push(ch);
                    kind = 3;
                }
                c => re.push(c),
            }
            first = false;
        }
        Ok(match kind {
            0 => Kind::Exact,
            1 => Kind::Prefix(text[..text.len() - 2].to_string()),
            2 => Kind::Suffix(text[2..].to_string()),
            _ => {
                re.push('$');
                Kind::Regex(Regex::new(&re).map_err(|_| bad())?)
            }
        })
    }

    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(p) => path.starts_with(p.as_str()),
            Kind::Suffix(s) => {
                path.ends_with(s.as_str()) || (s.starts_with('/') && path == &s[1..])
            }
            Kind::Regex(re) => re.is_match(path),
        }
    }
}

/// Per-pattern results for a directory, so that its children need not re-check every
/// ancestor (the walker passes them down).
#[derive(Debug, Clone, Default)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// An ordered list of patterns; the last one that matches decides.
#[derive(Debug, Clone, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl PatternMatcher {
    /// Compiles patterns (dockerignore syntax). Blank patterns are skipped.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self> {
        let mut out = Self::default();
        for raw in patterns {
            let raw = raw.as_ref().trim();
            if raw.is_empty() {
                continue;
            }
            let mut p = clean_path(raw);
            let exclusion = p.starts_with('!');
            if exclusion {
                if p.len() == 1 {
                    return Err(Error::Invalid("illegal exclusion pattern: \"!\"".into()));
                }
                p.remove(0);
                out.exclusions = true;
            }
            let kind = Pattern::compile(&p)?;
            out.patterns.push(Pattern {
                dirs: p.split('/').count(),
                text: p,
                exclusion,
                kind,
            });
        }
        Ok(out)
    }

    /// The compiled patterns.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// True when some pattern starts with `!`.
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    /// True when no pattern was given.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` (or a directory above it, to the depth of each pattern) matches.
    pub fn matches(&self, path: &str) -> bool {
        let parent = parent_of(path);
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let mut m = p.matches(path);
            if !m && parent != "." && p.dirs <= parent_dirs.len() {
                m = p.matches(&parent_dirs[..p.dirs].join("/"));
            }
            if m {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Whether `path` or any directory above it matches.
    pub fn matches_or_parent_matches(&self, path: &str) -> bool {
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let m = p.matches(path) || ancestors(path).any(|a| p.matches(a));
            if m {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Like [`matches_or_parent_matches`](Self::matches_or_parent_matches), reusing the
    /// parent directory's results; returns this path's results for its children.
    pub fn matches_with_parent(&self, path: &str, parent: Option<&MatchInfo>) -> (bool, MatchInfo) {
        let parent_matched = parent.map(|p| p.parent_matched.as_slice()).unwrap_or(&[]);
        let mut info = MatchInfo {
            parent_matched: vec![false; self.patterns.len()],
        };
        let mut matched = false;
        for (i, p) in self.patterns.iter().enumerate() {
            let mut m = parent_matched.get(i).copied().unwrap_or(false);
            if !m {
                if p.exclusion != matched {
                    continue;
                }
                m = p.matches(path);
                if !m && parent_matched.is_empty() {
                    m = ancestors(path).any(|a| p.matches(a));
                }
            }
            info.parent_matched[i] = m;
            if m {
                matched = !p.exclusion;
            }
        }
        (matched, info)
    }
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[..i],
        None => ".",
    }
}

/// `a`, `a/b` for `a/b/c` (the proper ancestors, shortest first).
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// The pattern without a trailing `/**` or `/*`: a directory that is a prefix of it may
/// hold matches.
pub(crate) fn without_trailing_glob(p: &Pattern) -> &str {
    let s = p.as_str();
    s.strip_suffix("/**")
        .or_else(|| s.strip_suffix("/*"))
        .unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(patterns: &[&str], path: &str) -> bool {
        PatternMatcher::new(patterns)
            .unwrap()
            .matches_or_parent_matches(path)
    }

    #[test]
    fn cleans_like_go() {
        assert_eq!(clean_path("a//b/./c/.."), "a/b");
        assert_eq!(clean_path("./"), ".");
        assert_eq!(clean_path("/../a"), "/a");
        assert_eq!(clean_path("../a/"), "../a");
        assert_eq!(clean_path(""), ".");
    }

    #[test]
    fn dockerignore_parsing() {
        let text = "\u{feff}# comment\n\n  *.log  \n!keep.log\n/abs/path\n./dot/\n! spaced\n";
        assert_eq!(
            parse_dockerignore(text),
            vec!["*.log", "!keep.log", "abs/path", "dot", "!spaced"]
        );
    }

    #[test]
    fn dockerignore_semantics() {
        assert!(m(&["*.log"], "a.log"));
        assert!(!m(&["*.log"], "dir/a.log"), "* does not cross directories");
        assert!(m(&["**/*.log"], "dir/sub/a.log"));
        assert!(m(&["**/*.log"], "a.log"));
        assert!(
            m(&["node_modules"], "node_modules/x/y.js"),
            "a directory match covers its tree"
        );
        assert!(!m(&["*.log", "!keep.log"], "keep.log"));
        assert!(
            m(&["*.log", "!keep.log", "keep*"], "keep.log"),
            "last match wins"
        );
        assert!(m(&["docs/**"], "docs/a/b.md"));
        assert!(!m(&["docs/**"], "docsx"));
        assert!(m(&["a?c"], "abc"));
        assert!(!m(&["a?c"], "a/c"));
        assert!(m(&["[ab].txt"], "b.txt"));
        assert!(!m(&["[ab].txt"], "c.txt"));
        assert!(m(&["a/**/b"], "a/x/y/b"));
        assert!(m(&["a/**/b"], "a/b"));
        assert!(m(&["file.txt"], "file.txt"));
        assert!(!m(&["file.txt"], "file_txt"), "dots are literal");
        assert!(m(&["\\*star"], "*star"));
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert!(PatternMatcher::new(&["!"]).is_err());
        assert!(PatternMatcher::new(&["[unclosed"]).is_err());
    }

    #[test]
    fn parent_results_match_full_results() {
        let pm = PatternMatcher::new(&["a", "!a/keep", "**/*.tmp"]).unwrap();
        let (dm, dinfo) = pm.matches_with_parent("a", None);
        assert!(dm);
        let (m1, _) = pm.matches_with_parent("a/keep", Some(&dinfo));
        assert!(!m1);
        let (m2, _) = pm.matches_with_parent("a/other", Some(&dinfo));
        assert!(m2);
        assert_eq!(m1, pm.matches_or_parent_matches("a/keep"));
        assert_eq!(m2, pm.matches_or_parent_matches("a/other"));
    }
}
