//! `cargo xtask <task>`: the project's developer tasks (gradient checks, benchmarks, data).

use anyhow::{Context, Result, bail};

mod bench;
mod data;

fn main() -> Result<()> {
    // Keep freed memory in the process: each step reuses the last one's pages instead of faulting them in.
    pglm_autograd::memory::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gradcheck") => gradcheck(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("data") => data::run(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <gradcheck [--cases N] | bench ... | data ...>");
            bail!("unknown or missing task")
        }
    }
}

/// Runs every registered gradient property test and prints the table.
fn gradcheck(args: &[String]) -> Result<()> {
    let mut cases = 64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--cases" => {
                cases =
                    it.next().context("--cases needs a number")?.parse().context("--cases needs a number")?
            }
            other => bail!("gradcheck: unknown argument {other:?}"),
        }
    }
    let mut all = pglm_autograd::gradcheck::all_cases();
    all.extend(pglm_model::gradcheck::gradcheck_cases());
    all.extend(pglm_trainer::rl::gradcheck_cases());
    let reports: Vec<_> = all.iter().map(|c| pglm_autograd::gradcheck::run_case(c, cases)).collect();
    print!("{}", pglm_autograd::gradcheck::table(&reports));
    if reports.iter().any(|r| r.failure.is_some()) {
        bail!("some gradient checks failed");
    }
    Ok(())
}
