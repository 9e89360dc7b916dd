//! The benchmark harness (`xrayd-bench`, also run as `xrayd bench`): drives a daemon (xrayd by
//! default, or any X-Ray daemon through a command template) with a UDP load generator and an
//! in-process fake X-Ray, steps through rates and reports, per step, what was offered and
//! delivered, where the losses happened (kernel vs daemon), CPU per delivered segment, memory and
//! delivery latency, plus the zero-loss throughput. `--raw` measures a do-nothing `recvmmsg`
//! receiver under the same load instead: the machine's limit. A progress line per step and a table
//! go to stderr, JSON to stdout.
//!
//! Pieces: [`pace`] and [`sender`] (the load), [`process`] (the daemon's life), [`raw`],
//! [`procfs`] (measurements) and [`report`] (percentiles, zero loss, JSON, table). From the test
//! kit (`xrayd-kit`) it takes the X-Ray stand-in (`FastXray`), the benchmark documents with a
//! sequence number and send time (`bench_segment`) and the child-process runner. From the daemon's
//! library it takes only what it measures or must match: the `recvmmsg` receive path of `--raw`,
//! the JSON string escaping, the version, and the flag and duration parsers of every xrayd command.

pub mod pace;
pub mod process;
pub mod procfs;
pub mod raw;
pub mod report;
pub mod sender;
pub mod sys;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use xrayd::config::args::{self as cli, Flag};
use xrayd::config::parse_duration;

use report::{Json, Row, obj};
use sender::{SendConfig, SendReport};
use xrayd_kit::bench_segment::Template;
use xrayd_kit::fast_xray::{FastXray, Faults};
use xrayd_kit::pin_current_thread;

/// Usage text of `xrayd-bench` (and `xrayd bench`).
pub fn usage() -> &'static str {
    "Usage: xrayd-bench [options]
       xrayd bench [options]      (runs xrayd-bench, found next to xrayd or on PATH)

Benchmarks an X-Ray daemon: sends benchmark segments over UDP at each rate, receives the uploads
in an in-process fake X-Ray, and reports per step what was offered and delivered, kernel and
daemon drops, CPU µs per delivered segment (also per thread group, for daemons that name their
threads), idle and peak RSS, delivery latency p50/p99, and the zero-loss throughput (fastest step
losing < 0.1 %). A progress line per step and a table go to stderr; JSON to stdout. Each step runs
a fresh daemon.

Load:
  --rates LIST            segments/s per step, comma-separated; 0 = unpaced
                          (default 10000,50000,100000,200000,300000)
  --duration D            sending time per step (default 5s)
  --count N               send exactly N segments per step instead (at the step's rate)
  --size BYTES            datagram size, header included (default 1000)
  --clients N             client sockets of the even load (default 16). The even load (the
                          default) is what many SDK processes send: datagrams spread evenly over
                          time, at most rate/4000 per send call, the calls going round-robin over
                          the N sockets, each its own source port
  --bursty                bursty load instead: one socket, a millisecond's worth of datagrams per
                          sendmmsg call (at most --batch)
  --batch N               messages per sendmmsg call of a bursty or unpaced load (default 64)
  --gso                   bursty load sent with UDP GSO (falls back to plain sendmmsg when
                          unsupported)

Target:
  --daemon-cmd TEMPLATE   daemon command, split on spaces. Placeholders: {udp} (127.0.0.1:PORT),
                          {udp_port}, {tcp} (127.0.0.1:PORT, a free TCP port), {endpoint}
                          (http://127.0.0.1:PORT of the fake X-Ray), {endpoint_port}, {config}
                          (the path of a Version 2 cfg.yaml with that Endpoint, Region us-east-1,
                          LocalMode and LogLevel error). Without {udp} it names an xrayd-compatible
                          program and these are appended:
                          -b {udp} -t 127.0.0.1:0 -o -n us-east-1 --endpoint {endpoint}
                          (default: the xrayd that ran `xrayd bench`, else the xrayd next to
                          xrayd-bench, else xrayd on PATH). The AWS daemon, which takes its
                          endpoint from its config file only, runs with --daemon-cmd
                          'aws-xray-daemon -o -n us-east-1 -c {config} -b {udp} -t {tcp}'.
                          Every daemon gets dummy AWS credentials in its environment.
  --raw                   no daemon: a do-nothing recvmmsg receiver thread with xrayd's socket
                          set-up (receive buffer, UDP GRO): the machine's limit
  --receive-buffer BYTES  SO_RCVBUF of the --raw receiver (default 4194304, as xrayd)
  --pin                   daemon on the last CPU, load generator and fake X-Ray on the others
  --daemon-cpus LIST      pin the daemon (or --raw receiver) to these CPUs, e.g. 1 or 2-3
  --load-cpus LIST        pin the load generator and the fake X-Ray to these CPUs
  --label TEXT            name of the target in the table and JSON

Fake X-Ray faults:
  --fault-500 F           fraction of PutTraceSegments calls answered 500 InternalFailure
  --fault-429 F           fraction answered 429 ThrottledException
  --fault-unprocessed F   fraction of documents of accepted calls returned as unprocessed
  --fault-delay D         delay before every PutTraceSegments answer, e.g. 20ms
  --seed N                seed of the fault draws (default 1)
  --fake-port PORT        TCP port of the fake X-Ray (default: any free port)
  --https                 the fake X-Ray serves HTTPS (TLS with a self-signed certificate made at
                          start-up), so that a request costs its TLS as in production; the daemon
                          is told not to verify the certificate: --no-verify-ssl is appended for
                          xrayd-compatible programs, NoVerifySSL: true goes into {config}

Timing:
  --idle D                wait after start-up before measuring idle RSS (default 1s)
  --drain-idle D          stop waiting for deliveries after this long without progress (default 3s)
  --drain-timeout D       longest wait for deliveries after sending (default 60s)
  --keep-logs DIR         keep each step's daemon output in DIR
"
}

/// Everything `xrayd bench` can be told.
#[derive(Debug, Clone)]
pub struct Options {
    pub rates: Vec<u64>,
    pub duration: Duration,
    pub count: Option<u64>,
    pub size: usize,
    pub batch: usize,
    pub bursty: bool,
    pub clients: usize,
    pub gso: bool,
    pub daemon_cmd: Option<String>,
    pub raw: bool,
    pub receive_buffer: usize,
    pub daemon_cpus: Vec<usize>,
    pub load_cpus: Vec<usize>,
    pub label: Option<String>,
    pub faults: Faults,
    pub fake_port: u16,
    pub https: bool,
    pub idle: Duration,
    pub drain_idle: Duration,
    pub drain_timeout: Duration,
    pub keep_logs: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rates: vec![10_000, 50_000, 100_000, 200_000, 300_000],
            duration: Duration::from_secs(5),
            count: None,
            size: 1000,
            batch: 64,
            bursty: false,
            clients: 16,
            gso: false,
            daemon_cmd: None,
            raw: false,
            receive_buffer: 4 * 1024 * 1024,
            daemon_cpus: Vec::new(),
            load_cpus: Vec::new(),
            label: None,
            faults: Faults {
                seed: 1,
                ..Faults::default()
            },
            fake_port: 0,
            https: false,
            idle: Duration::from_secs(1),
            drain_idle: Duration::from_secs(3),
            drain_timeout: Duration::from_secs(60),
            keep_logs: None,
        }
    }
}

