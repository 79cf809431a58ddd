//! Exit codes of the CLI (DESIGN.md): 0 ok, 1 a guest or case failed (or a regression),
//! 2 unusable input or environment, 3 inconclusive where `gate --strict` asked for certainty.

/// An error that means "the thing ran and failed", as opposed to "could not run".
#[derive(Debug)]
pub struct Failed(pub String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

/// `gate --strict` could not decide: too few repetitions, or noise wider than the threshold.
#[derive(Debug)]
pub struct Inconclusive(pub String);

impl std::fmt::Display for Inconclusive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Inconclusive {}

pub const OK: i32 = 0;
pub const FAILED: i32 = 1;
pub const UNUSABLE: i32 = 2;
pub const INCONCLUSIVE: i32 = 3;

/// The exit code for an error from a command.
pub fn for_error(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<Failed>().is_some() {
        FAILED
    } else if e.downcast_ref::<Inconclusive>().is_some() {
        INCONCLUSIVE
    } else {
        UNUSABLE
    }
}
