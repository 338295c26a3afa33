//! `moby.filesync.v1.Auth`: registry credentials from the Docker config (and from
//! code), registry token fetching on the client, and client-side token authority.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use buildkit_proto::moby::filesync::v1::auth_server::{Auth as AuthService, AuthServer};
use buildkit_proto::moby::filesync::v1::{
    CredentialsRequest, CredentialsResponse, FetchTokenRequest, FetchTokenResponse,
    GetTokenAuthorityRequest, GetTokenAuthorityResponse, VerifyTokenAuthorityRequest,
    VerifyTokenAuthorityResponse,
};
use bytes::Bytes;
use docker_api::tls::TlsOptions;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::router::{Attachable, Router};

mod http;

/// The config key Docker uses for Docker Hub.
pub const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";
/// The host the daemon asks about for Docker Hub.
pub const DOCKER_HUB_HOST: &str = "registry-1.docker.io";
/// Token lifetime assumed when the registry gives none, in seconds.
pub const DEFAULT_TOKEN_EXPIRY: i64 = 60;

/// Credentials for one registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// User name (empty with an identity token).
    pub username: String,
    /// Password, or the identity token when `username` is empty.
    pub secret: String,
    /// A bearer token to use as is (`registrytoken` in the config).
    pub registry_token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field(
                "secret",
                &if self.secret.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .finish()
    }
}

impl Credentials {
    /// A user name and password.
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            secret: password.into(),
            registry_token: String::new(),
        }
    }

    /// An identity (refresh) token.
    pub fn identity_token(token: impl Into<String>) -> Self {
        Self {
            username: String::new(),
            secret: token.into(),
            registry_token: String::new(),
        }
    }
}

/// Where registry credentials come from, checked in this order: credentials given in
/// code, `credHelpers`, `credsStore`, then `auths` of `config.json` in the Docker
/// config directory (`DOCKER_CONFIG`, default `~/.docker`).
#[derive(Debug, Clone)]
pub struct Auth {
    config_dir: Option<PathBuf>,
    explicit: BTreeMap<String, Credentials>,
    token_authority: bool,
    tls: BTreeMap<String, TlsOptions>,
    helper_dir: Option<PathBuf>,
    /// Serializes seed updates in this process; holds the seeds of an `Auth`
    /// without a config directory.
    seeds: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl Default for Auth {
    fn default() -> Self {
        Self::from_docker_config()
    }
}

impl Auth {
    /// Credentials from the user's Docker config (read at each request).
    pub fn from_docker_config() -> Self {
        Self {
            config_dir: docker_config_dir(),
            explicit: BTreeMap::new(),
            token_authority: true,
            tls: BTreeMap::new(),
            helper_dir: None,
            seeds: Arc::default(),
        }
    }

    /// Only credentials given in code (no config file is read).
    pub fn none() -> Self {
        Self {
            config_dir: None,
            ..Self::from_docker_config()
        }
    }

    /// Reads `config.json` from this directory instead.
    pub fn config_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.config_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Credentials for `host` (`registry.example.com:5000`; `docker.io` for Docker Hub).
    pub fn credentials(mut self, host: impl Into<String>, creds: Credentials) -> Self {
        self.explicit.insert(normalize_host(&host.into()), creds);
        self
    }

    /// Whether to answer the daemon's client-side token authority calls (on by
    /// default, as upstream clients do). Off makes the daemon fetch tokens with the
    /// shared credentials instead.
    pub fn token_authority(mut self, on: bool) -> Self {
        self.token_authority = on;
        self
    }

    /// Looks for `docker-credential-*` helpers in this directory before `PATH`.
    pub fn helper_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.helper_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// TLS settings (a private CA, a client certificate) for token requests to `host`.
    pub fn tls(mut self, host: impl Into<String>, tls: TlsOptions) -> Self {
        self.tls.insert(host.into(), tls);
        self
    }

    /// The credentials for `host`, if any.
    pub fn lookup(&self, host: &str) -> Result<Option<Credentials>> {
        let host = normalize_host(host);
        if let Some(c) = self.explicit.get(&host) {
            return Ok(Some(c.clone()));
        }
        let Some(dir) = &self.config_dir else {
            return Ok(None);
        };
        let config = DockerConfigFile::load(&dir.join("config.json"))?;
        let server = if host == "docker.io" {
            DOCKER_HUB_CONFIG_KEY.to_string()
        } else {
            host.clone()
        };
        if let Some(helper) = config.cred_helpers.get(&host) {
            return run_helper(self.helper_dir.as_deref(), helper, &server);
        }
        if let Some(store) = config.creds_store.as_deref().filter(|s| !s.is_empty())
            && let Some(c) = run_helper(self.helper_dir.as_deref(), store, &server)?
        {
            return Ok(Some(c));
        }
        for (key, entry) in &config.auths {
            if key_host(key) == host {
                return entry.credentials(key).map(Some);
            }
        }
        Ok(None)
    }

