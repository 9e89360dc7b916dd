//! Wires the pipeline together and runs it until a shutdown signal: ingest → queue/budget → batch →
//! upload.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::VERSION;
use crate::aws::credentials::{
    ChainOptions, ProvideCredentials, build_provider_with, redacted_key_id,
};
use crate::aws::endpoint::resolve_xray_endpoint;
use crate::config::{ConfigError, Settings};
use crate::ingest::{self, Ingest};
use crate::log::Throttle;
use crate::queue;
use crate::stats::Stats;
use crate::upload::backlog::Backlog;
use crate::upload::retry::Backoff;
use crate::upload::sink::{LocalSink, Sink, XraySink};
use crate::upload::{FAILURE_LOG_INTERVAL, Uploader};
use crate::xray::client::{ClientConfig, XrayClient};

/// The user agent suffix the AWS daemon sends, naming xrayd.
pub fn user_agent(env: &dyn Fn(&str) -> Option<String>) -> String {
    let exec_env = env("AWS_EXECUTION_ENV")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "UNKNOWN".into());
    format!(
        "xray-agent/xrayd/{VERSION} exec-env/{exec_env} OS/{}-{}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// Ring slots between ingest and the batcher: enough for bursts while the batcher is descheduled.
fn ring_slots(budget: u64) -> usize {
    (budget / 4096).clamp(4096, 65_536) as usize
}

/// The sink, the sampling proxy's upstream and the X-Ray sink telemetry uses (none for the local sink).
type Built = (
    Arc<dyn Sink>,
    Option<crate::proxy::Upstream>,
    Option<Arc<XraySink>>,
);

/// Builds where batches go: the local sink, or X-Ray with credentials from the environment.
fn build_sink(
    s: &Settings,
    env: &dyn Fn(&str) -> Option<String>,
    stats: &Arc<Stats>,
) -> Result<Built, ConfigError> {
    if let Some(path) = &s.local_sink {
        let out: Box<dyn Write + Send> = if path == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| ConfigError(format!("--local-sink: cannot open {path}: {e}")))?,
            )
        };
        let destination = if path == "-" { "stdout" } else { path };
        crate::info!("Using local sink: writing segments to {destination} instead of X-Ray");
        return Ok((Arc::new(LocalSink::new(out, destination)), None, None));
    }
    let region = s.region.as_deref().unwrap_or_default();
    crate::info!("Using region: {region}");
    let endpoint = resolve_xray_endpoint(s.endpoint.as_deref(), env, region)
        .map_err(|e| ConfigError(e.to_string()))?;
    let (credentials, source): (Arc<dyn ProvideCredentials>, String) = build_provider_with(
        env,
        region,
        s.role_arn.as_deref(),
        s.proxy.as_deref(),
        &ChainOptions {
            stats: Some(stats.clone()),
            ..ChainOptions::default()
        },
    )
    .map_err(|e| ConfigError(format!("AWS credentials: {e}")))?;
    if credentials.source() == "none" {
        crate::warn!("{source}; segments are buffered until uploads succeed");
    } else {
        // Static sources answer at once; the others log their key id when first fetched.
        let key = credentials
            .credentials()
            .map(|c| format!(" (key id {})", redacted_key_id(c.access_key_id())))
            .unwrap_or_default();
        crate::info!("Using AWS credentials from {source}{key}");
    }
    let client_config = ClientConfig {
        endpoint: endpoint.url.clone(),
        region: region.to_string(),
        user_agent: user_agent(env),
        timeout: s.upload_timeout,
        // NO_PROXY (and loopback endpoints) bypass the outbound proxy, as in the AWS SDKs.
        proxy: crate::aws::http::proxy_for(
            &endpoint.url,
            s.proxy.as_deref(),
            env("NO_PROXY").or_else(|| env("no_proxy")).as_deref(),
        )
        .map(str::to_string),
        max_idle: s.concurrency,
        no_verify_ssl: s.no_verify_ssl,
    };
    let client = XrayClient::new(&client_config, credentials.clone()).map_err(ConfigError)?;
    let upstream = crate::proxy::Upstream::new(
        &client_config,
        credentials,
        crate::proxy::DEFAULT_UPSTREAM_TIMEOUT,
    )
    .map_err(ConfigError)?;
    crate::info!(
        "Using X-Ray endpoint: {} (from {})",
        endpoint.url,
        endpoint.source
    );
    let xray = Arc::new(XraySink { client });
    Ok((xray.clone(), Some(upstream), Some(xray)))
}

