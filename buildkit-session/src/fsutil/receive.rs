//! The receiving side of fsutil's DiffCopy, writing into a local directory: what the
//! daemon sends for a `local` export. The daemon is not trusted: paths must be clean,
//! relative and in walk order, every entry's parent must be a directory received
//! earlier in the same transfer (so nothing is written through a symlink), hardlinks
//! must point at files received earlier, and device nodes and pipes are refused.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use buildkit_proto::fsutil::types::packet::PacketType;
use buildkit_proto::fsutil::types::{Packet, Stat};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::mode;
use super::outbound::Outbound;
use crate::context::ignore::clean_path;
use crate::error::{Error, Result};

/// What a receive wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReceiveSummary {
    /// Entries created (directories, files, links).
    pub entries: u64,
    /// File data bytes written.
    pub bytes: u64,
}

struct PendingFile {
    rel: String,
    stat: Stat,
    file: Option<File>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Other,
}

/// The receiver state machine. It runs on a blocking thread: packets arrive on
/// `inbound`, REQ and FIN go out on `outbound`.
pub(crate) struct Receiver {
    dest: PathBuf,
    /// Directories open in walk order: (path, last child name seen).
    stack: Vec<(String, String)>,
    kinds: HashMap<String, Kind>,
    requested: HashMap<u32, PendingFile>,
    dirs: Vec<(PathBuf, Stat)>,
    next_id: u32,
    listing_done: bool,
    fin_sent: bool,
    summary: ReceiveSummary,
}

fn hostile(msg: String) -> Error {
    Error::Protocol(format!("refusing the daemon's export: {msg}"))
}

impl Receiver {
    pub(crate) fn new(dest: &Path) -> Result<Self> {
        std::fs::create_dir_all(dest)
            .map_err(|e| Error::io(format!("creating {}", dest.display()), e))?;
        let dest = std::fs::canonicalize(dest)
            .map_err(|e| Error::io(format!("resolving {}", dest.display()), e))?;
        Ok(Self {
            dest,
            stack: vec![(String::new(), String::new())],
            kinds: HashMap::new(),
            requested: HashMap::new(),
            dirs: Vec::new(),
            next_id: 0,
            listing_done: false,
            fin_sent: false,
            summary: ReceiveSummary::default(),
        })
    }

    /// Runs until the sender's FIN (or the end of its stream after ours).
    pub(crate) fn run(
        mut self,
        inbound: &mut mpsc::Receiver<Result<Packet>>,
        outbound: &Outbound,
    ) -> Result<ReceiveSummary> {
        let res = self.run_inner(inbound, outbound);
        if let Err(e) = &res {
            let _ = outbound.blocking_send(vec![Ok(Packet {
                r#type: PacketType::PacketErr as i32,
                data: Bytes::from(e.to_string()),
                ..Default::default()
            })]);
        }
        res
    }

