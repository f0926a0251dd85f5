//! The RL loop. Each step: draw prompts → sample G completions each (no gradient) → score them →
//! log-probabilities of the rollout policy (and of the reference, when a KL term is on) →
//! advantages → `update.epochs` passes of `update.mini_batches` optimizer steps over the rollout
//! (importance ratio against the rollout policy) → metrics, evaluation, checkpoint.

use std::path::{Path, PathBuf};
use std::time::Instant;

use pglm_autograd::Float;
use pglm_autograd::optim::{AdamW, LrSchedule, Optimizer, clip_grad_norm};
use pglm_model::Gpt;
use pglm_model::tokenizer::Tokenizer;
use pglm_rewards::Reward;
use pglm_sampler::{Sampler, Scorer};

use crate::TrainError;
use crate::checkpoint::{check_meta, dtype_name, read_state, write_state};
use crate::config::TaskEvalConfig;
use crate::data::{DataCursor, DataOrder, epoch_permutation, mix_seed};
use crate::eval::{TaskEval, TaskScore};
use crate::guard::{Guard, Verdict};
use crate::metrics::{MetricsWriter, finite, truncate_after};
use crate::rl::advantage::MovingBaseline;
use crate::rl::config::{Estimator, RlConfig};
use crate::rl::metrics::RlStepMetrics;
use crate::rl::policy::{build, load_init, load_reference, save_reference};
use crate::rl::rollout::{RolloutContext, TaskPrompt, collect, load_prompts};
use crate::rl::state::{RL_KIND, RlMeta};
use crate::rl::step;
use crate::run_dir::{RunDir, write_atomically};
use crate::trainer::RunSummary;

/// An RL run over a policy with element type `F`.
pub struct RlTrainer<F: Float> {
    pub(crate) config: RlConfig,
    run: RunDir,
    pub(crate) policy: Gpt<F>,
    pub(crate) reference: Option<Gpt<F>>,
    pub(crate) tokenizer: Tokenizer,
    pub(crate) reward: Box<dyn Reward>,
    pub(crate) component_names: Vec<String>,
    pub(crate) prompts: Vec<TaskPrompt>,
    task: Option<TaskEval>,
    pub(crate) sampler: Sampler<F>,
    /// The reference's log-probabilities on the KV-cache path (its packed weights made once),
    /// when there is a reference.
    pub(crate) ref_scorer: Option<Scorer<F>>,
    pub(crate) order: DataOrder,
    pub(crate) cursor: DataCursor,
    pub(crate) opt: AdamW<F>,
    schedule: LrSchedule,
    pub(crate) guard: Guard,
    pub(crate) baseline: MovingBaseline,
    pub(crate) kl_coef: f64,
    pub(crate) pad: u32,
    step: u64,
    metrics: MetricsWriter,
    completions: MetricsWriter,
    elapsed_before: f64,
    started: Instant,
    last_checkpoint: Option<PathBuf>,
    stop_reached: bool,
}

impl<F: Float> RlTrainer<F> {
    /// Starts an RL run in `run_dir` (refused if it already holds a run) from `policy.init`. Saves
    /// the config, the tokenizer and (when a KL term is on) the reference weights there.
    pub fn new(config: RlConfig, run_dir: impl Into<PathBuf>) -> Result<Self, TrainError> {
        config.validate()?;
        let run = RunDir::new(run_dir);
        if run.config_path().exists() {
            return Err(TrainError::RunExists { path: run.root().into() });
        }
        let init = load_init::<F>(&config.policy.init)?;
        let mut model_config = init.config;
        model_config.value_head = config.algorithm.estimator == Estimator::Gae;
        model_config.dropout = 0.0; // the policy's log-probabilities must be those it sampled with
        let policy = build(model_config, config.run.seed, init.params, &init.source)?;
        run.create()?;
        let json = serde_json::to_string_pretty(&config).expect("configs serialize");
        write_atomically(&run.config_path(), json.as_bytes())?;
        init.tokenizer.save_json(run.tokenizer_path())?;
        let reference = if config.needs_reference() {
            save_reference(&reference_path(&run), &policy)?;
            Some(load_reference(&reference_path(&run))?)
        } else {
            None
        };
        Self::assemble(config, run, init.tokenizer, policy, reference)
    }

