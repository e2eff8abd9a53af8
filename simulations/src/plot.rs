//! The report's picture (SVG, plotters): completion CDF against the bound, upload over time against
//! the caps, WAN bytes against the artifact size, and the ratios.

use std::path::Path;

use plotters::prelude::*;

use crate::{
    report::{Bound, Report, RunOutcome},
    scenario::Scenario,
};

type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// Draws the report of `run` to an SVG file.
pub fn svg(path: &Path, sc: &Scenario, run: &RunOutcome, report: &Report) -> PlotResult {
    let rows = if run.rollout.is_some() { 3 } else { 2 };
    let root = SVGBackend::new(path, (1400, 500 * rows as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "{} — {} engine — {} devices, F = {:.1} MB",
        sc.name,
        run.engine,
        report.json["devices"],
        run.artifact_bytes as f64 / 1e6
    );
    let root = root.titled(&title, ("sans-serif", 24))?;
    let panels = root.split_evenly((rows, 2));
    let b = Bound::of(sc, run.artifact_bytes);
    cdf(&panels[0], run, &b)?;
    uploads(&panels[1], sc, run)?;
    wan(&panels[2], run)?;
    summary(&panels[3], report, &b)?;
    if let Some(ro) = &run.rollout {
        waves(&panels[4], ro)?;
        wave_times(&panels[5], ro)?;
    }
    root.present()?;
    Ok(())
}

fn cdf(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    run: &RunOutcome,
    b: &Bound,
) -> PlotResult {
    let mut times: Vec<f64> = run
        .devices
        .iter()
        .filter(|d| d.measured)
        .filter_map(|d| d.completed_s)
        .collect();
    times.sort_by(f64::total_cmp);
    let n = run.devices.iter().filter(|d| d.measured).count().max(1);
    let xmax = times
        .last()
        .copied()
        .unwrap_or(1.0)
        .max(b.t_min * 2.1)
        .max(1.0);
    let mut c = ChartBuilder::on(area)
        .caption("Completion CDF (download verified)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..xmax, 0.0..1.0)?;
    c.configure_mesh()
        .x_desc("seconds since the release was announced")
        .y_desc("fraction of devices")
        .draw()?;
    let pts: Vec<(f64, f64)> = times
        .iter()
        .enumerate()
        .flat_map(|(i, t)| [(*t, i as f64 / n as f64), (*t, (i + 1) as f64 / n as f64)])
        .collect();
    c.draw_series(LineSeries::new(pts, BLUE.stroke_width(2)))?
        .label("devices")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    for (x, colour, label) in [
        (b.t_min, RED, "T_min"),
        (b.t_min * 1.3, MAGENTA, "1.3 T_min"),
        (b.t_min * 2.0, BLACK, "2 T_min"),
    ] {
        c.draw_series(LineSeries::new(vec![(x, 0.0), (x, 1.0)], colour))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    if b.client_server <= xmax {
        c.draw_series(LineSeries::new(
            vec![(b.client_server, 0.0), (b.client_server, 1.0)],
            GREEN,
        ))?
        .label("client-server N·F/u_s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn uploads(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    sc: &Scenario,
    run: &RunOutcome,
) -> PlotResult {
    let s = &run.series;
    let mb = 1e6;
    let gw_cap = sc.gateway.upload.map(|c| c as f64 / mb);
    let dev_cap = sc
        .devices
        .iter()
        .filter_map(|d| d.upload)
        .max()
        .map(|c| c as f64 / mb);
    let ymax = s
        .gateway_upload
        .iter()
        .chain(&s.device_upload_max)
        .map(|v| v / mb)
        .chain(gw_cap)
        .chain(dev_cap)
        .fold(0.1, f64::max)
        * 1.15;
    let xmax = s.t.last().copied().unwrap_or(1.0).max(1.0);
    let mut c = ChartBuilder::on(area)
        .caption(
            "Upload rate per node against its cap (ward 1)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..xmax, 0.0..ymax)?;
    c.configure_mesh().x_desc("seconds").y_desc("MB/s").draw()?;
    let line =
        |v: &[f64]| -> Vec<(f64, f64)> { s.t.iter().zip(v).map(|(t, r)| (*t, r / mb)).collect() };
    c.draw_series(LineSeries::new(
        line(&s.gateway_upload),
        RED.stroke_width(2),
    ))?
    .label("gateway")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    c.draw_series(LineSeries::new(line(&s.device_upload_mean), BLUE))?
        .label("devices, mean")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    c.draw_series(LineSeries::new(line(&s.device_upload_max), CYAN))?
        .label("devices, busiest")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], CYAN));
    for (cap, colour, label) in [(gw_cap, RED, "gateway cap"), (dev_cap, BLUE, "device cap")] {
        if let Some(v) = cap {
            let style = colour.mix(0.5).stroke_width(1);
            c.draw_series(DashedLineSeries::new(
                vec![(0.0, v), (xmax, v)],
                6,
                4,
                style,
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn wan(area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>, run: &RunOutcome) -> PlotResult {
    let s = &run.series;
    let mb = 1e6;
    let f = run.artifact_bytes as f64 / mb;
    let xmax = s.t.last().copied().unwrap_or(1.0).max(1.0);
    let ymax = s.wan.iter().map(|v| *v as f64 / mb).fold(f, f64::max) * 1.15;
    let mut c = ChartBuilder::on(area)
        .caption(
            "WAN bytes against the artifact size (ward 1)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..xmax, 0.0..ymax)?;
    c.configure_mesh().x_desc("seconds").y_desc("MB").draw()?;
    c.draw_series(LineSeries::new(
        s.t.iter().zip(&s.wan).map(|(t, w)| (*t, *w as f64 / mb)),
        RED.stroke_width(2),
    ))?
    .label("WAN (gateway from origin)")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    c.draw_series(LineSeries::new(vec![(0.0, f), (xmax, f)], BLACK))?
        .label("artifact F")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    let style = BLACK.mix(0.4);
    c.draw_series(DashedLineSeries::new(
        vec![(0.0, f * 1.01), (xmax, f * 1.01)],
        6,
        4,
        style.into(),
    ))?
    .label("1.01 F")
    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    c.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn summary(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    r: &Report,
    b: &Bound,
) -> PlotResult {
    let j = &r.json;
    let f = |k: &str| j[k].as_f64().map_or("-".to_string(), |v| format!("{v:.2}"));
    let lines = [
        format!(
            "T_min = max(F/u_s, F/d_min, N·F/(u_s+Σu_i)) = {:.2} s",
            b.t_min
        ),
        format!(
            "   F/u_s {:.2} s, F/d_min {:.2} s, N·F/(u_s+Σu_i) {:.2} s",
            b.f / b.u_s,
            b.f / b.d_min,
            b.n as f64 * b.f / (b.u_s + b.sum_u)
        ),
        format!("client-server N·F/u_s = {:.1} s", b.client_server),
        format!(
            "p50 = {} s  (p50/T_min = {})",
            f("p50_s"),
            f("p50_over_t_min")
        ),
        format!(
            "max = {} s  (max/T_min = {})",
            f("max_s"),
            f("max_over_t_min")
        ),
        format!(
            "devices completed {} of {}",
            j["devices_completed"], j["devices"]
        ),
        format!(
            "WAN = {:.4} x F per ward; gateway uploaded {:.2} copies",
            j["wan_over_artifact"].as_f64().unwrap_or(0.0),
            j["gateway_upload_copies"].as_f64().unwrap_or(0.0)
        ),
        format!(
            "highest rate over cap: {:.3} x",
            j["cap_max_ratio"].as_f64().unwrap_or(0.0)
        ),
        match j["clinical"].as_object() {
            Some(c) => format!(
                "clinical flow kept {:.1} % of its throughput",
                c["kept"].as_f64().unwrap_or(0.0) * 100.0
            ),
            None => String::new(),
        },
        if r.failures.is_empty() {
            "CI checks: passed".to_string()
        } else {
            format!("CI checks FAILED: {}", r.failures.join("; "))
        },
    ];
    for (i, l) in lines.iter().enumerate() {
        area.draw(&Text::new(
            l.clone(),
            (30, 40 + i as i32 * 34),
            ("sans-serif", 18).into_font(),
        ))?;
    }
    Ok(())
}

/// A rollout: finished devices of each wave over time, and the pauses.
fn waves(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    ro: &crate::rollout::RolloutOutcome,
) -> PlotResult {
    let xmax = ro.t.last().copied().unwrap_or(1.0).max(1.0);
    let ymax = ro
        .groups
        .iter()
        .map(|g| g.devices)
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let mut c = ChartBuilder::on(area)
        .caption(
            format!(
                "Rollout: finished devices per wave (whole fleet at {})",
                ro.fleet_s.map_or("-".into(), |t| format!("{t:.0} s"))
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..xmax, 0.0..ymax)?;
    c.configure_mesh()
        .x_desc("seconds")
        .y_desc("devices finished")
        .draw()?;
    for (k, g) in ro.groups.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        c.draw_series(LineSeries::new(
            ro.t.iter()
                .zip(&ro.finished)
                .map(|(t, f)| (*t, f.get(k).copied().unwrap_or(0) as f64)),
            color.stroke_width(2),
        ))?
        .label(format!("{} ({} devices)", g.name, g.devices))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    for (t, e) in &ro.events {
        let style = BLACK.mix(0.3);
        c.draw_series(DashedLineSeries::new(
            vec![(*t, 0.0), (*t, ymax)],
            4,
            4,
            style.into(),
        ))?;
        c.draw_series(std::iter::once(Text::new(
            e.chars().take(40).collect::<String>(),
            (*t, ymax * 0.95),
            ("sans-serif", 12),
        )))?;
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// A rollout: each wave's span, from its start to its end, and how its devices ended.
fn wave_times(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    ro: &crate::rollout::RolloutOutcome,
) -> PlotResult {
    let xmax = ro.t.last().copied().unwrap_or(1.0).max(1.0);
    let n = ro.groups.len().max(1);
    let mut c = ChartBuilder::on(area)
        .caption("Rollout: when each wave ran", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..xmax, 0.0..n as f64)?;
    c.configure_mesh()
        .x_desc("seconds")
        .y_labels(n)
        .y_label_formatter(&|y| {
            ro.groups
                .get(n.saturating_sub(1 + y.floor() as usize))
                .map(|g| g.name.clone())
                .unwrap_or_default()
        })
        .draw()?;
    for (k, g) in ro.groups.iter().enumerate() {
        let y = (n - 1 - k) as f64;
        let (a, b) = (g.started_s.unwrap_or(xmax), g.ended_s.unwrap_or(xmax));
        let color = Palette99::pick(k).to_rgba();
        c.draw_series(std::iter::once(Rectangle::new(
            [(a, y + 0.2), (b, y + 0.8)],
            color.filled(),
        )))?;
        let st: Vec<String> = g.statuses.iter().map(|(s, c)| format!("{s} {c}")).collect();
        c.draw_series(std::iter::once(Text::new(
            format!("{}: {}", g.state, st.join(", ")),
            (a, y + 0.1),
            ("sans-serif", 13),
        )))?;
    }
    Ok(())
}
