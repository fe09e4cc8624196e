//! A stage binary run by a test: started with the environment the test gives plus a free
//! metrics port, its stdout and stderr appended to a log file the test prints on failure,
//! killed with SIGKILL on drop (or when the test kills it on purpose).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
};

use crate::free_port;

/// A running stage process.
#[derive(Debug)]
pub struct StageProcess {
    child: Option<Child>,
    log: PathBuf,
    metrics_port: u16,
}

impl StageProcess {
    /// Start the binary at `bin` (e.g. `env!("CARGO_BIN_EXE_gold")`) with `envs`, logging to
    /// `log` (appended, so a restart keeps the first run's lines). `METRICS_LISTEN` is set to
    /// a free port, `LOG_FORMAT` to json and `RUST_LOG` to info unless `envs` set them.
    pub fn spawn(bin: &str, envs: &[(&str, String)], log: &Path) -> anyhow::Result<StageProcess> {
        let metrics_port = free_port()?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut cmd = Command::new(bin);
        cmd.env("METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(file.try_clone()?)
            .stderr(file);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {bin}: {e}"))?;
        Ok(StageProcess {
            child: Some(child),
            log: log.to_owned(),
            metrics_port,
        })
    }

    /// The port of its /metrics, /healthz and /readyz.
    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    /// Whether its `/readyz` answers 200 (running, partitions assigned, breaker closed).
    pub fn ready(&self) -> bool {
        use std::io::{Read as _, Write as _};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        let mut answer = String::new();
        stream
            .write_all(b"GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .and_then(|()| stream.read_to_string(&mut answer))
            .is_ok_and(|_| answer.split_whitespace().nth(1) == Some("200"))
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything it logged so far (all runs sharing the log file).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL it and reap it: no shutdown hook runs, as in a crash or an OOM kill.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Wait up to `within` for it to exit on its own; `None` if it still runs.
    pub async fn wait_exit(
        &mut self,
        within: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if self.child.is_none() || std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM it (as Kubernetes stops a pod) and wait up to `within` for it to exit.
    pub async fn terminate(
        &mut self,
        within: std::time::Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.pid().ok_or_else(|| anyhow::anyhow!("not running"))?;
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        anyhow::ensure!(sent.success(), "kill -TERM {pid} failed");
        self.wait_exit(within)
            .await
            .ok_or_else(|| anyhow::anyhow!("still running {within:?} after SIGTERM"))
    }

    /// Whether it has exited (and how), without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for StageProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
