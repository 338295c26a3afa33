//! Typed BuildKit exporters and cache backends, each turning into solve-request
//! entries plus the client-side sink that receives its output.
