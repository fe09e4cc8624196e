//! A `redis-server` of the test's own ([`RedisServer`]): on a free port, in memory only,
//! open or behind `--requirepass`, killed on drop (a test drops it to take Redis away).

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;

use crate::{free_port, wait_until};

/// A running `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Start one without a password and wait (up to 10 s) until it listens.
    pub async fn start() -> anyhow::Result<RedisServer> {
        RedisServer::spawn(&[]).await
    }

    /// Start one requiring `password` and wait (up to 10 s) until it listens.
    pub async fn start_with_password(password: &str) -> anyhow::Result<RedisServer> {
        RedisServer::spawn(&["--requirepass", password]).await
    }

    async fn spawn(extra: &[&str]) -> anyhow::Result<RedisServer> {
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("redis-server is installed")?;
        let server = RedisServer { child, port };
        wait_until(Duration::from_secs(10), "redis-server to listen", || {
            let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            async move { up }
        })
        .await?;
        Ok(server)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A `REDIS_URL` for it when it was started without a password.
    pub fn open_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its `used_memory_peak` (`INFO memory`), in bytes; `None` when `redis-cli` cannot say.
    pub fn peak_memory(&self) -> Option<u64> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "info", "memory"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("used_memory_peak:"))
            .and_then(|v| v.trim().parse().ok())
    }

    /// A `REDIS_URL` for it logging in with `password` (its own or a wrong one).
    pub fn url(&self, password: &str) -> String {
        format!("redis://:{password}@127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
