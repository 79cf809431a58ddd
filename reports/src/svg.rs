//! Inline SVG for the HTML report. Theme colours are CSS classes (`c-bg`, `c-fg`...), so one
//! SVG follows the page's light or dark scheme; series colours are fixed.

use std::fmt::Write;

use crate::chart::{Anchor, Canvas, Chart, LineStyle, Paint, TextStyle, WIDTH};
use crate::html::escape;

struct Svg {
    out: String,
}

fn fill(p: Paint) -> String {
    match p {
        Paint::Bg => "class=\"c-bg\"".into(),
        Paint::Fg => "class=\"c-fg\"".into(),
        Paint::Muted => "class=\"c-mu\"".into(),
        Paint::Grid => "class=\"c-gr\"".into(),
        Paint::Series { rgb, faded } => {
            let op = if faded { " fill-opacity=\".5\"" } else { "" };
            format!("fill=\"{}\"{op}", rgb.hex())
        }
    }
}

fn stroke(p: Paint) -> String {
    match p {
        Paint::Bg => "class=\"s-bg\"".into(),
        Paint::Fg => "class=\"s-fg\"".into(),
        Paint::Muted => "class=\"s-mu\"".into(),
        Paint::Grid => "class=\"s-gr\"".into(),
        Paint::Series { rgb, faded } => {
            let op = if faded { " stroke-opacity=\".5\"" } else { "" };
            format!("stroke=\"{}\"{op}", rgb.hex())
        }
    }
}

/// One decimal is finer than a pixel; trailing zeros dropped.
fn n(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

impl Canvas for Svg {
    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, paint: Paint) {
        let _ = write!(
            self.out,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" {}/>",
            n(x),
            n(y),
            n(w.max(0.0)),
            n(h.max(0.0)),
            fill(paint)
        );
    }

    fn polyline(&mut self, points: &[(f64, f64)], style: LineStyle) {
        let mut d = String::new();
        for (i, (x, y)) in points.iter().enumerate() {
            let _ = write!(d, "{}{},{}", if i == 0 { "M" } else { "L" }, n(*x), n(*y));
        }
        let dash = if style.dashed {
            " stroke-dasharray=\"4 3\""
        } else {
            ""
        };
        let _ = write!(
            self.out,
            "<path d=\"{d}\" fill=\"none\" {} stroke-width=\"{}\"{dash}/>",
            stroke(style.paint),
            n(style.width)
        );
    }

    fn circle(&mut self, x: f64, y: f64, r: f64, paint: Paint) {
        let _ = write!(
            self.out,
            "<circle cx=\"{}\" cy=\"{}\" r=\"{}\" {}/>",
            n(x),
            n(y),
            n(r),
            fill(paint)
        );
    }

    fn text(&mut self, x: f64, y: f64, text: &str, style: TextStyle) {
        let anchor = match style.anchor {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        };
        let weight = if style.bold {
            " font-weight=\"bold\""
        } else {
            ""
        };
        let rotate = if style.vertical {
            format!(" transform=\"rotate(-90 {} {})\"", n(x), n(y))
        } else {
            String::new()
        };
        let _ = write!(
            self.out,
            "<text x=\"{}\" y=\"{}\" dy=\".35em\" font-size=\"{}\" text-anchor=\"{anchor}\"{weight}{rotate} {}>{}</text>",
            n(x),
            n(y),
            n(style.size),
            fill(style.paint),
            escape(text)
        );
    }
}

/// The chart as an `<svg>` element sized by its viewBox (it scales to the page's width).
pub fn render(chart: &Chart) -> String {
    let h = chart.height();
    let mut svg = Svg {
        out: format!(
            "<svg class=\"chart\" id=\"chart-{}\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"{}\">",
            escape(&chart.id),
            n(WIDTH),
            n(h),
            escape(&chart.title)
        ),
    };
    chart.draw(&mut svg);
    svg.out.push_str("</svg>");
    svg.out
}
