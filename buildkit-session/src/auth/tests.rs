use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Mutex as AsyncMutex;

use super::*;

fn config(dir: &Path, json: &str) -> Auth {
    std::fs::write(dir.join("config.json"), json).unwrap();
    Auth::from_docker_config().config_dir(dir)
}

#[test]
fn reads_auths_identity_tokens_and_the_hub_key() {
    let d = tempfile::tempdir().unwrap();
    let auth = config(
        d.path(),
        &format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "localhost:5001": {{"auth": "{}"}},
                "https://reg.example.com/v2/": {{"identitytoken": "refresh-me"}}
            }}}}"#,
            B64.encode("hubuser:hubpass"),
            B64.encode("alice:s3cr:et")
        ),
    );
    assert_eq!(
        auth.lookup("registry-1.docker.io").unwrap(),
        Some(Credentials::basic("hubuser", "hubpass"))
    );
    assert_eq!(
        auth.lookup("localhost:5001").unwrap(),
        Some(Credentials::basic("alice", "s3cr:et"))
    );
    assert_eq!(
        auth.lookup("reg.example.com").unwrap(),
        Some(Credentials::identity_token("refresh-me"))
    );
    assert_eq!(auth.lookup("unknown:1").unwrap(), None);
    // Credentials given in code win over the file.
    let auth = auth.credentials("localhost:5001", Credentials::basic("bob", "pw"));
    assert_eq!(
        auth.lookup("localhost:5001").unwrap(),
        Some(Credentials::basic("bob", "pw"))
    );
}

