//! report.html in a real browser (Debian's chromium, headless, no network: every host name
//! resolves to nothing and the proxy is a closed loopback port): it loads without console
//! errors, the DOM after load has every chart, and full-page screenshots in the light and the
//! dark colour scheme show every chart, opaque and not blank.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::rendered;
use scraper::{Html, Selector};

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        if let Some(p) = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        }) {
            return p;
        }
    }
    panic!("chromium is not installed; .ci/setup installs it (apt-get install chromium)");
}

/// Runs headless chromium on `url` with `extra` arguments, offline.
fn browse(url: &str, extra: &[&str]) -> Output {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=127.0.0.1:9",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(extra)
    .arg(url);
    let out = cmd.output().expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn url(p: &Path) -> String {
    format!("file://{}", p.display())
}

/// The page's console messages, from chromium's log.
fn console_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect()
}

#[test]
fn console_detection_sees_an_error() {
    // The check below is only worth something if it can fail.
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("bad.html");
    std::fs::write(
        &page,
        "<!doctype html><script>console.error('boom')</script>",
    )
    .unwrap();
    let out = browse(&url(&page), &["--dump-dom"]);
    assert!(console_lines(&out).iter().any(|l| l.contains("boom")));
}

#[test]
fn loads_without_console_errors_with_every_chart_in_the_dom() {
    let (_dir, w, _) = rendered(&["failed-pending.json"], None);
    let out = browse(&url(&w.html), &["--dump-dom"]);
    assert_eq!(console_lines(&out), Vec::<String>::new());
    let dom = Html::parse_document(&String::from_utf8_lossy(&out.stdout));
    let ids: Vec<String> = dom
        .select(&Selector::parse("svg.chart").unwrap())
        .filter_map(|e| e.value().attr("id").map(str::to_string))
        .collect();
    let want: Vec<String> = w.chart_ids.iter().map(|i| format!("chart-{i}")).collect();
    assert_eq!(ids, want);
    // Charts are drawn, not empty elements.
    for svg in dom.select(&Selector::parse("svg.chart").unwrap()) {
        assert!(svg.select(&Selector::parse("rect, path").unwrap()).count() > 5);
    }
}

struct Shot {
    width: usize,
    height: usize,
    rgb: Vec<[u8; 3]>,
}

impl Shot {
    fn load(p: &Path) -> Shot {
        let file = std::fs::File::open(p).expect("screenshot");
        let mut reader = png::Decoder::new(std::io::BufReader::new(file))
            .read_info()
            .expect("png");
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).expect("frame");
        let step = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => panic!("unexpected screenshot colour type {other:?}"),
        };
        let rgb = buf[..info.buffer_size()]
            .chunks(step)
            .map(|c| [c[0], c[1], c[2]])
            .collect();
        Shot {
            width: info.width as usize,
            height: info.height as usize,
            rgb,
        }
    }

    fn at(&self, x: usize, y: usize) -> [u8; 3] {
        self.rgb[y * self.width + x]
    }
}

fn near(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 2)
}

fn lum(c: [u8; 3]) -> f64 {
    0.2126 * f64::from(c[0]) + 0.7152 * f64::from(c[1]) + 0.0722 * f64::from(c[2])
}

/// Screenshots the whole page in `scheme` and finds the charts: runs of rows where, just
/// inside the content's left edge, the pixel is the chart background (opaque, unlike the page).
fn charts_in_screenshot(html: &Path, scheme: &str, height: usize) -> (Shot, Vec<(usize, usize)>) {
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("shot.png");
    let pref = if scheme == "dark" { 0 } else { 1 };
    browse(
        &url(html),
        &[
            &format!("--window-size=1280,{height}"),
            &format!("--blink-settings=preferredColorScheme={pref}"),
            &format!("--screenshot={}", shot.display()),
        ],
    );
    let s = Shot::load(&shot);
    let (page_bg, chart_bg) = if scheme == "dark" {
        ([0x0d, 0x11, 0x17], [0x16, 0x1b, 0x22])
    } else {
        ([0xf6, 0xf8, 0xfa], [0xff, 0xff, 0xff])
    };
    assert!(
        near(s.at(5, 5), page_bg),
        "{scheme} page background is {:?}",
        s.at(5, 5)
    );
    // The content column starts at (1280 - 1120) / 2 + 18 = 98; the chart border is 1 px.
    let (x, outside) = (102, 60);
    let mut runs = Vec::new();
    let mut start = None;
    for y in 0..s.height {
        let inside = near(s.at(x, y), chart_bg) && near(s.at(outside, y), page_bg);
        match (inside, start) {
            (true, None) => start = Some(y),
            (false, Some(y0)) => {
                if y - y0 >= 100 {
                    runs.push((y0, y));
                }
                start = None;
            }
            _ => {}
        }
    }
    (s, runs)
}

#[test]
fn screenshots_show_every_chart_in_light_and_dark() {
    let (_dir, w, _) = rendered(&["smoke.json"], None);
    // Tall enough for the whole page: charts, tables and text.
    let charts: f64 = w
        .png_sizes
        .iter()
        .map(|&(_, h)| f64::from(h) * 1000.0 / 1200.0 + 30.0)
        .sum();
    let height = (charts as usize + 9000).min(32_000);
    for scheme in ["light", "dark"] {
        let (s, found) = charts_in_screenshot(&w.html, scheme, height);
        assert_eq!(
            found.len(),
            w.chart_ids.len(),
            "{scheme}: charts found at {found:?}"
        );
        for (y0, y1) in found {
            // Pixel variance inside the chart: drawn, not a blank box.
            let px: Vec<f64> = (y0..y1)
                .step_by(2)
                .flat_map(|y| (99..1097).step_by(2).map(move |x| (x, y)))
                .map(|(x, y)| lum(s.at(x, y)))
                .collect();
            let mean = px.iter().sum::<f64>() / px.len() as f64;
            let var = px.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / px.len() as f64;
            assert!(
                var > 100.0,
                "{scheme}: chart at rows {y0}..{y1} looks blank (variance {var:.1})"
            );
            let bg = lum(s.at(102, y0 + 2));
            if scheme == "dark" {
                assert!(bg < 60.0, "dark chart background {bg}");
            } else {
                assert!(bg > 240.0, "light chart background {bg}");
            }
        }
    }
}
