//! `gabbro deploy` / `gabbro pull`: OpenFn's project.yaml ⇄ a gabbro server.
//!
//! - [`spec`] reads and writes project.yaml;
//! - [`document`] is Lightning's provisioning document (`/api/provision`),
//!   with the validation the server applies;
//! - [`merge`] turns one into the other, keeping ids stable by name;
//! - [`client`] talks to the server.

#[cfg(feature = "client")]
pub mod client;
pub mod document;
pub mod errors;
pub mod merge;
pub mod spec;

pub use document::{ProjectDocument, parse_document};
pub use errors::FieldErrors;

#[cfg(feature = "client")]
mod commands;
#[cfg(feature = "client")]
pub use commands::*;