    fn run_inner(
        &mut self,
        inbound: &mut mpsc::Receiver<Result<Packet>>,
        outbound: &Outbound,
    ) -> Result<ReceiveSummary> {
        loop {
            let Some(p) = inbound.blocking_recv() else {
                if self.fin_sent {
                    break;
                }
                return Err(Error::Protocol(
                    "the sender ended the transfer before it was complete".into(),
                ));
            };
            let p = p?;
            match PacketType::try_from(p.r#type) {
                Ok(PacketType::PacketStat) => match p.stat {
                    Some(stat) => self.on_stat(stat, outbound)?,
                    None => self.listing_done = true,
                },
                Ok(PacketType::PacketData) => self.on_data(p.id, &p.data)?,
                Ok(PacketType::PacketFin) => break,
                Ok(PacketType::PacketErr) => {
                    return Err(Error::Protocol(format!(
                        "error from sender: {}",
                        String::from_utf8_lossy(&p.data)
                    )));
                }
                Ok(PacketType::PacketReq) | Err(_) => {
                    return Err(hostile(format!("unexpected packet type {}", p.r#type)));
                }
            }
            if self.listing_done && self.requested.is_empty() && !self.fin_sent {
                self.fin_sent = true;
                outbound
                    .blocking_send(vec![Ok(Packet {
                        r#type: PacketType::PacketFin as i32,
                        ..Default::default()
                    })])
                    .map_err(|_| Error::Transport("the sender went away".into()))?;
            }
        }
        if !self.requested.is_empty() {
            return Err(Error::Protocol(format!(
                "the transfer ended with {} file(s) incomplete",
                self.requested.len()
            )));
        }
        // Directory times and modes last: writing children changes them.
        for (path, stat) in self.dirs.iter().rev() {
            finish_dir(path, stat)?;
        }
        Ok(std::mem::take(&mut self.summary))
    }

    /// Checks the path and its place in the walk order; returns (parent, base).
    fn check_path(&mut self, p: &str, is_dir: bool) -> Result<()> {
        if p.is_empty() || p.contains('\0') {
            return Err(hostile(format!("invalid path {p:?}")));
        }
        if p.starts_with('/') {
            return Err(hostile(format!("absolute path {p:?}")));
        }
        if p == ".." || p.starts_with("../") || p.split('/').any(|c| c == "..") {
            return Err(hostile(format!("path {p:?} escapes the destination")));
        }
        if clean_path(p) != p || p == "." {
            return Err(hostile(format!("unclean path {p:?}")));
        }
        let (dir, base) = match p.rsplit_once('/') {
            Some((d, b)) => (d, b),
            None => ("", p),
        };
        while self.stack.last().is_some_and(|(d, _)| d != dir) {
            self.stack.pop();
        }
        let Some((_, last)) = self.stack.last_mut() else {
            return Err(hostile(format!(
                "{p:?} arrived out of order, or its parent {dir:?} is not a directory of this transfer"
            )));
        };
        if last.as_str() >= base {
            return Err(hostile(format!("{p:?} arrived out of order")));
        }
        *last = base.to_string();
        if is_dir {
            self.stack.push((p.to_string(), String::new()));
        }
        Ok(())
    }

    fn on_stat(&mut self, stat: Stat, outbound: &Outbound) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let m = stat.mode;
        let is_dir = mode::is_dir(m);
        self.check_path(&stat.path, is_dir)?;
        let rel = stat.path.clone();
        let target = self.dest.join(&rel);
        self.summary.entries += 1;

        if is_dir {
            match std::fs::symlink_metadata(&target) {
                Ok(md) if md.is_dir() => {
                    // An existing directory must take the children; its own mode
                    // is applied at the end.
                    if md.permissions().mode() & 0o700 != 0o700 {
                        std::fs::set_permissions(
                            &target,
                            std::fs::Permissions::from_mode(md.permissions().mode() | 0o700),
                        )
                        .map_err(|e| Error::io(format!("chmod {}", target.display()), e))?;
                    }
                }
                Ok(_) => {
                    remove_any(&target)?;
                    mkdir(&target)?;
                }
                Err(_) => mkdir(&target)?,
            }
            self.kinds.insert(rel, Kind::Dir);
            self.dirs.push((target, stat));
            return Ok(());
        }
        if m & (mode::MODE_DEVICE | mode::MODE_CHAR_DEVICE) != 0 {
            return Err(hostile(format!("device node {rel:?}")));
        }
        if m & (mode::MODE_NAMED_PIPE | mode::MODE_SOCKET | mode::MODE_IRREGULAR) != 0 {
            return Err(hostile(format!("special file {rel:?}")));
        }
        remove_any(&target)?;
        if mode::is_symlink(m) {
            std::os::unix::fs::symlink(&stat.linkname, &target)
                .map_err(|e| Error::io(format!("creating symlink {}", target.display()), e))?;
            set_mtime(&target, stat.mod_time, true)?;
            self.kinds.insert(rel, Kind::Other);
            return Ok(());
        }
        if !stat.linkname.is_empty() {
            // A hardlink to a regular file received earlier.
            if self.kinds.get(&stat.linkname) != Some(&Kind::File) {
                return Err(hostile(format!(
                    "hardlink {rel:?} points at {:?}, which is not a file of this transfer",
                    stat.linkname
                )));
            }
            std::fs::hard_link(self.dest.join(&stat.linkname), &target)
                .map_err(|e| Error::io(format!("creating hardlink {}", target.display()), e))?;
            self.kinds.insert(rel, Kind::File);
            return Ok(());
        }
        // Created now (empty, never through a planted symlink) so that hardlinks to it
        // can be made before its data arrives.
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&target)
            .map_err(|e| Error::io(format!("creating {}", target.display()), e))?;
        self.kinds.insert(rel.clone(), Kind::File);
        self.requested.insert(
            id,
            PendingFile {
                rel,
                stat,
                file: None,
            },
        );
        outbound
            .blocking_send(vec![Ok(Packet {
                r#type: PacketType::PacketReq as i32,
                id,
                ..Default::default()
            })])
            .map_err(|_| Error::Transport("the sender went away".into()))
    }

    fn on_data(&mut self, id: u32, data: &[u8]) -> Result<()> {
        let dest = self.dest.clone();
        let pending = self
            .requested
            .get_mut(&id)
            .ok_or_else(|| hostile(format!("data for a file that was not requested (id {id})")))?;
        let path = dest.join(&pending.rel);
        if pending.file.is_none() {
            let f = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            pending.file = Some(f);
        }
        if !data.is_empty() {
            pending
                .file
                .as_mut()
                .expect("opened above")
                .write_all(data)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            self.summary.bytes += data.len() as u64;
            return Ok(());
        }
        let done = self.requested.remove(&id).expect("present");
        let file = done.file.expect("opened above");
        file.set_permissions(std::fs::Permissions::from_mode(mode::to_posix_perm(
            done.stat.mode,
        )))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))?;
        file.set_modified(to_system_time(done.stat.mod_time))
            .map_err(|e| Error::io(format!("setting the time of {}", path.display()), e))?;
        Ok(())
    }
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir(path)
        .map_err(|e| Error::io(format!("creating directory {}", path.display()), e))?;
    // Writable until the end, when the real mode is applied.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))
}

