//! Which requests the TCP port serves, and how (pure).
//!
//! By default only X-Ray's sampling APIs are forwarded (the AWS daemon signs and forwards
//! anything, which makes it an open signer for the whole X-Ray API); `--proxy-allow-all` restores
//! forwarding of every `POST` path to X-Ray. The operator endpoints live on the same listener.

/// The X-Ray paths forwarded by default, with their metrics labels (the path itself).
pub const SAMPLING_PATHS: [&str; 3] = [
    "/GetSamplingRules",
    "/SamplingTargets",
    "/SamplingStatisticSummaries",
];

/// Metrics label of a path that is not one of the known ones (forwarded with
/// `--proxy-allow-all`, or refused).
pub const OTHER_LABEL: &str = "other";
/// Metrics label of requests that could not be parsed or timed out before they were complete.
pub const INVALID_LABEL: &str = "invalid";

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Sign and forward to X-Ray.
    Forward,
    /// `GET /healthz`: the process is alive.
    Healthz,
    /// `GET /readyz`: ready to take segments.
    Readyz,
    /// `GET /metrics`: Prometheus text format.
    Metrics,
    /// Known path, wrong method; `Allow` lists the right ones.
    MethodNotAllowed { allow: &'static str },
    /// Not served.
    NotFound,
}

/// A fixed label for a request path, so that metrics have a bounded number of series.
pub fn label(path: &str) -> &'static str {
    match path {
        "/GetSamplingRules" => "/GetSamplingRules",
        "/SamplingTargets" => "/SamplingTargets",
        "/SamplingStatisticSummaries" => "/SamplingStatisticSummaries",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        _ => OTHER_LABEL,
    }
}

/// Routes `method` `path` (without the query).
pub fn route(method: &str, path: &str, allow_all: bool) -> Route {
    let local = |r: Route| {
        if method == "GET" || method == "HEAD" {
            r
        } else {
            Route::MethodNotAllowed { allow: "GET, HEAD" }
        }
    };
    match path {
        "/healthz" => local(Route::Healthz),
        "/readyz" => local(Route::Readyz),
        "/metrics" => local(Route::Metrics),
        p if SAMPLING_PATHS.contains(&p) || (allow_all && p.starts_with('/')) => {
            if method == "POST" {
                Route::Forward
            } else {
                Route::MethodNotAllowed { allow: "POST" }
            }
        }
        _ => Route::NotFound,
    }
}

/// The IAM permission a forwarded call needs (by its metrics label), for the hint logged when
/// X-Ray refuses it.
pub fn permission(label: &str) -> Option<&'static str> {
    match label {
        "/GetSamplingRules" => Some("xray:GetSamplingRules"),
        "/SamplingTargets" => Some("xray:GetSamplingTargets"),
        "/SamplingStatisticSummaries" => Some("xray:GetSamplingStatisticSummaries"),
        _ => None,
    }
}

/// Why a request looks like it comes from a web browser, if it does (such requests are
/// refused: with `--proxy-allow-all` a web page could otherwise call X-Ray's write APIs with the
/// daemon's credentials, and even the sampling APIs should not be a page's to call).
///
/// Browsers send `Origin` with every `POST` (`fetch`, forms, DNS rebinding included). Without a
/// CORS preflight, which xrayd never answers, a page can only send `text/plain`,
/// `application/x-www-form-urlencoded` or `multipart/form-data` bodies, so those are refused too.
/// X-Ray SDKs send `application/json` (Python/botocore, Node, Go, Java, Ruby, .NET, and
/// OpenTelemetry's samplers, some with `; charset=utf-8`) or no `Content-Type`, and no `Origin`.
pub fn from_browser(origin: bool, content_type: Option<&str>) -> Option<String> {
    if origin {
        return Some("it has an Origin header".to_string());
    }
    let media = content_type?.split(';').next().unwrap_or("").trim();
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ]
    .iter()
    .any(|t| media.eq_ignore_ascii_case(t))
    .then(|| format!("its Content-Type is {media}, not application/json"))
}

/// The body of a 404: what is served instead.
pub fn not_found_message(path: &str) -> String {
    let shown: String = path.chars().take(200).collect();
    format!(
        "xrayd does not forward {shown:?}: only POST {} are forwarded to X-Ray (start xrayd with --proxy-allow-all to forward every X-Ray API path); GET /healthz, /readyz and /metrics are served locally",
        SAMPLING_PATHS.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_paths_are_forwarded_by_post_only() {
        for p in SAMPLING_PATHS {
            assert_eq!(route("POST", p, false), Route::Forward);
            assert_eq!(
                route("GET", p, false),
                Route::MethodNotAllowed { allow: "POST" }
            );
            assert_eq!(label(p), p);
        }
    }

    #[test]
    fn other_paths_need_allow_all() {
        assert_eq!(route("POST", "/TraceSegments", false), Route::NotFound);
        assert_eq!(route("POST", "/TraceSegments", true), Route::Forward);
        assert_eq!(
            route("PUT", "/TraceSegments", true),
            Route::MethodNotAllowed { allow: "POST" }
        );
        assert_eq!(route("POST", "*", true), Route::NotFound);
        assert_eq!(route("POST", "/getsamplingrules", false), Route::NotFound);
        assert_eq!(label("/TraceSegments"), OTHER_LABEL);
    }

    #[test]
    fn browser_requests_are_told_from_sdk_ones() {
        for ct in [
            None,
            Some("application/json"),
            Some("application/json; charset=UTF-8"),
            Some("Application/JSON;charset=utf-8"),
            Some("application/x-amz-json-1.1"),
            Some(""),
        ] {
            assert_eq!(from_browser(false, ct), None, "{ct:?}");
        }
        for ct in [
            Some("text/plain;charset=UTF-8"),
            Some("application/x-www-form-urlencoded"),
            Some("Multipart/Form-Data; boundary=x"),
        ] {
            let why = from_browser(false, ct).expect("refused");
            assert!(why.contains("Content-Type"), "{why}");
        }
        assert!(
            from_browser(true, Some("application/json"))
                .unwrap()
                .contains("Origin")
        );
        assert_eq!(
            permission("/SamplingTargets"),
            Some("xray:GetSamplingTargets")
        );
        assert_eq!(permission(OTHER_LABEL), None);
    }

    #[test]
    fn operator_endpoints() {
        assert_eq!(route("GET", "/healthz", false), Route::Healthz);
        assert_eq!(route("HEAD", "/readyz", false), Route::Readyz);
        assert_eq!(route("GET", "/metrics", true), Route::Metrics);
        assert_eq!(
            route("POST", "/metrics", true),
            Route::MethodNotAllowed { allow: "GET, HEAD" }
        );
        let m = not_found_message("/Nope");
        assert!(
            m.contains("\"/Nope\"") && m.contains("--proxy-allow-all"),
            "{m}"
        );
    }
}
