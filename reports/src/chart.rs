//! Charts as data, laid out once and drawn on any [`Canvas`]: the HTML's inline SVG and the
//! PNGs (plotters' bitmap back-end) come from the same layout, so they never disagree.
//! Coordinates are logical pixels of a 900-wide chart; a canvas scales them.

/// Logical width of every chart.
pub const WIDTH: f64 = 900.0;
/// Width of the PNGs, in pixels (height scales with it).
pub const PNG_WIDTH: u32 = 1200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    pub fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
}

/// What to paint with: theme colours (light and dark in HTML, light in PNGs) or a fixed one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Paint {
    /// The chart's opaque background.
    Bg,
    /// Text and axes.
    Fg,
    /// Secondary text.
    Muted,
    /// Grid lines.
    Grid,
    /// A series colour; `faded` draws it half-transparent (the QEMU engine's cases).
    Series { rgb: Rgb, faded: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

#[derive(Debug, Clone, Copy)]
pub struct TextStyle {
    pub size: f64,
    pub anchor: Anchor,
    pub paint: Paint,
    pub bold: bool,
    /// Rotated 90° counter-clockwise (y-axis titles).
    pub vertical: bool,
}

impl TextStyle {
    pub fn new(size: f64, anchor: Anchor, paint: Paint) -> Self {
        TextStyle {
            size,
            anchor,
            paint,
            bold: false,
            vertical: false,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct LineStyle {
    pub paint: Paint,
    pub width: f64,
    pub dashed: bool,
}

/// The primitives a chart is drawn with.
pub trait Canvas {
    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, paint: Paint);
    fn polyline(&mut self, points: &[(f64, f64)], style: LineStyle);
    fn circle(&mut self, x: f64, y: f64, r: f64, paint: Paint);
    /// `y` is the text's vertical centre.
    fn text(&mut self, x: f64, y: f64, text: &str, style: TextStyle);
}

#[derive(Debug, Clone)]
pub struct Chart {
    /// Unique within a report; the PNG is `charts/<id>.png`, the SVG's element id `chart-<id>`.
    pub id: String,
    pub title: String,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Bars(Bars),
    Lines(Lines),
}

/// Horizontal bars, one row per bar, optionally stacked, with an interval and a marker.
#[derive(Debug, Clone)]
pub struct Bars {
    pub x_title: String,
    pub bars: Vec<Bar>,
    pub legend: Vec<(String, Paint)>,
    /// What the marker means, for the legend (`None`: no marker in this chart).
    pub marker_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub segments: Vec<(f64, Paint)>,
    pub interval: Option<(f64, f64)>,
    pub marker: Option<f64>,
    /// Printed right of the bar.
    pub value_text: String,
}

#[derive(Debug, Clone)]
pub struct Lines {
    pub x_title: String,
    pub y_title: String,
    pub x_log: bool,
    /// Category names for x = 0, 1, 2... instead of numbers (history by run).
    pub x_categories: Option<Vec<String>>,
    /// Force the y axis to start at zero.
    pub y_from_zero: bool,
    pub series: Vec<Series>,
}

#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub paint: Paint,
    pub points: Vec<(f64, f64)>,
    /// Vertical intervals, one per point, where known.
    pub errors: Vec<Option<(f64, f64)>>,
    pub dots: bool,
    /// Labelled points (p50, p99, p99.9).
    pub marks: Vec<(f64, f64, String)>,
}

impl Chart {
    /// Logical height.
    pub fn height(&self) -> f64 {
        match &self.kind {
            Kind::Bars(b) => {
                BAR_TOP
                    + legend_rows(&b.legend, b.marker_name.is_some()) * 18.0
                    + b.bars.len() as f64 * ROW
                    + 52.0
            }
            Kind::Lines(l) => {
                let names: Vec<(String, Paint)> =
                    l.series.iter().map(|s| (s.name.clone(), s.paint)).collect();
                LINE_PLOT_H + 40.0 + legend_rows(&names, false) * 18.0 + 56.0
            }
        }
    }

    /// The PNG's size in pixels.
    pub fn png_size(&self) -> (u32, u32) {
        let scale = f64::from(PNG_WIDTH) / WIDTH;
        (PNG_WIDTH, (self.height() * scale).round() as u32)
    }

    pub fn draw(&self, c: &mut dyn Canvas) {
        let h = self.height();
        c.rect(0.0, 0.0, WIDTH, h, Paint::Bg);
        let mut title = TextStyle::new(15.0, Anchor::Start, Paint::Fg);
        title.bold = true;
        c.text(12.0, 18.0, &self.title, title);
        match &self.kind {
            Kind::Bars(b) => draw_bars(b, c, h),
            Kind::Lines(l) => draw_lines(l, c),
        }
    }
}

const BAR_TOP: f64 = 34.0;
const ROW: f64 = 24.0;
const LINE_PLOT_H: f64 = 300.0;

/// Approximate text width (DejaVu Sans averages ~0.58 em).
pub fn text_width(s: &str, size: f64) -> f64 {
    s.chars().count() as f64 * size * 0.58
}

fn legend_rows(items: &[(String, Paint)], marker: bool) -> f64 {
    if items.is_empty() && !marker {
        return 0.0;
    }
    let mut rows = 1.0;
    let mut x = 12.0;
    for (name, _) in items {
        let w = 18.0 + text_width(name, 11.0) + 14.0;
        if x + w > WIDTH - 12.0 {
            rows += 1.0;
            x = 12.0;
        }
        x += w;
    }
    rows
}

/// Draws the legend from `y` down; returns the y below it.
fn draw_legend(c: &mut dyn Canvas, items: &[(String, Paint)], marker: Option<&str>, y: f64) -> f64 {
    if items.is_empty() && marker.is_none() {
        return y;
    }
    let mut x = 12.0;
    let mut y = y + 9.0;
    let small = TextStyle::new(11.0, Anchor::Start, Paint::Muted);
    for (name, paint) in items {
        let w = 18.0 + text_width(name, 11.0) + 14.0;
        if x + w > WIDTH - 12.0 {
            x = 12.0;
            y += 18.0;
        }
        c.rect(x, y - 5.0, 12.0, 10.0, *paint);
        c.text(x + 16.0, y, name, small);
        x += w;
    }
    if let Some(m) = marker {
        let line = LineStyle {
            paint: Paint::Fg,
            width: 2.0,
            dashed: false,
        };
        if x + 18.0 + text_width(m, 11.0) > WIDTH - 12.0 {
            x = 12.0;
            y += 18.0;
        }
        c.polyline(&[(x + 6.0, y - 7.0), (x + 6.0, y + 7.0)], line);
        c.text(x + 16.0, y, m, small);
    }
    y + 12.0
}

/// About five round tick values covering `[lo, hi]`.
pub fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    if hi <= lo || hi.is_nan() || !lo.is_finite() || !hi.is_finite() {
        return vec![lo];
    }
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| (hi - lo) / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

/// A short label for an axis value: 1.5k, 2.25M, 0.3.
pub fn compact(v: f64) -> String {
    let a = v.abs();
    let (x, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    let s = if s == "-0" { "0" } else { s };
    format!("{s}{suffix}")
}

fn draw_bars(b: &Bars, c: &mut dyn Canvas, h: f64) {
    let top = draw_legend(c, &b.legend, b.marker_name.as_deref(), BAR_TOP - 8.0) + 4.0;
    let label_w = b
        .bars
        .iter()
        .map(|x| text_width(&x.label, 12.0))
        .fold(60.0, f64::max)
        .min(WIDTH * 0.42);
    let left = 16.0 + label_w;
    let value_w = b
        .bars
        .iter()
        .map(|x| text_width(&x.value_text, 11.0))
        .fold(0.0, f64::max);
    let right = WIDTH - 16.0 - value_w - 8.0;
    let max = b
        .bars
        .iter()
        .flat_map(|x| {
            let stack: f64 = x.segments.iter().map(|s| s.0).sum();
            [
                stack,
                x.interval.map_or(0.0, |i| i.1),
                x.marker.unwrap_or(0.0),
            ]
        })
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let max = if max > 0.0 { max * 1.04 } else { 1.0 };
    let sx = |v: f64| left + (v / max).clamp(0.0, 1.0) * (right - left);
    let bottom = top + b.bars.len() as f64 * ROW;
    let grid = LineStyle {
        paint: Paint::Grid,
        width: 1.0,
        dashed: false,
    };
    let tick_style = TextStyle::new(11.0, Anchor::Middle, Paint::Muted);
    for t in ticks(0.0, max) {
        let x = sx(t);
        c.polyline(&[(x, top), (x, bottom)], grid);
        c.text(x, bottom + 12.0, &compact(t), tick_style);
    }
    let axis = LineStyle {
        paint: Paint::Fg,
        width: 1.0,
        dashed: false,
    };
    c.polyline(&[(left, top), (left, bottom)], axis);
    c.text(
        (left + right) / 2.0,
        h - 14.0,
        &b.x_title,
        TextStyle::new(12.0, Anchor::Middle, Paint::Fg),
    );
    for (i, bar) in b.bars.iter().enumerate() {
        let y = top + i as f64 * ROW + ROW / 2.0;
        let mut label = bar.label.clone();
        while text_width(&label, 12.0) > label_w && label.chars().count() > 4 {
            label.pop();
            label.pop();
            label.push('…');
        }
        c.text(
            left - 8.0,
            y,
            &label,
            TextStyle::new(12.0, Anchor::End, Paint::Fg),
        );
        let mut x = 0.0;
        for &(v, paint) in &bar.segments {
            if v.is_finite() && v > 0.0 {
                c.rect(sx(x), y - 7.0, sx(x + v) - sx(x), 14.0, paint);
                x += v;
            }
        }
        let mut end = sx(x);
        if let Some((lo, hi)) = bar.interval {
            let style = LineStyle {
                paint: Paint::Fg,
                width: 1.5,
                dashed: false,
            };
            let (a, z) = (sx(lo), sx(hi));
            c.polyline(&[(a, y), (z, y)], style);
            c.polyline(&[(a, y - 5.0), (a, y + 5.0)], style);
            c.polyline(&[(z, y - 5.0), (z, y + 5.0)], style);
            end = end.max(z);
        }
        if let Some(m) = bar.marker {
            let mx = sx(m);
            c.polyline(
                &[(mx, y - 10.0), (mx, y + 10.0)],
                LineStyle {
                    paint: Paint::Fg,
                    width: 2.5,
                    dashed: false,
                },
            );
            end = end.max(mx);
        }
        c.text(
            end + 6.0,
            y,
            &bar.value_text,
            TextStyle::new(11.0, Anchor::Start, Paint::Muted),
        );
    }
}

fn draw_lines(l: &Lines, c: &mut dyn Canvas) {
    let names: Vec<(String, Paint)> = l.series.iter().map(|s| (s.name.clone(), s.paint)).collect();
    let top = draw_legend(c, &names, None, BAR_TOP - 8.0) + 10.0;
    let (left, right) = (78.0, WIDTH - 24.0);
    let bottom = top + LINE_PLOT_H;
    let pts = || {
        l.series.iter().flat_map(|s| {
            s.points.iter().copied().chain(
                s.errors
                    .iter()
                    .flatten()
                    .flat_map(|&(a, b)| [(f64::NAN, a), (f64::NAN, b)]),
            )
        })
    };
    let fx = |x: f64| if l.x_log { x.max(1e-12).log10() } else { x };
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for (x, y) in pts() {
        if x.is_finite() && (!l.x_log || x > 0.0) {
            x0 = x0.min(fx(x));
            x1 = x1.max(fx(x));
        }
        if y.is_finite() {
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    if l.x_categories.is_some() {
        x0 -= 0.5;
        x1 += 0.5;
    }
    if l.x_log {
        x0 = x0.floor();
        x1 = x1.ceil().max(x0 + 1.0);
    } else if x1 <= x0 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    if l.y_from_zero {
        y0 = y0.min(0.0);
    }
    let pad = if y1 > y0 {
        (y1 - y0) * 0.08
    } else {
        y1.abs().max(1.0) * 0.1
    };
    if !l.y_from_zero || y0 < 0.0 {
        y0 -= pad;
    }
    y1 += pad;
    let sx = |x: f64| left + (fx(x) - x0) / (x1 - x0) * (right - left);
    let sy = |y: f64| bottom - (y - y0) / (y1 - y0) * (bottom - top);
    let grid = LineStyle {
        paint: Paint::Grid,
        width: 1.0,
        dashed: false,
    };
    let tick = TextStyle::new(11.0, Anchor::Middle, Paint::Muted);
    for t in ticks(y0, y1) {
        let y = sy(t);
        c.polyline(&[(left, y), (right, y)], grid);
        c.text(
            left - 6.0,
            y,
            &compact(t),
            TextStyle::new(11.0, Anchor::End, Paint::Muted),
        );
    }
    if l.x_log {
        for e in (x0 as i32)..=(x1 as i32) {
            let x = left + (f64::from(e) - x0) / (x1 - x0) * (right - left);
            c.polyline(&[(x, top), (x, bottom)], grid);
            c.text(x, bottom + 13.0, &compact(10f64.powi(e)), tick);
        }
    } else if let Some(cats) = &l.x_categories {
        for (i, name) in cats.iter().enumerate() {
            let x = sx(i as f64);
            c.polyline(&[(x, top), (x, bottom)], grid);
            c.text(x, bottom + 13.0, name, tick);
        }
    } else {
        for t in ticks(x0, x1) {
            let x = sx(t);
            c.polyline(&[(x, top), (x, bottom)], grid);
            c.text(x, bottom + 13.0, &compact(t), tick);
        }
    }
    let axis = LineStyle {
        paint: Paint::Fg,
        width: 1.0,
        dashed: false,
    };
    c.polyline(&[(left, top), (left, bottom), (right, bottom)], axis);
    c.text(
        (left + right) / 2.0,
        bottom + 34.0,
        &l.x_title,
        TextStyle::new(12.0, Anchor::Middle, Paint::Fg),
    );
    let mut yt = TextStyle::new(12.0, Anchor::Middle, Paint::Fg);
    yt.vertical = true;
    c.text(18.0, (top + bottom) / 2.0, &l.y_title, yt);
    for (k, s) in l.series.iter().enumerate() {
        let path: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite() && (!l.x_log || p.0 > 0.0))
            .map(|&(x, y)| (sx(x), sy(y)))
            .collect();
        let style = LineStyle {
            paint: s.paint,
            width: 2.0,
            dashed: false,
        };
        if path.len() > 1 {
            c.polyline(&path, style);
        }
        for (i, &(x, _)) in s.points.iter().enumerate() {
            if let Some(Some((a, b))) = s.errors.get(i) {
                let px = sx(x);
                c.polyline(
                    &[(px, sy(*a)), (px, sy(*b))],
                    LineStyle {
                        width: 1.5,
                        ..style
                    },
                );
                c.polyline(
                    &[(px - 4.0, sy(*a)), (px + 4.0, sy(*a))],
                    LineStyle {
                        width: 1.5,
                        ..style
                    },
                );
                c.polyline(
                    &[(px - 4.0, sy(*b)), (px + 4.0, sy(*b))],
                    LineStyle {
                        width: 1.5,
                        ..style
                    },
                );
            }
        }
        if s.dots || path.len() == 1 {
            for &(x, y) in &path {
                c.circle(x, y, 3.5, s.paint);
            }
        }
        for (x, y, label) in &s.marks {
            if !(x.is_finite() && y.is_finite()) || (l.x_log && *x <= 0.0) {
                continue;
            }
            let (px, py) = (sx(*x), sy(*y));
            c.circle(px, py, 4.0, s.paint);
            c.polyline(
                &[(px, py), (px, bottom)],
                LineStyle {
                    paint: s.paint,
                    width: 1.0,
                    dashed: true,
                },
            );
            // Labelled once: the curves' marks sit at the same heights.
            if k == 0 {
                c.text(
                    px - 6.0,
                    py - 8.0,
                    label,
                    TextStyle::new(10.0, Anchor::End, Paint::Fg),
                );
            }
        }
    }
}
