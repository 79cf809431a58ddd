//! Whether two results files were measured in comparable conditions: the same kind of host
//! (its fingerprint), the same scenario file and the same guest images. The hostname is not
//! part of the fingerprint, so that CI runners of one machine type share it.

use sha2::{Digest, Sha256};

use crate::results::{Environment, RunResults};

/// The host facts that change what a figure means, in a fixed order: `(name, value)`.
fn host_facts(env: &Environment) -> Vec<(&'static str, String)> {
    let h = &env.host;
    vec![
        ("arch", h.arch.clone()),
        ("cpu_model", h.cpu_model.clone()),
        ("cores", h.cores.to_string()),
        ("memory_mib", h.memory_mib.to_string()),
        ("kernel_release", h.kernel_release.clone()),
        ("kvm flavour", env.kvm.flavour.clone()),
        ("kvm nested", env.kvm.nested.to_string()),
        ("kvm cpl0_native", env.kvm.cpl0_native.to_string()),
    ]
}

/// A short hex digest of the host facts: the key noise floors are stored under.
pub fn host_fingerprint(env: &Environment) -> String {
    let mut h = Sha256::new();
    for (k, v) in host_facts(env) {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The sha256 of each image artifact the run booted, by `image/path`, plus the probe's.
fn image_hashes(doc: &RunResults) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(p) = &doc.environment.probe_sha256 {
        out.push(("probe".to_string(), p.clone()));
    }
    for m in &doc.images {
        let name = m.get("image").and_then(|v| v.as_str()).unwrap_or("image");
        for a in m
            .get("artifacts")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let path = a.get("path").and_then(|v| v.as_str()).unwrap_or("?");
            let file = path.rsplit('/').next().unwrap_or(path);
            let sha = a.get("sha256").and_then(|v| v.as_str()).unwrap_or("?");
            out.push((format!("{name}/{file}"), sha.to_string()));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Every difference that makes `a` and `b` incomparable, each named: empty when they match.
pub fn differences(a: &RunResults, b: &RunResults) -> Vec<String> {
    let mut out = Vec::new();
    for ((k, va), (_, vb)) in host_facts(&a.environment)
        .into_iter()
        .zip(host_facts(&b.environment))
    {
        if va != vb {
            out.push(format!("host {k}: '{va}' vs '{vb}'"));
        }
    }
    let (sa, sb) = (&a.scenario.source, &b.scenario.source);
    if sa.sha256 != sb.sha256 {
        out.push(format!(
            "scenario file: {} (sha256 {}) vs {} (sha256 {})",
            sa.path,
            short(&sa.sha256),
            sb.path,
            short(&sb.sha256)
        ));
    }
    let (ia, ib) = (image_hashes(a), image_hashes(b));
    for (name, sha) in &ia {
        match ib.iter().find(|(n, _)| n == name) {
            Some((_, other)) if other != sha => out.push(format!(
                "image {name}: sha256 {} vs {}",
                short(sha),
                short(other)
            )),
            Some(_) => {}
            None => out.push(format!("image {name}: only in the first file")),
        }
    }
    for (name, _) in &ib {
        if !ia.iter().any(|(n, _)| n == name) {
            out.push(format!("image {name}: only in the second file"));
        }
    }
    out
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}
