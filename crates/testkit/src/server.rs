//! The real server binary, driven from a test.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `tenax serve`, killed when dropped.
#[derive(Debug)]
pub struct TestServer {
    binary: PathBuf,
    data: PathBuf,
    _temp: Option<tempfile::TempDir>,
    child: Option<Child>,
    addr: SocketAddr,
    /// `http` or `https`, as the server announced.
    scheme: &'static str,
    extra_args: Vec<String>,
    /// Environment variables set for the server.
    envs: Vec<(String, String)>,
}

impl TestServer {
    /// Starts `binary serve` on `127.0.0.1:0` with a fresh temporary data directory.
    pub fn start(binary: impl AsRef<Path>) -> Self {
        Self::start_with(binary, &[])
    }

    /// Like [`TestServer::start`], with more arguments for `serve`.
    pub fn start_with(binary: impl AsRef<Path>, extra_args: &[&str]) -> Self {
        let temp = tempfile::tempdir().expect("cannot create a temporary directory");
        let data = temp.path().join("data");
        let mut server = TestServer {
            binary: binary.as_ref().to_owned(),
            data,
            _temp: Some(temp),
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            scheme: "http",
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            envs: Vec::new(),
        };
        server.spawn("127.0.0.1:0");
        server
    }
    /// Like [`TestServer::start_with`], on the given `--data`: a directory
    /// the caller owns, or an `s3://` URL.
    pub fn start_at(
        binary: impl AsRef<Path>,
        data: impl Into<PathBuf>,
        extra_args: &[&str],
    ) -> Self {
        Self::start_at_with_env(binary, data, extra_args, &[])
    }

    /// Like [`TestServer::start_at`], with these environment variables set
    /// for the server (e.g. `AWS_ENDPOINT_URL`, to reach the object store
    /// through a proxy).
    pub fn start_at_with_env(
        binary: impl AsRef<Path>,
        data: impl Into<PathBuf>,
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        let mut server = TestServer {
            binary: binary.as_ref().to_owned(),
            data: data.into(),
            _temp: None,
            child: None,
            scheme: "http",
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            envs: envs
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        };
        server.spawn("127.0.0.1:0");
        server
    }

    fn spawn(&mut self, listen: &str) {
        let mut child = Command::new(&self.binary)
            .arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--data")
            .arg(&self.data)
            .args(&self.extra_args)
            .envs(self.envs.iter().map(|(key, value)| (key, value)))
            .env(
                "TENAX_LOG",
                std::env::var("TENAX_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start the server binary");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = sender.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = receiver
            .recv_timeout(START_TIMEOUT)
            .expect("the server did not print its address");
        let (scheme, addr) = [
            ("https", "listening on https://"),
            ("http", "listening on http://"),
        ]
        .into_iter()
        .find_map(|(scheme, prefix)| {
            let addr = line.strip_prefix(prefix)?.parse().ok()?;
            Some((scheme, addr))
        })
        .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"));
        self.addr = addr;
        self.scheme = scheme;
        self.child = Some(child);
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` (`https://` when the server serves TLS) followed by
    /// `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Kills the server with SIGKILL and waits for it to die.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal (`"HUP"`, `"STOP"`, ...) to the running server.
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(child.id().to_string())
                .status()
                .expect("cannot run kill");
            assert!(status.success(), "kill -{name} failed");
        }
    }

    /// Sends SIGTERM and waits (at most `timeout`) for a clean exit; returns
    /// whether the process exited by itself.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Starts the server again on the same port and data directory (after
    /// [`TestServer::kill9`] or [`TestServer::terminate`]).
    pub fn restart(&mut self) {
        self.kill9();
        let listen = self.addr.to_string();
        self.spawn(&listen);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}
