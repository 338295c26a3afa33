//! The local-context walker: depth-first, parents before children, names sorted
//! byte-wise in each directory, with include/exclude patterns (dockerignore syntax),
//! follow paths and hardlink detection; what fsutil's filtered walk produces.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use buildkit_proto::fsutil::types::Stat;

use super::mode;
use crate::context::ignore::{MatchInfo, PatternMatcher, clean_path, without_trailing_glob};
use crate::error::{Error, Result};

/// What to send of a directory.
#[derive(Debug, Clone, Default)]
pub struct WalkOptions {
    /// Only paths matching these (or below a match) are sent; empty sends everything.
    pub include_patterns: Vec<String>,
    /// Paths matching these are left out (dockerignore syntax, `!` re-includes).
    pub exclude_patterns: Vec<String>,
    /// Paths whose symlinks are resolved (inside the directory) so that their targets
    /// are sent too.
    pub follow_paths: Vec<String>,
    /// Report uid and gid 0 for every entry, as BuildKit clients do for local sources.
    pub reset_owner: bool,
}

/// One walked entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The metadata as sent on the wire (`path` relative, `/`-separated).
    pub stat: Stat,
    /// Where it is on disk.
    pub abs: PathBuf,
}

/// A walker over one directory.
#[derive(Debug, Clone)]
pub struct Walker {
    root: PathBuf,
    include: Option<PatternMatcher>,
    exclude: Option<PatternMatcher>,
    only_prefix_includes: bool,
    only_prefix_exclude_exceptions: bool,
    reset_owner: bool,
}

const PATTERN_CHARS: &[char] = &['*', '[', ']', '?', '^', '\\'];

struct Frame {
    stat: Stat,
    abs: PathBuf,
    emitted: bool,
    include: Option<MatchInfo>,
    exclude: Option<MatchInfo>,
}

impl Walker {
    /// Prepares a walk of `root` (symlinks in `root` itself are resolved; it must be a
    /// directory).
    pub fn new(root: &Path, opts: &WalkOptions) -> Result<Self> {
        let root = std::fs::canonicalize(root)
            .map_err(|e| Error::io(format!("resolving {}", root.display()), e))?;
        let md = std::fs::metadata(&root)
            .map_err(|e| Error::io(format!("stat {}", root.display()), e))?;
        if !md.is_dir() {
            return Err(Error::Invalid(format!(
                "{} is not a directory",
                root.display()
            )));
        }
        let mut includes = opts.include_patterns.clone();
        if !opts.follow_paths.is_empty() {
            let targets = follow_links(&root, &opts.follow_paths)?;
            if let Some(targets) = targets {
                for t in targets {
                    if !includes.contains(&t) {
                        includes.push(t);
                    }
                }
            }
        }
        let include = if includes.is_empty() {
            None
        } else {
            Some(
                PatternMatcher::new(&includes)
                    .map_err(|e| Error::Invalid(format!("include patterns: {e}")))?,
            )
        };
        let exclude = if opts.exclude_patterns.is_empty() {
            None
        } else {
            Some(
                PatternMatcher::new(&opts.exclude_patterns)
                    .map_err(|e| Error::Invalid(format!("exclude patterns: {e}")))?,
            )
        };
        let only_prefix_includes = include.as_ref().is_none_or(|m| {
            m.patterns()
                .iter()
                .filter(|p| !p.is_exclusion())
                .all(|p| !without_trailing_glob(p).contains(PATTERN_CHARS))
        });
        let only_prefix_exclude_exceptions = exclude.as_ref().is_none_or(|m| {
            m.patterns()
                .iter()
                .filter(|p| p.is_exclusion())
                .all(|p| !without_trailing_glob(p).contains(PATTERN_CHARS))
        });
        Ok(Self {
            root,
            include,
            exclude,
            only_prefix_includes,
            only_prefix_exclude_exceptions,
            reset_owner: opts.reset_owner,
        })
    }

    /// The resolved root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Walks, calling `f` for every entry to send, in wire order.
    pub fn walk(&self, f: &mut dyn FnMut(Entry) -> Result<()>) -> Result<()> {
        let mut stack: Vec<Frame> = Vec::new();
        let mut links: HashMap<(u64, u64), String> = HashMap::new();
        self.walk_dir(&self.root.clone(), "", &mut stack, &mut links, f)
    }

    fn may_include_below(&self, rel: &str) -> bool {
        let dir = format!("{rel}/");
        self.include.as_ref().is_some_and(|m| {
            m.patterns()
                .iter()
                .filter(|p| !p.is_exclusion())
                .any(|p| format!("{}/", without_trailing_glob(p)).starts_with(&dir))
        })
    }