    /// [`Auth::lookup`] off the async threads (helpers are processes); no
    /// credentials are the empty ones.
    async fn lookup_async(&self, host: &str) -> Result<Credentials> {
        let this = self.clone();
        let host = host.to_string();
        tokio::task::spawn_blocking(move || this.lookup(&host))
            .await
            .map_err(|e| Error::Transport(format!("credential lookup failed: {e}")))?
            .map(Option::unwrap_or_default)
    }

    fn tls_config(&self, host: &str) -> Result<Arc<rustls::ClientConfig>> {
        self.tls
            .get(host)
            .cloned()
            .unwrap_or_default()
            .client_config()
            .map_err(Error::Invalid)
    }

    /// Fetches a registry token for `req` as the daemon would: OAuth POST with the
    /// credentials, GET with basic auth as the fallback, anonymous GET without them.
    pub async fn fetch_token(&self, req: &FetchTokenRequest) -> Result<FetchTokenResponse> {
        let creds = self.lookup_async(&req.host).await?;
        if !creds.registry_token.is_empty() {
            return Ok(FetchTokenResponse {
                token: creds.registry_token,
                expires_in: DEFAULT_TOKEN_EXPIRY,
                issued_at: 0,
            });
        }
        // Built whether or not the realm is https: a redirect may lead there.
        let tls = self.tls_config(&req.host).map_err(|e| e.to_string());
        if !creds.secret.is_empty() {
            let mut form = Vec::new();
            if !req.scopes.is_empty() {
                form.push(("scope", req.scopes.join(" ")));
            }
            form.push(("service", req.service.clone()));
            form.push(("client_id", "buildkit-client".to_string()));
            if creds.username.is_empty() {
                form.push(("grant_type", "refresh_token".into()));
                form.push(("refresh_token", creds.secret.clone()));
            } else {
                form.push(("grant_type", "password".into()));
                form.push(("username", creds.username.clone()));
                form.push(("password", creds.secret.clone()));
            }
            let body = form
                .iter()
                .map(|(k, v)| format!("{}={}", http::form_escape(k), http::form_escape(v)))
                .collect::<Vec<_>>()
                .join("&");
            let (status, resp) = http::request(
                "POST",
                &req.realm,
                &[(
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8".into(),
                )],
                Some(body),
                &tls,
            )
            .await
            .map_err(|e| {
                Error::Transport(format!(
                    "failed to fetch oauth token from {}: {e}",
                    req.realm
                ))
            })?;
            if (200..300).contains(&status) {
                return token_response(&resp, true);
            }
            let fallback =
                status == 404 || status == 401 || (status == 405 && !creds.username.is_empty());
            if !fallback {
                return Err(Error::Transport(format!(
                    "failed to fetch oauth token from {}: unexpected status {status}: {}",
                    req.realm,
                    String::from_utf8_lossy(&resp).trim()
                )));
            }
        }
        let mut url = req.realm.clone();
        let mut params = Vec::new();
        if !req.service.is_empty() {
            params.push(format!("service={}", http::form_escape(&req.service)));
        }
        for s in &req.scopes {
            params.push(format!("scope={}", http::form_escape(s)));
        }
        if !params.is_empty() {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&params.join("&"));
        }
        let mut headers = Vec::new();
        if !creds.secret.is_empty() {
            let basic = B64.encode(format!("{}:{}", creds.username, creds.secret));
            headers.push(("authorization", format!("Basic {basic}")));
        }
        let (status, resp) = http::request("GET", &url, &headers, None, &tls)
            .await
            .map_err(|e| {
                Error::Transport(format!("failed to fetch token from {}: {e}", req.realm))
            })?;
        if !(200..300).contains(&status) {
            let what = if creds.secret.is_empty() {
                "anonymous token"
            } else {
                "token"
            };
            return Err(Error::Transport(format!(
                "failed to fetch {what} from {}: unexpected status {status}: {}",
                req.realm,
                String::from_utf8_lossy(&resp).trim()
            )));
        }
        token_response(&resp, false)
    }

