//! Item 6 of issue 10: a run of 50 cases × 10 repetitions × 10,000 raw samples renders to an
//! HTML file under 3 MB (samples are downsampled for plots; every repetition stays in the
//! tables). The run is synthetic: the real smoke run's net-rr case copied 50 times with
//! generated latency samples (set VMBENCH_LARGE_RESULTS=PATH to keep the file).

mod common;

use serde_json::{json, Value};

fn large_results() -> Value {
    let text = std::fs::read_to_string(common::data("smoke.json")).unwrap();
    let mut doc: Value = serde_json::from_str(&text).unwrap();
    let template = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["params"]["workload"]["name"] == "net-rr")
        .unwrap()
        .clone();
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut cases = Vec::new();
    for i in 0..50 {
        let mut c = template.clone();
        let nic = if i % 2 == 0 { "e1000" } else { "virtio" };
        c["id"] = json!(format!("nic={nic},workload=net-rr,frame_size={}", 64 + i));
        c["params"]["nic"] = json!(nic);
        let base = if nic == "e1000" { 180_000.0 } else { 55_000.0 };
        let mut reps = Vec::new();
        for r in 0..10u32 {
            let mut rep = template["repetitions"][0].clone();
            rep["index"] = json!(r);
            let samples: Vec<f64> = (0..10_000)
                .map(|_| (base * (1.0 + 0.2 * uniform()) / (1.0 - 0.999 * uniform())).round())
                .collect();
            rep["samples"] = json!({ "latency_ns": samples });
            rep["metrics"]["latency_p50_ns"] = json!(base * (1.0 + 0.05 * uniform()));
            reps.push(rep);
        }
        c["repetitions"] = json!(reps);
        cases.push(c);
    }
    doc["cases"] = json!(cases);
    doc
}

#[test]
fn fifty_cases_ten_repetitions_ten_thousand_samples_under_3_mb() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.json");
    let bytes = serde_json::to_vec(&large_results()).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    if let Some(keep) = std::env::var_os("VMBENCH_LARGE_RESULTS") {
        std::fs::write(keep, &bytes).unwrap();
    }
    let run = reports::load(&path).expect("load");
    assert_eq!(run.cases.len(), 50);
    assert!(run.cases.iter().all(|c| c.repetitions.len() == 10
        && c.repetitions
            .iter()
            .all(|r| r.samples["latency_ns"].len() == 10_000)));
    let out = dir.path().join("report");
    let w = reports::render(std::slice::from_ref(&run), None, &out, &mut |_| {}).expect("render");
    let html = std::fs::read_to_string(&w.html).unwrap();
    assert!(
        html.len() < 3_000_000,
        "report.html is {} bytes",
        html.len()
    );
    // Every repetition is still in the tables: 50 cases × 10 values.
    assert_eq!(html.matches("class=\"pill\"").count(), 500);
    let summary = std::fs::metadata(&w.summary).unwrap().len();
    assert!(summary < 1 << 20);
}
