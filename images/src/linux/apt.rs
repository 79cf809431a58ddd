//! Debian packages through the ordinary apt tools with a private state directory in the image
//! cache (its own package lists and archive cache, an empty dpkg status), using the machine's
//! configured sources: `apt-get update`, `apt-cache policy`, `apt-get download NAME=VERSION`.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run {tool}: install apt (this builder needs a Debian-like host)")]
    Tool {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot prepare apt's private state in {path}")]
    State {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// apt with its state under `dir` (`lists/`, `cache/`).
pub struct Apt {
    dir: PathBuf,
    updated: bool,
}

fn last_lines(s: &[u8]) -> String {
    let s = String::from_utf8_lossy(s);
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(6)..].join(" | ")
}

impl Apt {
    pub fn new(dir: &Path) -> Result<Apt, Error> {
        for sub in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| Error::State {
                path: dir.display().to_string(),
                source: e,
            })?;
        }
        Ok(Apt {
            dir: dir.to_path_buf(),
            updated: false,
        })
    }

    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        [
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::Cache={d}/cache"),
            "Dir::State::status=/dev/null".into(),
            "Debug::NoLocking=1".into(),
            // Files in the cache belong to whoever builds; apt's `_apt` user may not write there.
            "APT::Sandbox::User=root".into(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    fn run(&self, tool: &str, args: &[&str], cwd: Option<&Path>) -> Result<String, Error> {
        let mut c = Command::new(tool);
        c.arg("-q")
            .args(self.options())
            .args(args)
            .env("LC_ALL", "C");
        if let Some(d) = cwd {
            c.current_dir(d);
        }
        let out = c.output().map_err(|e| Error::Tool {
            tool: tool.into(),
            source: e,
        })?;
        if !out.status.success() {
            return Err(Error::Failed {
                command: format!("{tool} {}", args.join(" ")),
                status: out.status.to_string(),
                stderr: last_lines(&out.stderr),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `apt-get update` into the private lists, once per `Apt`.
    pub fn update(&mut self) -> Result<(), Error> {
        if !self.updated {
            self.run("apt-get", &["update"], None)?;
            self.updated = true;
        }
        Ok(())
    }

    /// The version apt would pick for `name`, `None` if the mirror has no such package.
    pub fn candidate(&mut self, name: &str) -> Result<Option<String>, Error> {
        self.update()?;
        let out = self.run("apt-cache", &["policy", name], None)?;
        Ok(out
            .lines()
            .find_map(|l| l.trim().strip_prefix("Candidate:"))
            .map(|v| v.trim().to_string())
            .filter(|v| v != "(none)"))
    }

    /// The packages whose names start with `prefix`, sorted.
    pub fn names(&mut self, prefix: &str) -> Result<Vec<String>, Error> {
        self.update()?;
        let out = self.run("apt-cache", &["pkgnames", prefix], None)?;
        let mut v: Vec<String> = out.lines().map(|l| l.trim().to_string()).collect();
        v.sort();
        v.dedup();
        Ok(v)
    }

    /// What `name`'s candidate version depends on (package names of `Depends:` lines).
    pub fn depends(&mut self, name: &str) -> Result<Vec<String>, Error> {
        self.update()?;
        let out = self.run("apt-cache", &["depends", name], None)?;
        Ok(out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends:"))
            .map(|d| d.trim().to_string())
            .collect())
    }

    /// `apt-get download NAME=VERSION` into `dir`; the path of the .deb. `Ok(None)` when the
    /// mirror does not have that version.
    pub fn download(
        &mut self,
        name: &str,
        version: &str,
        dir: &Path,
    ) -> Result<Option<PathBuf>, Error> {
        self.update()?;
        let spec = format!("{name}={version}");
        match self.run("apt-get", &["download", &spec], Some(dir)) {
            Ok(_) => {}
            Err(Error::Failed { stderr, .. })
                if stderr.contains("not found") || stderr.contains("Unable to locate") =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
        let prefix = format!("{name}_");
        let found = std::fs::read_dir(dir)
            .map_err(|e| Error::State {
                path: dir.display().to_string(),
                source: e,
            })?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            });
        Ok(found)
    }

    /// `apt-get --version`'s first line.
    pub fn version(&self) -> String {
        Command::new("apt-get")
            .arg("--version")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default()
    }
}