/// `0,2-3` → [0, 2, 3].
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad CPU list {s:?}");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err(format!("empty CPU list {s:?}"));
    }
    Ok(out)
}

/// Rates with `k` suffixes allowed: `10k,250000`.
fn parse_rates(s: &str) -> Result<Vec<u64>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| {
            let (n, mult) = match r.strip_suffix(['k', 'K']) {
                Some(n) => (n, 1000.0),
                None => (r, 1.0),
            };
            n.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(|v| (v * mult) as u64)
                .ok_or_else(|| format!("bad rate {r:?}"))
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|v| {
            if v.is_empty() {
                Err("--rates is empty".into())
            } else {
                Ok(v)
            }
        })
}

fn parse_fraction(name: &str, v: &str) -> Result<f64, String> {
    v.parse::<f64>()
        .ok()
        .filter(|f| (0.0..=1.0).contains(f))
        .ok_or_else(|| format!("--{name} wants a fraction between 0 and 1, got {v:?}"))
}

/// Online CPUs of the machine (not just those this process may use).
fn online_cpus() -> Vec<usize> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(s.trim()).ok())
        .unwrap_or_else(|| {
            (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
        })
}

/// The flags of `xrayd-bench`, for the daemon's command-line parser. What each one does is told,
/// grouped by topic, in [`usage`] (a test keeps the two lists the same).
const FLAGS: &[Flag] = &[
    Flag::value("rates", "LIST", "").aliases(&["rate"]),
    Flag::value("duration", "D", ""),
    Flag::value("count", "N", ""),
    Flag::value("size", "BYTES", ""),
    Flag::value("clients", "N", ""),
    Flag::switch("bursty", ""),
    Flag::value("batch", "N", ""),
    Flag::switch("gso", ""),
    Flag::value("daemon-cmd", "TEMPLATE", ""),
    Flag::switch("raw", ""),
    Flag::value("receive-buffer", "BYTES", ""),
    Flag::switch("pin", ""),
    Flag::value("daemon-cpus", "LIST", "").aliases(&["daemon-cpu"]),
    Flag::value("load-cpus", "LIST", "").aliases(&["load-cpu"]),
    Flag::value("label", "TEXT", ""),
    Flag::value("fault-500", "F", ""),
    Flag::value("fault-429", "F", ""),
    Flag::value("fault-unprocessed", "F", ""),
    Flag::value("fault-delay", "D", ""),
    Flag::value("seed", "N", ""),
    Flag::value("fake-port", "PORT", ""),
    Flag::switch("https", ""),
    Flag::value("idle", "D", ""),
    Flag::value("drain-idle", "D", ""),
    Flag::value("drain-timeout", "D", ""),
    Flag::value("keep-logs", "DIR", ""),
    Flag::switch("help", "").short("h"),
];

