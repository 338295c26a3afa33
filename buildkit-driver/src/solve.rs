//! The solve API: a [`Build`] for the `dockerfile.v0` frontend, the [`Output`] and
//! [`CacheBackend`] seams that exporters and caches implement, and the
//! [`BuildHandle`] that yields progress and the result.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use buildkit_proto::moby::buildkit::v1::{
    CacheOptions, CacheOptionsEntry, Exporter, SolveRequest, StatusRequest,
};
use buildkit_session::{
    Attachable, Auth, ContentStore, FileSend, FileSync, Secrets, Session, SshForward, Upload,
};
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use crate::driver::{BoxFuture, Driver};
use crate::error::{Error, Result, SolveError};
use crate::progress::{Event, Warning, events_from_status};

/// The frontend that builds Dockerfiles.
pub const DOCKERFILE_FRONTEND: &str = "dockerfile.v0";

/// What an exporter hands back when its output is complete.
#[derive(Debug, Clone, Default)]
pub struct OutputDone {
    /// Bytes delivered to the client, for outputs that send data back.
    pub bytes: u64,
    /// Anything else worth reporting (e.g. the image loaded into Docker).
    pub detail: BTreeMap<String, String>,
}

/// Which list of the solve request a cache backend is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheRole {
    /// `--cache-from`.
    Import,
    /// `--cache-to`.
    Export,
}

/// The solve's exporter response, shared with the finishers: empty until the solve
/// has succeeded, then what the daemon answered (`containerimage.digest`,
/// `cache.manifest`, ...).
#[derive(Debug, Clone, Default)]
pub struct ExporterResponse(Arc<OnceLock<BTreeMap<String, String>>>);

impl ExporterResponse {
    /// The response, once the solve has succeeded (always, when a finisher runs).
    pub fn get(&self) -> Option<&BTreeMap<String, String>> {
        self.0.get()
    }
}

/// Where the client side of an output or cache hooks into a build.
pub struct Prepare<'a> {
    /// The index of this exporter in the solve request (FileSend target id).
    pub index: u64,
    /// The driver's name (for messages).
    pub driver: &'a str,
    /// Receivers for exporter output.
    pub filesend: &'a mut FileSend,
    /// Local directories served as content stores (local cache import and export);
    /// attached to the session when not empty.
    pub content: &'a mut ContentStore,
    /// For a cache backend, whether it is prepared for import or export; `None` for
    /// an output.
    pub cache_role: Option<CacheRole>,
    /// The solve's exporter response, for finishers that need it.
    pub response: ExporterResponse,
    /// More services to attach to the build's session.
    pub attachables: &'a mut Vec<Box<dyn Attachable>>,
}

/// A future that finishes an output or cache on the client after the solve.
pub type Finish = BoxFuture<'static, Result<OutputDone>>;

/// An exporter: its entry in the solve request, and the client side that receives
/// what it sends back. Implemented by `buildkit-export`'s exporters.
pub trait Output: Send {
    /// The exporter type (`image`, `moby`, `oci`, `docker`, `local`, `tar`).
    fn exporter_type(&self) -> String;

    /// The exporter attrs sent to the daemon.
    fn attrs(&self) -> BTreeMap<String, String>;

    /// Sets up the client side before the solve (a FileSend target for outputs the
    /// daemon streams back). The returned future, if any, is awaited after the solve
    /// and must resolve when the output is complete.
    fn prepare(self: Box<Self>, ctx: &mut Prepare<'_>) -> Result<Option<Finish>>;
}

/// A cache backend, for import or export. Implemented by `buildkit-export`'s caches.
pub trait CacheBackend: Send {
    /// The backend type (`registry`, `local`, `inline`, `gha`, `s3`, `azblob`).
    fn backend_type(&self) -> String;

    /// The attrs sent to the daemon.
    fn attrs(&self) -> BTreeMap<String, String>;

    /// The attrs sent when the backend is used as `role` (default: [`attrs`]), or
    /// why to leave it out of the request: the build then goes on without it and the
    /// reason is reported as a progress warning (e.g. a local cache directory with
    /// nothing to import yet).
    ///
    /// [`attrs`]: CacheBackend::attrs
    fn attrs_for(&self, role: CacheRole) -> std::result::Result<BTreeMap<String, String>, String> {
        let _ = role;
        Ok(self.attrs())
    }

