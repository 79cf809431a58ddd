//! Records in the probe's format (`@vmb <kind> key=value ... [text]`, docs/probe.md), one
//! line per write on the console, so the harness's parser reads the agent as it reads the
//! probe.

use std::fmt::Display;
use std::io::Write;

pub struct Record {
    line: String,
}

impl Record {
    pub fn new(kind: &str) -> Record {
        Record {
            line: format!("{}{kind}", probe_abi::RECORD_PREFIX),
        }
    }

    pub fn kv(mut self, key: &str, value: impl Display) -> Record {
        // A value never holds whitespace: the parser splits on it.
        let v = value.to_string().replace(char::is_whitespace, "_");
        self.line.push_str(&format!(" {key}={v}"));
        self
    }

    /// Free text (after the fields), one line.
    pub fn text(mut self, text: &str) -> Record {
        self.line.push(' ');
        self.line.push_str(&text.replace(['\n', '\r'], " "));
        self
    }

    pub fn send(mut self) {
        self.line.push('\n');
        let mut out = std::io::stdout().lock();
        // The console is the only way out; if it is gone there is nobody to tell.
        let _ = out.write_all(self.line.as_bytes());
        let _ = out.flush();
    }
}
