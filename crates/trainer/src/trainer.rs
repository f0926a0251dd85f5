//! The training loop for pretraining and SFT: [`Trainer::new`] starts a run in a directory,
//! [`Trainer::resume`] continues one from its latest checkpoint, [`Trainer::step`] does one
//! optimizer step (with its evaluation, metrics line and checkpoint when due), [`Trainer::run`]
//! steps until the budget is spent or the stop condition is met.

use std::path::{Path, PathBuf};
use std::time::Instant;

use pglm_autograd::Float;
use pglm_autograd::optim::{AdamW, LrSchedule, Optimizer, clip_grad_norm};
use pglm_model::Gpt;
use pglm_model::tokenizer::{CharTokenizer, Tokenizer};

use crate::accum::accumulate_gradients;
use crate::checkpoint::{StateMeta, dtype_name, load_state, save_state};
use crate::config::{DataKind, TokenizerConfig, TrainConfig};
use crate::data::{Batch, DataCursor, DataOrder, Sequence, mix_seed};
use crate::eval::{TaskEval, TaskScore, eval_loss};
use crate::guard::{Guard, Verdict};
use crate::metrics::{MetricsWriter, StepMetrics, finite, truncate_after};
use crate::run_dir::{RunDir, write_atomically};
use crate::{TrainError, pretrain, sft};

/// The result of one evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EvalMetrics {
    /// Held-out loss, when there is held-out data.
    pub loss: Option<f64>,
    /// Task accuracy and mean reward, when a task is configured.
    pub task: Option<TaskScore>,
}

/// How a call to [`Trainer::run`] ended.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    /// Optimizer steps completed.
    pub steps: u64,
    /// True when the stop condition ended the run before the step budget.
    pub stopped_early: bool,
    /// The last step's metrics (none if the run had already finished).
    pub last: Option<StepMetrics>,
    /// The newest checkpoint.
    pub checkpoint: Option<PathBuf>,
}

/// A pretraining or SFT run over a model with element type `F`.
pub struct Trainer<F: Float> {
    config: TrainConfig,
    run: RunDir,
    model: Gpt<F>,
    opt: AdamW<F>,
    schedule: LrSchedule,
    tokenizer: Tokenizer,
    pad: u32,
    train: Vec<Sequence>,
    eval: Vec<Sequence>,
    task: Option<TaskEval>,
    order: DataOrder,
    cursor: DataCursor,
    guard: Guard,
    step: u64,
    metrics: MetricsWriter,
    elapsed_before: f64,
    started: Instant,
    last_checkpoint: Option<PathBuf>,
    stop_reached: bool,
}

impl<F: Float> Trainer<F> {
    /// Starts a run in `run_dir` (created if needed; refused if it already holds a run): builds
    /// the tokenizer, tokenizes the data, initialises the model from `run.seed`, and saves the
    /// config (with `model.vocab_size` resolved) and the tokenizer there.
    pub fn new(mut config: TrainConfig, run_dir: impl Into<PathBuf>) -> Result<Self, TrainError> {
        config.validate()?;
        let run = RunDir::new(run_dir);
        if run.config_path().exists() {
            return Err(TrainError::RunExists { path: run.root().into() });
        }
        let tokenizer = build_tokenizer(&config)?;
        resolve_vocab(&mut config, &tokenizer)?;
        let model = Gpt::new(config.model.clone(), config.run.seed)?;
        let trainer = Self::assemble(config, run, tokenizer, model)?;
        trainer.run.create()?;
        let json = serde_json::to_string_pretty(&trainer.config).expect("configs serialize");
        write_atomically(&trainer.run.config_path(), json.as_bytes())?;
        trainer.tokenizer.save_json(trainer.run.tokenizer_path())?;
        Ok(trainer)
    }

