//! The daemon's `/metrics`: a strict parser of the Prometheus text format (0.0.4),
//! [`scrape`], which fetches and parses an exposition, and [`sample`] / [`wait_for_sample`] for
//! tests that wait on one counter.

use super::http::{Client, one_shot};
use super::wait::poll_until;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition: samples, and the declared type of each family.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    pub types: HashMap<String, String>,
}

impl Exposition {
    /// The value of the sample `name` with exactly these labels.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// `get`, panicking when absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }

    /// `xrayd_proxy_requests_total{path, status}` (panics if there is no such sample).
    pub fn proxy_requests(&self, path: &str, status: &str) -> f64 {
        self.value(
            "xrayd_proxy_requests_total",
            &[("path", path), ("status", status)],
        )
    }

    /// Sum over every sample named `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse().map_err(|_| format!("bad value {v:?}")),
    }
}

/// Parses the Prometheus text format (0.0.4) strictly: every sample must belong to a family
/// declared by a `# TYPE` line before it, names and label names must be valid, label values
/// properly quoted and escaped, histograms cumulative with a `+Inf` bucket equal to `_count`.
pub fn parse_prometheus(text: &str) -> Result<Exposition, String> {
    let mut e = Exposition::default();
    if !text.ends_with('\n') {
        return Err("exposition must end with a newline".into());
    }
    for (no, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", no + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut parts = rest.trim_start().splitn(3, ' ');
            match parts.next() {
                Some("TYPE") => {
                    let name = parts
                        .next()
                        .ok_or_else(|| err("TYPE without name".into()))?;
                    let kind = parts
                        .next()
                        .ok_or_else(|| err("TYPE without type".into()))?;
                    if !valid_name(name) {
                        return Err(err("bad family name".into()));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(err(format!("bad type {kind}")));
                    }
                    if e.types.insert(name.into(), kind.into()).is_some() {
                        return Err(err("family declared twice".into()));
                    }
                }
                Some("HELP") => {
                    parts
                        .next()
                        .ok_or_else(|| err("HELP without name".into()))?;
                }
                _ => {}
            }
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => (&line[..i], &line[i..]),
            None => return Err(err("no value".into())),
        };
        if !valid_name(name) {
            return Err(err("bad metric name".into()));
        }
        let mut labels = BTreeMap::new();
        let rest = if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let end;
            loop {
                // label name
                let start = chars
                    .peek()
                    .map(|(i, _)| *i)
                    .ok_or_else(|| err("eol".into()))?;
                if body[start..].starts_with('}') {
                    end = start + 1;
                    break;
                }
                let eq = body[start..]
                    .find('=')
                    .ok_or_else(|| err("label without =".into()))?;
                let lname = &body[start..start + eq];
                if !valid_name(lname) || lname.contains(':') {
                    return Err(err(format!("bad label name {lname:?}")));
                }
                while chars.peek().is_some_and(|(i, _)| *i <= start + eq) {
                    chars.next();
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(err("label value not quoted".into()));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            _ => return Err(err("bad escape".into())),
                        },
                        Some((_, '"')) => break,
                        Some((_, '\n')) | None => return Err(err("unterminated value".into())),
                        Some((_, c)) => value.push(c),
                    }
                }
                if labels.insert(lname.to_string(), value).is_some() {
                    return Err(err("repeated label".into()));
                }
                match chars.next() {
                    Some((_, ',')) => {}
                    Some((i, '}')) => {
                        end = i + 1;
                        break;
                    }
                    _ => return Err(err("expected , or }".into())),
                }
            }
            &body[end..]
        } else {
            rest
        };
        let mut fields = rest.split_whitespace();
        let value =
            parse_value(fields.next().ok_or_else(|| err("no value".into()))?).map_err(err)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| err("bad timestamp".into()))?;
        }
        if fields.next().is_some() {
            return Err(err("trailing fields".into()));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| e.types.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        let Some(kind) = e.types.get(family) else {
            return Err(err("sample of an undeclared family".into()));
        };
        if kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(err("negative counter".into()));
        }
        if e.samples
            .iter()
            .any(|s| s.name == name && s.labels == labels)
        {
            return Err(err("duplicate sample".into()));
        }
        e.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    for (family, kind) in &e.types {
        if kind != "histogram" {
            continue;
        }
        let mut buckets: Vec<(f64, f64)> = e
            .samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
            .map(|s| (parse_value(&s.labels["le"]).unwrap(), s.value))
            .collect();
        buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        if buckets.last().map(|b| b.0) != Some(f64::INFINITY) {
            return Err(format!("{family}: no +Inf bucket"));
        }
        if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
            return Err(format!("{family}: buckets are not cumulative"));
        }
        let count = e.value(&format!("{family}_count"), &[]);
        if buckets.last().unwrap().1 != count {
            return Err(format!("{family}: +Inf bucket differs from _count"));
        }
        e.value(&format!("{family}_sum"), &[]);
    }
    Ok(e)
}

/// Fetches and parses `/metrics`.
pub fn scrape(addr: SocketAddr) -> Exposition {
    let r = one_shot(addr, "GET", "/metrics", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.headers
    );
    parse_prometheus(&r.text()).unwrap_or_else(|e| panic!("{e}\n{}", r.text()))
}

/// One sample of `/metrics` at `tcp`, by its full name (labels included, as exposed, e.g.
/// `xrayd_upload_errors_total{class="http_5xx"}`); `None` while the port does not answer or the
/// sample is missing. Lenient on purpose: it is polled while the daemon starts and stops.
pub fn sample(tcp: SocketAddr, name: &str) -> Option<u64> {
    let mut client = Client::connect(tcp).ok()?;
    let text = client
        .request("GET", "/metrics", &[("Host".into(), "xrayd".into())], b"")
        .ok()?
        .text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits until the sample `name` satisfies `ok` and returns it; after `timeout`, panics saying
/// `what` was expected and the last value seen.
pub fn wait_for_sample(
    tcp: SocketAddr,
    name: &str,
    timeout: Duration,
    what: &str,
    ok: impl Fn(u64) -> bool,
) -> u64 {
    poll_until(
        timeout,
        || format!("{what}: {name} is {:?}", sample(tcp, name)),
        || sample(tcp, name).filter(|v| ok(*v)),
    )
}

#[cfg(test)]
#[test]
fn prometheus_parser_checks_what_it_reads() {
    let ok = "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\\\"q\\\\\",z=\"\"} 3\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n";
    let e = parse_prometheus(ok).unwrap();
    assert_eq!(e.value("a_total", &[("k", "v\"q\\"), ("z", "")]), 3.0);
    assert_eq!(e.value("h_count", &[]), 2.0);
    for bad in [
        "a 1\n",
        "# TYPE a counter\na -1\n",
        "# TYPE a counter\na{k=v} 1\n",
        "# TYPE a counter\na 1\na 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 0\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n",
        "# TYPE a counter\na 1",
    ] {
        assert!(parse_prometheus(bad).is_err(), "{bad:?}");
    }
}
