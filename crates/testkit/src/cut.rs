//! A TCP proxy whose link can be cut: tests put it between a stage and a real service
//! (PostgreSQL, Redis) to take the service away and bring it back, without touching the
//! service itself.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::Context as _;
use tokio::{net::TcpListener, sync::Mutex, task::JoinSet};

/// A proxy on a free local port forwarding to `target` while up.
#[derive(Debug)]
pub struct CutProxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Start forwarding to `target` (e.g. `127.0.0.1:5432`).
    pub async fn start(target: &str) -> anyhow::Result<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("bind")?;
        let addr = listener.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<JoinSet<()>>> = Arc::new(Mutex::new(JoinSet::new()));
        let target = target.to_owned();
        let accept = tokio::spawn({
            let (up, links) = (up.clone(), links.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        continue; // dropped: the service is "down"
                    }
                    let target = target.clone();
                    links.lock().await.spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                }
            }
        });
        Ok(CutProxy {
            addr,
            up,
            links,
            accept,
        })
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Cut every open connection and refuse new ones until [`CutProxy::restore`].
    pub async fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.links.lock().await.abort_all();
    }

    /// Accept and forward connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