    fn may_reinclude_below(&self, rel: &str) -> bool {
        let dir = format!("{rel}/");
        self.exclude.as_ref().is_some_and(|m| {
            m.patterns()
                .iter()
                .filter(|p| p.is_exclusion())
                .any(|p| format!("{}/", without_trailing_glob(p)).starts_with(&dir))
        })
    }

    fn walk_dir(
        &self,
        dir_abs: &Path,
        dir_rel: &str,
        stack: &mut Vec<Frame>,
        links: &mut HashMap<(u64, u64), String>,
        f: &mut dyn FnMut(Entry) -> Result<()>,
    ) -> Result<()> {
        let reader = match std::fs::read_dir(dir_abs) {
            Ok(r) => r,
            // Removed while walking: nothing to send.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(Error::io(
                    format!("reading directory {}", dir_abs.display()),
                    e,
                ));
            }
        };
        let mut names: Vec<OsString> = Vec::new();
        for ent in reader {
            let ent =
                ent.map_err(|e| Error::io(format!("reading directory {}", dir_abs.display()), e))?;
            names.push(ent.file_name());
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));

        for name in names {
            let Some(name_str) = name.to_str() else {
                return Err(Error::Invalid(format!(
                    "{} is not valid UTF-8 and cannot be sent",
                    dir_abs.join(&name).display()
                )));
            };
            let rel = if dir_rel.is_empty() {
                name_str.to_string()
            } else {
                format!("{dir_rel}/{name_str}")
            };
            let abs = dir_abs.join(&name);
            let md = match std::fs::symlink_metadata(&abs) {
                Ok(md) => md,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("stat {}", abs.display()), e)),
            };
            let is_dir = md.is_dir();
            let parent = stack.last();

            let mut skip = false;
            let mut include_info = None;
            if let Some(inc) = &self.include {
                let (m, info) =
                    inc.matches_with_parent(&rel, parent.and_then(|p| p.include.as_ref()));
                if is_dir {
                    include_info = Some(info);
                }
                if !m {
                    if is_dir && self.only_prefix_includes && !self.may_include_below(&rel) {
                        continue;
                    }
                    skip = true;
                }
            }
            let mut exclude_info = None;
            if let Some(exc) = &self.exclude {
                let (m, info) =
                    exc.matches_with_parent(&rel, parent.and_then(|p| p.exclude.as_ref()));
                if is_dir {
                    exclude_info = Some(info);
                }
                if m {
                    if is_dir
                        && self.only_prefix_exclude_exceptions
                        && (!exc.has_exclusions() || !self.may_reinclude_below(&rel))
                    {
                        continue;
                    }
                    skip = true;
                }
            }

            let stat = self.make_stat(&rel, &abs, &md)?;
            if is_dir {
                stack.push(Frame {
                    stat,
                    abs: abs.clone(),
                    emitted: false,
                    include: include_info,
                    exclude: exclude_info,
                });
                if !skip {
                    emit_pending(stack, f)?;
                }
                self.walk_dir(&abs, &rel, stack, links, f)?;
                stack.pop();
            } else if !skip {
                emit_pending(stack, f)?;
                let mut stat = stat;
                if mode::is_regular(stat.mode) && md.nlink() > 1 {
                    let key = (md.dev(), md.ino());
                    match links.get(&key) {
                        Some(first) => {
                            stat.linkname = first.clone();
                            stat.size = 0;
                        }
                        None => {
                            links.insert(key, rel.clone());
                        }
                    }
                }
                f(Entry { stat, abs })?;
            }
        }
        Ok(())
    }

    fn make_stat(&self, rel: &str, abs: &Path, md: &Metadata) -> Result<Stat> {
        let mut m = mode::from_posix(md.mode());
        // Sockets cannot be represented in a tar: upstream drops the bit.
        m &= !mode::MODE_SOCKET;
        let mut stat = Stat {
            path: rel.to_string(),
            mode: m,
            uid: if self.reset_owner { 0 } else { md.uid() },
            gid: if self.reset_owner { 0 } else { md.gid() },
            size: 0,
            mod_time: md
                .mtime()
                .checked_mul(1_000_000_000)
                .and_then(|n| n.checked_add(md.mtime_nsec()))
                .ok_or_else(|| {
                    Error::Invalid(format!("{}: modification time out of range", abs.display()))
                })?,
            ..Default::default()
        };
        if !md.is_dir() {
            stat.size = md.size() as i64;
            if md.file_type().is_symlink() {
                let target = std::fs::read_link(abs)
                    .map_err(|e| Error::io(format!("reading link {}", abs.display()), e))?;
                stat.linkname = target
                    .to_str()
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "the target of {} is not valid UTF-8",
                            abs.display()
                        ))
                    })?
                    .to_string();
            }
            let ft = md.mode() & libc::S_IFMT;
            if ft == libc::S_IFBLK || ft == libc::S_IFCHR {
                let rdev = md.rdev();
                stat.devmajor = ((rdev >> 8) & 0xfff) as i64;
                stat.devminor = ((rdev & 0xff) | ((rdev >> 12) & 0xfff00)) as i64;
            }
        }
        stat.xattrs = read_xattrs(abs)?;
        Ok(stat)
    }
}

