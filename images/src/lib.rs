//! Builds what vmbench guests boot, cached by content and recorded in a manifest, so a result
//! can say exactly which bytes ran.

pub mod manifest;
pub mod probe;

pub use manifest::Manifest;