#[test]
fn runs_credential_helpers() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let helper = d.path().join("docker-credential-fake");
    std::fs::write(
        &helper,
        "#!/bin/sh\nread server\ncase \"$server\" in\n  reg.example.com) echo '{\"ServerURL\":\"reg.example.com\",\"Username\":\"helper-user\",\"Secret\":\"helper-pass\"}';;\n  tok.example.com) echo '{\"Username\":\"<token>\",\"Secret\":\"id-token\"}';;\n  *) echo 'credentials not found in native keychain'; exit 1;;\nesac\n",
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let auth = config(
        d.path(),
        r#"{"credHelpers": {"reg.example.com": "fake", "tok.example.com": "fake", "other.example.com": "fake"}}"#,
    )
    .helper_dir(d.path());
    assert_eq!(
        auth.lookup("reg.example.com").unwrap(),
        Some(Credentials::basic("helper-user", "helper-pass"))
    );
    assert_eq!(
        auth.lookup("tok.example.com").unwrap(),
        Some(Credentials::identity_token("id-token"))
    );
    assert_eq!(auth.lookup("other.example.com").unwrap(), None);

    let auth = config(d.path(), r#"{"credsStore": "fake"}"#).helper_dir(d.path());
    assert_eq!(
        auth.lookup("reg.example.com").unwrap(),
        Some(Credentials::basic("helper-user", "helper-pass"))
    );
    let auth = config(d.path(), r#"{"credsStore": "missing-helper"}"#).helper_dir(d.path());
    let err = auth.lookup("reg.example.com").unwrap_err().to_string();
    assert!(err.contains("docker-credential-missing-helper"), "{err}");
}

/// A token endpoint: records requests; POST answers `post_status`, GET answers a
/// token (checking basic auth when it is sent).
async fn token_server(post_status: u16) -> (String, Arc<AsyncMutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<AsyncMutex<Vec<String>>> = Arc::default();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    let n = s.read(&mut tmp).await.unwrap();
                    buf.extend_from_slice(&tmp[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if body.len() >= len || n == 0 {
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                let text = String::from_utf8_lossy(&buf).to_string();
                seen.lock().await.push(text.clone());
                let mut location = String::new();
                let (status, body) = if text.starts_with("POST /moved307 ") {
                    location = "location: /token\r\n".into();
                    (307, String::new())
                } else if text.starts_with("POST /cross307 ") {
                    location = format!("location: http://localhost:{}/token\r\n", addr.port());
                    (307, String::new())
                } else if let Some(rest) = text.strip_prefix("GET /moved302") {
                    // To the same server under another name: another host.
                    let query = rest.split_once(' ').map(|(q, _)| q).unwrap_or("");
                    location = format!(
                        "location: http://localhost:{}/token{query}\r\n",
                        addr.port()
                    );
                    (302, String::new())
                } else if text.starts_with("POST") {
                    if post_status == 200 {
                        (200, r#"{"access_token":"oauth-token","expires_in":120,"issued_at":"2026-01-02T03:04:05Z"}"#.to_string())
                    } else {
                        (post_status, "{}".to_string())
                    }
                } else if text.contains("authorization: Basic ")
                    || text.contains("Authorization: Basic ")
                {
                    (200, r#"{"token":"basic-token","expires_in":300,"issued_at":"2026-01-02T03:04:05.5+01:00"}"#.to_string())
                } else {
                    (200, r#"{"token":"anon-token"}"#.to_string())
                };
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{location}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(resp.as_bytes()).await.unwrap();
            });
        }
    });
    (format!("http://{addr}/token"), seen)
}

fn token_req(realm: &str) -> FetchTokenRequest {
    FetchTokenRequest {
        client_id: "buildkit-client".into(),
        host: "reg.test:5000".into(),
        realm: realm.into(),
        service: "reg.test".into(),
        scopes: vec!["repository:app:pull".into(), "repository:app:push".into()],
    }
}

#[tokio::test]
async fn fetch_token_posts_oauth_form_with_credentials() {
    let (realm, seen) = token_server(200).await;
    let auth = Auth::none().credentials("reg.test:5000", Credentials::basic("alice", "pw d"));
    let r = auth.fetch_token(&token_req(&realm)).await.unwrap();
    assert_eq!(r.token, "oauth-token");
    assert_eq!(r.expires_in, 120);
    assert_eq!(r.issued_at, 1_767_323_045);
    let reqs = seen.lock().await;
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].starts_with("POST /token HTTP/1.1"), "{}", reqs[0]);
    let body = reqs[0].split_once("\r\n\r\n").unwrap().1;
    assert_eq!(
        body,
        "scope=repository%3Aapp%3Apull+repository%3Aapp%3Apush&service=reg.test&client_id=buildkit-client&grant_type=password&username=alice&password=pw+d"
    );
}

#[tokio::test]
async fn fetch_token_falls_back_to_get_with_basic_auth() {
    for status in [404, 401, 405] {
        let (realm, seen) = token_server(status).await;
        let auth = Auth::none().credentials("reg.test:5000", Credentials::basic("alice", "pw"));
        let r = auth.fetch_token(&token_req(&realm)).await.unwrap();
        assert_eq!(r.token, "basic-token", "after POST {status}");
        assert_eq!(r.expires_in, 300);
        // 2026-01-02T03:04:05.5+01:00 is 02:04:05Z.
        assert_eq!(r.issued_at, 1_767_319_445);
        let reqs = seen.lock().await;
        assert_eq!(reqs.len(), 2);
        assert!(
            reqs[1].starts_with("GET /token?service=reg.test&scope=repository%3Aapp%3Apull&scope=repository%3Aapp%3Apush HTTP/1.1"),
            "{}",
            reqs[1]
        );
        assert!(
            reqs[1].contains(&format!("authorization: Basic {}", B64.encode("alice:pw"))),
            "{}",
            reqs[1]
        );
    }
}

#[tokio::test]
async fn fetch_token_without_credentials_is_anonymous_get() {
    let (realm, seen) = token_server(500).await;
    let r = Auth::none().fetch_token(&token_req(&realm)).await.unwrap();
    assert_eq!(r.token, "anon-token");
    assert_eq!(r.expires_in, DEFAULT_TOKEN_EXPIRY);
    assert_eq!(r.issued_at, 0);
    let reqs = seen.lock().await;
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].starts_with("GET "), "{}", reqs[0]);
    assert!(
        !reqs[0].to_ascii_lowercase().contains("authorization"),
        "{}",
        reqs[0]
    );
}

