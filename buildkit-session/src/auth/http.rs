//! A one-request HTTP/1.1 client for token endpoints (plain or TLS through rustls).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

/// The largest token response read.
const MAX_BODY: usize = 1 << 20;

/// `application/x-www-form-urlencoded` escaping (Go's `url.QueryEscape`).
pub(crate) fn form_escape(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET)
        .to_string()
        .replace("%20", "+")
}

/// Sends one request; returns the status and the body.
pub(crate) async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    body: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<(u16, Bytes), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("unsupported URL {url:?}")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("URL {url:?} has no host"))?
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_else(|| host.clone());
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();

    let fut = async {
        let host_for_dial = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tcp = tokio::net::TcpStream::connect((host_for_dial.as_str(), port))
            .await
            .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
        let mut req = http::Request::builder()
            .method(method)
            .uri(&path)
            .header(http::header::HOST, &authority)
            .header(
                http::header::USER_AGENT,
                concat!("buildkit-rs/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let resp = if https {
            let config = tls.ok_or("no TLS configuration")?;
            let io = docker_api::tls::connect(config, &host_for_dial, tcp)
                .await
                .map_err(|e| format!("TLS with {host}: {e}"))?;
            send(TokioIo::new(io), req).await?
        } else {
            send(TokioIo::new(tcp), req).await?
        };
        Ok(resp)
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .map_err(|_| format!("{method} {url} timed out"))?
}

async fn send<IO>(io: IO, req: http::Request<Full<Bytes>>) -> Result<(u16, Bytes), String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the response: {e}"))?
        .to_bytes();
    Ok((status, body))
}
