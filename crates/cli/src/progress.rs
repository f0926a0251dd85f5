//! How progress is shown: a live bar on a terminal, plain log lines otherwise or with `--quiet`,
//! JSON lines with `--json`.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The output flags every command accepts.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct OutputArgs {
    /// No progress bar: a plain log line at each evaluation and a summary at the end.
    #[arg(short, long, global = true, conflicts_with = "json")]
    pub quiet: bool,
    /// Progress and results as JSON lines on stdout (one object per logged step).
    #[arg(long, global = true)]
    pub json: bool,
}

/// How progress is displayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A live bar on stderr (stderr is a terminal).
    Bar,
    /// Plain log lines on stderr, every few percent of the run and at each evaluation.
    Plain,
    /// Only evaluations and the summary.
    Quiet,
    /// JSON lines on stdout.
    Json,
}

/// The resolved output settings.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// The display mode.
    pub mode: Mode,
}

impl OutputArgs {
    /// The mode: the flags first, then whether stderr is a terminal.
    pub fn resolve(&self) -> Output {
        let mode = if self.json {
            Mode::Json
        } else if self.quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Plain
        };
        Output { mode }
    }
}

impl Output {
    /// A human-readable message on stderr (silent with `--json`, whose stdout is machine-read).
    pub fn note(&self, message: impl AsRef<str>) {
        if self.mode != Mode::Json {
            with_bar_suspended(|| eprintln!("{}", message.as_ref()));
        }
    }

    /// Whether results go out as JSON.
    pub fn json(&self) -> bool {
        self.mode == Mode::Json
    }
}

/// The live bar, if any, so that messages and errors print above it instead of through it.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Runs `f` with the bar (if any) hidden, so its output is not torn by a redraw.
pub fn with_bar_suspended(f: impl FnOnce()) {
    let bar = BAR.lock().expect("bar lock").clone();
    match bar {
        Some(b) => b.suspend(f),
        None => f(),
    }
}

/// Removes the bar from the screen (before an error is printed).
pub fn clear_bars() {
    if let Some(b) = BAR.lock().expect("bar lock").take() {
        b.finish_and_clear();
    }
}

/// A progress bar over `total` steps starting at `done`, shown on stderr.
pub fn start_bar(label: &str, done: u64, total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{prefix:>8} [{bar:28.cyan/blue}] {pos}/{len} {msg} (elapsed {elapsed}, ETA {eta})",
    )
    .expect("a valid template")
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(label.to_string());
    bar.set_position(done);
    bar.enable_steady_tick(Duration::from_millis(250));
    *BAR.lock().expect("bar lock") = Some(bar.clone());
    bar
}

/// Forgets the bar (after the run).
pub fn finish_bar(bar: &ProgressBar) {
    bar.finish_and_clear();
    BAR.lock().expect("bar lock").take();
}

/// A number for display: 4 significant digits, thousands as `k`.
pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let a = x.abs();
    if a >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 1.0 || a == 0.0 {
        format!("{x:.3}")
    } else {
        format!("{x:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_compact() {
        assert_eq!(fmt_num(12345.0), "12.3k");
        assert_eq!(fmt_num(1.23456), "1.235");
        assert_eq!(fmt_num(0.012345), "0.0123");
        assert_eq!(fmt_num(f64::NAN), "-");
    }

    #[test]
    fn flags_decide_the_mode() {
        assert_eq!(OutputArgs { quiet: false, json: true }.resolve().mode, Mode::Json);
        assert_eq!(OutputArgs { quiet: true, json: false }.resolve().mode, Mode::Quiet);
    }
}
