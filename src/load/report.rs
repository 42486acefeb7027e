//! The load generator's results: latency percentiles, errors by gRPC status, bytes moved, a latency
//! histogram and throughput over time; printed as text, written as JSON and as a self-contained
//! HTML page (inline SVG, no scripts or external files).

use serde::Serialize;
use std::collections::BTreeMap;

/// One finished request of the measured window.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Seconds from the start of the measured window to the request's (intended) send time.
    pub start_s: f64,
    pub latency_s: f64,
    /// `None` = OK, else the gRPC status code.
    pub code: Option<tonic::Code>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Bucket {
    /// Upper edge of the bucket, milliseconds.
    pub le_ms: f64,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct Second {
    pub t_s: f64,
    pub ok: u64,
    pub errors: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// What was run (flattened into the JSON's top level).
    #[serde(flatten)]
    pub run: Run,
    pub requests: u64,
    pub ok: u64,
    /// Failed requests by gRPC status name (e.g. "ResourceExhausted").
    pub errors: BTreeMap<String, u64>,
    /// The first message seen for each failing status.
    pub error_messages: BTreeMap<String, String>,
    pub requests_per_s: f64,
    /// Latency of successful requests (from the intended send time in fixed-rate mode).
    pub latency: Option<Latency>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub histogram: Vec<Bucket>,
    pub timeline: Vec<Second>,
}

/// Value at quantile `q` of sorted `v` (nearest rank).
fn quantile(v: &[f64], q: f64) -> f64 {
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// The settings of a run and when it ran.
#[derive(Debug, Serialize)]
pub struct Run {
    pub target: String,
    pub protocol: String,
    pub model: String,
    pub concurrency: usize,
    pub connections: usize,
    /// Requests per second asked for (`None` = closed loop).
    pub rate: Option<f64>,
    pub started_utc: String,
    /// Length of the measured window, seconds.
    pub duration_s: f64,
}

impl Report {
    pub fn new(run: Run, samples: &[Sample], error_messages: BTreeMap<String, String>) -> Report {
        let mut lat: Vec<f64> = samples
            .iter()
            .filter(|s| s.code.is_none())
            .map(|s| s.latency_s * 1e3)
            .collect();
        lat.sort_by(f64::total_cmp);
        let latency = (!lat.is_empty()).then(|| Latency {
            min_ms: lat[0],
            mean_ms: lat.iter().sum::<f64>() / lat.len() as f64,
            p50_ms: quantile(&lat, 0.5),
            p90_ms: quantile(&lat, 0.9),
            p99_ms: quantile(&lat, 0.99),
            p999_ms: quantile(&lat, 0.999),
            max_ms: lat[lat.len() - 1],
        });
        let mut errors = BTreeMap::new();
        for s in samples {
            if let Some(code) = s.code {
                *errors.entry(format!("{code:?}")).or_insert(0) += 1;
            }
        }
        // Latency histogram: 4 buckets per factor of 10 from 10 µs up to the slowest request.
        let mut histogram = Vec::new();
        if let Some(&max) = lat.last() {
            let mut edge = 0.01f64;
            let mut i = 0;
            loop {
                let n = lat[i..].partition_point(|&v| v <= edge);
                histogram.push(Bucket {
                    le_ms: edge,
                    count: n as u64,
                });
                i += n;
                if edge >= max {
                    break;
                }
                edge *= 10f64.powf(0.25);
            }
            // Leading empty buckets say nothing.
            let first = histogram.iter().position(|b| b.count > 0).unwrap_or(0);
            histogram.drain(..first.saturating_sub(1));
        }
        let seconds = run.duration_s.ceil().max(1.0) as usize;
        let mut timeline: Vec<Second> = (0..seconds)
            .map(|t| Second {
                t_s: t as f64,
                ok: 0,
                errors: 0,
            })
            .collect();
        for s in samples {
            let t = ((s.start_s + s.latency_s).max(0.0) as usize).min(seconds - 1);
            match s.code {
                None => timeline[t].ok += 1,
                Some(_) => timeline[t].errors += 1,
            }
        }
        let ok = lat.len() as u64;
        let duration_s = run.duration_s;
        Report {
            run,
            requests: samples.len() as u64,
            ok,
            errors,
            error_messages,
            requests_per_s: ok as f64 / duration_s.max(1e-9),
            latency,
            bytes_sent: samples.iter().map(|s| s.bytes_sent).sum(),
            bytes_received: samples.iter().map(|s| s.bytes_received).sum(),
            histogram,
            timeline,
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// A few lines for the terminal.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} {} model {:?}: {} requests in {:.2} s, concurrency {}{}\n  ok {} ({:.1} req/s), errors {}",
            self.run.protocol,
            self.run.target,
            self.run.model,
            self.requests,
            self.run.duration_s,
            self.run.concurrency,
            self.run.rate.map(|r| format!(", rate {r}/s")).unwrap_or_default(),
            self.ok,
            self.requests_per_s,
            self.error_count(),
        );
        for (code, n) in &self.errors {
            s += &format!("\n    {code}: {n}");
            if let Some(m) = self.error_messages.get(code) {
                s += &format!(" (e.g. {m:?})");
            }
        }
        if let Some(l) = &self.latency {
            s += &format!(
                "\n  latency ms: min {:.3} mean {:.3} p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}",
                l.min_ms, l.mean_ms, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
            );
        }
        s += &format!(
            "\n  bytes sent {} ({:.2} MB/s), received {} ({:.2} MB/s)",
            self.bytes_sent,
            self.bytes_sent as f64 / self.run.duration_s.max(1e-9) / 1e6,
            self.bytes_received,
            self.bytes_received as f64 / self.run.duration_s.max(1e-9) / 1e6,
        );
        s
    }

    pub fn html(&self) -> String {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        let mut rows = vec![
            ("target", esc(&self.run.target)),
            ("protocol", esc(&self.run.protocol)),
            ("model", esc(&self.run.model)),
            ("started (UTC)", esc(&self.run.started_utc)),
            ("duration", format!("{:.2} s", self.run.duration_s)),
            (
                "load",
                match self.run.rate {
                    Some(r) => {
                        format!("{r} requests/s, at most {} in flight", self.run.concurrency)
                    }
                    None => format!("closed loop, {} callers", self.run.concurrency),
                },
            ),
            ("connections", self.run.connections.to_string()),
            ("requests", self.requests.to_string()),
            (
                "successful",
                format!("{} ({:.1} requests/s)", self.ok, self.requests_per_s),
            ),
            (
                "errors",
                if self.errors.is_empty() {
                    "0".into()
                } else {
                    self.errors
                        .iter()
                        .map(|(c, n)| {
                            let m = self.error_messages.get(c).map(String::as_str).unwrap_or("");
                            format!("{} {n} <small>{}</small>", esc(c), esc(m))
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ),
            (
                "bytes sent / received",
                format!("{} / {}", self.bytes_sent, self.bytes_received),
            ),
        ];
        if let Some(l) = &self.latency {
            rows.push((
                "latency (ms)",
                format!(
                    "min {:.3} · mean {:.3} · p50 {:.3} · p90 {:.3} · p99 {:.3} · p99.9 {:.3} · max {:.3}",
                    l.min_ms, l.mean_ms, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
                ),
            ));
        }
        let table: String = rows
            .iter()
            .map(|(k, v)| format!("<tr><th>{k}</th><td>{v}</td></tr>\n"))
            .collect();
        format!(
            r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>inferd load report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }} th, td {{ text-align: left; padding: 0.2em 1em 0.2em 0; }}
th {{ color: #555; font-weight: normal; }} svg {{ display: block; margin: 1em 0 2em; }}
.axis {{ font-size: 11px; fill: #555; }}
</style></head><body>
<h1>inferd load report</h1>
<table>
{table}</table>
<h2>Latency histogram (successful requests)</h2>
{hist}
<h2>Throughput over time (completions per second)</h2>
{timeline}
</body></html>
"#,
            hist = self.histogram_svg(),
            timeline = self.timeline_svg(),
        )
    }

    fn histogram_svg(&self) -> String {
        if self.histogram.is_empty() {
            return "<p>No successful requests.</p>".into();
        }
        let (w, h, pad) = (720.0, 240.0, 40.0);
        let max = self
            .histogram
            .iter()
            .map(|b| b.count)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let bw = (w - 2.0 * pad) / self.histogram.len() as f64;
        let mut svg = format!(
            r#"<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">"#
        );
        for (i, b) in self.histogram.iter().enumerate() {
            let bh = (h - 2.0 * pad) * b.count as f64 / max;
            let x = pad + i as f64 * bw;
            svg += &format!(
                r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="#3b7dd8"><title>≤ {:.3} ms: {}</title></rect>"##,
                h - pad - bh,
                (bw - 1.0).max(1.0),
                b.le_ms,
                b.count
            );
            if i % 4 == 0 {
                svg += &format!(
                    r#"<text class="axis" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                    x + bw,
                    h - pad + 14.0,
                    fmt_ms(b.le_ms)
                );
            }
        }
        svg += &format!(
            r#"<text class="axis" x="{pad}" y="{:.1}">{} requests</text><text class="axis" x="{:.1}" y="{:.1}" text-anchor="end">latency, ms (log scale)</text></svg>"#,
            pad - 8.0,
            max as u64,
            w - pad,
            h - 6.0
        );
        svg
    }

    fn timeline_svg(&self) -> String {
        let (w, h, pad) = (720.0, 240.0, 40.0);
        let max = self
            .timeline
            .iter()
            .map(|s| s.ok.max(s.errors))
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let n = self.timeline.len().max(2) as f64 - 1.0;
        let point = |i: usize, v: u64| {
            format!(
                "{:.1},{:.1}",
                pad + (w - 2.0 * pad) * i as f64 / n,
                h - pad - (h - 2.0 * pad) * v as f64 / max
            )
        };
        let line = |f: &dyn Fn(&Second) -> u64| -> String {
            self.timeline
                .iter()
                .enumerate()
                .map(|(i, s)| point(i, f(s)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        format!(
            r##"<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">
<polyline fill="none" stroke="#3b7dd8" stroke-width="2" points="{ok}"/>
<polyline fill="none" stroke="#d83b3b" stroke-width="2" points="{err}"/>
<text class="axis" x="{pad}" y="{top:.1}">{max} per second</text>
<text class="axis" x="{right:.1}" y="{bottom:.1}" text-anchor="end">time, s (0 – {secs:.0})</text>
<text class="axis" x="{right:.1}" y="{top:.1}" text-anchor="end" fill="#3b7dd8">ok</text>
<text class="axis" x="{right:.1}" y="{top2:.1}" text-anchor="end" fill="#d83b3b">errors</text>
</svg>"##,
            ok = line(&|s| s.ok),
            err = line(&|s| s.errors),
            top = pad - 8.0,
            top2 = pad + 6.0,
            right = w - pad,
            bottom = h - 6.0,
            max = max as u64,
            secs = self.run.duration_s,
        )
    }
}

fn fmt_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a time since the Unix epoch (proleptic Gregorian calendar).
pub fn utc(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(start_s: f64, latency_ms: f64, code: Option<tonic::Code>) -> Sample {
        Sample {
            start_s,
            latency_s: latency_ms / 1e3,
            code,
            bytes_sent: 10,
            bytes_received: 20,
        }
    }

    fn run(duration_s: f64) -> Run {
        Run {
            target: "http://x".into(),
            protocol: "kserve".into(),
            model: "m".into(),
            concurrency: 2,
            connections: 1,
            rate: None,
            started_utc: "2026-11-30T00:00:00Z".into(),
            duration_s,
        }
    }

    #[test]
    fn percentiles_errors_bytes_and_timeline() {
        // 1000 successes with latencies 1..=1000 ms over 2 s, plus 5 overloads.
        let mut s: Vec<Sample> = (1..=1000)
            .map(|i| sample((i % 2) as f64, i as f64, None))
            .collect();
        s.extend((0..5).map(|_| sample(0.1, 1.0, Some(tonic::Code::ResourceExhausted))));
        let r = Report::new(run(2.0), &s, BTreeMap::new());
        let l = r.latency.as_ref().unwrap();
        assert_eq!((l.min_ms, l.max_ms), (1.0, 1000.0));
        assert_eq!(
            (l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms),
            (500.0, 900.0, 990.0, 999.0)
        );
        assert!((l.mean_ms - 500.5).abs() < 1e-9);
        assert_eq!(r.ok, 1000);
        assert_eq!(r.errors.get("ResourceExhausted"), Some(&5));
        assert_eq!(r.requests_per_s, 500.0);
        assert_eq!((r.bytes_sent, r.bytes_received), (10050, 20100));
        assert_eq!(r.histogram.iter().map(|b| b.count).sum::<u64>(), 1000);
        assert!(r.histogram.last().unwrap().le_ms >= 1000.0);
        assert_eq!(r.timeline.len(), 2);
        assert_eq!(
            r.timeline.iter().map(|t| t.ok + t.errors).sum::<u64>(),
            1005
        );
        let html = r.html();
        assert!(html.contains("<svg") && html.contains("ResourceExhausted 5"));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn no_successes_still_reports() {
        let r = Report::new(
            run(1.0),
            &[sample(0.0, 1.0, Some(tonic::Code::Unavailable))],
            BTreeMap::new(),
        );
        assert!(r.latency.is_none() && r.histogram.is_empty());
        assert!(r.html().contains("No successful requests"));
        assert!(r.summary().contains("Unavailable: 1"));
    }

    #[test]
    fn utc_dates() {
        let at = |s| utc(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_796_083_200 + 3661), "2026-12-01T01:01:01Z");
    }
}