/// Parses `xrayd bench` arguments (without `bench`) with the daemon's flag parser (Go `flag`
/// spellings, as every xrayd command). Ok(None) for `--help`.
pub fn parse_args(args: &[String]) -> Result<Option<Options>, String> {
    let flags = cli::parse(FLAGS, args.iter().cloned()).map_err(|e| e.0)?;
    if flags.is_set("help") {
        return Ok(None);
    }
    if let Some(extra) = flags.rest.first() {
        return Err(format!("unexpected argument {extra:?}"));
    }
    let mut o = Options::default();
    let mut pin = false;
    // In command-line order, so that a repeated flag's last value wins.
    for (name, value) in flags.given {
        let num = |v: &str| -> Result<u64, String> {
            v.parse::<u64>()
                .map_err(|_| format!("--{name} wants a number, got {v:?}"))
        };
        let duration = |v: &str| parse_duration(v).map_err(|e| format!("--{name}: {e}"));
        match name {
            "gso" => o.gso = value == "true",
            "bursty" => o.bursty = value == "true",
            "https" => o.https = value == "true",
            "clients" => o.clients = (num(&value)? as usize).clamp(1, 1024),
            "raw" => o.raw = value == "true",
            "pin" => pin = value == "true",
            "rates" => o.rates = parse_rates(&value)?,
            "duration" => o.duration = duration(&value)?,
            "count" => o.count = Some(num(&value)?),
            "size" => o.size = num(&value)? as usize,
            "batch" => o.batch = (num(&value)? as usize).clamp(1, 1024),
            "daemon-cmd" => o.daemon_cmd = Some(value),
            "receive-buffer" => o.receive_buffer = num(&value)? as usize,
            "daemon-cpus" => o.daemon_cpus = parse_cpu_list(&value)?,
            "load-cpus" => o.load_cpus = parse_cpu_list(&value)?,
            "label" => o.label = Some(value),
            "fault-500" => o.faults.p500 = parse_fraction(name, &value)?,
            "fault-429" => o.faults.p429 = parse_fraction(name, &value)?,
            "fault-unprocessed" => o.faults.p_unprocessed = parse_fraction(name, &value)?,
            "fault-delay" => o.faults.delay = duration(&value)?,
            "seed" => o.faults.seed = num(&value)?,
            "fake-port" => {
                o.fake_port = u16::try_from(num(&value)?).map_err(|_| "--fake-port: bad port")?
            }
            "idle" => o.idle = duration(&value)?,
            "drain-idle" => o.drain_idle = duration(&value)?,
            "drain-timeout" => o.drain_timeout = duration(&value)?,
            "keep-logs" => o.keep_logs = Some(PathBuf::from(value)),
            "help" => {}
            _ => return Err(format!("--{name} is declared but not handled")),
        }
    }
    if o.faults.p500 + o.faults.p429 > 1.0 {
        return Err("--fault-500 plus --fault-429 is more than 1".into());
    }
    if o.raw && o.daemon_cmd.is_some() {
        return Err("--raw and --daemon-cmd exclude each other".into());
    }
    if o.raw && o.https {
        return Err("--https needs a daemon: drop --raw".into());
    }
    if o.raw && o.faults.any() {
        return Err("faults need a daemon: drop --raw".into());
    }
    if o.count == Some(0) || o.duration.is_zero() && o.count.is_none() {
        return Err("nothing to send: --count 0 or --duration 0".into());
    }
    Template::new(o.size)?;
    if pin {
        let cpus = online_cpus();
        if cpus.len() < 2 {
            return Err("--pin needs at least 2 CPUs".into());
        }
        if o.daemon_cpus.is_empty() {
            o.daemon_cpus = vec![*cpus.last().unwrap_or(&0)];
        }
        if o.load_cpus.is_empty() {
            o.load_cpus = cpus
                .iter()
                .copied()
                .filter(|c| !o.daemon_cpus.contains(c))
                .collect();
        }
    }
    Ok(Some(o))
}

/// Entry point of `xrayd-bench ARGS`, also reached as `xrayd bench ARGS` (`args` without the
/// program name; a leading `bench` is skipped). Prints the JSON report on stdout; returns the exit
/// code.
pub fn main(args: Vec<String>) -> i32 {
    let args: Vec<String> = match args.first().map(String::as_str) {
        Some("bench") => args[1..].to_vec(),
        _ => args,
    };
    let opts = match parse_args(&args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{}", usage());
            return 0;
        }
        Err(e) => {
            eprintln!("xrayd bench: {e}\n\n{}", usage());
            return 2;
        }
    };
    match run(&opts) {
        Ok(json) => {
            println!("{}", json.pretty());
            0
        }
        Err(e) => {
            eprintln!("xrayd bench: {e}");
            1
        }
    }
}

/// Runs the benchmark described by `args` and returns the JSON report as text (what `main`
/// prints). For tests and embedding.
#[doc(hidden)]
pub fn run_to_json(args: Vec<String>) -> Result<String, String> {
    let opts = parse_args(&args)?.ok_or("--help given")?;
    run(&opts).map(|j| j.pretty())
}

/// What one step measured.
#[derive(Debug, Clone, Default)]
struct Step {
    rate: u64,
    send: SendReport,
    delivered: u64,
    unprocessed: u64,
    duplicates: u64,
    stale: u64,
    kernel_drops: Option<u64>,
    kernel_drops_source: &'static str,
    snmp_rcvbuf_errors: Option<u64>,
    /// CPU time of the receiving process across the step, in nanoseconds.
    cpu_ns: Option<u64>,
    /// The same per thread group (thread names without their worker number), sorted by name.
    cpu_ns_by_thread: Vec<(String, u64)>,
    idle_rss_kib: Option<u64>,
    peak_rss_kib: Option<u64>,
    latencies_us: Vec<u32>,
    requests: [u64; 5],
    connections: u64,
    documents_received: u64,
    daemon_counts: Vec<(String, u64)>,
    exit: Option<String>,
    cpus_allowed: Option<String>,
    drain_seconds: f64,
}

