//! The loss plot: training loss and eval loss against step, the learning rate on a second axis.
//! Text is drawn with the DejaVu Sans font embedded in the binary, so drawing needs no system
//! font library.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::parse_record;
use crate::error::{Result, TrainerError};

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 700;
const FONT: &str = "sans-serif";
const LOSS_COLOR: RGBColor = RGBColor(31, 119, 180);
const EVAL_COLOR: RGBColor = RGBColor(214, 39, 40);
const LEARNING_RATE_COLOR: RGBColor = RGBColor(44, 160, 44);

/// Training loss (and `eval_loss` points) against step, with the learning rate (`lr`) on a
/// second axis, read from a metrics.jsonl file and drawn as a PNG. Records without a finite
/// value for a series are left out of it.
pub fn plot_losses(metrics_jsonl: &Path, out_png: &Path) -> Result<()> {
    let series = LossSeries::read(metrics_jsonl)?;
    if series.is_empty() {
        return Err(TrainerError::metrics(metrics_jsonl, "no `loss` or `eval_loss` value to plot"));
    }
    series.draw(out_png)
}

/// The (step, value) points of each plotted series.
pub(super) struct LossSeries {
    loss: Vec<(f64, f64)>,
    eval_loss: Vec<(f64, f64)>,
    learning_rate: Vec<(f64, f64)>,
}

impl LossSeries {
    /// Reads the series from a metrics.jsonl file; lines that are not records are skipped.
    pub(super) fn read(metrics_jsonl: &Path) -> Result<LossSeries> {
        let text =
            std::fs::read_to_string(metrics_jsonl).map_err(|error| TrainerError::io(metrics_jsonl, error))?;
        let mut series = LossSeries { loss: Vec::new(), eval_loss: Vec::new(), learning_rate: Vec::new() };
        for (step, record) in text.lines().filter_map(parse_record) {
            let step = step as f64;
            let value =
                |name: &str| record.get(name).and_then(|value| value.as_f64()).filter(|v| v.is_finite());
            if let Some(loss) = value("loss") {
                series.loss.push((step, loss));
            }
            if let Some(eval_loss) = value("eval_loss") {
                series.eval_loss.push((step, eval_loss));
            }
            if let Some(learning_rate) = value("lr") {
                series.learning_rate.push((step, learning_rate));
            }
        }
        Ok(series)
    }

    /// Whether there is no loss to draw.
    pub(super) fn is_empty(&self) -> bool {
        self.loss.is_empty() && self.eval_loss.is_empty()
    }

    /// Draws the series into `out_png`.
    pub(super) fn draw(&self, out_png: &Path) -> Result<()> {
        register_font().map_err(|message| TrainerError::metrics(out_png, message))?;
        self.draw_chart(out_png)
            .map_err(|error| TrainerError::metrics(out_png, format!("drawing the loss plot: {error}")))
    }

    fn draw_chart(&self, out_png: &Path) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let losses = || self.loss.iter().chain(&self.eval_loss);
        let steps = padded_range(losses().chain(&self.learning_rate).map(|&(step, _)| step), 0.01);
        let loss_range = padded_range(losses().map(|&(_, loss)| loss), 0.05);
        let learning_rate_max = self.learning_rate.iter().map(|&(_, lr)| lr).fold(0.0, f64::max);
        let learning_rate_range = 0.0..if learning_rate_max > 0.0 { learning_rate_max * 1.05 } else { 1.0 };

        let root = BitMapBackend::new(out_png, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("loss", (FONT, 28))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .right_y_label_area_size(if self.learning_rate.is_empty() { 0 } else { 90 })
            .build_cartesian_2d(steps.clone(), loss_range)?
            .set_secondary_coord(steps, learning_rate_range);
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            .x_label_formatter(&|step| format!("{step:.0}"))
            .label_style((FONT, 16))
            .axis_desc_style((FONT, 18))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        if !self.learning_rate.is_empty() {
            chart
                .configure_secondary_axes()
                .y_desc("learning rate")
                .y_label_formatter(&|learning_rate| format!("{learning_rate:.1e}"))
                .label_style((FONT, 16))
                .axis_desc_style((FONT, 18))
                .draw()?;
            chart
                .draw_secondary_series(LineSeries::new(
                    self.learning_rate.iter().copied(),
                    LEARNING_RATE_COLOR.mix(0.7).stroke_width(2),
                ))?
                .label("lr")
                .legend(|(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], LEARNING_RATE_COLOR.stroke_width(2))
                });
        }
        if !self.loss.is_empty() {
            chart
                .draw_series(LineSeries::new(self.loss.iter().copied(), LOSS_COLOR.stroke_width(2)))?
                .label("loss")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], LOSS_COLOR.stroke_width(2)));
        }
        if !self.eval_loss.is_empty() {
            chart
                .draw_series(LineSeries::new(self.eval_loss.iter().copied(), EVAL_COLOR.stroke_width(2)))?
                .label("eval_loss")
                .legend(|(x, y)| Circle::new((x + 10, y), 4, EVAL_COLOR.filled()));
            chart.draw_series(
                self.eval_loss.iter().map(|&point| Circle::new(point, 4, EVAL_COLOR.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 16))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        root.present()?;
        Ok(())
    }
}

/// The range of `values` widened by `padding` of its span on each side; a single value gets a
/// unit-wide range around it.
fn padded_range(values: impl Iterator<Item = f64>, padding: f64) -> std::ops::Range<f64> {
    let (low, high) =
        values.fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), v| (low.min(v), high.max(v)));
    if low >= high {
        let center = if low.is_finite() { low } else { 0.0 };
        return center - 0.5..center + 0.5;
    }
    let margin = (high - low) * padding;
    low - margin..high + margin
}

/// Registers the embedded font under the family name the plot uses (once per process).
fn register_font() -> std::result::Result<(), String> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "the embedded DejaVu Sans font does not parse".to_string())
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_padded_and_never_empty() {
        assert_eq!(padded_range([1.0, 3.0].into_iter(), 0.5), 0.0..4.0);
        assert_eq!(padded_range([2.0].into_iter(), 0.05), 1.5..2.5);
        assert_eq!(padded_range(std::iter::empty(), 0.05), -0.5..0.5);
    }
}