fn emit_pending(stack: &mut [Frame], f: &mut dyn FnMut(Entry) -> Result<()>) -> Result<()> {
    for frame in stack.iter_mut() {
        if !frame.emitted {
            frame.emitted = true;
            f(Entry {
                stat: frame.stat.clone(),
                abs: frame.abs.clone(),
            })?;
        }
    }
    Ok(())
}

/// Extended attributes of `path` itself (not following a symlink), without macOS
/// `com.apple.*` ones.
fn read_xattrs(path: &Path) -> Result<std::collections::BTreeMap<String, bytes::Bytes>> {
    use std::ffi::CString;
    let mut out = std::collections::BTreeMap::new();
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Invalid(format!("{} contains a NUL byte", path.display())))?;
    // SAFETY: `c` is a valid NUL-terminated path; a null buffer with size 0 asks for
    // the needed size.
    let size = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if size <= 0 {
        // ENOTSUP and friends: no xattrs to send.
        return Ok(out);
    }
    let mut names = vec![0u8; size as usize];
    // SAFETY: the buffer is `names.len()` bytes long.
    let size = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if size <= 0 {
        return Ok(out);
    }
    names.truncate(size as usize);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(key) = std::str::from_utf8(name) else {
            continue;
        };
        if key.starts_with("com.apple.") {
            continue;
        }
        let cname = CString::new(name).expect("split on NUL");
        // SAFETY: as above, querying the size first.
        let vsize = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        if vsize < 0 {
            continue;
        }
        let mut value = vec![0u8; vsize as usize];
        // SAFETY: the buffer is `value.len()` bytes long.
        let vsize = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if vsize < 0 {
            continue;
        }
        value.truncate(vsize as usize);
        out.insert(key.to_string(), bytes::Bytes::from(value));
    }
    Ok(out)
}

/// Resolves symlinks along each follow path (inside `root`) into extra include
/// patterns: the links themselves and what they point to. `None` means "everything".
fn follow_links(root: &Path, paths: &[String]) -> Result<Option<Vec<String>>> {
    let mut resolved = std::collections::BTreeSet::new();
    for p in paths {
        resolve(root, p, 0, &mut resolved)?;
    }
    let mut out: Vec<String> = Vec::new();
    for r in resolved {
        if r == "." {
            return Ok(None);
        }
        if out
            .last()
            .is_some_and(|last| r.starts_with(&format!("{last}/")))
        {
            continue;
        }
        out.push(r);
    }
    Ok(Some(out))
}

/// A path relative to the root: cleaned, leading `/` dropped, never escaping.
fn clean_rel(p: &str) -> String {
    let c = clean_path(&format!("/{p}"));
    let c = c.trim_start_matches('/');
    if c.is_empty() {
        ".".into()
    } else {
        c.to_string()
    }
}

fn join_rel(a: &str, b: &str) -> String {
    clean_rel(&format!("{a}/{b}"))
}

/// Walks `p` component by component; a symlink on the way is recorded and its target
/// followed with the rest of the path.
fn resolve(
    root: &Path,
    p: &str,
    depth: usize,
    resolved: &mut std::collections::BTreeSet<String>,
) -> Result<()> {
    if depth > 40 {
        return Err(Error::Invalid(format!(
            "too many levels of symbolic links resolving follow path {p:?}"
        )));
    }
    let mut p = clean_rel(p);
    let mut current = String::from(".");
    loop {
        let (first, rest) = match p.split_once('/') {
            Some((a, b)) => (a.to_string(), b.to_string()),
            None => (p.clone(), String::new()),
        };
        current = join_rel(&current, &first);
        let targets = read_symlink(root, &current, true)?;
        p = rest;
        if (p.is_empty() || targets.is_some()) && resolved.contains(&current) {
            return Ok(());
        }
        if let Some(targets) = targets {
            resolved.insert(current.clone());
            for t in targets {
                resolve(root, &join_rel(&t, &p), depth + 1, resolved)?;
            }
            return Ok(());
        }
        if p.is_empty() {
            resolved.insert(current);
            return Ok(());
        }
    }
}

