//! A Tansu broker process for one test: free port, private log file, killed on drop.

use std::{
    fs::File,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use rdkafka::{
    ClientConfig,
    consumer::{BaseConsumer, Consumer},
};

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A TCP port that was free a moment ago (bound to 127.0.0.1:0 and released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Where the broker keeps its records.
#[derive(Debug, Clone)]
pub enum Storage {
    /// In memory (the prebuilt binary); gone when the process stops.
    Memory,
    /// A storage-engine URL for the durable build, e.g. `sqlite://tansu.db` (relative paths
    /// are inside the broker's own temporary directory) or `postgres://…`.
    Durable(String),
}

/// A running broker. Dropping it kills the process.
#[derive(Debug)]
pub struct Broker {
    child: Option<Child>,
    port: u16,
    storage: Storage,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Start the prebuilt broker with memory storage on a free port and wait until it serves
    /// metadata.
    pub fn start_memory() -> anyhow::Result<Broker> {
        Broker::start(Storage::Memory)
    }

    /// A memory broker holding `topics` (with their partitions and `.dlq` side topics), and
    /// its bootstrap address.
    pub async fn with_stage_topics(topics: &[topics::Topic]) -> anyhow::Result<(Broker, String)> {
        let broker = Broker::start_memory()?;
        let bootstrap = broker.bootstrap();
        crate::create_stage_topics(&bootstrap, topics).await?;
        Ok((broker, bootstrap))
    }

    /// Start a broker with `storage` on a free port and wait until it serves metadata.
    pub fn start(storage: Storage) -> anyhow::Result<Broker> {
        let dir = tempfile::tempdir().context("temp dir for the broker log")?;
        let log = dir.path().join("tansu.log");
        let mut broker = Broker {
            child: None,
            port: free_port()?,
            storage,
            log,
            _dir: dir,
        };
        broker.spawn()?;
        Ok(broker)
    }

    fn binary(&self) -> anyhow::Result<PathBuf> {
        let (name, hint) = match self.storage {
            Storage::Memory => ("tansu", "scripts/install-tansu.sh"),
            Storage::Durable(_) => ("tansu-durable", "scripts/install-tansu.sh --durable"),
        };
        let path = repo_root().join(".local/bin").join(name);
        if !path.exists() {
            bail!(
                "no broker at {}: run {hint} (make test does it first)",
                path.display()
            );
        }
        Ok(path)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let binary = self.binary()?;
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let engine = match &self.storage {
            Storage::Memory => "memory://tansu/".to_owned(),
            Storage::Durable(url) => url.clone(),
        };
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .context("broker log")?;
        let child = Command::new(&binary)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", &engine])
            // Relative storage paths (sqlite://tansu.db) land in the broker's own directory.
            .current_dir(self._dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(30))
    }

    fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("log_level", "0")
            .create()
            .context("metadata client")?;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "broker exited with {status} before it was ready:\n{}",
                    self.log_tail()
                );
            }
            if consumer
                .fetch_metadata(None, Duration::from_millis(500))
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "broker on {} not ready within {within:?}:\n{}",
                    self.bootstrap(),
                    self.log_tail()
                );
            }
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The last lines of the broker's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Kill the broker at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kill and start again on the same port (a durable broker keeps its records).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}
