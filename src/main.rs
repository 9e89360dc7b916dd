//! The `xrayd` command: parse flags, read the config files, resolve settings, run the daemon.

use std::time::Duration;

use xrayd::config::{self, file, flags};
use xrayd::log;

/// With the `mimalloc` feature, mimalloc replaces the C library's allocator. For the static musl
/// build it saves about a fifth of the CPU (musl's allocator serialises every call on one lock and
/// returns memory to the kernel eagerly, while segments are allocated by the ingest thread and
/// freed by uploaders), at the price of memory: its size classes round the shared segment
/// allocations up, so under an outage RSS exceeds the budget by about a fifth of it more than with
/// the C library's allocator. Off by default, so that memory stays within the budget plus a fixed
/// overhead.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Longest wait for queued log lines at exit.
const LOG_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// `xrayd bench ARGS`: replaces this process with the benchmark harness `xrayd-bench ARGS`, found
/// beside this executable (where cargo builds both) or else on PATH, and names this executable as
/// the daemon to measure (`XRAYD_BENCH_DAEMON`). The harness is a program of its own, so that the
/// daemon carries none of its code. Returns an exit code only when the harness cannot be run.
fn run_bench(args: &[String]) -> i32 {
    use std::os::unix::process::CommandExt;
    const HARNESS: &str = "xrayd-bench";
    let exe = std::env::current_exe().ok();
    let beside = exe
        .as_ref()
        .and_then(|e| Some(e.parent()?.join(HARNESS)))
        .filter(|p| p.is_file());
    let found = beside.or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join(HARNESS))
            .find(|p| p.is_file())
    });
    let Some(harness) = found else {
        eprintln!(
            "xrayd bench: the benchmark harness {HARNESS} is neither beside this executable nor on \
             PATH.\nBuild it beside xrayd with `cargo build --release -p xrayd-harness` \
             (target/release/{HARNESS}), or install it with `cargo install --path harness`."
        );
        return 1;
    };
    let mut cmd = std::process::Command::new(&harness);
    cmd.args(args);
    if let Some(exe) = &exe {
        cmd.env("XRAYD_BENCH_DAEMON", exe);
    }
    let err = cmd.exec();
    eprintln!("xrayd bench: cannot run {}: {err}", harness.display());
    1
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Subcommands: a probe for exec health checks (scratch images have no shell), a demo segment
    // sender, and the benchmark harness.
    match args.first().map(String::as_str) {
        Some("health") => std::process::exit(xrayd::health::main(args)),
        Some("demo") => std::process::exit(xrayd::demo::main(args)),
        Some("bench") => std::process::exit(run_bench(&args[1..])),
        _ => {}
    }
    let parsed = match flags::parse(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}\n{}", flags::usage());
            std::process::exit(2);
        }
    };
    if parsed.is_set("help") {
        print!("{}", flags::usage());
        return;
    }
    if parsed.is_set("version") {
        println!("xrayd version: {}", xrayd::VERSION);
        return;
    }
    if let Some(extra) = parsed.rest.first() {
        eprintln!("unexpected argument: {extra}\n{}", flags::usage());
        std::process::exit(2);
    }
    let env = |k: &str| std::env::var(k).ok();
    let settings = match file::load(parsed.get("config"), &file::read_file)
        .and_then(|files| config::resolve_with(&parsed, &files, &env, &config::Host::detect()))
    {
        Ok(s) => s,
        Err(e) => {
            // Messages quote keys and values of the files: one line each, escaped.
            for line in e.to_string().lines() {
                eprintln!("xrayd: {}", log::escape(line));
            }
            std::process::exit(1);
        }
    };
    if parsed.is_set("print-config") {
        for w in &settings.config_warnings {
            eprintln!("xrayd: warning: {w}");
        }
        print!("{}", config::render(&settings));
        return;
    }
    let output = match &settings.log_file {
        Some(path) => log::Output::File {
            path: path.clone(),
            rotate_at: settings.log_rotation.then_some(settings.log_rotate_bytes),
        },
        // Segments own stdout when the local sink writes there; logs move to stderr.
        None if settings.local_sink.as_deref() == Some("-") => log::Output::Stderr,
        None => log::Output::Stdout,
    };
    if let Err(e) = log::init(settings.log_level, settings.log_format, output) {
        let path = settings.log_file.as_deref().unwrap_or("-");
        eprintln!("xrayd: cannot open the log file {path} (-f/--log-file or Logging.LogPath): {e}");
        std::process::exit(1);
    }
    for path in &settings.config_files {
        xrayd::info!("Using config file {path}");
    }
    for w in &settings.config_warnings {
        xrayd::warn!("{w}");
    }
    if settings.no_verify_ssl {
        xrayd::warn!(
            "NoVerifySSL is set: TLS certificates of X-Ray are NOT verified. Anyone on the network path can read and alter uploads"
        );
    }
    let code = xrayd::daemon::run(settings, &env);
    log::flush(LOG_FLUSH_TIMEOUT);
    std::process::exit(code);
}