    /// Continues the RL run in `run_dir` from its latest checkpoint, exactly.
    pub fn resume(run_dir: impl Into<PathBuf>) -> Result<Self, TrainError> {
        let run = RunDir::new(run_dir);
        let config: RlConfig = run.read_config()?;
        config.validate()?;
        let tokenizer = Tokenizer::load_json(run.tokenizer_path())?;
        let ckpt = run.latest()?.ok_or_else(|| TrainError::NoCheckpoint { path: run.root().into() })?;
        let state = read_state::<F, RlMeta>(&ckpt, RL_KIND)?;
        let m = &state.meta;
        check_meta::<F>(&ckpt, &m.dtype, &m.model, m.seed, &m.model, config.run.seed)?;
        let policy = build(m.model.clone(), config.run.seed, state.params, &ckpt)?;
        let reference =
            if config.needs_reference() { Some(load_reference(&reference_path(&run))?) } else { None };
        truncate_after(&run.metrics_path(), m.step)?;
        truncate_after(&completions_path(&run), m.step)?;
        let mut t = Self::assemble(config, run, tokenizer, policy, reference)?;
        t.opt
            .load_state(state.optimizer, &t.policy.params)
            .map_err(|source| TrainError::OptimizerState { path: ckpt.clone(), source })?;
        t.step = state.meta.step;
        t.cursor = state.meta.cursor;
        t.baseline = state.meta.baseline;
        t.kl_coef = state.meta.kl_coef;
        t.guard.state = state.meta.guard;
        t.elapsed_before = state.meta.elapsed_s;
        t.last_checkpoint = Some(ckpt);
        Ok(t)
    }

    fn assemble(
        config: RlConfig,
        run: RunDir,
        tokenizer: Tokenizer,
        policy: Gpt<F>,
        reference: Option<Gpt<F>>,
    ) -> Result<Self, TrainError> {
        let task = pglm_rewards::builtin_task(&config.task.name, &config.task.settings)?;
        let reward = task.reward();
        let context = policy.config().context_length;
        let prompts = load_prompts(&config.task.train, reward.as_ref(), &tokenizer, context)?;
        let eval = match &config.task.test {
            Some(test) => Some(TaskEval::load(
                &TaskEvalConfig {
                    name: config.task.name.clone(),
                    settings: config.task.settings.clone(),
                    test: test.clone(),
                    examples: config.task.eval_examples,
                    max_new_tokens: config.rollout.max_new_tokens,
                },
                &tokenizer,
                context,
            )?),
            None => None,
        };
        let o = &config.optim;
        let opt = AdamW::new(o.lr)
            .with_betas(o.betas.0, o.betas.1)
            .with_eps(o.eps)
            .with_weight_decay(o.weight_decay);
        let schedule = o.schedule(config.run.steps);
        let pad = tokenizer.pad().or(tokenizer.eos()).unwrap_or(0);
        let slots = config.rollout.prompts_per_step * config.rollout.group_size;
        Ok(RlTrainer {
            sampler: Sampler::new(policy.config(), slots.min(256)),
            ref_scorer: reference.as_ref().map(|r| Scorer::new(r.config(), slots.min(256))),
            order: DataOrder::new(config.run.seed, prompts.len()),
            guard: Guard::new(config.run.max_nonfinite_in_a_row),
            kl_coef: config.kl.coef,
            metrics: MetricsWriter::open(&run.metrics_path())?,
            completions: MetricsWriter::open(&completions_path(&run))?,
            component_names: reward.component_names(),
            reward,
            config,
            run,
            policy,
            reference,
            tokenizer,
            prompts,
            task: eval,
            cursor: DataCursor::default(),
            opt,
            schedule,
            baseline: MovingBaseline::default(),
            pad,
            step: 0,
            elapsed_before: 0.0,
            started: Instant::now(),
            last_checkpoint: None,
            stop_reached: false,
        })
    }