impl Step {
    fn loss(&self) -> f64 {
        report::loss(self.send.sent, self.delivered, self.unprocessed)
    }

    /// Lost but not by the kernel: dropped (or still held) by the daemon.
    fn daemon_drops(&self) -> u64 {
        self.send
            .sent
            .saturating_sub(self.delivered + self.unprocessed + self.kernel_drops.unwrap_or(0))
    }

    fn cpu_us(&self) -> Option<f64> {
        report::cpu_us_per_segment(self.cpu_ns?, 1_000_000_000, self.delivered)
    }

    /// CPU µs per delivered segment of each thread group.
    fn cpu_us_by_thread(&self) -> Vec<(&str, f64)> {
        self.cpu_ns_by_thread
            .iter()
            .filter_map(|(g, ns)| {
                report::cpu_us_per_segment(*ns, 1_000_000_000, self.delivered)
                    .map(|us| (g.as_str(), us))
            })
            .collect()
    }

    fn latency_ms(&self, p: f64) -> Option<f64> {
        report::percentile(&self.latencies_us, p).map(|us| f64::from(us) / 1000.0)
    }
}

/// The load's shape, as the JSON report names it.
fn load_name(o: &Options) -> &'static str {
    match (o.gso, o.bursty) {
        (true, _) => "gso",
        (false, true) => "bursty",
        (false, false) => "even",
    }
}

fn target_label(o: &Options) -> String {
    if let Some(l) = &o.label {
        return l.clone();
    }
    if o.raw {
        return "raw".into();
    }
    match &o.daemon_cmd {
        None => "xrayd".into(),
        Some(c) => {
            let prog = c
                .split_whitespace()
                .find(|w| {
                    !matches!(*w, "taskset" | "env")
                        && !w.starts_with('-')
                        && parse_cpu_list(w).is_err()
                })
                .unwrap_or("daemon");
            prog.rsplit('/').next().unwrap_or(prog).to_string()
        }
    }
}

/// Environment variable through which `xrayd bench` names itself (its full path) as the daemon
/// to measure when no `--daemon-cmd` is given.
pub const DAEMON_ENV: &str = "XRAYD_BENCH_DAEMON";

/// The daemon measured without `--daemon-cmd`: the xrayd named by [`DAEMON_ENV`] (the one that ran
/// `xrayd bench`), else the `xrayd` beside this executable (where cargo builds both), else the
/// first `xrayd` on PATH.
fn default_daemon() -> Result<String, String> {
    if let Some(d) = std::env::var_os(DAEMON_ENV).filter(|d| !d.is_empty()) {
        return Ok(d.to_string_lossy().into_owned());
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("xrayd")));
    let on_path: Vec<std::path::PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("xrayd")).collect())
        .unwrap_or_default();
    beside
        .into_iter()
        .chain(on_path)
        .find(|p| p.is_file())
        .map(|p| p.to_string_lossy().into_owned())
        .ok_or_else(|| {
            "no xrayd beside this executable or on PATH: build it (cargo build --release) or \
             name the daemon with --daemon-cmd"
                .to_string()
        })
}

