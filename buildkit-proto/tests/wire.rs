//! The generated code must put the same bytes on the wire as upstream BuildKit.
//!
//! The expected bytes were produced by BuildKit v0.34.2's Go types (`MarshalVT`) for the
//! same values, and checked by hand field by field in the comments.

use std::collections::BTreeMap;

use buildkit_proto::fsutil::types::{Packet, Stat, packet::PacketType};
use buildkit_proto::moby::buildkit::v1::{CacheOptions, CacheOptionsEntry, Exporter, SolveRequest};
use prost::Message;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn map(k: &str, v: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(k.to_string(), v.to_string())])
}

#[test]
fn solve_request_matches_upstream_bytes() {
    let req = SolveRequest {
        r#ref: "r1".into(),
        session: "s1".into(),
        frontend: "dockerfile.v0".into(),
        frontend_attrs: map("filename", "Dockerfile"),
        entitlements: vec!["network.host".into()],
        cache: Some(CacheOptions {
            imports: vec![CacheOptionsEntry {
                r#type: "registry".into(),
                attrs: map("ref", "x"),
            }],
            ..Default::default()
        }),
        exporters: vec![Exporter {
            r#type: "image".into(),
            attrs: map("name", "a:b"),
        }],
        ..Default::default()
    };
    let expected = concat!(
        "0a027231",                                         // 1 Ref "r1"
        "2a027331",                                         // 5 Session "s1"
        "320d646f636b657266696c652e7630",                   // 6 Frontend "dockerfile.v0"
        "3a160a0866696c656e616d65120a446f636b657266696c65", // 7 FrontendAttrs {filename: Dockerfile}
        "42162a140a08726567697374727912080a03726566120178", // 8 Cache{5 Imports[{registry, {ref: x}}]}
        "4a0c6e6574776f726b2e686f7374",                     // 9 Entitlements ["network.host"]
        "6a140a05696d616765120b0a046e616d651203613a62",     // 13 Exporters [{image, {name: a:b}}]
    );
    assert_eq!(hex(&req.encode_to_vec()), expected);
    let decoded = SolveRequest::decode(req.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded, req);
}

#[test]
fn fsutil_packets_match_upstream_bytes() {
    let data = Packet {
        r#type: PacketType::PacketData as i32,
        id: 3,
        data: bytes::Bytes::from_static(b"hi"),
        ..Default::default()
    };
    // 1 type=DATA(2), 3 ID=3, 4 data="hi"
    assert_eq!(hex(&data.encode_to_vec()), "0802180322026869");

    let stat = Packet {
        r#type: PacketType::PacketStat as i32,
        stat: Some(Stat {
            path: "a/b".into(),
            mode: 0x8000_01ed, // Go os.ModeDir | 0755
            size: 5,
            mod_time: 1_700_000_000_000_000_000,
            ..Default::default()
        }),
        ..Default::default()
    };
    // type STAT(0) is the default and omitted; 2 stat{1 path, 2 mode, 5 size, 6 modTime}
    assert_eq!(
        hex(&stat.encode_to_vec()),
        "12170a03612f6210ed838080082805308080a8b1e39fe7cb17"
    );
}

#[test]
fn descriptor_set_decodes_with_every_package() {
    let fds = prost_types::FileDescriptorSet::decode(buildkit_proto::FILE_DESCRIPTOR_SET).unwrap();
    let packages: std::collections::BTreeSet<_> =
        fds.file.iter().filter_map(|f| f.package.clone()).collect();
    for want in [
        "moby.buildkit.v1",
        "moby.buildkit.v1.types",
        "moby.buildkit.v1.sourcepolicy",
        "pb",
        "errdefs",
        "moby.filesync.v1",
        "moby.buildkit.secrets.v1",
        "moby.sshforward.v1",
        "moby.upload.v1",
        "fsutil.types",
        "grpc.health.v1",
        "google.rpc",
        "containerd.services.content.v1",
    ] {
        assert!(
            packages.contains(want),
            "descriptor set lacks package {want}"
        );
    }
    let control = fds
        .file
        .iter()
        .flat_map(|f| f.service.iter().map(move |s| (f.package(), s)))
        .find(|(p, s)| *p == "moby.buildkit.v1" && s.name() == "Control")
        .expect("Control service")
        .1;
    let methods: Vec<_> = control.method.iter().map(|m| m.name()).collect();
    for m in [
        "DiskUsage",
        "Prune",
        "Solve",
        "Status",
        "Session",
        "ListWorkers",
        "Info",
        "ListenBuildHistory",
        "UpdateBuildHistory",
    ] {
        assert!(methods.contains(&m), "Control lacks {m}");
    }
}