    /// Continues the run in `run_dir` from the checkpoint `latest` names, exactly: same weights,
    /// optimizer moments, step, data position and guard counters. Metric lines after the
    /// checkpoint's step are dropped (the resumed run writes them again).
    pub fn resume(run_dir: impl Into<PathBuf>) -> Result<Self, TrainError> {
        let run = RunDir::new(run_dir);
        let config: TrainConfig = run.read_config()?;
        config.validate()?;
        let tokenizer = Tokenizer::load_json(run.tokenizer_path())?;
        let ckpt = run.latest()?.ok_or_else(|| TrainError::NoCheckpoint { path: run.root().into() })?;
        let state = load_state::<F>(&ckpt, &config.model, config.run.seed)?;

        let mut model = Gpt::new(config.model.clone(), config.run.seed)?;
        load_params(&mut model, state.params, &ckpt)?;
        truncate_after(&run.metrics_path(), state.meta.step)?;
        let mut trainer = Self::assemble(config, run, tokenizer, model)?;
        trainer
            .opt
            .load_state(state.optimizer, &trainer.model.params)
            .map_err(|source| TrainError::OptimizerState { path: ckpt.clone(), source })?;
        trainer.step = state.meta.step;
        trainer.cursor = state.meta.cursor;
        trainer.guard.state = state.meta.guard;
        trainer.elapsed_before = state.meta.elapsed_s;
        trainer.last_checkpoint = Some(ckpt);
        Ok(trainer)
    }

    /// The parts shared by [`Self::new`] and [`Self::resume`]: data, optimizer, metrics file.
    fn assemble(
        config: TrainConfig,
        run: RunDir,
        tokenizer: Tokenizer,
        model: Gpt<F>,
    ) -> Result<Self, TrainError> {
        let (train, eval) = load_sequences(&config, &tokenizer)?;
        let task = match &config.data.task {
            Some(t) => Some(TaskEval::load(t, &tokenizer, config.model.context_length)?),
            None => None,
        };
        let o = &config.optim;
        let opt = AdamW::new(o.lr)
            .with_betas(o.betas.0, o.betas.1)
            .with_eps(o.eps)
            .with_weight_decay(o.weight_decay);
        let schedule = o.schedule(config.run.steps);
        // Padding never counts in the loss; any in-vocabulary id will do without a PAD token.
        let pad = tokenizer.pad().or(tokenizer.eos()).unwrap_or(0);
        if let Some(parent) = run.metrics_path().parent() {
            std::fs::create_dir_all(parent).map_err(|e| TrainError::io(parent, e))?;
        }
        let metrics = MetricsWriter::open(&run.metrics_path())?;
        Ok(Trainer {
            order: DataOrder::new(config.run.seed, train.len()),
            guard: Guard::new(config.run.max_nonfinite_in_a_row),
            config,
            run,
            model,
            opt,
            schedule,
            tokenizer,
            pad,
            train,
            eval,
            task,
            cursor: DataCursor::default(),
            step: 0,
            metrics,
            elapsed_before: 0.0,
            started: Instant::now(),
            last_checkpoint: None,
            stop_reached: false,
        })
    }

