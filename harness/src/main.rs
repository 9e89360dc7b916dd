//! `xrayd-bench`: the load and benchmark harness, run directly or as `xrayd bench`.

fn main() {
    eprintln!("xrayd-bench: the harness has not moved here yet; run `xrayd bench`");
    std::process::exit(2);
}