    /// One RL step (see the module docs), with its evaluation, metrics line, completions table
    /// and checkpoint when due. Before the first step, the starting policy is evaluated and
    /// logged as step 0.
    ///
    /// # Errors
    /// [`TrainError::NonFinite`] after `run.max_nonfinite_in_a_row` skipped updates in a row;
    /// sampling, reward, I/O and checkpoint errors.
    pub fn step(&mut self) -> Result<RlStepMetrics, TrainError> {
        if self.step == 0 && self.task.is_some() {
            let e = self.evaluate()?.expect("a task evaluation");
            let m0 = RlStepMetrics {
                step: 0,
                kl_coef: self.kl_coef,
                eval_accuracy: Some(e.accuracy),
                eval_reward: finite(e.reward),
                elapsed_s: self.elapsed_s(),
                ..Default::default()
            };
            self.metrics.write(&m0)?;
        }
        let lr = self.schedule.lr_at(self.step);
        let out = step::rl_step(self, lr, self.step)?;
        self.step += 1;
        let mut m = out.metrics;
        m.step = self.step;
        let last = self.step >= self.config.run.steps;
        let due = |every: u64, step: u64| last || (every > 0 && step.is_multiple_of(every));
        if due(self.config.run.eval_every, self.step)
            && let Some(e) = self.evaluate()?
        {
            m.eval_accuracy = Some(e.accuracy);
            m.eval_reward = finite(e.reward);
        }
        self.stop_reached = self.stop_condition_met(&m);
        m.elapsed_s = self.elapsed_s();
        self.metrics.write(&m)?;
        let every = self.config.log.completions_every;
        if every > 0 && (self.step.is_multiple_of(every) || self.step == 1) {
            let mut rows = out.completions;
            rows.iter_mut().for_each(|r| r.step = self.step);
            self.completions.write_all(&rows)?;
        }
        if let Some(what) = out.stop {
            return Err(TrainError::NonFinite {
                step: self.step,
                in_a_row: self.guard.state.in_a_row,
                limit: self.guard.limit,
                what,
                last_checkpoint: self.last_checkpoint.clone(),
            });
        }
        if !m.skipped && (due(self.config.run.checkpoint_every, self.step) || self.stop_reached) {
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
            last: last.map(|m| crate::StepMetrics {
                step: m.step,
                lr: m.lr,
                grad_norm: m.grad_norm,
                skipped: m.skipped,
                nonfinite_total: m.nonfinite_total,
                eval_accuracy: m.eval_accuracy,
                eval_reward: m.eval_reward,
                elapsed_s: m.elapsed_s,
                ..Default::default()
            }),
            checkpoint: self.last_checkpoint.clone(),
        })
    }

    /// True once the step budget is spent or the stop condition was met.
    pub fn is_finished(&self) -> bool {
        self.step >= self.config.run.steps || self.stop_reached
    }

    /// Greedy accuracy and mean reward on the held-out prompts (none without `task.test`).
    pub fn evaluate(&self) -> Result<Option<TaskScore>, TrainError> {
        match &self.task {
            Some(t) => Ok(Some(t.evaluate(&self.policy, &self.tokenizer)?)),
            None => Ok(None),
        }
    }

    fn stop_condition_met(&self, m: &RlStepMetrics) -> bool {
        let Some(stop) = &self.config.run.stop else { return false };
        let value = match stop.metric.as_str() {
            "eval_accuracy" => m.eval_accuracy,
            "eval_reward" => m.eval_reward,
            "reward_mean" => m.reward_mean,
            _ => None,
        };
        value.is_some_and(|x| x >= stop.target)
    }

    /// Writes a checkpoint of the current state, points `latest` at it and prunes old ones.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf, TrainError> {
        let path = self.run.checkpoint_path(self.step);
        let meta = RlMeta {
            dtype: dtype_name::<F>().into(),
            model: self.policy.config().clone(),
            seed: self.config.run.seed,
            step: self.step,
            cursor: self.cursor,
            baseline: self.baseline,
            kl_coef: self.kl_coef,
            guard: self.guard.state,
            elapsed_s: self.elapsed_s(),
        };
        write_state(&path, RL_KIND, &meta, &self.policy.params, self.opt.state())?;
        self.run.publish(&path, self.config.run.keep_checkpoints)?;
        self.last_checkpoint = Some(path.clone());
        Ok(path)
    }

    fn elapsed_s(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }

    /// The policy being trained.
    pub fn policy(&self) -> &Gpt<F> {
        &self.policy
    }

    /// The run's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The run's config.
    pub fn config(&self) -> &RlConfig {
        &self.config
    }

    /// RL steps completed.
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

    /// Draws the step's rollout.
    pub(crate) fn rollout(&mut self, step: u64) -> Result<crate::rl::rollout::Rollout, TrainError> {
        let ctx = RolloutContext {
            config: &self.config,
            prompts: &self.prompts,
            reward: self.reward.as_ref(),
            tokenizer: &self.tokenizer,
        };
        collect(&ctx, &self.policy, &mut self.sampler, &mut self.order, &mut self.cursor, step)
    }

    /// The update's order of the `n` sequences for pass `epoch` of step `step`: shuffled when
    /// the rollout is split into mini-batches, as-is otherwise.
    pub(crate) fn pass_order(&self, step: u64, epoch: usize, n: usize) -> Vec<usize> {
        if self.config.update.mini_batches > 1 {
            epoch_permutation(mix_seed(&[self.config.run.seed, step, 0x5EED]), epoch as u64, n)
        } else {
            (0..n).collect()
        }
    }

    /// Applies one optimizer step (unless the guard refuses), returning the gradient norm and the
    /// verdict.
    pub(crate) fn apply(&mut self, loss: f64, lr: f64) -> (f64, Verdict) {
        let clip = self.config.optim.grad_clip.unwrap_or(f64::INFINITY);
        let grad_norm = clip_grad_norm(&mut self.policy.params, clip);
        let verdict = self.guard.check(loss, grad_norm);
        if verdict == Verdict::Apply {
            self.opt.step(&mut self.policy.params, lr);
        }
        (grad_norm, verdict)
    }
}

fn reference_path(run: &RunDir) -> PathBuf {
    run.root().join("reference.ckpt")
}

fn completions_path(run: &RunDir) -> PathBuf {
    run.root().join("completions.jsonl")
}