    /// Sets up the client side before the solve; the returned future, if any, runs
    /// after a successful solve.
    fn prepare(self: Box<Self>, ctx: &mut Prepare<'_>) -> Result<Option<Finish>> {
        let _ = ctx;
        Ok(None)
    }
}

/// A plain exporter: a type and attrs, no client side (e.g. `image` with push).
#[derive(Debug, Clone)]
pub struct RawOutput {
    /// The exporter type.
    pub exporter_type: String,
    /// Its attrs.
    pub attrs: BTreeMap<String, String>,
}

impl Output for RawOutput {
    fn exporter_type(&self) -> String {
        self.exporter_type.clone()
    }

    fn attrs(&self) -> BTreeMap<String, String> {
        self.attrs.clone()
    }

    fn prepare(self: Box<Self>, _ctx: &mut Prepare<'_>) -> Result<Option<Finish>> {
        Ok(None)
    }
}

/// A plain cache entry: a type and attrs, no client side.
#[derive(Debug, Clone)]
pub struct RawCache {
    /// The backend type.
    pub backend_type: String,
    /// Its attrs.
    pub attrs: BTreeMap<String, String>,
}

impl CacheBackend for RawCache {
    fn backend_type(&self) -> String {
        self.backend_type.clone()
    }

    fn attrs(&self) -> BTreeMap<String, String> {
        self.attrs.clone()
    }
}

/// The network steps of the build run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// The daemon's default (a sandboxed network).
    Default,
    /// No network.
    None,
    /// The host's network (needs the `network.host` entitlement, which is requested).
    Host,
}

/// A named context: another source the Dockerfile can use by name.
#[derive(Debug, Clone)]
pub enum NamedContext {
    /// A local directory, sent with FileSync.
    Local(PathBuf),
    /// An image (`docker-image://` reference).
    Image(String),
    /// Any other source BuildKit accepts (a git or https URL, `oci-layout://`, ...).
    Url(String),
}

/// A Dockerfile build for the `dockerfile.v0` frontend.
///
/// ```
/// use buildkit_driver::Build;
/// let build = Build::dockerfile("./app")
///     .target("release")
///     .build_arg("VERSION", "1.2.3")
///     .label("org.opencontainers.image.title", "app")
///     .platform("linux/amd64");
/// ```
pub struct Build {
    context: Option<PathBuf>,
    dockerfile_dir: Option<PathBuf>,
    attrs: BTreeMap<String, String>,
    named_local: BTreeMap<String, PathBuf>,
    secrets: Secrets,
    ssh: Option<SshForward>,
    auth: Auth,
    upload: Upload,
    outputs: Vec<Box<dyn Output>>,
    cache_exports: Vec<Box<dyn CacheBackend>>,
    cache_imports: Vec<Box<dyn CacheBackend>>,
    entitlements: Vec<String>,
    shared_key: Option<String>,
    attachables: Vec<Box<dyn Attachable>>,
}

impl std::fmt::Debug for Build {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Build")
            .field("context", &self.context)
            .field("attrs", &self.attrs)
            .field("outputs", &self.outputs.len())
            .finish()
    }
}

impl Build {
    /// Builds `context_dir` with the `Dockerfile` in it.
    pub fn dockerfile(context_dir: impl AsRef<Path>) -> Self {
        let dir = context_dir.as_ref().to_path_buf();
        Self {
            context: Some(dir.clone()),
            dockerfile_dir: Some(dir),
            attrs: BTreeMap::new(),
            named_local: BTreeMap::new(),
            secrets: Secrets::new(),
            ssh: None,
            auth: Auth::from_docker_config(),
            upload: Upload::new(),
            outputs: Vec::new(),
            cache_exports: Vec::new(),
            cache_imports: Vec::new(),
            entitlements: Vec::new(),
            shared_key: None,
            attachables: Vec::new(),
        }
    }

