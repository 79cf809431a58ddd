//! PNGs of the charts through plotters' bitmap back-end, text in DejaVu Sans (shipped in
//! reports/assets/, so no system font is needed). Light theme; the layout is the SVG's.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, FontTransform};

use crate::chart::{Anchor, Canvas, Chart, LineStyle, Paint, TextStyle, PNG_WIDTH, WIDTH};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

#[derive(Debug, thiserror::Error)]
pub enum PngError {
    #[error("cannot draw chart {id}: {message}")]
    Draw { id: String, message: String },
}

fn register_font() {
    REGISTER.call_once(|| {
        // The font is compiled in and known to parse; a failure would show as missing text,
        // which the PNG tests catch (they compare against the SVG's text).
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, FONT);
    });
}

fn colour(p: Paint) -> RGBAColor {
    match p {
        Paint::Bg => RGBAColor(255, 255, 255, 1.0),
        Paint::Fg => RGBAColor(33, 37, 41, 1.0),
        Paint::Muted => RGBAColor(95, 99, 104, 1.0),
        Paint::Grid => RGBAColor(226, 228, 231, 1.0),
        Paint::Series { rgb, faded } => {
            RGBAColor(rgb.0, rgb.1, rgb.2, if faded { 0.5 } else { 1.0 })
        }
    }
}

struct Bitmap<'a, 'b> {
    area: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    scale: f64,
    error: Option<String>,
}

impl Bitmap<'_, '_> {
    fn p(&self, x: f64, y: f64) -> (i32, i32) {
        (
            (x * self.scale).round() as i32,
            (y * self.scale).round() as i32,
        )
    }

    fn keep<E: std::fmt::Debug>(&mut self, r: Result<(), E>) {
        if let Err(e) = r {
            self.error.get_or_insert_with(|| format!("{e:?}"));
        }
    }
}

impl Canvas for Bitmap<'_, '_> {
    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, paint: Paint) {
        let r = Rectangle::new([self.p(x, y), self.p(x + w, y + h)], colour(paint).filled());
        let res = self.area.draw(&r);
        self.keep(res);
    }

    fn polyline(&mut self, points: &[(f64, f64)], style: LineStyle) {
        let s =
            colour(style.paint).stroke_width((style.width * self.scale).round().max(1.0) as u32);
        if style.dashed {
            for w in points.windows(2) {
                let ((x0, y0), (x1, y1)) = (w[0], w[1]);
                let len = ((x1 - x0).powi(2) + (y1 - y0).powi(2)).sqrt();
                let mut t = 0.0;
                while t < len {
                    let t1 = (t + 4.0).min(len);
                    let at = |t: f64| self.p(x0 + (x1 - x0) * t / len, y0 + (y1 - y0) * t / len);
                    let res = self.area.draw(&PathElement::new(vec![at(t), at(t1)], s));
                    self.keep(res);
                    t += 7.0;
                }
            }
        } else {
            let pts: Vec<(i32, i32)> = points.iter().map(|&(x, y)| self.p(x, y)).collect();
            let res = self.area.draw(&PathElement::new(pts, s));
            self.keep(res);
        }
    }

    fn circle(&mut self, x: f64, y: f64, r: f64, paint: Paint) {
        let c = Circle::new(
            self.p(x, y),
            (r * self.scale).round() as u32,
            colour(paint).filled(),
        );
        let res = self.area.draw(&c);
        self.keep(res);
    }

    fn text(&mut self, x: f64, y: f64, text: &str, style: TextStyle) {
        let h = match style.anchor {
            Anchor::Start => HPos::Left,
            Anchor::Middle => HPos::Center,
            Anchor::End => HPos::Right,
        };
        let font_style = if style.bold {
            FontStyle::Bold
        } else {
            FontStyle::Normal
        };
        let mut font = ("sans-serif", style.size * self.scale, font_style)
            .into_font()
            .color(&colour(style.paint))
            .pos(Pos::new(h, VPos::Center));
        if style.vertical {
            font = font.transform(FontTransform::Rotate270);
        }
        let res = self
            .area
            .draw(&Text::new(text.to_string(), self.p(x, y), font));
        self.keep(res);
    }
}

/// Writes `chart` as a PNG of [`Chart::png_size`].
pub fn write(chart: &Chart, path: &Path) -> Result<(), PngError> {
    register_font();
    let size = chart.png_size();
    let err = |message: String| PngError::Draw {
        id: chart.id.clone(),
        message,
    };
    let backend = BitMapBackend::new(path, size);
    let area = backend.into_drawing_area();
    let mut canvas = Bitmap {
        area: &area,
        scale: f64::from(PNG_WIDTH) / WIDTH,
        error: None,
    };
    chart.draw(&mut canvas);
    if let Some(e) = canvas.error {
        return Err(err(e));
    }
    area.present().map_err(|e| err(format!("{e:?}")))?;
    Ok(())
}
