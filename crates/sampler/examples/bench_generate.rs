//! Sampling throughput on config M (4 layers, width 256, 4 heads, context 128, vocab 512), f32,
//! random init: prompt 8 tokens, 64 new tokens, temperature 1, no stops, at batch 1 and 16, and
//! one prompt sampled 16 times (a GRPO group, one shared prefill). The same work as the peer
//! program `generate.py` (Hugging Face `generate` with its KV cache).
//!
//! new tokens/s = batch · 64 / seconds per call (prefill included); median of `--reps` calls
//! after one warm-up, with the CPU time per call beside it (on a shared machine the wall time also
//! counts waits for a core). Also times decode calls of the model alone (`forward_cached`) to split
//! the time between the model and the sampler.
//!
//! usage: cargo run --release -p pglm-sampler --example bench_generate -- [--threads 2] [--reps 7]
//!        [--model-only 1] [--calls 24] [--width 256]

use std::time::Instant;

use pglm_model::{Gpt, GptConfig, InferScratch, KvCache};
use pglm_sampler::{NoText, Sampler, SamplingParams};

const PROMPT: usize = 8;
const NEW: usize = 64;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect(name))
}

/// CPU seconds used so far by this process (all threads), from /proc/self/stat on Linux: on a busy
/// machine, CPU time per call at 1 thread estimates the time on an idle core.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which ends with ')'): utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// CPU nanoseconds used so far by all threads of this process, from each thread's
/// /proc/self/task/*/schedstat (Linux; nanosecond resolution). On a shared machine, CPU time is
/// what the work costs; wall time also counts the waits for a core.
fn cpu_ns() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Seconds per call of `f`, median of `reps` after one warm-up.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn main() {
    // Keep freed memory in the process: each step reuses the last one's pages instead of faulting them in.
    pglm_autograd::memory::keep_freed_memory();
    let threads = arg("--threads", 2);
    let reps = arg("--reps", 7);
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().expect("one global pool");
    let config = GptConfig::new(512, 128, 4, 4, 256);
    let model = Gpt::<f32>::new(config.clone(), 0).expect("config M");
    // Prompt tokens from a fixed LCG.
    let mut state = 12345u64;
    let mut token = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) % 512) as u32
    };
    let prompts: Vec<Vec<u32>> = (0..16).map(|_| (0..PROMPT).map(|_| token()).collect()).collect();
    let params =
        SamplingParams { max_new_tokens: NEW, temperature: 1.0, stop_at_eos: false, ..Default::default() };
    println!(
        "pglm sampler, config M, f32, {threads} threads, prompt {PROMPT}, {NEW} new tokens, median of {reps}"
    );

    let cases: &[(&str, usize, usize)] = if arg("--model-only", 0) == 1 {
        &[]
    } else {
        &[("batch 1", 1, 1), ("batch 16", 16, 1), ("group 1x16", 1, 16)]
    };
    for &(label, n_prompts, n) in cases {
        let mut sampler = Sampler::<f32>::new(&config, n_prompts * n);
        let params = SamplingParams { n, ..params.clone() };
        let mut produced = 0;
        let cpu0 = cpu_seconds();
        let s = time(reps, || {
            let out = sampler.generate(&model, &prompts[..n_prompts], &params, &NoText::default()).unwrap();
            produced = out.iter().flatten().map(|c| c.tokens.len()).sum();
        });
        let cpu = cpu0.zip(cpu_seconds()).map_or(f64::NAN, |(a, b)| (b - a) / (reps + 1) as f64);
        assert_eq!(produced, n_prompts * n * NEW);
        println!(
            "{label:11}: {:8.2} ms/call  {:8.0} new tokens/s  {:.3} ms/step  (CPU {:.1} ms/call)",
            s * 1e3,
            produced as f64 / s,
            s / NEW as f64 * 1e3,
            cpu * 1e3
        );
    }

    // The model alone: decode calls of B rows from position 40 on (`--calls`, at most 88).
    // `--width W` times a model of width W instead (W = 128: the weights fit in L2).
    let width = arg("--width", 256);
    let config = GptConfig::new(512, 128, 4, 4, width);
    let model = Gpt::<f32>::new(config.clone(), 0).expect("config");
    let flops = 2.0 * (4.0 * 12.0 * (width * width) as f64 + (512 * width) as f64);
    for b in [1usize, 16] {
        let mut cache = KvCache::<f32>::new(&config, b, 128);
        let mut scratch = InferScratch::new(&config, 256);
        let mut logits = vec![0f32; 256 * config.vocab_size];
        let prefix: Vec<(usize, u32)> = (0..b).flat_map(|s| (0..40).map(move |t| (s, t as u32))).collect();
        for chunk in prefix.chunks(256) {
            model.forward_cached(&mut cache, &mut scratch, chunk, &mut logits[..chunk.len() * 512]).unwrap();
        }
        let rows: Vec<(usize, u32)> = (0..b).map(|s| (s, 7)).collect();
        let calls = arg("--calls", 24).min(128 - 40);
        let cpu0 = cpu_ns();
        let times: Vec<f64> = (0..calls)
            .map(|_| {
                let t = Instant::now();
                model.forward_cached(&mut cache, &mut scratch, &rows, &mut logits[..b * 512]).unwrap();
                t.elapsed().as_secs_f64()
            })
            .collect();
        let cpu = cpu0.zip(cpu_ns()).map_or(f64::NAN, |(a, b)| (b - a) as f64 * 1e-9 / calls as f64);
        let s = median(times);
        println!(
            "forward_cached, width {width}, {b:2} rows from position 40: {:.3} ms/call  ({:.0} tokens/s, \
             {:.1} GFLOP/s in the matrix products), CPU {:.3} ms/call",
            s * 1e3,
            b as f64 / s,
            b as f64 * flops / s / 1e9,
            cpu * 1e3
        );
    }
}
