//! Transport behaviour against an in-process HTTP peer on a unix socket: version
//! negotiation, upgrades that keep the bytes sent with the 101, and error messages.

use std::path::PathBuf;

use docker_api::{ApiVersion, Body, Docker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Reads one request head; returns its request line.
async fn read_head(s: &mut UnixStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    String::from_utf8(buf)
        .unwrap()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A fake daemon: answers `/_ping` with API 1.41 and upgrades `/session`, sending
/// `early` in the same write as the 101 response, then echoes.
async fn fake_daemon(
    early: &'static [u8],
) -> (
    tempfile::TempDir,
    PathBuf,
    tokio::sync::mpsc::Receiver<String>,
) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("d.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    let line = read_head(&mut s).await;
                    if line.is_empty() {
                        return;
                    }
                    tx.send(line.clone()).await.unwrap();
                    if line.starts_with("GET /_ping") {
                        s.write_all(
                            b"HTTP/1.1 200 OK\r\nAPI-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK",
                        )
                        .await
                        .unwrap();
                    } else if line.contains("/session") {
                        let mut resp = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec();
                        resp.extend_from_slice(early);
                        s.write_all(&resp).await.unwrap();
                        let mut buf = [0u8; 1024];
                        loop {
                            let n = s.read(&mut buf).await.unwrap();
                            if n == 0 {
                                return;
                            }
                            s.write_all(&buf[..n]).await.unwrap();
                        }
                    } else {
                        let body = br#"{"message":"No such image: nope:latest"}"#;
                        let head = format!(
                            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        );
                        s.write_all(head.as_bytes()).await.unwrap();
                        s.write_all(body).await.unwrap();
                    }
                }
            });
        }
    });
    (dir, sock, rx)
}

#[tokio::test]
async fn upgrade_keeps_bytes_sent_with_the_101_and_negotiates_the_version() {
    let (_dir, sock, mut seen) = fake_daemon(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let docker = Docker::connect(&format!("unix://{}", sock.display())).unwrap();
    let mut io = docker
        .upgrade(
            "/session",
            "h2c",
            [(
                docker_api::http::HeaderName::from_static("x-docker-expose-session-uuid"),
                docker_api::http::HeaderValue::from_static("abc"),
            )],
            Body::empty(),
        )
        .await
        .unwrap();
    // The preface came in the same packet as the 101: it must be the first thing read.
    let mut preface = [0u8; 24];
    io.read_exact(&mut preface).await.unwrap();
    assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    // And the stream works both ways afterwards.
    io.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    io.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");

    assert_eq!(docker.api_version().await.unwrap(), ApiVersion::new(1, 41));
    assert_eq!(seen.recv().await.unwrap(), "GET /_ping HTTP/1.1");
    assert_eq!(seen.recv().await.unwrap(), "POST /v1.41/session HTTP/1.1");
}

#[tokio::test]
async fn daemon_errors_carry_status_and_message() {
    let (_dir, sock, _seen) = fake_daemon(b"").await;
    let docker = Docker::connect(&format!("unix://{}", sock.display())).unwrap();
    let err = docker
        .json::<serde_json::Value>(docker_api::http::Method::GET, "/images/nope/json", None)
        .await
        .unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(err.message(), Some("No such image: nope:latest"));
    let text = err.to_string();
    assert!(text.contains("404"), "{text}");
    assert!(text.contains("No such image: nope:latest"), "{text}");
    assert!(text.contains(&sock.display().to_string()), "{text}");
}

#[tokio::test]
async fn a_missing_socket_names_the_address_and_docker_host() {
    let docker = Docker::connect("unix:///nonexistent/dir/docker.sock").unwrap();
    let err = docker.ping().await.unwrap_err();
    assert!(err.is_connect(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("unix:///nonexistent/dir/docker.sock"),
        "{text}"
    );
    assert!(text.contains("DOCKER_HOST"), "{text}");
    assert!(text.contains("No such file or directory"), "{text}");
}

#[tokio::test]
async fn a_silent_daemon_times_out_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    // Accepts and reads, never answers.
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (s, _) = listener.accept().await.unwrap();
            held.push(s);
        }
    });
    let docker = Docker::builder()
        .address(&format!("unix://{}", sock.display()))
        .api_version(ApiVersion::new(1, 41))
        .timeout(Some(std::time::Duration::from_millis(300)))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = docker.system().info().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let text = err.to_string();
    assert!(
        text.contains("timed out") && text.contains("silent.sock"),
        "{text}"
    );
}

#[tokio::test]
async fn an_endless_error_body_still_gives_an_error_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("endless.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    // Answers every request with a 500 whose chunked body never ends.
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                read_head(&mut s).await;
                let head =
                    "HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n";
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 8192, "x".repeat(8192));
                while s.write_all(chunk.as_bytes()).await.is_ok() {}
            });
        }
    });
    let docker = Docker::builder()
        .address(&format!("unix://{}", sock.display()))
        .api_version(ApiVersion::new(1, 41))
        .build()
        .unwrap();
    let err = tokio::time::timeout(std::time::Duration::from_secs(20), docker.system().info())
        .await
        .expect("the error body is not read to its (missing) end")
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("500"), "{text}");
    assert!(text.contains("Internal Server Error"), "{text}");
}
