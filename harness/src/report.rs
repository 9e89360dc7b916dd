//! Turning measurements into results: percentiles, loss, the zero-loss throughput, and the two
//! outputs (a JSON document for machines, a table for people).

use std::fmt::Write;

/// Loss under this fraction counts as zero loss.
pub const ZERO_LOSS: f64 = 0.001;

/// Nearest-rank percentile (`p` in 0..=100) of an ascending slice.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Fraction of `offered` that was lost: neither delivered nor refused by X-Ray itself.
pub fn loss(offered: u64, delivered: u64, refused: u64) -> f64 {
    if offered == 0 {
        return 0.0;
    }
    offered.saturating_sub(delivered + refused) as f64 / offered as f64
}

/// The highest achieved rate among steps that lost less than [`ZERO_LOSS`]. Steps are
/// `(achieved rate, loss fraction)`.
pub fn zero_loss_throughput(steps: &[(f64, f64)]) -> Option<f64> {
    steps
        .iter()
        .filter(|(_, l)| *l < ZERO_LOSS)
        .map(|(r, _)| *r)
        .fold(None, |best, r| Some(best.map_or(r, |b: f64| b.max(r))))
}

/// The stricter reading: the highest achieved rate before the first step (in sweep order) that
/// lost [`ZERO_LOSS`] or more. A noisy sweep where a faster step happens to pass after a slower one
/// failed does not count the faster one here.
pub fn zero_loss_throughput_before_first_loss(steps: &[(f64, f64)]) -> Option<f64> {
    let clean = steps.iter().take_while(|(_, l)| *l < ZERO_LOSS).copied();
    zero_loss_throughput(&clean.collect::<Vec<_>>())
}

/// CPU microseconds per segment.
pub fn cpu_us_per_segment(ticks: u64, ticks_per_second: u64, segments: u64) -> Option<f64> {
    if segments == 0 || ticks_per_second == 0 {
        return None;
    }
    Some(ticks as f64 * 1e6 / ticks_per_second as f64 / segments as f64)
}

/// A JSON value, enough for the report (serde_json is only a dev-dependency).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl From<u64> for Json {
    fn from(v: u64) -> Self {
        Json::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<f64> for Json {
    fn from(v: f64) -> Self {
        Json::Num(v)
    }
}
impl From<bool> for Json {
    fn from(v: bool) -> Self {
        Json::Bool(v)
    }
}
impl From<&str> for Json {
    fn from(v: &str) -> Self {
        Json::Str(v.to_string())
    }
}
impl From<String> for Json {
    fn from(v: String) -> Self {
        Json::Str(v)
    }
}
impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(v: Option<T>) -> Self {
        v.map_or(Json::Null, Into::into)
    }
}

/// Builds an object from `(key, value)` pairs.
pub fn obj<const N: usize>(pairs: [(&str, Json); N]) -> Json {
    Json::Obj(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

impl Json {
    /// Pretty-printed text, two spaces per level.
    pub fn pretty(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out
    }

    fn write(&self, out: &mut String, indent: usize) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Json::Num(f) if !f.is_finite() => out.push_str("null"),
            Json::Num(f) => {
                // Three decimals are plenty for rates, µs and ms; integers stay integers.
                let r = (f * 1000.0).round() / 1000.0;
                if r == r.trunc() && r.abs() < 1e15 {
                    let _ = write!(out, "{}", r as i64);
                } else {
                    let _ = write!(out, "{r}");
                }
            }
            Json::Str(s) => xrayd::json::push_json_string(out, s),
            Json::Arr(items) if items.is_empty() => out.push_str("[]"),
            Json::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    pad(out, indent + 1);
                    v.write(out, indent + 1);
                }
                out.push('\n');
                pad(out, indent);
                out.push(']');
            }
            Json::Obj(pairs) if pairs.is_empty() => out.push_str("{}"),
            Json::Obj(pairs) => {
                out.push('{');
                for (i, (k, v)) in pairs.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    pad(out, indent + 1);
                    xrayd::json::push_json_string(out, k);
                    out.push_str(": ");
                    v.write(out, indent + 1);
                }
                out.push('\n');
                pad(out, indent);
                out.push('}');
            }
        }
    }
}

fn pad(out: &mut String, indent: usize) {
    for _ in 0..indent {
        out.push_str("  ");
    }
}