/// Runs the daemon; returns the process exit code.
pub fn run(s: Settings, env: &dyn Fn(&str) -> Option<String>) -> i32 {
    // Handlers first: a signal during start-up must lead to a clean shutdown, not a kill; and the
    // signals process managers and logrotate send for other reasons must not kill it at all.
    let signals = match signal_hook::iterator::Signals::new(HANDLED_SIGNALS) {
        Ok(signals) => signals,
        Err(e) => {
            crate::error!("Cannot install signal handlers: {e}");
            return 1;
        }
    };
    crate::info!("Initializing xrayd {VERSION} (AWS X-Ray daemon compatible)");
    crate::proxy::raise_fd_limit();
    crate::info!(
        "Using buffer memory limit of {} MB",
        s.budget_bytes / (1024 * 1024)
    );
    let stats = Arc::new(Stats::default());
    let (sink, upstream, xray) = match build_sink(&s, env, &stats) {
        Ok(built) => built,
        Err(e) => {
            crate::error!("{e}");
            return 1;
        }
    };
    let telemetry = crate::telemetry::Telemetry::start(
        &s,
        env,
        stats.clone(),
        xray.map(|x| x as Arc<dyn crate::telemetry::Transport>),
    );
    let backlog = Arc::new(Backlog::new());
    let (writer, reader) = queue::bounded(
        ring_slots(s.budget_bytes),
        s.budget_bytes,
        stats.clone(),
        backlog.clone(),
    );
    let listener = match ingest::bind(s.udp_addr, s.receive_buffer) {
        Ok(l) => l,
        Err(e) => {
            crate::error!(
                "Cannot listen on UDP {}: {e}. Use -b to choose another address",
                s.udp_addr
            );
            return 1;
        }
    };
    crate::info!("Listening for segments on UDP {}", listener.local_addr);
    crate::info!(
        "UDP receive buffer: {} bytes granted (asked for {}); UDP GRO {}",
        listener.receive_buffer,
        s.receive_buffer,
        if listener.gro { "on" } else { "unavailable" }
    );
    if let Some(u) = &upstream {
        crate::info!("HTTP Proxy server using X-Ray Endpoint : {}", u.endpoint());
    }
    let _proxy = match crate::proxy::Server::start(crate::proxy::Config {
        bind: s.tcp_addr.clone(),
        options: crate::proxy::Options {
            allow_all: s.proxy_allow_all,
            ready_failure_threshold: s.ready_failure_threshold,
            ..crate::proxy::Options::default()
        },
        upstream,
        stats: stats.clone(),
        budget_bytes: s.budget_bytes,
        local_sink: s.local_sink.is_some(),
    }) {
        Ok(p) => p,
        Err(e) => {
            crate::error!("{e}");
            return 1;
        }
    };

    let batcher = {
        let backlog = backlog.clone();
        spawn("xrayd-batch", move || {
            crate::batch::run(reader, |b| backlog.push_fresh(b));
            backlog.close();
        })
    };
    let uploader = Uploader {
        backlog: backlog.clone(),
        sink,
        stats: stats.clone(),
        backoff: Backoff {
            base: s.retry_base_delay,
            max: s.retry_max_delay,
        },
        failures_logged: Arc::new(Throttle::new(FAILURE_LOG_INTERVAL)),
    };
    stats
        .upload_slots
        .store(s.concurrency as u64, std::sync::atomic::Ordering::Relaxed);
    let uploaders: Vec<_> = (0..s.concurrency)
        .map(|i| {
            let u = uploader.clone();
            spawn(&format!("xrayd-upload-{i}"), move || u.run(i as u64))
        })
        .collect();
    let ingest = match Ingest::start(listener, s.ingest_workers, writer, stats.clone()) {
        Ok(i) => i,
        Err(e) => {
            crate::error!("Cannot start UDP ingest: {e}");
            return 1;
        }
    };
    stats
        .ingest_running
        .store(true, std::sync::atomic::Ordering::Relaxed);

    let signal = wait_for_signal(signals, &stats);
    crate::info!("Got shutdown signal: {signal}");
    let deadline = Instant::now() + s.shutdown_timeout;
    ingest.stop();
    backlog.hurry();
    stats
        .ingest_running
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
    spawn("xrayd-drain", move || {
        let _ = batcher.join();
        for u in uploaders {
            let _ = u.join();
        }
        let _ = done_tx.send(());
    });
    if done_rx.recv_deadline(deadline).is_err() {
        // Queued, awaiting retry, or in flight with an unknown outcome: all counted as dropped,
        // and a late answer to an in-flight call is not counted again.
        let left = stats.ledger.abandon(&stats.dropped_at_shutdown);
        crate::warn!(
            "Shutdown timeout of {:.1} seconds reached: dropped {left} segments that were still buffered or in flight",
            s.shutdown_timeout.as_secs_f64()
        );
    }
    // The final telemetry record covers the drain; it may use what is left of the deadline.
    telemetry.finish(deadline.saturating_duration_since(Instant::now()).clamp(
        Duration::from_secs(1),
        s.upload_timeout.max(Duration::from_secs(1)),
    ));
    crate::info!("Final counts: {}", stats.snapshot().to_kv_line());
    crate::info!("Shutdown finished");
    0
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .unwrap_or_else(|e| {
            crate::error!("Cannot start thread {name}: {e}");
            std::process::exit(1)
        })
}

/// The signals the daemon handles (SIGPIPE is ignored by the Rust runtime: a closed pipe is a
/// write error, which the log counts).
const HANDLED_SIGNALS: [i32; 6] = [
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGQUIT,
    signal_hook::consts::SIGHUP,
    signal_hook::consts::SIGUSR1,
    signal_hook::consts::SIGUSR2,
];

/// Blocks until SIGINT, SIGTERM or SIGQUIT (a stop signal some process managers are configured
/// with; by default it would kill the process and lose the buffer); returns its name as Go prints
/// it. Meanwhile SIGHUP reopens the
/// log file (logrotate's `postrotate kill -HUP`), SIGUSR1 logs the counts so far and SIGUSR2 is
/// logged; all three leave the daemon running.
fn wait_for_signal(mut signals: signal_hook::iterator::Signals, stats: &Stats) -> &'static str {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
    for signal in signals.forever() {
        match signal {
            SIGINT => return "interrupt",
            SIGTERM => return "terminated",
            SIGQUIT => return "quit",
            SIGHUP if crate::log::reopen() => crate::info!("Got SIGHUP: reopened the log file"),
            SIGHUP => crate::info!("Got SIGHUP: no log file to reopen"),
            SIGUSR1 => crate::info!("Got SIGUSR1: counts: {}", stats.snapshot().to_kv_line()),
            other => crate::info!("Got signal {other}: ignored"),
        }
    }
    "terminated"
}
