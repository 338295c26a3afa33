//! Go `os.FileMode` bits, which fsutil puts on the wire instead of POSIX `st_mode`.

/// `os.ModeDir`.
pub const MODE_DIR: u32 = 1 << 31;
/// `os.ModeAppend`.
pub const MODE_APPEND: u32 = 1 << 30;
/// `os.ModeExclusive`.
pub const MODE_EXCLUSIVE: u32 = 1 << 29;
/// `os.ModeTemporary`.
pub const MODE_TEMPORARY: u32 = 1 << 28;
/// `os.ModeSymlink`.
pub const MODE_SYMLINK: u32 = 1 << 27;
/// `os.ModeDevice`.
pub const MODE_DEVICE: u32 = 1 << 26;
/// `os.ModeNamedPipe`.
pub const MODE_NAMED_PIPE: u32 = 1 << 25;
/// `os.ModeSocket`.
pub const MODE_SOCKET: u32 = 1 << 24;
/// `os.ModeSetuid`.
pub const MODE_SETUID: u32 = 1 << 23;
/// `os.ModeSetgid`.
pub const MODE_SETGID: u32 = 1 << 22;
/// `os.ModeCharDevice`.
pub const MODE_CHAR_DEVICE: u32 = 1 << 21;
/// `os.ModeSticky`.
pub const MODE_STICKY: u32 = 1 << 20;
/// `os.ModeIrregular`.
pub const MODE_IRREGULAR: u32 = 1 << 19;
/// `os.ModeType`: the bits that make an entry something other than a regular file.
pub const MODE_TYPE: u32 = MODE_DIR
    | MODE_SYMLINK
    | MODE_NAMED_PIPE
    | MODE_SOCKET
    | MODE_DEVICE
    | MODE_CHAR_DEVICE
    | MODE_IRREGULAR;
/// `os.ModePerm`.
pub const MODE_PERM: u32 = 0o777;

/// Go's `FileMode` for a POSIX `st_mode`.
pub fn from_posix(st_mode: u32) -> u32 {
    let mut m = st_mode & MODE_PERM;
    m |= match st_mode & libc::S_IFMT {
        libc::S_IFDIR => MODE_DIR,
        libc::S_IFLNK => MODE_SYMLINK,
        libc::S_IFBLK => MODE_DEVICE,
        libc::S_IFCHR => MODE_DEVICE | MODE_CHAR_DEVICE,
        libc::S_IFIFO => MODE_NAMED_PIPE,
        libc::S_IFSOCK => MODE_SOCKET,
        _ => 0,
    };
    if st_mode & libc::S_ISUID != 0 {
        m |= MODE_SETUID;
    }
    if st_mode & libc::S_ISGID != 0 {
        m |= MODE_SETGID;
    }
    if st_mode & libc::S_ISVTX != 0 {
        m |= MODE_STICKY;
    }
    m
}

/// The POSIX permission bits (with setuid, setgid and sticky) of a Go `FileMode`.
pub fn to_posix_perm(mode: u32) -> u32 {
    let mut m = mode & MODE_PERM;
    if mode & MODE_SETUID != 0 {
        m |= libc::S_ISUID;
    }
    if mode & MODE_SETGID != 0 {
        m |= libc::S_ISGID;
    }
    if mode & MODE_STICKY != 0 {
        m |= libc::S_ISVTX;
    }
    m
}

/// True for a regular file: the only kind whose data can be requested.
pub fn is_regular(mode: u32) -> bool {
    mode & MODE_TYPE == 0
}

/// True for a directory.
pub fn is_dir(mode: u32) -> bool {
    mode & MODE_DIR != 0
}

/// True for a symbolic link.
pub fn is_symlink(mode: u32) -> bool {
    mode & MODE_SYMLINK != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_like_go() {
        assert_eq!(from_posix(libc::S_IFDIR | 0o755), 0x8000_01ed);
        assert_eq!(from_posix(libc::S_IFREG | 0o644), 0o644);
        assert_eq!(from_posix(libc::S_IFLNK | 0o777), MODE_SYMLINK | 0o777);
        assert_eq!(
            from_posix(libc::S_IFCHR | 0o600),
            MODE_DEVICE | MODE_CHAR_DEVICE | 0o600
        );
        assert_eq!(from_posix(libc::S_IFBLK | 0o600), MODE_DEVICE | 0o600);
        assert_eq!(from_posix(libc::S_IFIFO | 0o600), MODE_NAMED_PIPE | 0o600);
        assert_eq!(
            from_posix(libc::S_IFREG | libc::S_ISUID | libc::S_ISGID | libc::S_ISVTX | 0o755),
            MODE_SETUID | MODE_SETGID | MODE_STICKY | 0o755
        );
        assert_eq!(
            to_posix_perm(MODE_DIR | MODE_STICKY | 0o777),
            libc::S_ISVTX | 0o777
        );
        assert!(is_regular(0o644));
        assert!(!is_regular(MODE_SYMLINK | 0o777));
    }
}
