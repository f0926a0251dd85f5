//! A reward computed by the user's own program, in any language, over JSON lines.
//!
//! Protocol: the program is started once (no shell; `argv[0]` is looked up in `PATH`). For each
//! completion it reads one line on stdin,
//! `{"prompt": "...", "completion": "...", "reference": {...}, "completion_len": 12}`,
//! and must write one line on stdout: a number, `null` (unscorable), `{"score": number|null}`, or
//! `{"error": "message"}`. Anything else, no answer within the timeout, or the program exiting is
//! an error that names the command and the example. After an error the program is killed and
//! started again on the next call, so one bad line cannot shift later answers. Its stderr is kept
//! (the last 2 KiB) and quoted in crash messages.

use crate::reward::{describe_example, score_checked};
use crate::{Reward, RewardError, RewardInput, Score, Scored};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The longest answer line we accept; longer output is malformed (and memory stays bounded).
const MAX_LINE: usize = 1 << 20;
/// How much of the program's stderr is kept for error messages.
const STDERR_TAIL: usize = 2048;

/// A reward computed by an external process; see the module docs for the protocol.
pub struct ExternalReward {
    name: String,
    argv: Vec<String>,
    timeout: Duration,
    process: Mutex<Option<Process>>,
}

/// A running program with one thread per pipe, so that neither a full stdin pipe nor an
/// unread stdout or stderr can block us: we only ever wait on a channel, with a deadline.
struct Process {
    child: Child,
    to_child: Option<Sender<Vec<u8>>>,
    from_child: Receiver<Result<Vec<u8>, String>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Process {
    fn spawn(argv: &[String]) -> Result<Self, String> {
        let (program, args) = argv.split_first().ok_or("the command is empty")?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let (mut stdin, stdout, mut stderr_pipe) =
            match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
                (Some(i), Some(o), Some(e)) => (i, o, e),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("could not open the pipes".into());
                }
            };

        let (to_child, lines_in) = mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            for line in lines_in {
                if stdin.write_all(&line).and_then(|_| stdin.flush()).is_err() {
                    break;
                }
            }
        });

        let (answers, from_child) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut buf = Vec::new();
                let answer = match (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf) {
                    Ok(0) => break, // EOF: dropping the sender tells the caller.
                    Ok(_) if buf.len() > MAX_LINE => {
                        Err(format!("an answer line longer than {MAX_LINE} bytes"))
                    }
                    Ok(_) => Ok(buf),
                    Err(e) => Err(format!("reading its stdout failed: {e}")),
                };
                let stop = answer.is_err();
                if answers.send(answer).is_err() || stop {
                    break;
                }
            }
        });

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let tail = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stderr_pipe.read(&mut chunk) {
                let mut t = lock(&tail);
                t.extend_from_slice(&chunk[..n]);
                let excess = t.len().saturating_sub(STDERR_TAIL);
                t.drain(..excess);
            }
        });

        Ok(Self { child, to_child: Some(to_child), from_child, stderr })
    }

    /// Sends one request line and waits for one answer line until `timeout`.
    fn exchange(&mut self, line: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, String> {
        // A line already waiting was never asked for: the program answers out of step.
        match self.from_child.try_recv() {
            Ok(extra) => {
                let shown: String =
                    String::from_utf8_lossy(&extra.unwrap_or_default()).chars().take(200).collect();
                return Err(format!("it wrote a line nobody asked for ({shown:?}): one answer per request"));
            }
            Err(TryRecvError::Disconnected) => return Err(self.exit_report()),
            Err(TryRecvError::Empty) => {}
        }
        let sent = self.to_child.as_ref().is_some_and(|tx| tx.send(line).is_ok());
        if !sent {
            return Err(self.exit_report());
        }
        match self.from_child.recv_timeout(timeout) {
            Ok(answer) => answer,
            Err(RecvTimeoutError::Timeout) => Err(format!("no answer within {timeout:?}")),
            Err(RecvTimeoutError::Disconnected) => Err(self.exit_report()),
        }
    }

    /// Describes a program that closed its stdout: its exit status (if it has exited) and stderr.
    fn exit_report(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_millis(500);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break format!("it exited ({status})"),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                _ => break "it closed its stdout".to_string(),
            }
        };
        // Give the stderr thread a moment to read the last words.
        std::thread::sleep(Duration::from_millis(20));
        let tail = String::from_utf8_lossy(&lock(&self.stderr)).trim().to_string();
        if tail.is_empty() { status } else { format!("{status}; stderr: {tail}") }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Closing stdin lets a well-behaved program finish; then make sure it is gone.
        self.to_child = None;
        let deadline = Instant::now() + Duration::from_millis(200);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads one answer line: a number, `null`, `{"score": …}` or `{"error": "…"}`.
