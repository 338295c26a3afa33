//! Our sender against our receiver, and the receiver against hostile senders.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::sync::Arc;

use buildkit_proto::fsutil::types::packet::PacketType;
use buildkit_proto::fsutil::types::{Packet, Stat};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::*;

fn set_mtime(p: &Path, secs: i64, nanos: i64) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let ts = libc::timespec {
        tv_sec: secs,
        tv_nsec: nanos,
    };
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [ts, ts].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0);
}

fn source_tree() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    std::fs::create_dir_all(r.join("dir/sub")).unwrap();
    std::fs::create_dir_all(r.join("ignored")).unwrap();
    std::fs::write(r.join("small.txt"), b"hello").unwrap();
    std::fs::write(r.join("empty"), b"").unwrap();
    let big: Vec<u8> = (0..(CHUNK_SIZE * 3 + 17))
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(r.join("dir/big.bin"), &big).unwrap();
    std::fs::write(r.join("dir/sub/script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        r.join("dir/sub/script.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(r.join("dir/secret"), b"s").unwrap();
    std::fs::set_permissions(r.join("dir/secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(r.join("ignored/x.log"), b"log").unwrap();
    symlink("dir/big.bin", r.join("link-rel")).unwrap();
    symlink("/etc/passwd", r.join("link-abs")).unwrap();
    std::fs::hard_link(r.join("small.txt"), r.join("dir/hard")).unwrap();
    set_mtime(&r.join("small.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&r.join("link-rel"), 1_500_000_000, 5);
    set_mtime(&r.join("dir/sub"), 1_400_000_000, 42);
    d
}

/// Runs our sender and our receiver against each other.
async fn transfer(src: &Path, dest: &Path, opts: WalkOptions) -> (ReceiveSummary, Arc<SendStats>) {
    let walker = Walker::new(src, &opts).unwrap();
    let (to_recv_tx, to_recv_rx) = outbound();
    let (to_send_tx, to_send_rx) = outbound();
    let stats = Arc::new(SendStats::default());
    let sender = send(walker, to_send_rx, to_recv_tx, stats.clone());
    let receiver = receive(dest, to_recv_rx, to_send_tx);
    let (s, r) = tokio::join!(sender, receiver);
    s.unwrap();
    (r.unwrap(), stats)
}

#[tokio::test]
async fn sender_and_receiver_round_trip_contents_modes_links_and_times() {
    let src = source_tree();
    let dest = tempfile::tempdir().unwrap();
    let opts = WalkOptions {
        exclude_patterns: vec!["ignored".into()],
        ..Default::default()
    };
    let (summary, stats) = transfer(src.path(), dest.path(), opts).await;
    let d = dest.path();

    assert_eq!(std::fs::read(d.join("small.txt")).unwrap(), b"hello");
    assert_eq!(std::fs::read(d.join("empty")).unwrap(), b"");
    assert_eq!(
        std::fs::read(d.join("dir/big.bin")).unwrap(),
        std::fs::read(src.path().join("dir/big.bin")).unwrap()
    );
    assert!(!d.join("ignored").exists(), "excluded directory was sent");
    let mode = |p: &str| {
        std::fs::symlink_metadata(d.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("dir/sub/script.sh"), 0o755);
    assert_eq!(mode("dir/secret"), 0o600);
    assert_eq!(
        std::fs::read_link(d.join("link-rel")).unwrap(),
        Path::new("dir/big.bin")
    );
    assert_eq!(
        std::fs::read_link(d.join("link-abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    // The hardlink arrives as a hardlink: same inode as its source.
    let a = std::fs::metadata(d.join("dir/hard")).unwrap();
    let b = std::fs::metadata(d.join("small.txt")).unwrap();
    assert_eq!(a.ino(), b.ino());
    // Nanosecond modification times survive, for files, links and directories.
    let md = std::fs::metadata(d.join("small.txt")).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_600_000_000, 123_456_789));
    let md = std::fs::symlink_metadata(d.join("link-rel")).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_500_000_000, 5));
    let md = std::fs::metadata(d.join("dir/sub")).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_400_000_000, 42));

    // Only regular files (not the hardlink, links or dirs) had their data requested.
    assert_eq!(stats.files(), 5);
    let data_len = 5 + (CHUNK_SIZE * 3 + 17) as u64 + 18 + 1;
    assert_eq!(stats.bytes(), data_len);
    assert_eq!(summary.bytes, data_len);
}

/// A receiver that records STATs and asks for nothing: the listing as sent.
async fn listing(src: &Path, opts: WalkOptions) -> Vec<Stat> {
    let walker = Walker::new(src, &opts).unwrap();
    let (out_tx, mut out_rx) = outbound();
    let (in_tx, in_rx) = mpsc::channel::<Result<Packet, tonic::Status>>(16);
    let stats = Arc::new(SendStats::default());
    let sender = tokio::spawn(send(walker, ReceiverStream::new(in_rx), out_tx, stats));
    let mut stats_seen = Vec::new();
    loop {
        let p = out_rx.next().await.unwrap().unwrap();
        assert_eq!(
            p.r#type,
            PacketType::PacketStat as i32,
            "only STATs before FIN"
        );
        match p.stat {
            Some(s) => stats_seen.push(s),
            None => break,
        }
    }
    in_tx
        .send(Ok(Packet {
            r#type: PacketType::PacketFin as i32,
            ..Default::default()
        }))
        .await
        .unwrap();
    let fin = out_rx.next().await.unwrap().unwrap();
    assert_eq!(
        fin.r#type,
        PacketType::PacketFin as i32,
        "FIN is answered with FIN"
    );
    sender.await.unwrap().unwrap();
    assert!(out_rx.next().await.is_none(), "the sender ends after FIN");
    stats_seen
}

#[tokio::test]
async fn listing_order_and_go_file_modes() {
    let src = source_tree();
    let stats = listing(
        src.path(),
        WalkOptions {
            reset_owner: true,
            ..Default::default()
        },
    )
    .await;
    let paths: Vec<&str> = stats.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "dir",
            "dir/big.bin",
            "dir/hard",
            "dir/secret",
            "dir/sub",
            "dir/sub/script.sh",
            "empty",
            "ignored",
            "ignored/x.log",
            "link-abs",
            "link-rel",
            "small.txt",
        ]
    );
    let get = |p: &str| stats.iter().find(|s| s.path == p).unwrap();
    assert_eq!(get("dir").mode, mode::MODE_DIR | 0o755);
    assert_eq!(get("dir/sub/script.sh").mode, 0o755);
    assert_eq!(
        get("link-rel").mode & mode::MODE_SYMLINK,
        mode::MODE_SYMLINK
    );
    assert_eq!(get("link-rel").linkname, "dir/big.bin");
    assert_eq!(get("link-rel").size, "dir/big.bin".len() as i64);
    // `dir/hard` comes first in walk order, so it is the source and small.txt the link.
    assert_eq!(get("dir/hard").linkname, "");
    assert_eq!(get("small.txt").linkname, "dir/hard");
    assert_eq!(get("small.txt").size, 0);
    assert_eq!(get("small.txt").mod_time, 1_600_000_000_123_456_789);
    assert!(stats.iter().all(|s| s.uid == 0 && s.gid == 0));
}

// ---- the receiver against hostile senders ----------------------------------------

fn stat(path: &str, mode: u32) -> Packet {
    Packet {
        r#type: PacketType::PacketStat as i32,
        stat: Some(Stat {
            path: path.into(),
            mode,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn link(path: &str, mode: u32, target: &str) -> Packet {
    let mut p = stat(path, mode);
    p.stat.as_mut().unwrap().linkname = target.into();
    p
}

fn data(id: u32, d: &'static [u8]) -> Packet {
    Packet {
        r#type: PacketType::PacketData as i32,
        id,
        data: Bytes::from_static(d),
        ..Default::default()
    }
}

/// Feeds `packets` to a receiver writing into a fresh directory inside a parent that
/// also holds a "victim" file; returns the error text.
async fn hostile(packets: Vec<Packet>) -> (String, tempfile::TempDir) {
    let parent = tempfile::tempdir().unwrap();
    std::fs::write(parent.path().join("victim"), b"original").unwrap();
    let dest = parent.path().join("out");
    let (tx, rx) = mpsc::channel::<Result<Packet, tonic::Status>>(64);
    for p in packets {
        tx.send(Ok(p)).await.unwrap();
    }
    drop(tx);
    let (out_tx, _out_rx) = outbound();
    let err = receive(&dest, ReceiverStream::new(rx), out_tx)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        std::fs::read(parent.path().join("victim")).unwrap(),
        b"original"
    );
    (err, parent)
}

#[tokio::test]
async fn receiver_rejects_parent_escapes() {
    let (err, _) = hostile(vec![stat("../victim", 0o644)]).await;
    assert!(err.contains("escapes the destination"), "{err}");
    let (err, _) = hostile(vec![
        stat("a", mode::MODE_DIR | 0o755),
        stat("a/../../victim", 0o644),
    ])
    .await;
    assert!(err.contains("escapes the destination"), "{err}");
}

#[tokio::test]
async fn receiver_rejects_absolute_and_unclean_paths() {
    let (err, _) = hostile(vec![stat("/tmp/x", 0o644)]).await;
    assert!(err.contains("absolute path"), "{err}");
    let (err, _) = hostile(vec![stat("a//b", 0o644)]).await;
    assert!(err.contains("unclean path"), "{err}");
    let (err, _) = hostile(vec![stat("./a", 0o644)]).await;
    assert!(err.contains("unclean path"), "{err}");
}

#[tokio::test]
async fn receiver_never_writes_through_a_symlink() {
    // A symlink to the outside, then a file "inside" it.
    let (err, parent) = hostile(vec![
        link("esc", mode::MODE_SYMLINK | 0o777, ".."),
        stat("esc/victim", 0o644),
    ])
    .await;
    assert!(err.contains("is not a directory of this transfer"), "{err}");
    assert!(
        std::fs::symlink_metadata(parent.path().join("out/esc"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[tokio::test]
async fn receiver_replaces_a_planted_symlink_instead_of_following_it() {
    let parent = tempfile::tempdir().unwrap();
    std::fs::write(parent.path().join("victim"), b"original").unwrap();
    let dest = parent.path().join("out");
    std::fs::create_dir(&dest).unwrap();
    symlink(parent.path().join("victim"), dest.join("f")).unwrap();
    let (tx, rx) = mpsc::channel::<Result<Packet, tonic::Status>>(64);
    let (out_tx, mut out_rx) = outbound();
    let recv = tokio::spawn({
        let dest = dest.clone();
        async move { receive(&dest, ReceiverStream::new(rx), out_tx).await }
    });
    tx.send(Ok(stat("f", 0o644))).await.unwrap();
    tx.send(Ok(Packet {
        r#type: PacketType::PacketStat as i32,
        ..Default::default()
    }))
    .await
    .unwrap();
    let req = out_rx.next().await.unwrap().unwrap();
    assert_eq!((req.r#type, req.id), (PacketType::PacketReq as i32, 0));
    tx.send(Ok(data(0, b"new"))).await.unwrap();
    tx.send(Ok(data(0, b""))).await.unwrap();
    let fin = out_rx.next().await.unwrap().unwrap();
    assert_eq!(fin.r#type, PacketType::PacketFin as i32);
    tx.send(Ok(Packet {
        r#type: PacketType::PacketFin as i32,
        ..Default::default()
    }))
    .await
    .unwrap();
    recv.await.unwrap().unwrap();
    assert_eq!(
        std::fs::read(parent.path().join("victim")).unwrap(),
        b"original"
    );
    assert!(
        !std::fs::symlink_metadata(dest.join("f"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(dest.join("f")).unwrap(), b"new");
}

#[tokio::test]
async fn receiver_refuses_device_nodes_and_pipes() {
    let (err, _) = hostile(vec![stat(
        "null",
        mode::MODE_DEVICE | mode::MODE_CHAR_DEVICE | 0o666,
    )])
    .await;
    assert!(err.contains("device node"), "{err}");
    let (err, _) = hostile(vec![stat("disk", mode::MODE_DEVICE | 0o660)]).await;
    assert!(err.contains("device node"), "{err}");
    let (err, _) = hostile(vec![stat("fifo", mode::MODE_NAMED_PIPE | 0o644)]).await;
    assert!(err.contains("special file"), "{err}");
}

#[tokio::test]
async fn receiver_checks_hardlinks_order_and_requests() {
    let (err, _) = hostile(vec![link("h", 0o644, "../victim")]).await;
    assert!(err.contains("not a file of this transfer"), "{err}");
    let (err, _) = hostile(vec![stat("b", 0o644), stat("a", 0o644)]).await;
    assert!(err.contains("out of order"), "{err}");
    let (err, _) = hostile(vec![stat("a", 0o644), data(7, b"x")]).await;
    assert!(err.contains("not requested"), "{err}");
    let (err, _) = hostile(vec![stat("a", 0o644)]).await;
    assert!(err.contains("before it was complete"), "{err}");
}

/// A directory whose walk fails part-way: a name that is not UTF-8.
fn unwalkable_tree() -> tempfile::TempDir {
    use std::os::unix::ffi::OsStrExt;
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("a.txt"), b"a").unwrap();
    std::fs::create_dir(d.path().join("z")).unwrap();
    std::fs::write(
        d.path()
            .join("z")
            .join(std::ffi::OsStr::from_bytes(b"bad-\xff")),
        b"x",
    )
    .unwrap();
    d
}

#[tokio::test]
async fn a_walk_that_fails_midway_sends_err_and_ends() {
    let src = unwalkable_tree();
    let walker = Walker::new(src.path(), &WalkOptions::default()).unwrap();
    let (out_tx, mut out_rx) = outbound();
    let (_in_tx, in_rx) = mpsc::channel::<Result<Packet, tonic::Status>>(16);
    let stats = Arc::new(SendStats::default());
    let sender = tokio::spawn(send(walker, ReceiverStream::new(in_rx), out_tx, stats));
    let mut kinds = Vec::new();
    let err_text = loop {
        let p = tokio::time::timeout(std::time::Duration::from_secs(10), out_rx.next())
            .await
            .expect("no hang")
            .unwrap()
            .unwrap();
        if p.r#type == PacketType::PacketErr as i32 {
            break String::from_utf8_lossy(&p.data).into_owned();
        }
        kinds.push(p.stat.map(|s| s.path));
    };
    assert!(err_text.contains("not valid UTF-8"), "{err_text}");
    assert_eq!(
        kinds,
        vec![Some("a.txt".to_string()), Some("z".to_string())]
    );
    let err = tokio::time::timeout(std::time::Duration::from_secs(10), sender)
        .await
        .expect("the sender ends")
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("not valid UTF-8"), "{err}");
}

#[tokio::test]
async fn receiving_into_an_existing_read_only_directory_fills_it_and_applies_the_sent_mode() {
    let src = source_tree();
    std::fs::set_permissions(
        src.path().join("dir"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    let dest = tempfile::tempdir().unwrap();
    std::fs::create_dir(dest.path().join("dir")).unwrap();
    std::fs::set_permissions(
        dest.path().join("dir"),
        std::fs::Permissions::from_mode(0o500),
    )
    .unwrap();
    transfer(src.path(), dest.path(), WalkOptions::default()).await;
    let d = dest.path();
    assert_eq!(std::fs::read(d.join("dir/secret")).unwrap(), b"s");
    let md = std::fs::metadata(d.join("dir")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o750);
}
