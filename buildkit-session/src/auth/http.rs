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

/// The most redirects followed, as Go's HTTP client.
const MAX_REDIRECTS: usize = 10;

/// The TLS configuration for `https://` URLs, or why there is none.
pub(crate) type Tls = std::result::Result<Arc<rustls::ClientConfig>, String>;

/// Sends a request, following redirects like Go's HTTP client (301, 302 and 303
/// turn a POST into a bodiless GET; 307 and 308 repeat it); the `authorization`
/// header is only sent again to the same origin, and a body (which may hold a
/// password) is never re-sent to another one: that redirect is returned as is.
/// Returns the final status and body.
pub(crate) async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    body: Option<String>,
    tls: &Tls,
) -> Result<(u16, Bytes), String> {
    let mut method = method.to_string();
    let mut url = url.to_string();
    let mut headers: Vec<(&str, String)> = headers.to_vec();
    let mut body = body;
    for _ in 0..=MAX_REDIRECTS {
        let (status, location, resp) =
            request_once(&method, &url, &headers, body.clone(), tls).await?;
        let Some(location) = location.filter(|_| matches!(status, 301 | 302 | 303 | 307 | 308))
        else {
            return Ok((status, resp));
        };
        let next = resolve(&url, &location)?;
        if matches!(status, 301..=303) && method != "GET" && method != "HEAD" {
            method = "GET".into();
            body = None;
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
        }
        if authority_of(&next) != authority_of(&url) {
            if body.is_some() {
                return Ok((status, resp));
            }
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case("authorization"));
        }
        url = next;
    }
    Err(format!("{url}: stopped after {MAX_REDIRECTS} redirects"))
}

/// `scheme://host:port` of an absolute URL, for comparing origins.
fn authority_of(url: &str) -> Option<(String, String)> {
    let uri: http::Uri = url.parse().ok()?;
    Some((
        uri.scheme_str()?.to_string(),
        uri.authority()?.as_str().to_ascii_lowercase(),
    ))
}

/// A redirect's `Location` resolved against the URL that answered it.
fn resolve(base: &str, location: &str) -> Result<String, String> {
    let bad = |why: &str| format!("redirect from {base} to {location:?}: {why}");
    if location.starts_with("http://") || location.starts_with("https://") {
        return Ok(location.to_string());
    }
    let uri: http::Uri = base.parse().map_err(|_| bad("bad base URL"))?;
    let scheme = uri.scheme_str().ok_or_else(|| bad("no scheme"))?;
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if let Some(rest) = location.strip_prefix("//") {
        return Ok(format!("{scheme}://{rest}"));
    }
    if location.starts_with('/') {
        return Ok(format!("{scheme}://{authority}{location}"));
    }
    if location.contains("://") {
        return Err(bad("unsupported scheme"));
    }
    let dir = match uri.path().rsplit_once('/') {
        Some((d, _)) => d,
        None => "",
    };
    Ok(format!("{scheme}://{authority}{dir}/{location}"))
}

/// Sends one request; returns the status, the `Location` header and the body.
async fn request_once(
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    body: Option<String>,
    tls: &Tls,
) -> Result<(u16, Option<String>, Bytes), String> {
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
        let tls = match (https, tls) {
            (false, _) => None,
            (true, Ok(config)) => Some(config),
            (true, Err(e)) => return Err(format!("TLS for {host}: {e}")),
        };
        let endpoint = docker_api::Endpoint::Tcp {
            host: host_for_dial,
            port,
        };
        let io = docker_api::dial(&endpoint, tls, None, Duration::from_secs(30))
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
        send(TokioIo::new(io), req).await
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .map_err(|_| format!("{method} {url} timed out"))?
}

async fn send<IO>(
    io: IO,
    req: http::Request<Full<Bytes>>,
) -> Result<(u16, Option<String>, Bytes), String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the response: {e}"))?
        .to_bytes();
    Ok((status, location, body))
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn locations_resolve_against_the_answering_url() {
        let base = "https://auth.test:5001/v2/token?x=1";
        assert_eq!(resolve(base, "http://o.test/t").unwrap(), "http://o.test/t");
        assert_eq!(resolve(base, "//o.test/t").unwrap(), "https://o.test/t");
        assert_eq!(
            resolve(base, "/other?y=2").unwrap(),
            "https://auth.test:5001/other?y=2"
        );
        assert_eq!(
            resolve(base, "sibling").unwrap(),
            "https://auth.test:5001/v2/sibling"
        );
        assert!(resolve(base, "ftp://o.test/t").is_err());
    }
}
