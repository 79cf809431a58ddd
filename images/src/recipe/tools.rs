//! The external tools a recipe needs (qemu-img, mke2fs, debugfs), found once and run through
//! duct with their output captured, so a failure reports the command and what it said.

use std::ffi::OsString;
use std::path::PathBuf;

use super::Error;

pub(super) struct Tool {
    pub name: &'static str,
    package: &'static str,
    path: PathBuf,
}

impl Tool {
    /// Finds `name` on this machine ([`crate::find_program`]).
    pub fn locate(name: &'static str, package: &'static str) -> Result<Tool, Error> {
        crate::find_program(name)
            .map(|path| Tool {
                name,
                package,
                path,
            })
            .ok_or_else(|| Error::ToolMissing {
                tool: name.into(),
                package: package.into(),
            })
    }

    /// The version banner (`--version` or `-V`, which e2fsprogs prints on stderr), without
    /// copyright lines, on one line.
    pub fn version(&self, flag: &str) -> Result<String, Error> {
        let out = duct::cmd(&self.path, [flag])
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .run()
            .map_err(|e| self.spawn_error(e))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("Copyright"))
            .collect();
        if lines.is_empty() {
            return Err(Error::ToolFailed {
                command: format!("{} {flag}", self.name),
                status: out.status.to_string(),
                stderr: "no version banner".into(),
            });
        }
        Ok(lines.join("; "))
    }

    /// Runs the tool; a non-zero exit is an error carrying its stderr. Returns the stderr of
    /// a successful run (debugfs reports failed commands there and still exits 0).
    pub fn run(&self, args: &[OsString], env: &[(&str, OsString)]) -> Result<String, Error> {
        let mut cmd = duct::cmd(&self.path, args)
            .stdin_null()
            .stdout_capture()
            .stderr_capture()
            .unchecked();
        for (k, v) in env {
            cmd = cmd.env(k, v);
        }
        let out = cmd.run().map_err(|e| self.spawn_error(e))?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if !out.status.success() {
            return Err(Error::ToolFailed {
                command: self.command_line(args),
                status: out.status.to_string(),
                stderr,
            });
        }
        Ok(stderr)
    }

    pub fn command_line(&self, args: &[OsString]) -> String {
        std::iter::once(self.name.to_string())
            .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn spawn_error(&self, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::ToolMissing {
                tool: self.name.into(),
                package: self.package.into(),
            }
        } else {
            Error::Tool {
                tool: self.path.display().to_string(),
                source: e,
            }
        }
    }
}

/// A command line from a mix of strings and paths.
macro_rules! os_args {
    ($($a:expr),* $(,)?) => {
        [$(std::ffi::OsStr::new(&$a).to_os_string()),*]
    };
}
pub(super) use os_args;