    /// Builds a context given as a tar stream (optionally gzip-compressed) that the
    /// daemon pulls once through the session, with the Dockerfile inside it.
    pub fn tar_context(reader: impl AsyncRead + Send + Unpin + 'static) -> Self {
        let mut b = Self::dockerfile(".");
        b.context = None;
        b.dockerfile_dir = None;
        let url = b.upload.add("context", reader);
        b.attrs.insert("context".into(), url);
        b
    }

    /// Uses this Dockerfile (its directory is sent as the `dockerfile` local, its name
    /// as the `filename` attr) instead of `Dockerfile` in the context.
    pub fn file(mut self, dockerfile: impl AsRef<Path>) -> Self {
        let p = dockerfile.as_ref();
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        self.dockerfile_dir = Some(dir.to_path_buf());
        if let Some(name) = p.file_name() {
            self.attrs
                .insert("filename".into(), name.to_string_lossy().into_owned());
        }
        self
    }

    /// The stage to build (`--target`).
    pub fn target(self, stage: impl Into<String>) -> Self {
        self.attr("target", stage)
    }

    /// A build argument (`--build-arg NAME=value`).
    pub fn build_arg(self, name: impl AsRef<str>, value: impl Into<String>) -> Self {
        let key = format!("build-arg:{}", name.as_ref());
        self.attr(key, value)
    }

    /// An image label (`--label name=value`).
    pub fn label(self, name: impl AsRef<str>, value: impl Into<String>) -> Self {
        let key = format!("label:{}", name.as_ref());
        self.attr(key, value)
    }

    /// A target platform (`linux/amd64`); call again for a multi-platform build.
    pub fn platform(mut self, platform: impl Into<String>) -> Self {
        let p = platform.into();
        let v = match self.attrs.get("platform") {
            Some(old) if !old.is_empty() => format!("{old},{p}"),
            _ => p,
        };
        self.attrs.insert("platform".into(), v);
        self
    }

    /// Ignore the cache for every step (`--no-cache`).
    pub fn no_cache(self) -> Self {
        self.attr("no-cache", "")
    }

    /// Ignore the cache for these stages only (`--no-cache-filter`).
    pub fn no_cache_stages<I: IntoIterator<Item = S>, S: Into<String>>(self, stages: I) -> Self {
        let list: Vec<String> = stages.into_iter().map(Into::into).collect();
        self.attr("no-cache", list.join(","))
    }

    /// Always pull base images (`--pull`).
    pub fn pull(self) -> Self {
        self.attr("image-resolve-mode", "pull")
    }

    /// The network `RUN` steps use (`--network`). `Host` also requests the
    /// `network.host` entitlement.
    pub fn network(mut self, network: Network) -> Self {
        match network {
            Network::Default => {
                self.attrs.remove("force-network-mode");
            }
            Network::None => {
                self.attrs
                    .insert("force-network-mode".into(), "none".into());
            }
            Network::Host => {
                self.attrs
                    .insert("force-network-mode".into(), "host".into());
                self.entitlement_mut("network.host");
            }
        }
        self
    }

    fn entitlement_mut(&mut self, e: &str) {
        if !self.entitlements.iter().any(|x| x == e) {
            self.entitlements.push(e.to_string());
        }
    }

    /// Requests an entitlement (`network.host`, `security.insecure`, ...).
    pub fn entitlement(mut self, e: &str) -> Self {
        self.entitlement_mut(e);
        self
    }

    /// Allows `RUN --security=insecure` (requests `security.insecure`).
    pub fn allow_insecure(mut self) -> Self {
        self.entitlement_mut("security.insecure");
        self
    }

    /// An `/etc/hosts` entry for `RUN` steps (`--add-host name=ip`).
    pub fn add_host(mut self, name: impl AsRef<str>, ip: impl AsRef<str>) -> Self {
        let entry = format!("{}={}", name.as_ref(), ip.as_ref());
        let v = match self.attrs.get("add-hosts") {
            Some(old) if !old.is_empty() => format!("{old},{entry}"),
            _ => entry,
        };
        self.attrs.insert("add-hosts".into(), v);
        self
    }

