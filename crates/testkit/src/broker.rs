//! A Tansu broker process for one test: free port, private log file, killed on drop; with
//! the durable build, restartable with its records and SCRAM users, and behind TLS.

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

use crate::TlsFront;

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
    /// Once [`Broker::require_login`] ran: the SCRAM-SHA-512 user and password clients (and
    /// the readiness check) log in with.
    login: Option<(String, String)>,
    /// Once [`Broker::serve_tls`] ran: the TLS front clients reach the broker through.
    tls: Option<TlsFront>,
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
            login: None,
            tls: None,
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
        // Behind TLS, metadata sends every client to the front.
        let advertised = format!("tcp://{}", self.bootstrap());
        let engine = match &self.storage {
            Storage::Memory => "memory://tansu/".to_owned(),
            Storage::Durable(url) => url.clone(),
        };
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .context("broker log")?;
        let mut command = Command::new(&binary);
        command
            .arg("broker")
            .args([
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", &engine]);
        if self.login.is_some() {
            command.arg("--authentication");
        }
        let child = command
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
        let consumer: BaseConsumer = self
            .client_config()
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

    /// `127.0.0.1:<port>`: the broker's own port, or its TLS front's once it serves TLS.
    pub fn bootstrap(&self) -> String {
        let port = self.tls.as_ref().map_or(self.port, TlsFront::port);
        format!("127.0.0.1:{port}")
    }

    /// [`crate::client_config`] for this broker: over TLS trusting its certificate once it
    /// serves TLS, logged in once it requires a login.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = crate::client_config(&self.bootstrap());
        let protocol = match (&self.tls, &self.login) {
            (None, None) => return config,
            (Some(_), None) => "ssl",
            (None, Some(_)) => "sasl_plaintext",
            (Some(_), Some(_)) => "sasl_ssl",
        };
        config.set("security.protocol", protocol);
        if let Some(front) = &self.tls {
            config.set("ssl.ca.location", front.ca_location().display().to_string());
        }
        if let Some((user, password)) = &self.login {
            config
                .set("sasl.mechanism", "SCRAM-SHA-512")
                .set("sasl.username", user)
                .set("sasl.password", password);
        }
        config
    }

    /// The TLS front, once [`Broker::serve_tls`] ran.
    pub fn tls(&self) -> Option<&TlsFront> {
        self.tls.as_ref()
    }

    /// Create a SCRAM-SHA-512 user with Tansu's own client (`tansu user create`). Only the
    /// durable build keeps it across a restart, and only a broker that does not yet require a
    /// login accepts it: create users first, then [`Broker::require_login`].
    pub fn create_user(&self, name: &str, password: &str) -> anyhow::Result<()> {
        let binary = self.binary()?;
        let out = Command::new(&binary)
            .args(["user", "create", name, password, "--mechanism", "scram512"])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {} user create", binary.display()))?;
        if !out.status.success() {
            bail!(
                "tansu user create {name} exited with {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Restart requiring a SASL login (`--authentication`); `user` and `password` are what
    /// [`Broker::client_config`] and the readiness check log in with from now on.
    pub fn require_login(&mut self, user: &str, password: &str) -> anyhow::Result<()> {
        self.kill();
        self.login = Some((user.to_owned(), password.to_owned()));
        self.spawn()
    }

    /// Restart serving clients over TLS only: a [`TlsFront`] with a certificate made for the
    /// run on a new port, which [`Broker::bootstrap`] and the broker's metadata name from now
    /// on. With memory storage the restart loses every record: fill after it, or use the
    /// durable build.
    pub fn serve_tls(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.tls = Some(TlsFront::start(self.port)?);
        self.spawn()
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
        self.restart_after(Duration::ZERO)
    }

    /// Kill, stay down for `down` (an outage of that length: clients see refused
    /// connections), then start again on the same port.
    pub fn restart_after(&mut self, down: Duration) -> anyhow::Result<()> {
        self.kill();
        std::thread::sleep(down);
        self.spawn()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}
