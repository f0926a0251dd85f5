//! `cargo xtask bench [--filter TEXT] [--threads N] [--budget-ms MS] [--peak-mem]`: throughput of the
//! tensor ops in f32 at the model's shapes, median of repeated runs. `--peak-mem` also prints the
//! process's peak resident memory; only the benchmarks the filter selects allocate anything, so
//! `--filter "train step M" --peak-mem` gives the peak of config M's training step.
//!
//! GEMM-based ops report GFLOP/s (2mnk per product; backward counts its two products); attention
//! counts every product it computes (the causal upper triangle included); memory-bound ops report
//! GB/s of tensor data read and written. Inputs are shared `ParamStore` values, so no run copies them.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ndarray::{Array2, ArrayD, IxDyn};
use pglm_autograd::ops::linalg::gemm;
use pglm_autograd::{ParamStore, Tape, Var};

/// What one benchmark measures per run, for the throughput column.
enum Work {
    Flops(f64),
    Bytes(f64),
    /// A training step: its FLOPs (nanoGPT's estimate) and the tokens it consumes.
    Train {
        flops: f64,
        tokens: f64,
    },
}

/// One complete measured step of a benchmark.
type Run = Box<dyn FnMut()>;

/// A named benchmark: `make` allocates its inputs and returns the step, so the benchmarks that
/// the filter skips allocate nothing (and the process's peak memory is that of the ones run).
struct Bench {
    name: String,
    work: Work,
    make: Box<dyn FnOnce() -> Run>,
}

/// The model's attention configurations: (name, B, H, T, D).
/// `S-rl` is the GRPO step's update: 128 sequences of 39 positions.
const CONFIGS: &[(&str, usize, usize, usize, usize)] =
    &[("S", 32, 4, 64, 32), ("S-rl", 128, 4, 39, 32), ("M", 16, 4, 128, 64), ("L", 8, 6, 256, 64)];

/// Deterministic values in [-1, 1): the benchmarks need data, not randomness.
fn filled(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    ArrayD::from_shape_fn(IxDyn(shape), |_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    })
}

/// A parameter store holding one array per shape, for zero-copy tape inputs.
fn store(shapes: &[&[usize]]) -> ParamStore<f32> {
    let mut st = ParamStore::new();
    for (i, s) in shapes.iter().enumerate() {
        st.add(format!("x{i}"), filled(s, i as u64 + 1));
    }
    st
}

/// Binds every parameter of `st` on `tape`, in order.
fn bind(tape: &mut Tape<f32>, st: &ParamStore<f32>) -> Vec<Var> {
    st.iter().map(|(id, _)| id).collect::<Vec<_>>().into_iter().map(|id| tape.param(st, id)).collect()
}

/// A benchmark of `op` on inputs of `shapes`: forward only, or forward and backward (seeded with ones).
fn tape_bench(
    name: String,
    work: Work,
    shapes: &[&[usize]],
    backward: bool,
    op: impl Fn(&mut Tape<f32>, &[Var]) -> Var + 'static,
) -> Bench {
    let shapes: Vec<Vec<usize>> = shapes.iter().map(|s| s.to_vec()).collect();
    let make = move || -> Run {
        let st = store(&shapes.iter().map(Vec::as_slice).collect::<Vec<_>>());
        Box::new(move || {
            let mut tape = if backward { Tape::new() } else { Tape::no_grad() };
            let xs = bind(&mut tape, &st);
            let y = op(&mut tape, &xs);
            if backward {
                let seed = ArrayD::from_elem(tape.shape(y), 1.0f32);
                std::hint::black_box(tape.backward_with(y, seed));
            }
            std::hint::black_box(tape.value(y));
        })
    };
    Bench { name, work, make: Box::new(make) }
}

/// The raw GEMM kernel on one `(m, k)·(k, n)` product, operands optionally stored transposed.
fn gemm_bench(m: usize, k: usize, n: usize, ta: bool, tb: bool) -> Bench {
    let name = format!(
        "gemm {m}x{k}·{k}x{n}{}",
        if ta {
            " Aᵀ"
        } else if tb {
            " Bᵀ"
        } else {
            ""
        }
    );
    let make = move || -> Run {
        let a = filled(&if ta { [k, m] } else { [m, k] }, 1).into_dimensionality().unwrap();
        let b = filled(&if tb { [n, k] } else { [k, n] }, 2).into_dimensionality().unwrap();
        let mut c = Array2::<f32>::zeros((m, n));
        let (a, b): (Array2<f32>, Array2<f32>) = (a, b);
        Box::new(move || {
            let (av, bv) = (if ta { a.t() } else { a.view() }, if tb { b.t() } else { b.view() });
            gemm(1.0, av, bv, 0.0, c.view_mut());
        })
    };
    Bench { name, work: Work::Flops(2.0 * (m * n * k) as f64), make: Box::new(make) }
}