    /// The size of `/dev/shm` for `RUN` steps, in bytes (`--shm-size`).
    pub fn shm_size(self, bytes: u64) -> Self {
        self.attr("shm-size", bytes.to_string())
    }

    /// A ulimit for `RUN` steps (`--ulimit nofile=1024:2048`).
    pub fn ulimit(mut self, name: impl AsRef<str>, soft: i64, hard: i64) -> Self {
        let entry = format!("{}={soft}:{hard}", name.as_ref());
        let v = match self.attrs.get("ulimit") {
            Some(old) if !old.is_empty() => format!("{old},{entry}"),
            _ => entry,
        };
        self.attrs.insert("ulimit".into(), v);
        self
    }

    /// A named context (`--build-context name=...`), usable as `FROM name` or
    /// `COPY --from=name`.
    pub fn named_context(mut self, name: impl Into<String>, ctx: NamedContext) -> Self {
        let name = name.into();
        let value = match ctx {
            NamedContext::Local(dir) => {
                self.named_local.insert(name.clone(), dir);
                format!("local:{name}")
            }
            NamedContext::Image(r) => {
                if r.contains("://") {
                    r
                } else {
                    format!("docker-image://{r}")
                }
            }
            NamedContext::Url(u) => u,
        };
        self.attrs.insert(format!("context:{name}"), value);
        self
    }

    /// Requests an SBOM attestation (`--sbom`); `opts` are generator options
    /// (empty for the default).
    pub fn attest_sbom(self, opts: impl Into<String>) -> Self {
        self.attr("attest:sbom", opts)
    }

    /// Requests a provenance attestation (`--provenance mode=max`).
    pub fn attest_provenance(self, mode: impl AsRef<str>) -> Self {
        let v = format!("mode={}", mode.as_ref());
        self.attr("attest:provenance", v)
    }

    /// Sets any frontend attr.
    pub fn attr(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attrs.insert(key.into(), value.into());
        self
    }

    /// Offers secrets to `RUN --mount=type=secret`.
    pub fn secrets(mut self, secrets: Secrets) -> Self {
        self.secrets = secrets;
        self
    }

    /// Forwards SSH agents to `RUN --mount=type=ssh`.
    pub fn ssh(mut self, ssh: SshForward) -> Self {
        self.ssh = Some(ssh);
        self
    }

    /// Registry credentials the daemon may ask for (default: the Docker config).
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Adds an output (exporter).
    pub fn output(mut self, output: impl Output + 'static) -> Self {
        self.outputs.push(Box::new(output));
        self
    }

    /// Imports cache from a backend (`--cache-from`).
    pub fn cache_from(mut self, cache: impl CacheBackend + 'static) -> Self {
        self.cache_imports.push(Box::new(cache));
        self
    }

    /// Exports cache to a backend (`--cache-to`).
    pub fn cache_to(mut self, cache: impl CacheBackend + 'static) -> Self {
        self.cache_exports.push(Box::new(cache));
        self
    }

    /// Attaches another service to the build's session. Attachables go in after
    /// the build's own services, so one serving a gRPC service the build already
    /// serves (its own `Secrets`, `Auth`, ...) replaces the build's for that
    /// service; among several, the last attached wins.
    pub fn attach(mut self, attachable: impl Attachable) -> Self {
        self.attachables.push(Box::new(attachable));
        self
    }

    /// The session's shared key (default: derived from the context directory, so that
    /// rebuilds transfer only what changed).
    pub fn shared_key(mut self, key: impl Into<String>) -> Self {
        self.shared_key = Some(key.into());
        self
    }

    /// The frontend attrs as they will be sent (without `cache-imports`).
    pub fn frontend_attrs(&self) -> &BTreeMap<String, String> {
        &self.attrs
    }

    /// The requested entitlements.
    pub fn entitlements(&self) -> &[String] {
        &self.entitlements
    }
}

/// The result of a successful solve.
#[derive(Debug, Clone, Default)]
pub struct Solved {
    /// What the exporters reported (`containerimage.digest`, `image.name`, ...).
    pub exporter_response: BTreeMap<String, String>,
    /// What each output's client side reported, in output order (only outputs with a
    /// client side).
    pub outputs: Vec<OutputDone>,
}