fn parse_answer(line: &[u8]) -> Result<Score, String> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    let malformed = || {
        let shown: String = text.chars().take(200).collect();
        format!("malformed answer {shown:?} (expected a number, null, {{\"score\": …}} or {{\"error\": …}})")
    };
    let value: Value = serde_json::from_str(text).map_err(|_| malformed())?;
    let score = match &value {
        Value::Object(o) if o.contains_key("error") => {
            return Err(format!("it reported an error: {}", o["error"]));
        }
        Value::Object(o) => o.get("score").ok_or_else(malformed)?,
        v => v,
    };
    match score {
        Value::Null => Ok(Score::Unscorable),
        Value::Number(n) => n.as_f64().map(Score::Value).ok_or_else(malformed),
        _ => Err(malformed()),
    }
}

/// `argv` as one readable line for messages.
fn command_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| if a.is_empty() || a.contains(char::is_whitespace) { format!("{a:?}") } else { a.clone() })
        .collect::<Vec<_>>()
        .join(" ")
}

impl ExternalReward {
    /// Starts `argv` (program and arguments, no shell) with a 30 s timeout per completion.
    pub fn new<S: AsRef<str>>(argv: &[S]) -> Result<Self, RewardError> {
        let argv: Vec<String> = argv.iter().map(|a| a.as_ref().to_string()).collect();
        let process = Process::spawn(&argv)
            .map_err(|reason| RewardError::ExternalStart { command: command_line(&argv), reason })?;
        Ok(Self {
            name: "external".into(),
            argv,
            timeout: Duration::from_secs(30),
            process: Mutex::new(Some(process)),
        })
    }

    /// The longest wait for one answer (including the program's start-up after a restart).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Renames the reward (its metric key); the default is `external`.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    fn call(&self, input: &RewardInput<'_>, example: impl Fn() -> String) -> Result<Score, RewardError> {
        let fail = |reason: String| RewardError::External {
            command: command_line(&self.argv),
            example: example(),
            reason,
        };
        let request = json!({
            "prompt": input.prompt,
            "completion": input.completion,
            "reference": input.reference,
            "completion_len": input.completion_len,
        });
        let mut line = serde_json::to_vec(&request).map_err(|e| fail(e.to_string()))?;
        line.push(b'\n');

        let mut slot = lock(&self.process);
        if slot.is_none() {
            *slot = Some(Process::spawn(&self.argv).map_err(|e| fail(format!("restarting it failed: {e}")))?);
        }
        let outcome = match slot.as_mut() {
            Some(p) => p.exchange(line, self.timeout).and_then(|answer| parse_answer(&answer)),
            None => Err("it is not running".to_string()),
        };
        if outcome.is_err() {
            // Kill it (Drop) so that a late or extra line cannot be read as the next answer.
            *slot = None;
        }
        outcome.map_err(fail)
    }
}

impl Reward for ExternalReward {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, input: &RewardInput<'_>) -> Result<Score, RewardError> {
        self.call(input, || describe_example(input.prompt))
    }

    /// One program answers one line at a time, so a batch is scored in order, naming each
    /// failing example by its index in the batch and its prompt.
    fn score_batch(&self, inputs: &[RewardInput<'_>]) -> Vec<Result<Scored, RewardError>> {
        inputs
            .iter()
            .enumerate()
            .map(|(i, input)| {
                let s = self.call(input, || format!("batch item {i}, {}", describe_example(input.prompt)))?;
                score_checked(&FixedScore(self.name(), s), input)
            })
            .collect()
    }
}

/// Carries an already computed score through [`score_checked`]'s finiteness check.
struct FixedScore<'a>(&'a str, Score);

impl Reward for FixedScore<'_> {
    fn name(&self) -> &str {
        self.0
    }
    fn score(&self, _: &RewardInput<'_>) -> Result<Score, RewardError> {
        Ok(self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        assert_eq!(parse_answer(b"0.5\n"), Ok(Score::Value(0.5)));
        assert_eq!(parse_answer(b" 1 "), Ok(Score::Value(1.0)));
        assert_eq!(parse_answer(b"null\n"), Ok(Score::Unscorable));
        assert_eq!(parse_answer(br#"{"score": -2}"#), Ok(Score::Value(-2.0)));
        assert_eq!(parse_answer(br#"{"score": null}"#), Ok(Score::Unscorable));
        assert!(parse_answer(br#"{"error": "no gold"}"#).unwrap_err().contains("no gold"));
        for bad in [&b"NaN"[..], b"yes", b"", b"\"1\"", b"[1]", br#"{"scor": 1}"#, b"1e999", b"\xff\xfe"] {
            assert!(parse_answer(bad).unwrap_err().contains("malformed"), "{bad:?}");
        }
    }

    #[test]
    fn command_lines_quote_spaces() {
        assert_eq!(command_line(&["python3".into(), "my script.py".into()]), "python3 \"my script.py\"");
    }

    #[test]
    fn missing_program_is_a_start_error() {
        let e = ExternalReward::new(&["pglm-no-such-program-xyz"]).err().unwrap();
        assert!(matches!(e, RewardError::ExternalStart { .. }), "{e}");
        assert!(matches!(ExternalReward::new::<&str>(&[]), Err(RewardError::ExternalStart { .. })));
    }
}
