//! Child processes: `tenax upload` runs with deadlines, runs killed part way,
//! and peer clients whose output is drained while they run.

use std::io::Read as _;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tenax_testkit::TestServer;

use super::BIN;
use super::files::held_on_disk;

/// `tenax upload ARGS…` (no `TENAX_JOURNAL_DIR` from the environment).
fn upload_command(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("upload")
        .args(args)
        .env_remove("TENAX_JOURNAL_DIR")
        .stdin(Stdio::null());
    command
}

/// `tenax upload ARGS…`, waited for at most `timeout`.
pub(crate) fn run_cli(args: &[&str], timeout: Duration) -> Output {
    let child = upload_command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tenax upload");
    wait_output(child, timeout)
}

/// Waits for `child` at most `timeout` (killing it after), collecting its output.
pub(crate) fn wait_output(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait().expect("try_wait") {
            Some(_) => break,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("wait");
                panic!(
                    "tenax upload did not finish within {timeout:?}; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    child.wait_with_output().expect("collect output")
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The single JSON line `tenax upload --json` prints on stdout.
pub(crate) fn json_line(out: &Output) -> Value {
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one JSON line on stdout: {stdout:?}; stderr: {}",
        text(&out.stderr)
    );
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", lines[0]))
}

/// Starts `tenax upload ARGS…` and SIGKILLs it once the server holds at
/// least `threshold` bytes of uploads in progress (within `timeout`);
/// returns the bytes held then.
pub(crate) fn start_and_kill_cli(
    server: &TestServer,
    args: &[&str],
    threshold: u64,
    timeout: Duration,
) -> u64 {
    let mut child = upload_command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tenax upload");
    let deadline = Instant::now() + timeout;
    let held = loop {
        let held = held_on_disk(server);
        if held >= threshold {
            break held;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("tenax upload exited ({status}) before the kill, server held {held}");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server never held {threshold} bytes (held {held})");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let exited = child.try_wait().expect("try_wait");
    child.kill().expect("kill the client");
    child.wait().expect("reap the client");
    assert!(exited.is_none(), "the client exited before the kill");
    held
}

/// How a peer client's run ended.
pub(crate) struct PeerRun {
    /// `None` when it was killed at the deadline.
    pub(crate) status: Option<ExitStatus>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) elapsed: Duration,
}

/// Runs `child` (stdout and stderr piped) for at most `timeout`, draining
/// both pipes on threads so that it never blocks on them; kills it at the
/// deadline.
pub(crate) fn run_peer(mut child: Child, timeout: Duration) -> PeerRun {
    let started = Instant::now();
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out_thread = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err_thread = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("cannot wait for the client") {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    PeerRun {
        status,
        stdout: out_thread.join().expect("stdout reader panicked"),
        stderr: err_thread.join().expect("stderr reader panicked"),
        elapsed: started.elapsed(),
    }
}

/// A peer's run to its end, with the JSON object of its last stdout line
/// (the report every driver in `tests/peers` prints), if it printed one.
pub(crate) struct DriverRun {
    pub(crate) run: PeerRun,
    pub(crate) label: String,
    pub(crate) report: Option<Value>,
}

/// Runs `command` (stdin closed, outputs drained) for at most `timeout`
/// and copies its stderr into the test's under `label`, so that a failing
/// test shows what the peer said.
pub(crate) fn drive(mut command: Command, label: &str, timeout: Duration) -> DriverRun {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {label} ({:?}: {e}): run scripts/test to install the peers",
                command.get_program()
            )
        });
    let run = run_peer(child, timeout);
    eprintln!("--- {label} ({:?}) ---\n{}", run.elapsed, run.stderr);
    let report = run
        .stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok());
    DriverRun {
        run,
        label: label.to_owned(),
        report,
    }
}

impl DriverRun {
    /// The JSON line of a peer that exited 0; panics otherwise.
    pub(crate) fn succeeded(self) -> Value {
        let DriverRun { run, label, report } = self;
        match run.status {
            None => panic!(
                "{label} did not finish within {:?}\nstdout:\n{}",
                run.elapsed, run.stdout
            ),
            Some(status) if !status.success() => panic!(
                "{label} failed ({status}): {}\n(its stderr is above)\nstdout:\n{}",
                report
                    .as_ref()
                    .and_then(|report| report["error"].as_str())
                    .unwrap_or("(no JSON report)"),
                run.stdout
            ),
            Some(_) => {}
        }
        report.unwrap_or_else(|| panic!("{label} printed no JSON line: {:?}", run.stdout))
    }

    /// The report of a driver that exited 0 and said `"ok": true`; panics
    /// otherwise.
    pub(crate) fn ok(self) -> Value {
        let label = self.label.clone();
        let report = self.succeeded();
        assert_eq!(report["ok"], Value::Bool(true), "{label}: {report}");
        report
    }
}