fn all_benches() -> Vec<Bench> {
    let mut v = Vec::new();
    // GEMM kernel: the linear shapes of config M (rows = B·T = 2048) and their backward products.
    for (m, k, n, ta, tb) in [
        (2048, 256, 768, false, false),
        (2048, 1024, 256, false, false),
        (256, 2048, 768, true, false),
        (2048, 768, 256, false, true),
        (1024, 2048, 256, true, false),
        (2048, 256, 1024, false, true),
        // Config S at the GRPO step's 4096 stored rows: the fc layer's y, dX and dW.
        (4096, 128, 512, false, false),
        (4096, 512, 128, false, true),
        (128, 4096, 512, true, false),
    ] {
        v.push(gemm_bench(m, k, n, ta, tb));
    }
    // Batched matmul at the attention shapes: Q·Kᵀ as (B, H, T, D)·(B, H, D, T).
    for &(cfg, b, h, t, d) in CONFIGS {
        let flops = 2.0 * (b * h * t * t * d) as f64;
        let name = format!("matmul batched {cfg} {b}x{h}x[{t}x{d}·{d}x{t}]");
        v.push(tape_bench(name, Work::Flops(flops), &[&[b, h, t, d], &[b, h, d, t]], false, |t, x| {
            t.matmul(x[0], x[1])
        }));
    }
    // Linear layers of each config (rows = B·T): qkv C->3C, fc C->4C, proj 4C->C; forward+backward
    // does three products of the same size (y, dX, dW).
    for &(cfg, b, h, t, d) in CONFIGS {
        let (rows, c) = (b * t, h * d);
        for (role, din, dout) in [("qkv", c, 3 * c), ("fc", c, 4 * c), ("proj", 4 * c, c)] {
            let f = 2.0 * (rows * din * dout) as f64;
            let shapes: &[&[usize]] = &[&[b, t, din], &[din, dout], &[dout]];
            let name = format!("linear fwd {cfg} {role} {rows}x{din}->{dout}");
            v.push(tape_bench(name, Work::Flops(f), shapes, false, |t, x| t.linear(x[0], x[1], Some(x[2]))));
            let name = format!("linear fwd+bwd {cfg} {role} {rows}x{din}->{dout}");
            v.push(tape_bench(name, Work::Flops(3.0 * f), shapes, true, |t, x| {
                t.linear(x[0], x[1], Some(x[2]))
            }));
        }
    }
    // Attention: forward is 2 products of 2T²D per head, backward 4 more.
    for &(cfg, b, h, t, d) in CONFIGS {
        let f = 4.0 * (b * h * t * t * d) as f64;
        let s: &[usize] = &[b, h, t, d];
        let name = format!("attention fwd {cfg} B={b} H={h} T={t} D={d}");
        v.push(tape_bench(name, Work::Flops(f), &[s, s, s], false, |t, x| {
            t.attention(x[0], x[1], x[2], true)
        }));
        let name = format!("attention fwd+bwd {cfg}");
        v.push(tape_bench(name, Work::Flops(3.0 * f), &[s, s, s], true, |t, x| {
            t.attention(x[0], x[1], x[2], true)
        }));
        let name = format!("causal_self_attention fwd+bwd {cfg}");
        let packed: &[usize] = &[b, t, 3 * h * d];
        v.push(tape_bench(name, Work::Flops(3.0 * f), &[packed], true, move |t, x| {
            t.causal_self_attention(x[0], h)
        }));
    }
    // Memory-bound elementwise ops at the size of config M's fc activations (B·T x 4C).
    let (n, shape): (usize, &[usize]) = (2048 * 1024, &[2048, 1024]);
    let bytes = |tensors: usize| Work::Bytes((tensors * n * 4) as f64);
    v.push(tape_bench("add fwd 2048x1024".into(), bytes(3), &[shape, shape], false, |t, x| {
        t.add(x[0], x[1])
    }));
    v.push(tape_bench("exp fwd 2048x1024".into(), bytes(2), &[shape], false, |t, x| t.exp(x[0])));
    v.push(tape_bench("exp fwd+bwd 2048x1024".into(), bytes(6), &[shape], true, |t, x| t.exp(x[0])));
    v.push(tape_bench("gelu fwd 2048x1024".into(), bytes(2), &[shape], false, |t, x| t.gelu(x[0])));
    v.push(tape_bench("gelu fwd+bwd 2048x1024".into(), bytes(6), &[shape], true, |t, x| t.gelu(x[0])));
    v.extend(train_benches());
    v
}

