//! The `xrayd` command: parse flags, resolve settings, run the daemon.

use xrayd::config::{self, flags};
use xrayd::log;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
        println!("xrayd version: {}", xrayd::daemon::VERSION);
        return;
    }
    if let Some(extra) = parsed.rest.first() {
        eprintln!("unexpected argument: {extra}\n{}", flags::usage());
        std::process::exit(2);
    }
    let env = |k: &str| std::env::var(k).ok();
    let settings = match config::resolve(&parsed, &env, &config::Host::detect()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("xrayd: {e}");
            std::process::exit(1);
        }
    };
    let out: Box<dyn std::io::Write + Send> = match &settings.log_file {
        Some(path) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("xrayd: -f/--log-file: cannot open {path}: {e}");
                std::process::exit(1);
            }
        },
        // Segments own stdout when the local sink writes there; logs move to stderr.
        None if settings.local_sink.as_deref() == Some("-") => Box::new(std::io::stderr()),
        None => Box::new(std::io::stdout()),
    };
    log::init(settings.log_level, out);
    std::process::exit(xrayd::daemon::run(settings, &env));
}