/// The targets of the symlink at `rel` (relative to the root), or of every symlink
/// matching a wildcard base name; `None` when there is none.
fn read_symlink(root: &Path, rel: &str, allow_wildcard: bool) -> Result<Option<Vec<String>>> {
    let (dir, base) = match rel.rsplit_once('/') {
        Some((d, b)) => (d.to_string(), b.to_string()),
        None => (".".to_string(), rel.to_string()),
    };
    if allow_wildcard && base.contains(['*', '?', '[']) {
        let pm = PatternMatcher::new(&[base.as_str()])?;
        let Ok(rd) = std::fs::read_dir(root.join(&dir)) else {
            return Ok(None);
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| pm.matches(n))
            .collect();
        names.sort();
        let mut out = Vec::new();
        for n in names {
            if let Some(t) = read_symlink(root, &join_rel(&dir, &n), false)? {
                out.extend(t);
            }
        }
        return Ok((!out.is_empty()).then_some(out));
    }
    let abs = root.join(rel);
    let Ok(md) = std::fs::symlink_metadata(&abs) else {
        return Ok(None);
    };
    if !md.file_type().is_symlink() {
        return Ok(None);
    }
    let target = std::fs::read_link(&abs)
        .map_err(|e| Error::io(format!("reading link {}", abs.display()), e))?;
    let target = target.to_string_lossy();
    let resolved = if target.starts_with('/') {
        clean_rel(&target)
    } else {
        join_rel(&dir, &target)
    };
    Ok(Some(vec![resolved]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn paths(root: &Path, opts: WalkOptions) -> Vec<String> {
        let w = Walker::new(root, &opts).unwrap();
        let mut out = Vec::new();
        w.walk(&mut |e| {
            out.push(e.stat.path);
            Ok(())
        })
        .unwrap();
        out
    }

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::create_dir_all(r.join("node_modules/pkg")).unwrap();
        for f in [
            "a.b",
            "a/b/c.txt",
            "a/z.log",
            "a/keep.log",
            "node_modules/pkg/i.js",
            "Dockerfile",
            "a-b",
        ] {
            std::fs::write(r.join(f), f).unwrap();
        }
        d
    }

    #[test]
    fn walks_depth_first_with_bytewise_names() {
        let d = tree();
        assert_eq!(
            paths(d.path(), WalkOptions::default()),
            vec![
                "Dockerfile",
                "a",
                "a/b",
                "a/b/c.txt",
                "a/keep.log",
                "a/z.log",
                "a-b",
                "a.b",
                "node_modules",
                "node_modules/pkg",
                "node_modules/pkg/i.js",
            ]
        );
    }

    #[test]
    fn excludes_with_reincludes_keep_parents() {
        let d = tree();
        let opts = WalkOptions {
            exclude_patterns: vec!["a".into(), "!a/keep.log".into(), "node_modules".into()],
            ..Default::default()
        };
        // `a` is excluded but re-included below, so it is still sent before its child.
        assert_eq!(
            paths(d.path(), opts),
            vec!["Dockerfile", "a", "a/keep.log", "a-b", "a.b"]
        );
    }

    #[test]
    fn includes_and_follow_paths() {
        let d = tree();
        symlink("a/b/c.txt", d.path().join("link")).unwrap();
        let opts = WalkOptions {
            include_patterns: vec!["Dockerfile".into()],
            follow_paths: vec!["link".into()],
            ..Default::default()
        };
        assert_eq!(
            paths(d.path(), opts),
            vec!["Dockerfile", "a", "a/b", "a/b/c.txt", "link"]
        );
    }

    #[test]
    fn hardlinks_point_at_the_first_sent_path() {
        let d = tree();
        std::fs::hard_link(d.path().join("a.b"), d.path().join("z-hard")).unwrap();
        let w = Walker::new(d.path(), &WalkOptions::default()).unwrap();
        let mut seen = Vec::new();
        w.walk(&mut |e| {
            seen.push((e.stat.path, e.stat.linkname, e.stat.size));
            Ok(())
        })
        .unwrap();
        assert!(seen.contains(&("a.b".into(), String::new(), 3)));
        assert!(seen.contains(&("z-hard".into(), "a.b".into(), 0)));

        // With the first one excluded, the next becomes the source.
        let w = Walker::new(
            d.path(),
            &WalkOptions {
                exclude_patterns: vec!["a.b".into()],
                ..Default::default()
            },
        )
        .unwrap();
        let mut seen = Vec::new();
        w.walk(&mut |e| {
            seen.push((e.stat.path, e.stat.linkname));
            Ok(())
        })
        .unwrap();
        assert!(seen.contains(&("z-hard".into(), String::new())));
    }
}
