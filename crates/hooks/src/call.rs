//! Calling a hook: a signed webhook POST or a command with JSON on stdin.

use std::fmt;
use std::process::Stdio;
use std::time::Duration;

use hmac::{KeyInit as _, Mac as _};
use tokio::io::AsyncWriteExt as _;

/// The most of a hook's answer that is read (a webhook body, a command's
/// stdout): answers are small JSON documents.
const ANSWER_LIMIT: usize = 64 << 10;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The secret that signs webhook bodies. Its `Debug` does not show it.
#[derive(Clone)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A command line: the program and its arguments (no shell).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine(pub Vec<String>);

impl CommandLine {
    /// Splits `text` at whitespace; `None` when it is blank. There is no
    /// quoting: a command that needs it belongs in a script.
    pub fn parse(text: &str) -> Option<Self> {
        let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        (!words.is_empty()).then_some(CommandLine(words))
    }
}

/// What a hook answered.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The HTTP status, or for a command 200 on exit 0 and 403 otherwise.
    pub(crate) status: u16,
    /// The body or stdout (or, for a failed command with no stdout, stderr).
    pub(crate) body: Vec<u8>,
}

/// Makes hook calls: one HTTP client, one timeout, one secret.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    client: reqwest::Client,
    secret: Option<Secret>,
    timeout: Duration,
}

/// `sha256=HEX`: the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // Any key length is valid for HMAC.
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut text = String::with_capacity(7 + 2 * digest.len());
    text.push_str("sha256=");
    for byte in digest {
        use fmt::Write as _;
        let _ = write!(text, "{byte:02x}");
    }
    text
}

impl Caller {
    pub(crate) fn new(secret: Option<Secret>, timeout: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| error.to_string())?;
        Ok(Caller {
            client,
            secret,
            timeout,
        })
    }

    /// POSTs `body` (JSON) to `url` with the signature and `headers`.
    pub(crate) async fn post(
        &self,
        url: &str,
        body: &[u8],
        headers: &[(&'static str, &str)],
    ) -> Result<Answer, String> {
        let mut request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(secret) = &self.secret {
            request = request.header("tenax-signature", signature(&secret.0, body));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request.send().await.map_err(|error| error.to_string())?;
        let status = response.status().as_u16();
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|error| error.to_string())? {
            let room = ANSWER_LIMIT.saturating_sub(answer.len());
            answer.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if room <= chunk.len() {
                break;
            }
        }
        Ok(Answer {
            status,
            body: answer,
        })
    }

    /// Runs `command` with `input` on stdin and `env` set; killed at the
    /// timeout.
    pub(crate) async fn run(
        &self,
        command: &CommandLine,
        input: &[u8],
        env: &[(&'static str, &str)],
    ) -> Result<Answer, String> {
        let Some((program, args)) = command.0.split_first() else {
            return Err("empty command".into());
        };
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .envs(env.iter().map(|(name, value)| (*name, *value)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| format!("cannot run {program}: {error}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            let input = input.to_vec();
            // Written aside, so that a command that talks before it reads
            // cannot block on a full pipe. A command that ignores its input
            // closes the pipe early, which is fine.
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
            });
        }
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| format!("{program} did not finish within {:?}", self.timeout))?
            .map_err(|error| format!("{program} failed: {error}"))?;
        let mut body = output.stdout;
        let status = if output.status.success() {
            200
        } else {
            if body.iter().all(u8::is_ascii_whitespace) {
                body = output.stderr;
            }
            403
        };
        body.truncate(ANSWER_LIMIT);
        Ok(Answer { status, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn command_lines() {
        assert_eq!(CommandLine::parse("  "), None);
        assert_eq!(
            CommandLine::parse(" a  b\tc "),
            Some(CommandLine(vec!["a".into(), "b".into(), "c".into()]))
        );
    }

    #[tokio::test]
    async fn commands_get_stdin_and_are_killed_at_the_timeout() {
        let caller = Caller::new(None, Duration::from_secs(5)).expect("client");
        let cat = CommandLine::parse("cat").expect("command");
        let answer = caller.run(&cat, b"{\"a\":1}", &[]).await.expect("ran");
        assert_eq!(
            (answer.status, answer.body.as_slice()),
            (200, &b"{\"a\":1}"[..])
        );
        let fail = CommandLine::parse("false").expect("command");
        assert_eq!(caller.run(&fail, b"", &[]).await.expect("ran").status, 403);
        let quick = Caller::new(None, Duration::from_millis(200)).expect("client");
        let sleep = CommandLine::parse("sleep 30").expect("command");
        let started = std::time::Instant::now();
        assert!(quick.run(&sleep, b"", &[]).await.is_err());
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