#[tokio::test]
async fn fetch_token_follows_redirects_and_keeps_credentials_to_their_host() {
    let (realm, seen) = token_server(200).await;
    let moved = realm.replace("/token", "/moved307");
    let auth = Auth::none().credentials("reg.test:5000", Credentials::basic("alice", "pw"));
    let r = auth.fetch_token(&token_req(&moved)).await.unwrap();
    assert_eq!(r.token, "oauth-token");
    {
        let reqs = seen.lock().await;
        assert_eq!(reqs.len(), 2);
        // A 307 repeats the POST with its form.
        assert!(reqs[1].starts_with("POST /token HTTP/1.1"), "{}", reqs[1]);
        assert!(reqs[1].ends_with("password=pw"), "{}", reqs[1]);
    }

    // A password form is never repeated to another origin.
    let (realm, seen) = token_server(200).await;
    let cross = realm.replace("/token", "/cross307");
    let err = auth
        .fetch_token(&token_req(&cross))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unexpected status 307"), "{err}");
    assert_eq!(seen.lock().await.len(), 1, "not followed");

    // POST refused, GET with basic auth redirected to another host: followed,
    // without the credentials.
    let (realm, seen) = token_server(404).await;
    let moved = realm.replace("/token", "/moved302");
    let r = auth.fetch_token(&token_req(&moved)).await.unwrap();
    assert_eq!(r.token, "anon-token");
    let reqs = seen.lock().await;
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert!(reqs[1].contains("authorization: Basic "), "{}", reqs[1]);
    assert!(
        reqs[2].starts_with("GET /token?service=reg.test&scope="),
        "{}",
        reqs[2]
    );
    assert!(
        !reqs[2].to_ascii_lowercase().contains("authorization"),
        "{}",
        reqs[2]
    );
}

#[tokio::test]
async fn fetch_token_error_statuses_are_reported() {
    let (realm, _) = token_server(500).await;
    let auth = Auth::none().credentials("reg.test:5000", Credentials::basic("alice", "pw"));
    let err = auth
        .fetch_token(&token_req(&realm))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unexpected status 500"), "{err}");
    let err = Auth::none()
        .fetch_token(&token_req("http://127.0.0.1:1/token"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

#[test]
fn token_authority_keys_are_stable_per_host_and_sign_like_nacl() {
    let d = tempfile::tempdir().unwrap();
    let auth = Auth::none()
        .config_dir(d.path())
        .credentials("reg.test", Credentials::basic("u", "p"));
    let k1 = auth.authority_key("reg.test", b"salt-1").unwrap();
    let again = Auth::none()
        .config_dir(d.path())
        .credentials("reg.test", Credentials::basic("u", "p"));
    assert_eq!(
        again
            .authority_key("reg.test", b"salt-1")
            .unwrap()
            .to_bytes(),
        k1.to_bytes(),
        "seed persisted"
    );
    assert_ne!(
        auth.authority_key("reg.test", b"salt-2")
            .unwrap()
            .to_bytes(),
        k1.to_bytes()
    );
    let seeds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join(".token_seed")).unwrap()).unwrap();
    assert_eq!(
        B64.decode(seeds["reg.test"]["Seed"].as_str().unwrap())
            .unwrap()
            .len(),
        16
    );
}

#[tokio::test]
async fn verify_token_authority_signs_like_nacl_under_the_advertised_key() {
    use buildkit_proto::moby::filesync::v1::auth_server::Auth as AuthService;
    use buildkit_proto::moby::filesync::v1::{
        GetTokenAuthorityRequest, VerifyTokenAuthorityRequest,
    };
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    let d = tempfile::tempdir().unwrap();
    let auth = Auth::none()
        .config_dir(d.path())
        .credentials("reg.test", Credentials::basic("u", "p"));
    let public = auth
        .get_token_authority(tonic::Request::new(GetTokenAuthorityRequest {
            host: "reg.test".into(),
            salt: Bytes::from_static(b"salt-1"),
        }))
        .await
        .unwrap()
        .into_inner()
        .public_key;
    let payload = b"payload to sign";
    let signed = auth
        .verify_token_authority(tonic::Request::new(VerifyTokenAuthorityRequest {
            host: "reg.test".into(),
            payload: Bytes::from_static(payload),
            salt: Bytes::from_static(b"salt-1"),
        }))
        .await
        .unwrap()
        .into_inner()
        .signed;
    assert_eq!(&signed[64..], payload, "signature, then the message");
    let vk = VerifyingKey::from_bytes(public.as_ref().try_into().unwrap()).unwrap();
    let sig = Signature::from_bytes(signed[..64].try_into().unwrap());
    assert!(vk.verify(payload, &sig).is_ok());
}

#[test]
fn a_broken_seed_file_is_an_error_and_is_kept() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join(".token_seed"), b"{not json").unwrap();
    let auth = Auth::none()
        .config_dir(d.path())
        .credentials("reg.test", Credentials::basic("u", "p"));
    let err = auth.authority_key("reg.test", b"salt").unwrap_err();
    assert!(err.message().contains(".token_seed"), "{err:?}");
    assert_eq!(
        std::fs::read(d.path().join(".token_seed")).unwrap(),
        b"{not json"
    );
}