    /// One optimizer step: accumulate the batch's gradient, clip, update (unless the guard skips
    /// it), then evaluate, write the metrics line and checkpoint when due (never after a skipped
    /// step).
    ///
    /// # Errors
    /// [`TrainError::NonFinite`] once `run.max_nonfinite_in_a_row` steps in a row were skipped
    /// (after their metrics line is written); I/O and checkpoint errors.
    pub fn step(&mut self) -> Result<StepMetrics, TrainError> {
        let t0 = Instant::now();
        let (seed, index) = (self.config.run.seed, self.step);
        let lr = self.schedule.lr_at(index);
        let ids = self.order.take(&mut self.cursor, self.config.batch.batch_size);
        let seqs: Vec<&Sequence> = ids.iter().map(|&i| &self.train[i]).collect();
        let batches: Vec<Batch<F>> =
            seqs.chunks(self.config.batch.micro()).map(|c| Batch::new(c, self.pad)).collect();
        let dropout = self.config.model.dropout > 0.0;
        let acc = accumulate_gradients(&mut self.model, &batches, |i| {
            dropout.then(|| mix_seed(&[seed, index, i as u64]))
        })?;
        let grad_norm =
            clip_grad_norm(&mut self.model.params, self.config.optim.grad_clip.unwrap_or(f64::INFINITY));
        let verdict = self.guard.check(acc.loss, grad_norm);
        if verdict == Verdict::Apply {
            self.opt.step(&mut self.model.params, lr);
        }
        self.step += 1;
        let train_secs = t0.elapsed().as_secs_f64();

        let mut m = StepMetrics {
            step: self.step,
            loss: finite(acc.loss),
            lr,
            grad_norm: finite(grad_norm),
            skipped: verdict != Verdict::Apply,
            nonfinite_total: self.guard.state.total,
            tokens: acc.positions as u64,
            loss_tokens: acc.loss_tokens as u64,
            epoch: self.cursor.epoch,
            tokens_per_sec: acc.positions as f64 / train_secs.max(1e-9),
            ..Default::default()
        };
        let last = self.step >= self.config.run.steps;
        let due = |every: u64, step: u64| last || (every > 0 && step.is_multiple_of(every));
        if due(self.config.run.eval_every, self.step) {
            let e = self.evaluate()?;
            m.eval_loss = e.loss;
            m.eval_accuracy = e.task.map(|t| t.accuracy);
            m.eval_reward = e.task.and_then(|t| finite(t.reward));
            self.stop_reached = self.stop_condition_met(&m);
        }
        m.elapsed_s = self.elapsed_s();
        self.metrics.write(&m)?;
        if let Verdict::Stop { what } = verdict {
            return Err(TrainError::NonFinite {
                step: self.step,
                in_a_row: self.guard.state.in_a_row,
                limit: self.guard.limit,
                what,
                last_checkpoint: self.last_checkpoint.clone(),
            });
        }
        // A skipped step is not checkpointed: its weights may be what made the loss non-finite,
        // and the error message promises a *good* last checkpoint.
        let applied = verdict == Verdict::Apply;
        if applied && (due(self.config.run.checkpoint_every, self.step) || self.stop_reached) {
            self.save_checkpoint()?;
        }
        Ok(m)
    }

    /// Steps until `run.steps` or the stop condition.
    pub fn run(&mut self) -> Result<RunSummary, TrainError> {
        let mut last = None;
        while !self.is_finished() {
            last = Some(self.step()?);
        }
        Ok(RunSummary {
            steps: self.step,
            stopped_early: self.stop_reached,
            last,
            checkpoint: self.last_checkpoint.clone(),
        })
    }

    /// True once the step budget is spent or the stop condition was met: [`Self::run`] would
    /// return at once. A caller driving [`Self::step`] itself (to stop on Ctrl-C) loops until this.
    pub fn is_finished(&self) -> bool {
        self.step >= self.config.run.steps || self.stop_reached
    }

    /// Held-out loss and task score of the current weights (no state changes).
    pub fn evaluate(&self) -> Result<EvalMetrics, TrainError> {
        let loss = if self.eval.is_empty() {
            None
        } else {
            Some(eval_loss(&self.model, &self.eval, self.config.batch.micro(), self.pad)?)
        };
        let task = match &self.task {
            Some(t) => Some(t.evaluate(&self.model, &self.tokenizer)?),
            None => None,
        };
        Ok(EvalMetrics { loss, task })
    }

    fn stop_condition_met(&self, m: &StepMetrics) -> bool {
        let Some(stop) = &self.config.run.stop else { return false };
        match stop.metric.as_str() {
            "eval_loss" => m.eval_loss.is_some_and(|x| x <= stop.target),
            "eval_accuracy" => m.eval_accuracy.is_some_and(|x| x >= stop.target),
            "eval_reward" => m.eval_reward.is_some_and(|x| x >= stop.target),
            _ => false,
        }
    }

    /// Writes a checkpoint of the current state, points `latest` at it and prunes old ones.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf, TrainError> {
        let path = self.run.checkpoint_path(self.step);
        let meta = StateMeta {
            dtype: dtype_name::<F>().into(),
            model: self.config.model.clone(),
            seed: self.config.run.seed,
            step: self.step,
            cursor: self.cursor,
            guard: self.guard.state,
            elapsed_s: self.elapsed_s(),
        };
        save_state(&path, &meta, &self.model.params, self.opt.state())?;
        self.run.publish(&path, self.config.run.keep_checkpoints)?;
        self.last_checkpoint = Some(path.clone());
        Ok(path)
    }

    fn elapsed_s(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }

    /// The model being trained.
    pub fn model(&self) -> &Gpt<F> {
        &self.model
    }

    /// The model, mutably (to edit weights between steps).
    pub fn model_mut(&mut self) -> &mut Gpt<F> {
        &mut self.model
    }

    /// The run's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The run's config (with `model.vocab_size` resolved).
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Optimizer steps completed.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        self.run.root()
    }

    /// The newest checkpoint written or resumed from.
    pub fn last_checkpoint(&self) -> Option<&Path> {
        self.last_checkpoint.as_deref()
    }
}

