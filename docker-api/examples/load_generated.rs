//! Streams a generated `docker load` tar of any size into the Engine without holding
//! it in memory, then prints the process's peak resident memory.
//!
//! ```text
//! cargo run -p docker-api --release --example load_generated -- --size-mib 1024 --tag big:latest
//! ```
//!
//! The tar is produced on the fly: `layer.tar` (one file of pseudo-random bytes)
//! first, hashed while it streams; then the image config, which needs that hash as
//! the layer's diff id; then `manifest.json`. The Engine unpacks the whole archive
//! before reading the manifest, so this order is accepted.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use docker_api::{Body, Docker};
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};

const CHUNK: usize = 64 * 1024;
const BLOCK: u64 = 512;

/// A ustar header for a regular file.
fn tar_header(name: &str, size: u64) -> [u8; 512] {
    assert!(name.len() < 100);
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn padding(size: u64) -> usize {
    (size.div_ceil(BLOCK) * BLOCK - size) as usize
}

/// A small file entry (header, content, padding) of the outer tar.
fn small_entry(name: &str, content: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(512 + content.len() + 512);
    b.extend_from_slice(&tar_header(name, content.len() as u64));
    b.extend_from_slice(content);
    b.resize(b.len() + padding(content.len() as u64), 0);
    b.freeze()
}

enum Phase {
    /// Outer header of `layer.tar`, then the inner header of `data.bin`.
    Start,
    /// `data.bin` bytes still to send.
    Data(u64),
    /// Inner padding and end-of-archive blocks, closing `layer.tar`.
    LayerEnd,
    /// The config (with the diff id) and the manifest, then the outer end blocks.
    Metadata,
    Done,
}

struct Generator {
    phase: Phase,
    size: u64,
    tag: String,
    hasher: Sha256,
    rng: u64,
}

impl Generator {
    fn layer_size(size: u64) -> u64 {
        BLOCK + size + padding(size) as u64 + 2 * BLOCK
    }

    /// Layer bytes are hashed on the way out: the diff id is their sha256.
    fn layer_bytes(&mut self, b: Bytes) -> Bytes {
        self.hasher.update(&b);
        b
    }

    fn random_chunk(&mut self, len: usize) -> Bytes {
        let mut b = BytesMut::with_capacity(len);
        while b.len() < len {
            // xorshift64*: cheap, and not compressible like zeros would be.
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            let v = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            let n = (len - b.len()).min(8);
            b.extend_from_slice(&v[..n]);
        }
        b.freeze()
    }

    fn next_chunk(&mut self) -> Option<Bytes> {
        match self.phase {
            Phase::Start => {
                let mut b = BytesMut::with_capacity(1024);
                b.extend_from_slice(&tar_header("layer.tar", Self::layer_size(self.size)));
                let inner = tar_header("data.bin", self.size);
                self.hasher.update(inner);
                b.extend_from_slice(&inner);
                self.phase = Phase::Data(self.size);
                Some(b.freeze())
            }
            Phase::Data(0) => {
                self.phase = Phase::LayerEnd;
                self.next_chunk()
            }
            Phase::Data(left) => {
                let n = left.min(CHUNK as u64) as usize;
                self.phase = Phase::Data(left - n as u64);
                let chunk = self.random_chunk(n);
                Some(self.layer_bytes(chunk))
            }
            Phase::LayerEnd => {
                self.phase = Phase::Metadata;
                let end = Bytes::from(vec![0u8; padding(self.size) + 2 * BLOCK as usize]);
                Some(self.layer_bytes(end))
            }
            Phase::Metadata => {
                self.phase = Phase::Done;
                let diff_id = format!("sha256:{:x}", self.hasher.clone().finalize());
                let arch = match std::env::consts::ARCH {
                    "x86_64" => "amd64",
                    "aarch64" => "arm64",
                    other => other,
                };
                let config = serde_json::json!({
                    "architecture": arch,
                    "os": "linux",
                    "config": {"Cmd": ["/data.bin"]},
                    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                    "history": [{"created_by": "docker-api example load_generated"}],
                });
                let manifest = serde_json::json!([{
                    "Config": "config.json",
                    "RepoTags": [self.tag],
                    "Layers": ["layer.tar"],
                }]);
                let mut b = BytesMut::new();
                b.extend_from_slice(&small_entry("config.json", config.to_string().as_bytes()));
                b.extend_from_slice(&small_entry(
                    "manifest.json",
                    manifest.to_string().as_bytes(),
                ));
                b.resize(b.len() + 2 * BLOCK as usize, 0);
                Some(b.freeze())
            }
            Phase::Done => None,
        }
    }
}

/// The generated archive as a byte stream.
fn generate(size: u64, tag: String) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let generator = Generator {
        phase: Phase::Start,
        size,
        tag,
        hasher: Sha256::new(),
        rng: 0x9E37_79B9_7F4A_7C15,
    };
    futures_util::stream::unfold(generator, |mut g| async move {
        g.next_chunk().map(|c| (Ok(c), g))
    })
}

/// Peak resident set size of this process in KiB (`VmHWM`).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut size_mib: u64 = 1024;
    let mut tag = "docker-api-load-generated:latest".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--size-mib" => size_mib = args.next().ok_or("--size-mib needs a value")?.parse()?,
            "--tag" => tag = args.next().ok_or("--tag needs a value")?,
            other => {
                return Err(
                    format!("unknown argument {other:?} (use --size-mib N, --tag NAME)").into(),
                );
            }
        }
    }
    let docker = Docker::from_env()?;
    let size = size_mib * 1024 * 1024;
    let started = Instant::now();
    let mut progress = docker
        .images()
        .load(Body::stream(generate(size, tag.clone())))
        .await?;
    while let Some(message) = progress.next().await {
        let message = message?;
        // `stream` carries "Loaded image: ..."; per-layer status lines are skipped.
        if let Some(text) = message.stream {
            print!("{text}");
        }
    }
    println!(
        "loaded {tag}: {size} bytes of layer data in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let peak = peak_rss_kib().ok_or("cannot read VmHWM from /proc/self/status")?;
    println!("VmHWM_KIB={peak}");
    Ok(())
}