impl Solved {
    /// The image manifest (or index) digest, when an image was exported.
    pub fn digest(&self) -> Option<&str> {
        self.exporter_response
            .get("containerimage.digest")
            .map(String::as_str)
    }
}

/// A running build: a stream of progress [`Event`]s ([`BuildHandle::progress`]) and,
/// awaited, the result. Dropping it cancels the build on the daemon.
pub struct BuildHandle {
    reference: String,
    events: Option<mpsc::UnboundedReceiver<Event>>,
    task: Option<tokio::task::JoinHandle<Result<Solved>>>,
}

impl std::fmt::Debug for BuildHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildHandle")
            .field("ref", &self.reference)
            .finish()
    }
}

/// The progress of one build; ends when the build does.
pub struct Progress {
    rx: Option<mpsc::UnboundedReceiver<Event>>,
}

impl Stream for Progress {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        match self.rx.as_mut() {
            Some(rx) => rx.poll_recv(cx),
            None => Poll::Ready(None),
        }
    }
}

impl BuildHandle {
    /// The build's reference (the solve `ref`, as build history knows it).
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// The progress events. Can be taken once; later calls give an empty stream.
    pub fn progress(&mut self) -> Progress {
        Progress {
            rx: self.events.take(),
        }
    }

    /// Cancels the build on the daemon.
    pub fn cancel(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Future for BuildHandle {
    type Output = Result<Solved>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(task) = self.task.as_mut() else {
            return Poll::Ready(Err(Error::Cancelled));
        };
        let res = std::task::ready!(Pin::new(task).poll(cx));
        self.task = None;
        Poll::Ready(match res {
            Ok(r) => r,
            Err(e) if e.is_cancelled() => Err(Error::Cancelled),
            Err(e) => Err(Error::Invalid(format!("the build task failed: {e}"))),
        })
    }
}

impl Drop for BuildHandle {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            // Dropping the solve call cancels it on the daemon.
            t.abort();
        }
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `cache-imports` frontend attr: `[{"Type":..,"Attrs":{..}}]`.
fn cache_imports_attr(entries: &[CacheOptionsEntry]) -> String {
    let list: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| serde_json::json!({"Type": e.r#type, "Attrs": e.attrs}))
        .collect();
    serde_json::Value::Array(list).to_string()
}

/// Missing local directories or Dockerfile fail before anything is sent, naming the
/// path (the daemon would otherwise report a transfer error).
fn check_local_dirs(build: &Build) -> Result<()> {
    let dir_ok = |what: &str, p: &Path| {
        if p.is_dir() {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "{what} {} is not a directory",
                p.display()
            )))
        }
    };
    if let Some(c) = &build.context {
        dir_ok("the build context", c)?;
    }
    for (name, dir) in &build.named_local {
        dir_ok(&format!("the named context {name:?}"), dir)?;
    }
    if let Some(d) = &build.dockerfile_dir {
        dir_ok("the Dockerfile's directory", d)?;
        let name = build
            .attrs
            .get("filename")
            .map(String::as_str)
            .unwrap_or("Dockerfile");
        let file = d.join(name);
        if !file.is_file() {
            return Err(Error::Invalid(format!(
                "no Dockerfile at {}",
                file.display()
            )));
        }
    }
    Ok(())
}