/// Runs every step and builds the report.
pub fn run(o: &Options) -> Result<Json, String> {
    let template = Template::new(o.size)?;
    if !o.load_cpus.is_empty() {
        pin_current_thread(&o.load_cpus)
            .map_err(|e| format!("cannot pin to CPUs {:?}: {e}", o.load_cpus))?;
    }
    let daemon_template = match (&o.daemon_cmd, o.raw) {
        (_, true) => None,
        (Some(c), false) => Some(c.clone()),
        (None, false) => Some(default_daemon()?),
    };
    let fake = match daemon_template {
        Some(_) => Some(
            if o.https {
                FastXray::start_https(o.fake_port, o.faults, o.load_cpus.clone())
            } else {
                FastXray::start(o.fake_port, o.faults, o.load_cpus.clone())
            }
            .map_err(|e| format!("cannot start the fake X-Ray: {e}"))?,
        ),
        None => None,
    };
    let log_dir = match &o.keep_logs {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("xrayd-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&log_dir)
        .map_err(|e| format!("cannot create {}: {e}", log_dir.display()))?;
    let label = target_label(o);
    let hz = sys::clock_ticks();
    let started = jiff::Timestamp::now();
    let mut steps = Vec::new();
    let n = o.rates.len();
    for (i, &rate) in o.rates.iter().enumerate() {
        let step_id = (i + 1) as u16;
        let step = match (&daemon_template, &fake) {
            (Some(t), Some(f)) => daemon_step(o, &template, t, f, step_id, rate, &log_dir)?,
            _ => raw_step(o, &template, step_id, rate)?,
        };
        eprintln!("{}", progress_line(&label, i + 1, n, &step));
        if let Some(line) = thread_line(&step) {
            eprintln!("{line}");
        }
        steps.push(step);
    }
    if o.keep_logs.is_none() {
        let _ = std::fs::remove_dir_all(&log_dir);
    }
    let rows: Vec<Row> = steps.iter().map(|s| row(&label, s)).collect();
    eprint!("\n{}", report::table(&rows));
    let zl_input: Vec<(f64, f64)> = steps.iter().map(|s| (s.send.rate(), s.loss())).collect();
    let zero_loss = report::zero_loss_throughput(&zl_input);
    let zero_loss_step = steps
        .iter()
        .filter(|s| s.loss() < report::ZERO_LOSS)
        .max_by(|a, b| a.send.rate().total_cmp(&b.send.rate()));
    match zero_loss {
        Some(r) => eprintln!(
            "zero-loss throughput ({label}): {r:.0} segments/s (loss < {} %; before the first lossy step: {})",
            report::ZERO_LOSS * 100.0,
            report::zero_loss_throughput_before_first_loss(&zl_input)
                .map_or("none".to_string(), |r| format!("{r:.0}/s"))
        ),
        None => eprintln!("zero-loss throughput ({label}): none of the steps lost less than 0.1 %"),
    }
    Ok(obj([
        ("tool", "xrayd bench".into()),
        ("version", xrayd::VERSION.into()),
        ("date", started.to_string().into()),
        ("machine", machine()),
        ("target", label.as_str().into()),
        (
            "config",
            obj([
                ("mode", if o.raw { "raw" } else { "daemon" }.into()),
                ("daemon_cmd", daemon_template.clone().into()),
                ("size", (o.size as u64).into()),
                ("duration_s", o.duration.as_secs_f64().into()),
                ("count", o.count.into()),
                ("load", load_name(o).into()),
                (
                    "clients",
                    (if o.bursty || o.gso { 1 } else { o.clients } as u64).into(),
                ),
                ("batch", (o.batch as u64).into()),
                ("gso_requested", o.gso.into()),
                ("daemon_cpus", cpu_json(&o.daemon_cpus)),
                ("load_cpus", cpu_json(&o.load_cpus)),
                ("clock_ticks_per_s", hz.into()),
                (
                    "faults",
                    obj([
                        ("p500", o.faults.p500.into()),
                        ("p429", o.faults.p429.into()),
                        ("unprocessed", o.faults.p_unprocessed.into()),
                        ("delay_ms", (o.faults.delay.as_secs_f64() * 1e3).into()),
                        ("seed", o.faults.seed.into()),
                    ]),
                ),
                ("https", o.https.into()),
            ]),
        ),
        ("steps", Json::Arr(steps.iter().map(step_json).collect())),
        ("zero_loss_throughput", zero_loss.into()),
        (
            "zero_loss_throughput_before_first_loss",
            report::zero_loss_throughput_before_first_loss(&zl_input).into(),
        ),
        ("zero_loss_rate", zero_loss_step.map(|s| s.rate).into()),
    ]))
}

fn cpu_json(cpus: &[usize]) -> Json {
    Json::Arr(cpus.iter().map(|&c| (c as u64).into()).collect())
}

fn machine() -> Json {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|l| {
        l.strip_prefix("model name")?
            .split_once(':')
            .map(|x| x.1.trim().to_string())
    });
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    obj([
        ("nproc", (online_cpus().len() as u64).into()),
        ("cpu_model", model.into()),
        ("kernel", read("/proc/sys/kernel/osrelease").into()),
        (
            "rmem_max",
            read("/proc/sys/net/core/rmem_max")
                .and_then(|s| s.parse::<u64>().ok())
                .into(),
        ),
    ])
}

fn step_json(s: &Step) -> Json {
    let not_refused = s.send.sent.saturating_sub(s.unprocessed);
    obj([
        ("rate", s.rate.into()),
        ("offered", s.send.sent.into()),
        ("send_seconds", s.send.elapsed.as_secs_f64().into()),
        ("offered_rate", s.send.rate().into()),
        ("send_errors", s.send.errors.into()),
        ("gso", s.send.gso.into()),
        ("gso_note", s.send.gso_note.clone().into()),
        ("delivered", s.delivered.into()),
        ("unprocessed", s.unprocessed.into()),
        ("duplicates", s.duplicates.into()),
        ("stale", s.stale.into()),
        ("loss", s.loss().into()),
        ("loss_pct", (s.loss() * 100.0).into()),
        ("kernel_drops", s.kernel_drops.into()),
        ("kernel_drops_source", s.kernel_drops_source.into()),
        ("snmp_rcvbuf_errors", s.snmp_rcvbuf_errors.into()),
        ("daemon_drops", s.daemon_drops().into()),
        (
            "delivered_of_not_refused",
            (if not_refused > 0 {
                Some(s.delivered as f64 / not_refused as f64)
            } else {
                None
            })
            .into(),
        ),
        ("cpu_seconds", s.cpu_ns.map(|t| t as f64 / 1e9).into()),
        ("cpu_us_per_segment", s.cpu_us().into()),
        (
            "cpu_us_per_segment_by_thread",
            Json::Obj(
                s.cpu_us_by_thread()
                    .into_iter()
                    .map(|(g, us)| (g.to_string(), us.into()))
                    .collect(),
            ),
        ),
        ("idle_rss_kib", s.idle_rss_kib.into()),
        ("peak_rss_kib", s.peak_rss_kib.into()),
        (
            "latency_ms",
            obj([
                ("p50", s.latency_ms(50.0).into()),
                ("p99", s.latency_ms(99.0).into()),
                ("max", s.latency_ms(100.0).into()),
                ("samples", (s.latencies_us.len() as u64).into()),
            ]),
        ),
        (
            "requests",
            obj([
                ("ok", s.requests[0].into()),
                ("http_500", s.requests[1].into()),
                ("http_429", s.requests[2].into()),
                ("bad", s.requests[3].into()),
                ("telemetry", s.requests[4].into()),
                ("connections", s.connections.into()),
                ("documents", s.documents_received.into()),
            ]),
        ),
        ("drain_seconds", s.drain_seconds.into()),
        ("daemon_cpus_allowed", s.cpus_allowed.clone().into()),
        ("daemon_exit", s.exit.clone().into()),
        (
            "daemon_counts",
            Json::Obj(
                s.daemon_counts
                    .iter()
                    .map(|(k, v)| (k.clone(), (*v).into()))
                    .collect(),
            ),
        ),
    ])
}

fn row(label: &str, s: &Step) -> Row {
    Row {
        target: label.to_string(),
        rate: if s.rate == 0 {
            "max".into()
        } else {
            s.rate.to_string()
        },
        achieved: s.send.rate(),
        offered: s.send.sent,
        delivered: s.delivered,
        loss: s.loss(),
        kernel_drops: s.kernel_drops,
        daemon_drops: Some(s.daemon_drops()),
        cpu_us: s.cpu_us(),
        idle_rss_kib: s.idle_rss_kib,
        peak_rss_kib: s.peak_rss_kib,
        p50_ms: s.latency_ms(50.0),
        p99_ms: s.latency_ms(99.0),
    }
}

fn progress_line(label: &str, i: usize, n: usize, s: &Step) -> String {
    let opt = |v: Option<f64>, unit: &str| v.map_or("-".into(), |v| format!("{v:.2}{unit}"));
    format!(
        "[{i}/{n}] {label} @ {}/s: offered {} ({:.0}/s), delivered {}, loss {:.3} % (kernel {}, daemon {}), unprocessed {}, duplicates {}, cpu {} µs/seg, rss idle {} peak {} KiB, latency p50 {} p99 {}",
        if s.rate == 0 {
            "max".to_string()
        } else {
            s.rate.to_string()
        },
        s.send.sent,
        s.send.rate(),
        s.delivered,
        s.loss() * 100.0,
        s.kernel_drops.map_or("-".into(), |d| d.to_string()),
        s.daemon_drops(),
        s.unprocessed,
        s.duplicates,
        opt(s.cpu_us(), ""),
        s.idle_rss_kib.map_or("-".into(), |v| v.to_string()),
        s.peak_rss_kib.map_or("-".into(), |v| v.to_string()),
        opt(s.latency_ms(50.0), " ms"),
        opt(s.latency_ms(99.0), " ms"),
    )
}

/// Where the CPU went, per thread group, for daemons that name their threads (one group says
/// nothing more than the total).
fn thread_line(s: &Step) -> Option<String> {
    let groups = s.cpu_us_by_thread();
    if groups.len() < 2 {
        return None;
    }
    let parts: Vec<String> = groups
        .iter()
        .filter(|(_, us)| *us >= 0.005)
        .map(|(g, us)| format!("{g} {us:.2}"))
        .collect();
    Some(format!("      cpu µs/seg by thread: {}", parts.join(", ")))
}

/// Sends one step's load from a thread pinned to the load CPUs.
fn send_load(
    o: &Options,
    template: &Template,
    target: SocketAddr,
    step: u16,
    rate: u64,
) -> Result<SendReport, String> {
    let cfg = SendConfig {
        rate,
        duration: o.duration,
        count: o.count,
        batch: o.batch,
        bursty: o.bursty,
        clients: o.clients,
        gso: o.gso,
        step,
    };
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            if !o.load_cpus.is_empty() {
                let _ = pin_current_thread(&o.load_cpus);
            }
            sender::send(target, template, &cfg, &stop)
        })
        .join()
        .map_err(|_| "the load generator panicked".to_string())?
        .map_err(|e| format!("load generator: {e}"))
    })
}

