//! The checkout figures of BENCHMARKS.md ("Checkout") on their own (`figures -- --only
//! checkout` runs the same rows beside the engine's): see `rows/checkout.rs`.
//!
//! ```text
//! cargo bench --bench checkout                             # every row, 7 rounds each
//! cargo bench --bench checkout -- --rounds 3 --only local,http
//! SWARM_BENCH_REPO=/path/to/repo cargo bench --bench checkout   # its HEAD's branch
//! ```
//!
//! Progress goes to stderr; the results, as JSON, to stdout and to `target/bench/checkout.json`.

#[path = "rows/checkout.rs"]
mod rows;

fn main() {
    let mut o = rows::Options {
        rounds: 7,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => o.rounds = args.next().and_then(|v| v.parse().ok()).unwrap_or(7),
            "--only" => {
                o.only = args
                    .next()
                    .map(|v| v.split(',').map(str::to_string).collect())
            }
            _ => {} // cargo's own (--bench)
        }
    }
    // SWARM_BENCH_LOG=info: the checkout's own log lines (which tool fetched and wrote), timed.
    if let Ok(filter) = std::env::var("SWARM_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let out = rows::measure(&o);
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
