//! Exit codes of the CLI (DESIGN.md): 0 ok, 1 a guest or case failed (or a regression),
//! 2 unusable input or environment.

/// An error that means "the thing ran and failed", as opposed to "could not run".
#[derive(Debug)]
pub struct Failed(pub String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

pub const OK: i32 = 0;
pub const FAILED: i32 = 1;
pub const UNUSABLE: i32 = 2;

/// The exit code for an error from a command.
pub fn for_error(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<Failed>().is_some() {
        FAILED
    } else {
        UNUSABLE
    }
}