/// One whole training step of the model (forward, cross-entropy, backward, AdamW) at the peer
/// configs of `shared/peer/train_step.py`: S, M, L, each 2048 tokens per step.
fn train_benches() -> Vec<Bench> {
    use pglm_autograd::optim::{AdamW, Optimizer};
    use pglm_model::{Gpt, GptConfig};
    let configs = [
        ("S", GptConfig::new(64, 64, 2, 4, 128), 32),
        ("M", GptConfig::new(512, 128, 4, 4, 256), 16),
        ("L", GptConfig::new(512, 256, 6, 6, 384), 8),
    ];
    configs
        .into_iter()
        .map(|(name, cfg, batch)| {
            let t = cfg.context_length;
            let tokens = (batch * t) as f64;
            let flops = tokens * cfg.train_flops_per_token(t);
            let make = move || -> Run {
                let mut model = Gpt::<f32>::new(cfg.clone(), 1).expect("valid config");
                let mut s = 7u64;
                let mut next = move || {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((s >> 33) % cfg.vocab_size as u64) as u32
                };
                let ids: Vec<u32> = (0..batch * (t + 1)).map(|_| next()).collect();
                let seqs = ndarray::Array2::from_shape_vec((batch, t + 1), ids).expect("shape");
                let x = seqs.slice(ndarray::s![.., ..t]).to_owned().into_dyn();
                let y = seqs.slice(ndarray::s![.., 1..]).to_owned().into_dyn();
                // nanoGPT's setup, as the peer script: AdamW lr 3e-4, betas (0.9, 0.95), decay 0.1 on matrices.
                let mut opt = AdamW::new(3e-4).with_betas(0.9, 0.95).with_weight_decay(0.1);
                let mut tape = Tape::new();
                // On a worker of the pool, as `pglm_trainer::accumulate_gradients` runs the step.
                Box::new(move || {
                    rayon::scope(|_| {
                        tape.clear();
                        model.params.zero_grad();
                        let loss = model.loss(&mut tape, &x, &y, None, None).expect("valid batch");
                        tape.backward(loss).accumulate_into(&mut model.params);
                        tape.clear();
                        opt.step(&mut model.params, 3e-4);
                    })
                })
            };
            Bench {
                name: format!("train step {name} B={batch} T={t}"),
                work: Work::Train { flops, tokens },
                make: Box::new(make),
            }
        })
        .collect()
}

/// Median and best seconds per run over about `budget` (at least 5 runs, after one warm-up run).
fn measure(run: &mut dyn FnMut(), budget: Duration) -> (f64, f64) {
    run();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || (start.elapsed() < budget && times.len() < 100) {
        let t = Instant::now();
        run();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0])
}

/// Parses the flags and runs the matching benchmarks.
pub fn run(args: &[String]) -> Result<()> {
    let (mut filter, mut threads, mut budget_ms) = (None::<String>, None::<usize>, 1000u64);
    let mut peak_mem = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().with_context(|| format!("{flag} needs a value")).cloned();
        match a.as_str() {
            "--filter" => filter = Some(value("--filter")?),
            "--threads" => threads = Some(value("--threads")?.parse().context("--threads needs a number")?),
            "--peak-mem" => peak_mem = true,
            "--budget-ms" => {
                budget_ms = value("--budget-ms")?.parse().context("--budget-ms needs a number")?
            }
            other => {
                bail!(
                    "bench: unknown argument {other:?} (flags: --filter TEXT, --threads N, --budget-ms MS, --peak-mem)"
                )
            }
        }
    }
    if let Some(n) = threads {
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().context("building the rayon pool")?;
    }
    println!(
        "{} rayon threads, f32, median (best) of runs over ~{budget_ms} ms each",
        rayon::current_num_threads()
    );
    println!("{:<48} {:>10} {:>22}", "benchmark", "ms", "throughput");
    let budget = Duration::from_millis(budget_ms);
    let rss_before = peak_rss_mib();
    for b in all_benches() {
        if filter.as_ref().is_some_and(|f| !b.name.contains(f.as_str())) {
            continue;
        }
        let mut run = (b.make)();
        let (med, best) = measure(&mut run, budget);
        let rate = match b.work {
            Work::Flops(f) => format!("{:7.1} ({:6.1}) GFLOP/s", f / med / 1e9, f / best / 1e9),
            Work::Bytes(x) => format!("{:7.1} ({:6.1}) GB/s   ", x / med / 1e9, x / best / 1e9),
            Work::Train { flops, tokens } => {
                format!("{:7.1} GFLOP/s, {:8.0} tokens/s", flops / med / 1e9, tokens / med)
            }
        };
        println!("{:<48} {:>10.3} {:>22}", b.name, med * 1e3, rate);
    }
    if peak_mem {
        // Run one benchmark per process (with --filter) to attribute the peak to it.
        match (rss_before, peak_rss_mib()) {
            (Some(before), Some(after)) => println!(
                "peak resident memory (VmHWM): {after:.1} MiB ({before:.1} MiB before the benchmarks)"
            ),
            _ => println!("peak resident memory: unavailable (no /proc/self/status)"),
        }
    }
    Ok(())
}

/// The process's peak resident set size so far (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