fn remove_any(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => return Ok(()),
    }
    .map_err(|e| Error::io(format!("replacing {}", path.display()), e))
}

/// Applies a received directory's mode and time through a handle that is
/// certainly that directory (never a symlink put in its place).
fn finish_dir(path: &Path, stat: &Stat) -> Result<()> {
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io(format!("opening directory {}", path.display()), e))?;
    dir.set_permissions(std::fs::Permissions::from_mode(mode::to_posix_perm(
        stat.mode,
    )))
    .map_err(|e| Error::io(format!("chmod {}", path.display()), e))?;
    let t = to_system_time(stat.mod_time);
    dir.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
        .map_err(|e| Error::io(format!("setting the time of {}", path.display()), e))
}

fn to_system_time(nanos: i64) -> SystemTime {
    if nanos >= 0 {
        UNIX_EPOCH + Duration::from_nanos(nanos as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(nanos.unsigned_abs())
    }
}

/// Sets the modification time (and access time) of `path`, of the link itself for a
/// symlink.
fn set_mtime(path: &Path, nanos: i64, nofollow: bool) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Invalid(format!("{} contains a NUL byte", path.display())))?;
    let ts = libc::timespec {
        tv_sec: nanos.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: nanos.rem_euclid(1_000_000_000) as _,
    };
    let times = [ts, ts];
    let flags = if nofollow {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        0
    };
    // SAFETY: `c` is a valid NUL-terminated path and `times` holds two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), flags) };
    if rc != 0 {
        return Err(Error::io(
            format!("setting the time of {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}