/// Samples VmRSS of `pid` every 20 ms into `peak` until `stop`.
fn rss_sampler(
    pid: u32,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Relaxed) {
            if let Some(v) = procfs::status_kib(pid, "VmRSS") {
                peak.fetch_max(v, Relaxed);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

fn daemon_step(
    o: &Options,
    template: &Template,
    daemon_template: &str,
    fake: &FastXray,
    step_id: u16,
    rate: u64,
    log_dir: &std::path::Path,
) -> Result<Step, String> {
    fake.begin_step(step_id);
    let port = process::free_udp_port().map_err(|e| format!("no free UDP port: {e}"))?;
    let places = process::Placeholders {
        udp_port: port,
        tcp_port: process::free_tcp_port().map_err(|e| format!("no free TCP port: {e}"))?,
        endpoint: fake.endpoint(),
        config: log_dir.join(format!("step{step_id}-cfg.yaml")),
        no_verify_ssl: o.https,
    };
    if process::wants_config(daemon_template) {
        process::write_config(&places)
            .map_err(|e| format!("cannot write {}: {e}", places.config.display()))?;
    }
    let argv = process::command_line(daemon_template, &places);
    let log_path = log_dir.join(format!("step{step_id}-{rate}.log"));
    let mut daemon = process::Daemon::spawn(&argv, &o.daemon_cpus, log_path)
        .map_err(|e| format!("cannot start {:?}: {e}", argv.join(" ")))?;
    if let Err(e) = daemon.wait_listening(port, Duration::from_secs(15)) {
        let _ = daemon.stop(Duration::from_secs(1));
        return Err(e);
    }
    let pid = daemon.pid;
    let stat_path = format!("/proc/{pid}/stat");
    std::thread::sleep(o.idle);
    let mut step = Step {
        rate,
        idle_rss_kib: procfs::status_kib(pid, "VmRSS"),
        cpus_allowed: procfs::cpus_allowed(pid),
        ..Step::default()
    };
    let peak = Arc::new(AtomicU64::new(step.idle_rss_kib.unwrap_or(0)));
    let stop_sampler = Arc::new(AtomicBool::new(false));
    let sampler = rss_sampler(pid, peak.clone(), stop_sampler.clone());
    let hz = sys::clock_ticks();
    let cpu0 = procfs::cpu_nanos(&stat_path, hz);
    let threads0 = procfs::cpu_nanos_by_thread_group(pid);
    let snmp0 = procfs::snmp_rcvbuf_errors();
    let drops0 = procfs::udp_socket_drops(port);
    let target: SocketAddr = ([127, 0, 0, 1], port).into();
    let send = send_load(o, template, target, step_id, rate);
    let send = match send {
        Ok(s) => s,
        Err(e) => {
            stop_sampler.store(true, Relaxed);
            let _ = sampler.join();
            let _ = daemon.stop(Duration::from_secs(5));
            return Err(e);
        }
    };
    let sent_at = Instant::now();
    // Wait for the daemon to deliver what it received.
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let drops = procfs::udp_socket_drops(port)
            .zip(drops0)
            .map_or(0, |(a, b)| a.saturating_sub(b));
        let (settled, last) = fake.progress();
        let quiet = sent_at.max(last).elapsed();
        if settled + drops >= send.sent
            || quiet >= o.drain_idle
            || sent_at.elapsed() >= o.drain_timeout
            || !daemon.alive()
        {
            break;
        }
    }
    step.drain_seconds = sent_at.elapsed().as_secs_f64();
    step.cpu_ns = procfs::cpu_nanos(&stat_path, hz)
        .zip(cpu0)
        .map(|(a, b)| a.saturating_sub(b));
    step.cpu_ns_by_thread = procfs::group_delta(&threads0, &procfs::cpu_nanos_by_thread_group(pid));
    let drops1 = procfs::udp_socket_drops(port);
    let snmp1 = procfs::snmp_rcvbuf_errors();
    let hwm = procfs::status_kib(pid, "VmHWM");
    stop_sampler.store(true, Relaxed);
    let _ = sampler.join();
    step.peak_rss_kib = Some(peak.load(Relaxed).max(hwm.unwrap_or(0))).filter(|&v| v > 0);
    step.snmp_rcvbuf_errors = snmp1.zip(snmp0).map(|(a, b)| a.saturating_sub(b));
    (step.kernel_drops, step.kernel_drops_source) = match drops1.zip(drops0) {
        Some((a, b)) => (Some(a.saturating_sub(b)), "socket"),
        None => (step.snmp_rcvbuf_errors, "snmp"),
    };
    let (status, log) = daemon.stop(Duration::from_secs(30));
    step.exit = Some(status.map_or("killed after 30 s".into(), |s| s.to_string()));
    step.daemon_counts = process::parse_final_counts(&log);
    // The socket's drop counter counts kernel buffers, and a GSO sender's buffer holds many
    // segments: when the daemon reports what it received, what it never received is exact.
    if let Some(received) = step
        .daemon_counts
        .iter()
        .find(|(k, _)| k == "received")
        .map(|&(_, v)| v)
    {
        step.kernel_drops = Some(send.sent.saturating_sub(received));
        step.kernel_drops_source = "daemon";
    }
    // Anything flushed at shutdown counts as delivered too.
    let t = fake.tally();
    step.delivered = t.delivered;
    step.unprocessed = t.unprocessed;
    step.duplicates = t.duplicates;
    step.stale = t.stale;
    step.latencies_us = t.latencies_us;
    step.requests = [
        t.requests_ok,
        t.requests_500,
        t.requests_429,
        t.requests_bad,
        t.telemetry,
    ];
    step.documents_received = t.documents;
    step.connections = t.connections;
    step.send = send;
    Ok(step)
}

fn raw_step(o: &Options, template: &Template, step_id: u16, rate: u64) -> Result<Step, String> {
    let rx = raw::RawReceiver::start(o.daemon_cpus.clone(), o.receive_buffer)
        .map_err(|e| format!("cannot start the raw receiver: {e}"))?;
    let hz = sys::clock_ticks();
    let cpu0 = procfs::cpu_nanos(&rx.stat_path, hz);
    let snmp0 = procfs::snmp_rcvbuf_errors();
    let drops0 = procfs::udp_socket_drops(rx.port);
    let target: SocketAddr = ([127, 0, 0, 1], rx.port).into();
    let send = send_load(o, template, target, step_id, rate)?;
    let sent_at = Instant::now();
    let mut last = (rx.received(), Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let drops = procfs::udp_socket_drops(rx.port)
            .zip(drops0)
            .map_or(0, |(a, b)| a.saturating_sub(b));
        let got = rx.received();
        if got != last.0 {
            last = (got, Instant::now());
        }
        if got + drops >= send.sent || last.1.elapsed() >= Duration::from_millis(300) {
            break;
        }
    }
    let mut step = Step {
        rate,
        drain_seconds: sent_at.elapsed().as_secs_f64(),
        cpu_ns: procfs::cpu_nanos(&rx.stat_path, hz)
            .zip(cpu0)
            .map(|(a, b)| a.saturating_sub(b)),
        snmp_rcvbuf_errors: procfs::snmp_rcvbuf_errors()
            .zip(snmp0)
            .map(|(a, b)| a.saturating_sub(b)),
        delivered: rx.received(),
        cpus_allowed: (!o.daemon_cpus.is_empty()).then(|| format!("{:?}", o.daemon_cpus)),
        ..Step::default()
    };
    (step.kernel_drops, step.kernel_drops_source) =
        match procfs::udp_socket_drops(rx.port).zip(drops0) {
            Some((a, b)) => (Some(a.saturating_sub(b)), "socket"),
            None => (step.snmp_rcvbuf_errors, "snmp"),
        };
    step.send = send;
    Ok(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn durations_and_cpu_lists() {
        // Durations are the daemon's syntax (config::parse_duration), named by their flag.
        let o = parse_args(&args(
            "--duration 1.5 --fault-delay 100us --idle 2m --drain-idle=250ms",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(o.duration, Duration::from_millis(1500));
        assert_eq!(o.faults.delay, Duration::from_micros(100));
        assert_eq!(o.idle, Duration::from_secs(120));
        assert_eq!(o.drain_idle, Duration::from_millis(250));
        let e = parse_args(&args("--duration 5parsecs")).unwrap_err();
        assert!(e.starts_with("--duration: "), "{e}");
        assert!(parse_args(&args("--idle=")).is_err());
        assert_eq!(parse_cpu_list("1"), Ok(vec![1]));
        assert_eq!(parse_cpu_list("0,2-4"), Ok(vec![0, 2, 3, 4]));
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("").is_err());
    }

    #[test]
    fn parses_the_command_line() {
        let o = parse_args(&args(
            "--rates 10k,250000 --duration=2s --size 1000 --gso --daemon-cpus 1 --load-cpus 0 \
             --fault-500 0.1 --fault-429 0.1 --fault-unprocessed 0.01 --fault-delay 20ms --count 20000",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(o.rates, [10_000, 250_000]);
        assert_eq!(o.duration, Duration::from_secs(2));
        assert!(o.gso && !o.raw);
        assert_eq!(load_name(&o), "gso");
        let even = Options::default();
        assert_eq!((load_name(&even), even.clients), ("even", 16));
        let bursty = parse_args(&args("--bursty --clients 3")).unwrap().unwrap();
        assert_eq!((load_name(&bursty), bursty.clients), ("bursty", 3));
        assert!(parse_args(&args("--clients x")).is_err());
        assert!(parse_args(&args("--https")).unwrap().unwrap().https);
        assert!(parse_args(&args("--raw --https")).is_err());
        assert_eq!(
            (o.daemon_cpus.clone(), o.load_cpus.clone()),
            (vec![1], vec![0])
        );
        assert_eq!(o.faults.p500, 0.1);
        assert_eq!(o.faults.delay, Duration::from_millis(20));
        assert_eq!(o.count, Some(20_000));
        assert!(parse_args(&args("--help")).unwrap().is_none());
        assert!(parse_args(&args("--bogus 1")).is_err());
        assert!(parse_args(&args("--raw --fault-500 0.5")).is_err());
        assert!(parse_args(&args("--fault-500 1.5")).is_err());
        assert!(
            parse_args(&args("--size 10"))
                .unwrap_err()
                .contains("at least")
        );
        assert!(parse_args(&args("--rates")).is_err());
        assert!(parse_args(&args("--gso=maybe")).is_err());
        assert!(!parse_args(&args("--gso --gso=false")).unwrap().unwrap().gso);
        assert!(parse_args(&args("stray")).is_err());
        assert!(parse_args(&args("--raw stray")).is_err());
        // Go `flag` spellings, as every xrayd command: one dash, aliases, the last value wins.
        let o = parse_args(&args("-rate 5k -label a --label b -h=false -daemon-cpu 2"))
            .unwrap()
            .unwrap();
        assert_eq!(o.rates, [5000]);
        assert_eq!(o.label.as_deref(), Some("b"));
        assert_eq!(o.daemon_cpus, [2]);
        assert!(parse_args(&args("-h")).unwrap().is_none());
    }

    #[test]
    fn usage_tells_every_flag_and_only_those() {
        let told: std::collections::BTreeSet<&str> = usage()
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("--"))
            .map(|l| l.split_whitespace().next().unwrap_or_default())
            .collect();
        let declared: std::collections::BTreeSet<&str> = FLAGS
            .iter()
            .map(|f| f.long)
            .filter(|&f| f != "help")
            .collect();
        assert_eq!(told, declared);
    }

    #[test]
    fn labels() {
        let mut o = Options::default();
        assert_eq!(target_label(&o), "xrayd");
        o.daemon_cmd = Some("taskset -c 1 /opt/aws/xray -c x.yaml".into());
        assert_eq!(target_label(&o), "xray");
        o.raw = true;
        assert_eq!(target_label(&o), "raw");
    }

    #[test]
    fn raw_mode_measures_a_short_step() {
        let json = run_to_json(args("--raw --rates 2000 --duration 200ms")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let s = &v["steps"][0];
        assert_eq!(s["offered"], 400);
        assert_eq!(s["delivered"], 400);
        assert_eq!(v["target"], "raw");
        assert_eq!(s["kernel_drops_source"], "socket");
    }
}