    /// The ed25519 key for `host` and `salt`: HMAC-SHA256(salt, per-host seed) as the
    /// key seed, the seed kept in `.token_seed` in the config directory like upstream.
    fn authority_key(&self, host: &str, salt: &[u8]) -> Result<ed25519_dalek::SigningKey, Status> {
        use hmac::Mac;
        if std::env::var("BUILDKIT_NO_CLIENT_TOKEN").is_ok_and(|v| crate::metadata::go_true(&v)) {
            return Err(Status::unavailable("client side tokens disabled"));
        }
        let creds = self
            .lookup(host)
            .map_err(|e| Status::unavailable(e.to_string()))?
            .unwrap_or_default();
        let seed = self
            .seed(host)
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(salt)
            .expect("HMAC takes any key length");
        if !creds.secret.is_empty() {
            mac.update(&seed);
        }
        let sum = mac.finalize().into_bytes();
        let mut key = [0u8; 32];
        key.copy_from_slice(&sum[..32]);
        Ok(ed25519_dalek::SigningKey::from_bytes(&key))
    }

    /// The per-host seed: kept in `.token_seed` of the Docker config directory
    /// (under `.token_seed.lock`, as upstream), or only in memory for an `Auth`
    /// that reads no config.
    fn seed(&self, host: &str) -> Result<Vec<u8>> {
        let mut memory = self.seeds.lock().expect("lock");
        let Some(dir) = &self.config_dir else {
            let seed = memory
                .entry(host.to_string())
                .or_insert_with(|| rand::random::<[u8; 16]>().to_vec());
            return Ok(seed.clone());
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".token_seed.lock"))
            .map_err(|e| Error::io("opening .token_seed.lock", e))?;
        lock.lock()
            .map_err(|e| Error::io("locking .token_seed.lock", e))?;
        let path = dir.join(".token_seed");
        let mut seeds: BTreeMap<String, SeedEntry> = match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data).map_err(|e| {
                // Never replaced: it holds the other hosts' seeds.
                Error::Invalid(format!("{}: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        let mut added = false;
        let entry = seeds.entry(host.to_string()).or_insert_with(|| {
            added = true;
            SeedEntry {
                seed: B64.encode(rand::random::<[u8; 16]>()),
            }
        });
        let seed = B64.decode(&entry.seed).map_err(|e| {
            Error::Invalid(format!("{}: invalid seed for {host}: {e}", path.display()))
        })?;
        if added {
            let text = serde_json::to_vec_pretty(&seeds).expect("serializable");
            write_private(&path, &text)?;
        }
        Ok(seed)
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    f.write_all(data)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

#[derive(Serialize, Deserialize)]
struct SeedEntry {
    #[serde(rename = "Seed")]
    seed: String,
}

#[derive(Deserialize)]
struct TokenJson {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    expires_in: i64,
    #[serde(default)]
    issued_at: Option<String>,
}

fn token_response(body: &[u8], oauth: bool) -> Result<FetchTokenResponse> {
    let t: TokenJson = serde_json::from_slice(body)
        .map_err(|e| Error::Protocol(format!("unable to decode token response: {e}")))?;
    // OAuth answers carry access_token; plain token endpoints either field.
    let token = if oauth || !t.access_token.is_empty() {
        t.access_token
    } else {
        t.token
    };
    if token.is_empty() {
        return Err(Error::Protocol(
            "authorization server did not include a token in the response".into(),
        ));
    }
    let issued_at = match t.issued_at.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|e| Error::Protocol(format!("token issued_at {s:?} is not RFC 3339: {e}")))?
            .unix_timestamp(),
        None => 0,
    };
    Ok(FetchTokenResponse {
        token,
        expires_in: if t.expires_in == 0 {
            DEFAULT_TOKEN_EXPIRY
        } else {
            t.expires_in
        },
        issued_at,
    })
}

/// The Docker config directory: `DOCKER_CONFIG`, else `~/.docker`.
pub fn docker_config_dir() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
}

/// `docker.io` for every Docker Hub alias, otherwise the host as given.
fn normalize_host(host: &str) -> String {
    match host {
        "registry-1.docker.io" | "index.docker.io" | "docker.io" | DOCKER_HUB_CONFIG_KEY => {
            "docker.io".into()
        }
        h => h.to_string(),
    }
}

/// The registry host an `auths` key stands for (`https://host/v1/` -> `host`).
fn key_host(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    normalize_host(k.split('/').next().unwrap_or(k))
}

#[derive(Deserialize, Default)]
struct DockerConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

impl DockerConfigFile {
    fn load(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(data) => {
                let mut c: Self = serde_json::from_slice(&data).map_err(|e| {
                    Error::Invalid(format!("{} is not valid JSON: {e}", path.display()))
                })?;
                c.cred_helpers = c
                    .cred_helpers
                    .into_iter()
                    .map(|(k, v)| (key_host(&k), v))
                    .collect();
                Ok(c)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    identitytoken: String,
    #[serde(default)]
    registrytoken: String,
}

impl AuthEntry {
    fn credentials(&self, key: &str) -> Result<Credentials> {
        let mut c = Credentials {
            username: self.username.clone(),
            secret: self.password.clone(),
            registry_token: self.registrytoken.clone(),
        };
        if !self.auth.is_empty() {
            let raw = B64
                .decode(self.auth.trim())
                .map_err(|e| Error::Invalid(format!("auths[{key:?}].auth is not base64: {e}")))?;
            let text = String::from_utf8(raw)
                .map_err(|_| Error::Invalid(format!("auths[{key:?}].auth is not UTF-8")))?;
            let (u, p) = text.split_once(':').ok_or_else(|| {
                Error::Invalid(format!("auths[{key:?}].auth is not user:password"))
            })?;
            c.username = u.to_string();
            c.secret = p.to_string();
        }
        if !self.identitytoken.is_empty() {
            c.username = String::new();
            c.secret = self.identitytoken.clone();
        }
        Ok(c)
    }
}

/// Runs `docker-credential-<helper> get` for `server`.
fn run_helper(dir: Option<&Path>, helper: &str, server: &str) -> Result<Option<Credentials>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let program = format!("docker-credential-{helper}");
    let path = dir
        .map(|d| d.join(&program))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(&program));
    let mut child = Command::new(&path)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("running credential helper {program}"), e))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(server.as_bytes())
        .map_err(|e| Error::io(format!("writing to {program}"), e))?;
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io(format!("running credential helper {program}"), e))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if stdout.contains("credentials not found")
            || String::from_utf8_lossy(&out.stderr).contains("credentials not found")
        {
            return Ok(None);
        }
        return Err(Error::Invalid(format!(
            "credential helper {program} failed for {server}: {}{}",
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    #[derive(Deserialize)]
    struct HelperOut {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let h: HelperOut = serde_json::from_slice(&out.stdout).map_err(|e| {
        Error::Invalid(format!(
            "credential helper {program} printed invalid JSON: {e}"
        ))
    })?;
    Ok(Some(if h.username == "<token>" {
        Credentials::identity_token(h.secret)
    } else {
        Credentials::basic(h.username, h.secret)
    }))
}

impl Attachable for Auth {
    fn register(self: Box<Self>, router: &mut Router) {
        router.add_service(AuthServer::new(*self));
    }
}

#[tonic::async_trait]
impl AuthService for Auth {
    async fn credentials(
        &self,
        request: Request<CredentialsRequest>,
    ) -> Result<Response<CredentialsResponse>, Status> {
        let c = self
            .lookup_async(&request.into_inner().host)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(CredentialsResponse {
            username: c.username,
            secret: c.secret,
        }))
    }

    async fn fetch_token(
        &self,
        request: Request<FetchTokenRequest>,
    ) -> Result<Response<FetchTokenResponse>, Status> {
        let req = request.into_inner();
        match tokio::time::timeout(Duration::from_secs(60), self.fetch_token(&req)).await {
            Ok(Ok(r)) => Ok(Response::new(r)),
            Ok(Err(e)) => Err(Status::unavailable(e.to_string())),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "fetching a token from {} timed out",
                req.realm
            ))),
        }
    }

    async fn get_token_authority(
        &self,
        request: Request<GetTokenAuthorityRequest>,
    ) -> Result<Response<GetTokenAuthorityResponse>, Status> {
        if !self.token_authority {
            return Err(Status::unimplemented("client-side token authority is off"));
        }
        let req = request.into_inner();
        let this = self.clone();
        let key = tokio::task::spawn_blocking(move || this.authority_key(&req.host, &req.salt))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(GetTokenAuthorityResponse {
            public_key: Bytes::copy_from_slice(key.verifying_key().as_bytes()),
        }))
    }

    async fn verify_token_authority(
        &self,
        request: Request<VerifyTokenAuthorityRequest>,
    ) -> Result<Response<VerifyTokenAuthorityResponse>, Status> {
        use ed25519_dalek::Signer;
        if !self.token_authority {
            return Err(Status::unimplemented("client-side token authority is off"));
        }
        let req = request.into_inner();
        let this = self.clone();
        let host = req.host.clone();
        let salt = req.salt.clone();
        let key = tokio::task::spawn_blocking(move || this.authority_key(&host, &salt))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        // NaCl sign format: the signature followed by the message.
        let sig = key.sign(&req.payload);
        let mut signed = Vec::with_capacity(64 + req.payload.len());
        signed.extend_from_slice(&sig.to_bytes());
        signed.extend_from_slice(&req.payload);
        Ok(Response::new(VerifyTokenAuthorityResponse {
            signed: signed.into(),
        }))
    }
}

#[cfg(test)]
mod tests;
