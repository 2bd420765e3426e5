//! Results: the scenario a fan-out or storm result file starts with, the
//! least-squares fit of memory against connections, the printed table, and
//! result files.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::target::Target;

/// What the JSON of a fan-out or storm run starts with: where the subscribers
/// went, how, and how many.
#[derive(Debug, Serialize)]
pub struct Scenario {
    /// The subscribe URL template.
    pub url: String,
    /// The subscriber protocol.
    pub protocol: String,
    /// `HTTP/1.1` or `HTTP/2`.
    pub http: String,
    /// Subscribers per HTTP/2 connection.
    pub streams_per_connection: u32,
    /// The publish URL template.
    pub publish_url: String,
    /// Subscribers asked for.
    pub subscribers: u64,
    /// Channels they spread over.
    pub channels: u64,
    /// Worker processes holding them.
    pub workers: u64,
    /// The measured server.
    pub server_pid: Option<u32>,
}

impl Scenario {
    /// The scenario of `subscribers` on `target`, published to at `publish_url`.
    pub fn new(
        target: &Target,
        publish_url: &str,
        subscribers: u64,
        workers: u64,
        server_pid: Option<u32>,
    ) -> Scenario {
        Scenario {
            url: target.url(),
            protocol: target.protocol.to_string(),
            http: target.http.to_string(),
            streams_per_connection: target.streams_per_connection,
            publish_url: publish_url.to_owned(),
            subscribers,
            channels: target.channels,
            workers,
            server_pid,
        }
    }
}

/// A straight line fitted to points by least squares.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fit {
    /// Growth of y per unit of x.
    pub slope: f64,
    /// y at x = 0.
    pub intercept: f64,
    /// Coefficient of determination (1 = the points lie on the line).
    pub r_squared: f64,
}

impl Fit {
    /// Fits `points` (x, y); `None` with fewer than two distinct x.
    pub fn least_squares(points: &[(f64, f64)]) -> Option<Fit> {
        let n = points.len() as f64;
        let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
        let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
        let syy: f64 = points.iter().map(|p| (p.1 - mean_y).powi(2)).sum();
        if sxx == 0.0 {
            return None;
        }
        let slope = sxy / sxx;
        let r_squared = if syy == 0.0 {
            1.0
        } else {
            sxy * sxy / (sxx * syy)
        };
        Some(Fit {
            slope,
            intercept: mean_y - slope * mean_x,
            r_squared,
        })
    }
}

/// A table of right-aligned columns under a header row.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|row| row[c].chars().count())
                .chain([header[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in
        std::iter::once(header.iter().map(|h| h.to_string()).collect()).chain(rows.iter().cloned())
    {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:>width$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  "));
    }
    out
}

/// Writes `text` (JSON, SVG) to `path`.
pub fn write_file(path: &Path, text: String) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `bytes` in KiB with one decimal.
pub fn kib(bytes: f64) -> String {
    format!("{:.1}", bytes / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_a_line() {
        let fit = Fit::least_squares(&[(0.0, 10.0), (1.0, 12.0), (2.0, 14.0)]).unwrap();
        assert!((fit.slope - 2.0).abs() < 1e-9);
        assert!((fit.intercept - 10.0).abs() < 1e-9);
        assert!((fit.r_squared - 1.0).abs() < 1e-9);
        let noisy = Fit::least_squares(&[(0.0, 0.0), (1.0, 2.0), (2.0, 1.0)]).unwrap();
        assert!(noisy.r_squared < 1.0);
        assert_eq!(Fit::least_squares(&[(1.0, 1.0), (1.0, 2.0)]), None);
        assert_eq!(Fit::least_squares(&[]), None);
    }

    #[test]
    fn aligns_columns() {
        let rows = vec![
            vec!["1".into(), "22".into()],
            vec!["333".into(), "4".into()],
        ];
        assert_eq!(table(&["a", "bb"], &rows), "  a  bb\n  1  22\n333   4\n");
    }
}
