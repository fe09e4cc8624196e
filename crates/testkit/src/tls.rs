//! A TLS front for the test broker: TLS on its own port, with a certificate made for the run,
//! and plain TCP to the broker behind it. Tansu 0.6.0 cannot serve TLS itself (its `--cert`
//! and `--key` flags sit in one exclusive argument group, yet it enables TLS only with both),
//! so this is how tests check the stages' Kafka TLS settings against a real broker.

use std::{
    net::TcpListener as StdListener,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread::JoinHandle,
};

use anyhow::Context as _;
use rcgen::CertifiedKey;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinSet,
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        ServerConfig,
        crypto::aws_lc_rs,
        pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
    },
};

/// TLS on a free local port, forwarding each connection to a broker's plain listener.
/// Stopped on drop.
#[derive(Debug)]
pub struct TlsFront {
    port: u16,
    ca: PathBuf,
    handshakes: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TlsFront {
    /// Serve TLS for `127.0.0.1` and `localhost` with a new self-signed certificate, which
    /// [`TlsFront::ca_location`] holds for clients to trust, forwarding to `upstream` (a port
    /// on 127.0.0.1). The front runs on a thread of its own, so sync and async tests can use it.
    pub fn start(upstream: u16) -> anyhow::Result<TlsFront> {
        let CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .context("make the broker's certificate")?;
        let dir = tempfile::tempdir().context("temp dir for the certificate")?;
        let ca = dir.path().join("broker-ca.pem");
        std::fs::write(&ca, cert.pem()).context("write the certificate")?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
        let config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .context("TLS server settings")?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = StdListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let (handshakes, refused) = (Arc::default(), Arc::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let counters = (Arc::clone(&handshakes), Arc::clone(&refused));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("the TLS front's runtime")?;
        let thread = std::thread::Builder::new()
            .name("tls-front".into())
            .spawn(move || {
                runtime.block_on(serve(listener, acceptor, upstream, counters, stopped));
            })
            .context("start the TLS front")?;
        Ok(TlsFront {
            port,
            ca,
            handshakes,
            refused,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The certificate (PEM) clients must trust: librdkafka's `ssl.ca.location`, a stage's
    /// `KAFKA_SSL_CA_LOCATION`.
    pub fn ca_location(&self) -> &Path {
        &self.ca
    }

    /// The environment of a binary (a stage, the connector, pipelinectl) that speaks TLS to
    /// this front and trusts its certificate.
    pub fn client_env(&self) -> [(&'static str, String); 2] {
        [
            ("KAFKA_SECURITY_PROTOCOL", "ssl".to_owned()),
            ("KAFKA_SSL_CA_LOCATION", self.ca.display().to_string()),
        ]
    }

    /// Connections whose TLS handshake completed so far.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// Connections whose TLS handshake failed so far (a client that did not trust the
    /// certificate, or that spoke plaintext).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accept until stopped; each connection is a TLS handshake, then bytes both ways.
async fn serve(
    listener: StdListener,
    acceptor: TlsAcceptor,
    upstream: u16,
    (handshakes, refused): (Arc<AtomicUsize>, Arc<AtomicUsize>),
    mut stopped: oneshot::Receiver<()>,
) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    let mut links = JoinSet::new();
    loop {
        let client = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
        };
        let (acceptor, handshakes, refused) = (
            acceptor.clone(),
            Arc::clone(&handshakes),
            Arc::clone(&refused),
        );
        links.spawn(async move {
            let Ok(mut tls) = acceptor.accept(client).await else {
                refused.fetch_add(1, Ordering::SeqCst);
                return;
            };
            handshakes.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut broker) = TcpStream::connect(("127.0.0.1", upstream)).await {
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
            }
        });
        while links.try_join_next().is_some() {}
    }
    links.abort_all();
}
