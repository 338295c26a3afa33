//! Typed BuildKit exporters and cache backends, each turning into solve-request
//! entries plus the client-side sink that receives its output.
//!
//! | exporter | where the result goes |
//! |---|---|
//! | [`Image`] / [`Registry`] | the daemon's image store, optionally pushed |
//! | [`Moby`] | dockerd's image store |
//! | [`OciTar`] | an OCI image layout tar (file, any writer, stdout, or a directory) |
//! | [`DockerTar`] | a `docker load`-able tar |
//! | [`DockerLoad`] | straight into a Docker Engine, no temporary file |
//! | [`LocalDir`] | the result's filesystem in a local directory |
//! | [`Tar`] | the result's filesystem as a tar |
//!
//! Cache backends: [`RegistryCache`], [`LocalCache`], [`InlineCache`], [`Gha`],
//! [`S3`], [`AzBlob`].
//!
//! [`oci`] reads what the `oci` and `docker` exporters produce (OCI layouts, OCI tars,
//! Docker tars) into a typed model and verifies every digest.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use buildkit_driver::{Build, Driver, Remote};
//! use buildkit_export::{OciTar, RegistryCache};
//!
//! let driver = Remote::from_env()?; // BUILDKIT_HOST
//! let build = Build::dockerfile("./app")
//!     .output(OciTar::to_file("app.oci.tar").name("app:1"))
//!     .cache_to(RegistryCache::new("localhost:5000/app:cache").mode_max());
//! let solved = driver.solve(build).await?.await?;
//! let layout = buildkit_export::oci::read_path("app.oci.tar").await?;
//! assert!(layout.manifest_by_digest(&solved.digest().unwrap().parse()?).is_some());
//! # Ok(()) }
//! ```

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;

pub mod cache;
pub mod exporters;
mod layout_index;
pub mod oci;

pub use cache::{AzBlob, CacheMode, Gha, InlineCache, LocalCache, RegistryCache, S3};
pub use exporters::{
    Compression, DockerLoad, DockerTar, Image, ImageOptions, LocalDir, Moby, OciTar, Registry, Tar,
};
