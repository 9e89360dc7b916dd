//! `xrayd-bench`: the load and benchmark harness (see [`xrayd_harness`]), run directly or through
//! the daemon's `xrayd bench`, which executes this program with the same arguments.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(xrayd_harness::main(args));
}
