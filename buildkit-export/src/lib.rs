//! Typed BuildKit exporters and cache backends, each turning into solve-request
//! entries plus the client-side sink that receives its output.
//!
//! [`oci`] reads what the `oci` and `docker` exporters produce (OCI layouts, OCI tars,
//! Docker tars) into a typed model and verifies every digest.

pub mod oci;