/// One row of the human table.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub target: String,
    pub rate: String,
    pub achieved: f64,
    pub offered: u64,
    pub delivered: u64,
    pub loss: f64,
    pub kernel_drops: Option<u64>,
    pub daemon_drops: Option<u64>,
    pub cpu_us: Option<f64>,
    pub idle_rss_kib: Option<u64>,
    pub peak_rss_kib: Option<u64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The human table: fixed-width columns, `-` where a value does not apply.
pub fn table(rows: &[Row]) -> String {
    let head = [
        "target",
        "rate/s",
        "sent/s",
        "offered",
        "delivered",
        "loss %",
        "kernel",
        "daemon",
        "cpu µs",
        "idle MiB",
        "peak MiB",
        "p50 ms",
        "p99 ms",
    ];
    let mut cells: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    let opt_u = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let opt_f = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |v| format!("{v:.d$}"));
    let mib = |v: Option<u64>| v.map_or("-".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
    for r in rows {
        cells.push(vec![
            r.target.clone(),
            r.rate.clone(),
            format!("{:.0}", r.achieved),
            r.offered.to_string(),
            r.delivered.to_string(),
            format!("{:.3}", r.loss * 100.0),
            opt_u(r.kernel_drops),
            opt_u(r.daemon_drops),
            opt_f(r.cpu_us, 2),
            mib(r.idle_rss_kib),
            mib(r.peak_rss_kib),
            opt_f(r.p50_ms, 1),
            opt_f(r.p99_ms, 1),
        ]);
    }
    let widths: Vec<usize> = (0..head.len())
        .map(|c| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &cells {
        for (c, cell) in row.iter().enumerate() {
            let w = widths[c];
            if c == 0 {
                let _ = write!(out, "{cell:<w$}");
            } else {
                let _ = write!(out, "  {cell:>w$}");
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 2, 3], 50.0), Some(2));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn loss_excludes_refusals() {
        assert_eq!(loss(1000, 990, 10), 0.0);
        assert!((loss(1000, 900, 0) - 0.1).abs() < 1e-12);
        assert_eq!(loss(0, 0, 0), 0.0);
        assert_eq!(loss(10, 12, 0), 0.0);
    }

    #[test]
    fn zero_loss_is_the_fastest_clean_step() {
        let steps = [
            (10_000.0, 0.0),
            (50_000.0, 0.0009),
            (100_000.0, 0.002),
            (80_000.0, 0.0),
        ];
        assert_eq!(zero_loss_throughput(&steps), Some(80_000.0));
        assert_eq!(zero_loss_throughput(&[(10_000.0, 0.5)]), None);
        assert_eq!(zero_loss_throughput(&[]), None);
        assert_eq!(
            zero_loss_throughput_before_first_loss(&steps),
            Some(50_000.0)
        );
        assert_eq!(
            zero_loss_throughput_before_first_loss(&[(10.0, 0.5), (20.0, 0.0)]),
            None
        );
    }

    #[test]
    fn cpu_per_segment() {
        assert_eq!(cpu_us_per_segment(100, 100, 1_000_000), Some(1.0));
        assert_eq!(cpu_us_per_segment(5, 100, 0), None);
    }

    #[test]
    fn json_text_is_valid_json() {
        let j = obj([
            ("a", 1u64.into()),
            ("b", 2.5f64.into()),
            ("c", "q\"\\\n\u{1}".into()),
            (
                "d",
                Json::Arr(vec![Json::Null, true.into(), f64::NAN.into()]),
            ),
            ("e", Json::Obj(vec![])),
            ("f", Json::Arr(vec![])),
            ("g", Option::<u64>::None.into()),
            ("h", 3.0f64.into()),
        ]);
        let v: serde_json::Value = serde_json::from_str(&j.pretty()).unwrap();
        assert_eq!(v["a"], 1);
        assert_eq!(v["b"], 2.5);
        assert_eq!(v["c"], "q\"\\\n\u{1}");
        assert_eq!(v["d"][2], serde_json::Value::Null);
        assert_eq!(v["h"], 3);
    }

    #[test]
    fn table_lines_up() {
        let t = table(&[Row {
            target: "xrayd".into(),
            rate: "10000".into(),
            achieved: 9999.7,
            offered: 50_000,
            delivered: 50_000,
            ..Row::default()
        }]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].chars().count(), lines[1].chars().count());
        assert!(lines[1].contains("10000") && lines[1].contains(" - "));
    }
}