/// The configured tokenizer: loaded from JSON, or a character tokenizer over the training file.
pub fn build_tokenizer(config: &TrainConfig) -> Result<Tokenizer, TrainError> {
    match &config.tokenizer {
        TokenizerConfig::File { path } => Ok(Tokenizer::load_json(path)?),
        TokenizerConfig::Char => {
            let path = &config.data.train;
            let text = match config.data.kind {
                DataKind::Text => pretrain::read_corpus(path)?,
                DataKind::Sft => sft::records_text(&pglm_rewards::dataset::read_sft(path)?),
            };
            Ok(Tokenizer::Char(CharTokenizer::from_corpus(&text)))
        }
    }
}

/// `model.vocab_size = 0` becomes the tokenizer's size; a smaller non-zero size is an error.
fn resolve_vocab(config: &mut TrainConfig, tokenizer: &Tokenizer) -> Result<(), TrainError> {
    let need = tokenizer.vocab_size();
    if config.model.vocab_size == 0 {
        config.model.vocab_size = need;
    } else if config.model.vocab_size < need {
        return Err(TrainError::config(
            "model.vocab_size",
            format!(
                "at least the tokenizer's vocabulary size {need} (or 0 for exactly that), got {}",
                config.model.vocab_size
            ),
        ));
    }
    Ok(())
}

/// The training sequences and the held-out ones (at most `eval_batches × batch_size`).
fn load_sequences(
    config: &TrainConfig,
    tokenizer: &Tokenizer,
) -> Result<(Vec<Sequence>, Vec<Sequence>), TrainError> {
    let seq_len = config.batch.seq_len;
    let read = |path: &Path| -> Result<Vec<Sequence>, TrainError> {
        match config.data.kind {
            DataKind::Text => {
                pretrain::corpus_sequences(&pretrain::read_corpus(path)?, path, tokenizer, seq_len)
            }
            DataKind::Sft => {
                sft::sft_sequences(&pglm_rewards::dataset::read_sft(path)?, path, tokenizer, seq_len)
            }
        }
    };
    let train_path = &config.data.train;
    let mut train = read(train_path)?;
    let mut eval = match &config.data.eval {
        Some(path) => read(path)?,
        None => train.split_off(train.len().saturating_sub(config.data.holdout)),
    };
    let batch_size = config.batch.batch_size;
    if train.len() < batch_size {
        let what = match config.data.kind {
            DataKind::Text => "the corpus (after the holdout)",
            DataKind::Sft => "the SFT file (after the holdout)",
        };
        return Err(TrainError::BatchLargerThanData {
            path: train_path.clone(),
            what,
            available: train.len(),
            batch_size,
        });
    }
    eval.truncate(config.run.eval_batches.saturating_mul(batch_size));
    Ok((train, eval))
}

/// Copies checkpointed tensors into `model`, checking names and shapes.
fn load_params<F: Float>(
    model: &mut Gpt<F>,
    params: Vec<(String, ndarray::ArrayD<F>)>,
    path: &Path,
) -> Result<(), TrainError> {
    let mismatch =
        |field: String, expected: String, found: String| TrainError::mismatch(path, field, expected, found);
    if params.len() != model.params.len() {
        return Err(mismatch(
            "parameter count".into(),
            model.params.len().to_string(),
            params.len().to_string(),
        ));
    }
    for ((_, p), (name, value)) in model.params.iter_mut().zip(params) {
        if p.name != name || p.value().shape() != value.shape() {
            return Err(mismatch(
                format!("parameter {}", p.name),
                format!("{} {:?}", p.name, p.value().shape()),
                format!("{name} {:?}", value.shape()),
            ));
        }
        *p.value_mut() = value;
    }
    Ok(())
}
