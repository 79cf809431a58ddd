//! The CLI's commands (`bench`, `boot`) and what they share: turning flags into the shared
//! device kinds.

pub mod bench;
pub mod boot;

use clap::builder::{PossibleValuesParser, TypedValueParser};

use crate::scenario::{or_none, DeviceKind};

/// A flag that takes a device kind's name or `none` (`--nic e1000|virtio|none`), with the
/// same names as scenario files.
pub fn kind_or_none<K: DeviceKind + Send + Sync>() -> impl TypedValueParser<Value = Option<K>> {
    let mut names = K::NAMES.to_vec();
    names.push(or_none::NONE);
    PossibleValuesParser::new(names).map(|s| or_none::parse::<K>(&s).flatten())
}
