//! The local-context toolkit shared by FileSync and the REST `/build` path: the
//! directory walker, the `.dockerignore` matcher and a streamed context tar.

pub mod ignore;
pub mod tar;

pub use crate::fsutil::walk::{Entry, WalkOptions, Walker};
pub use ignore::{PatternMatcher, parse_dockerignore};
pub use tar::{ContextTar, TarOptions, context_excludes, context_tar};