/// Starts a solve on `driver` (the body of [`Driver::solve`]).
pub(crate) async fn start<D: Driver + ?Sized>(driver: &D, build: Build) -> Result<BuildHandle> {
    check_local_dirs(&build)?;
    let caps = driver.capabilities().await?;
    for o in &build.outputs {
        caps.check_exporter(&o.exporter_type())?;
    }
    caps.check_exporter_count(build.outputs.len())?;
    caps.check_frontend_attrs(build.attrs.keys())?;
    for c in &build.cache_exports {
        caps.check_cache_export(&c.backend_type())?;
    }
    for c in &build.cache_imports {
        caps.check_cache_import(&c.backend_type())?;
    }
    build.secrets.check()?;
    if let Some(ssh) = &build.ssh {
        ssh.check()?;
    }

    let mut filesend = FileSend::new();
    let mut content = ContentStore::new();
    let response = ExporterResponse::default();
    let mut warnings = Vec::new();
    let mut attachables: Vec<Box<dyn Attachable>> = build.attachables;
    let mut exporters = Vec::new();
    let mut finishers: Vec<Finish> = Vec::new();
    for (i, out) in build.outputs.into_iter().enumerate() {
        exporters.push(Exporter {
            r#type: out.exporter_type(),
            attrs: out.attrs(),
        });
        let mut ctx = Prepare {
            index: i as u64,
            driver: driver.name(),
            filesend: &mut filesend,
            content: &mut content,
            cache_role: None,
            response: response.clone(),
            attachables: &mut attachables,
        };
        if let Some(f) = out.prepare(&mut ctx)? {
            finishers.push(f);
        }
    }
    let mut cache_finishers: Vec<Finish> = Vec::new();
    let mut cache = CacheOptions::default();
    for (list, backends, role) in [
        (&mut cache.imports, build.cache_imports, CacheRole::Import),
        (&mut cache.exports, build.cache_exports, CacheRole::Export),
    ] {
        for c in backends {
            let attrs = match c.attrs_for(role) {
                Ok(attrs) => attrs,
                Err(reason) => {
                    warnings.push(reason);
                    continue;
                }
            };
            list.push(CacheOptionsEntry {
                r#type: c.backend_type(),
                attrs,
            });
            let mut ctx = Prepare {
                index: u64::MAX,
                driver: driver.name(),
                filesend: &mut filesend,
                content: &mut content,
                cache_role: Some(role),
                response: response.clone(),
                attachables: &mut attachables,
            };
            if let Some(f) = c.prepare(&mut ctx)? {
                cache_finishers.push(f);
            }
        }
    }

    let mut attrs = build.attrs;
    if !cache.imports.is_empty() {
        attrs.insert("cache-imports".into(), cache_imports_attr(&cache.imports));
    }

    let mut files = FileSync::new();
    if let Some(c) = &build.context {
        files = files.dir("context", c);
    }
    if let Some(d) = &build.dockerfile_dir {
        files = files.dir("dockerfile", d);
    }
    for (name, dir) in &build.named_local {
        files = files.dir(name, dir);
    }
    let shared_key = build
        .shared_key
        .or_else(|| {
            build
                .context
                .as_deref()
                .map(buildkit_session::shared_key_for)
        })
        .unwrap_or_else(buildkit_session::new_id);
    let mut session = Session::new()
        .with_shared_key(shared_key)
        .attach(build.auth)
        .attach(build.secrets)
        .attach(build.upload)
        .attach(files);
    if let Some(ssh) = build.ssh {
        session = session.attach(ssh);
    }
    if !filesend.is_empty() {
        session = session.attach(filesend);
    }
    if !content.is_empty() {
        session = session.attach(content);
    }
    for a in attachables {
        session = session.attach_boxed(a);
    }
    let session_id = session.id().to_string();

    let mut control = driver.control().await?;
    let session_handle = driver.attach(session).await?;

    let reference = buildkit_session::new_id();
    let first = exporters.first().cloned();
    let request = SolveRequest {
        r#ref: reference.clone(),
        session: session_id,
        frontend: DOCKERFILE_FRONTEND.into(),
        frontend_attrs: attrs,
        exporter_deprecated: first.as_ref().map(|e| e.r#type.clone()).unwrap_or_default(),
        exporter_attrs_deprecated: first.map(|e| e.attrs).unwrap_or_default(),
        exporters,
        cache: Some(cache),
        entitlements: build.entitlements,
        ..Default::default()
    };

    let (tx, rx) = mpsc::unbounded_channel();
    for short in warnings {
        let _ = tx.send(Event::Warning(Warning {
            vertex: String::new(),
            level: 1,
            short,
            detail: Vec::new(),
            url: String::new(),
        }));
    }
    let mut status_client = control.clone();
    let status_ref = reference.clone();
    let response_slot = response;
    let task = tokio::spawn(async move {
        let status = tokio::spawn(async move {
            let stream = status_client
                .status(StatusRequest { r#ref: status_ref })
                .await;
            if let Ok(resp) = stream {
                let mut stream = resp.into_inner();
                while let Some(Ok(msg)) = stream.next().await {
                    for e in events_from_status(msg) {
                        // A dropped progress stream is fine: keep draining.
                        let _ = tx.send(e);
                    }
                }
            }
        });
        // Stops the status stream when this task ends or is aborted (the
        // handle dropped), instead of leaving it attached to the daemon.
        let mut status = AbortOnDrop(status);
        let solved = control.solve(request).await;
        // The status stream ends once the daemon has sent the last updates.
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut status.0).await;
        drop(status);
        let response: BTreeMap<String, String> = match solved {
            Ok(r) => r.into_inner().exporter_response.into_iter().collect(),
            // A cancellation the daemon reports (another client cancelled the
            // build, or the daemon shut down) is a failed solve with its reason;
            // `Error::Cancelled` is for cancellations this handle made.
            Err(s) => {
                drop(session_handle);
                return Err(Error::Solve(SolveError {
                    message: s.message().to_string(),
                    code: s.code(),
                }));
            }
        };
        // Finishers may read the response (a local cache's index needs
        // `cache.manifest`).
        let _ = response_slot.0.set(response.clone());
        let mut outputs = Vec::new();
        for f in finishers {
            outputs.push(f.await?);
        }
        for f in cache_finishers {
            f.await?;
        }
        let _ = session_handle.close().await;
        Ok(Solved {
            exporter_response: response,
            outputs,
        })
    });
    Ok(BuildHandle {
        reference,
        events: Some(rx),
        task: Some(task),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerfile_attrs() {
        let b = Build::dockerfile("/ctx")
            .file("/other/Dockerfile.dev")
            .target("t")
            .build_arg("A", "1")
            .label("l", "v")
            .platform("linux/amd64")
            .platform("linux/arm64")
            .no_cache()
            .pull()
            .network(Network::Host)
            .add_host("db", "10.0.0.1")
            .add_host("cache", "10.0.0.2")
            .shm_size(1 << 20)
            .ulimit("nofile", 1024, 2048)
            .named_context("base", NamedContext::Image("alpine:3".into()))
            .named_context("assets", NamedContext::Local("/assets".into()))
            .attest_provenance("max")
            .attest_sbom("");
        let a = b.frontend_attrs();
        let get = |k: &str| a.get(k).map(String::as_str);
        assert_eq!(get("filename"), Some("Dockerfile.dev"));
        assert_eq!(get("target"), Some("t"));
        assert_eq!(get("build-arg:A"), Some("1"));
        assert_eq!(get("label:l"), Some("v"));
        assert_eq!(get("platform"), Some("linux/amd64,linux/arm64"));
        assert_eq!(get("no-cache"), Some(""));
        assert_eq!(get("image-resolve-mode"), Some("pull"));
        assert_eq!(get("force-network-mode"), Some("host"));
        assert_eq!(get("add-hosts"), Some("db=10.0.0.1,cache=10.0.0.2"));
        assert_eq!(get("shm-size"), Some("1048576"));
        assert_eq!(get("ulimit"), Some("nofile=1024:2048"));
        assert_eq!(get("context:base"), Some("docker-image://alpine:3"));
        assert_eq!(get("context:assets"), Some("local:assets"));
        assert_eq!(get("attest:provenance"), Some("mode=max"));
        assert_eq!(get("attest:sbom"), Some(""));
        assert_eq!(b.entitlements(), &["network.host".to_string()]);
        assert_eq!(b.dockerfile_dir.as_deref(), Some(Path::new("/other")));
    }

    #[test]
    fn cache_imports_json() {
        let e = CacheOptionsEntry {
            r#type: "registry".into(),
            attrs: BTreeMap::from([("ref".to_string(), "r/c:1".to_string())]),
        };
        assert_eq!(
            cache_imports_attr(&[e]),
            r#"[{"Attrs":{"ref":"r/c:1"},"Type":"registry"}]"#
        );
    }
}
