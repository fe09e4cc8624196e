//! The peers: generic and Slack-compatible webhooks over HTTP (reqwest), e-mail over SMTP
//! (lettre) and the secrets channels refer to (files in a mounted secrets directory).
//!
//! Errors are turned into [`DeliveryError`]s that name what failed without the target: a
//! reqwest error is stripped of its URL, an SMTP reply is reduced to its code (a server's
//! reply text may echo the recipient's address).

use std::{path::PathBuf, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use uuid::Uuid;

use crate::{key::message_id, retry::DeliveryError};

/// How the stage reaches its peers.
pub struct Transports {
    http: reqwest::Client,
    smtp: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    secrets_dir: PathBuf,
}

impl std::fmt::Debug for Transports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the SMTP URL: it may hold credentials.
        f.debug_struct("Transports")
            .field("secrets_dir", &self.secrets_dir)
            .finish_non_exhaustive()
    }
}

impl Transports {
    /// Transports with a per-call `timeout`, an SMTP server at `smtp_url` (`smtp://host:port`
    /// in plain text, `?tls=required` for STARTTLS, `smtps://` for implicit TLS; credentials
    /// as `smtp://user:password@host`), sending as `smtp_from`, and secrets read from
    /// `secrets_dir`.
    pub fn new(
        timeout: Duration,
        smtp_url: &str,
        smtp_from: &str,
        secrets_dir: PathBuf,
    ) -> anyhow::Result<Transports> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A webhook answers itself; a redirect is a misconfigured channel, and following
            // one would replay the POST somewhere the org did not configure.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| anyhow::anyhow!("HTTP client: {e}"))?;
        let smtp = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
            .map_err(|e| anyhow::anyhow!("--smtp-url is not a valid SMTP URL: {e}"))?
            .timeout(Some(timeout))
            .build();
        let from = smtp_from
            .parse::<Mailbox>()
            .map_err(|e| anyhow::anyhow!("--smtp-from is not a valid address: {e}"))?;
        Ok(Transports {
            http,
            smtp,
            from,
            secrets_dir,
        })
    }

    /// The secret named `name`: the file `<secrets-dir>/<name>` (a Kubernetes secret
    /// mount), trailing newline removed. Names are single path components.
    pub async fn secret(&self, name: &str) -> Result<String, DeliveryError> {
        let valid =
            !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
        if !valid {
            return Err(DeliveryError::Config(
                "secret_ref is not a plain secret name".into(),
            ));
        }
        let value = tokio::fs::read_to_string(self.secrets_dir.join(name))
            .await
            .map_err(|e| {
                DeliveryError::Config(format!("secret {name:?} cannot be read: {}", e.kind()))
            })?;
        Ok(value.trim_end_matches(['\r', '\n']).to_owned())
    }

    /// POST `body` as JSON to `url` with the `Idempotency-Key` header, and `Authorization:
    /// Bearer <secret>` when there is a secret. Success is any 2xx.
    pub async fn post_json(
        &self,
        url: &str,
        key: Uuid,
        secret: Option<&str>,
        body: &serde_json::Value,
    ) -> Result<(), DeliveryError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|_| DeliveryError::Config("target is not a valid URL".into()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(DeliveryError::Config("target is not an http(s) URL".into()));
        }
        let body = serde_json::to_vec(body)
            .map_err(|e| DeliveryError::Transport(format!("encoding the body: {e}")))?;
        let mut request = self
            .http
            .post(parsed)
            .header("Idempotency-Key", key.to_string())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body);
        if let Some(secret) = secret {
            let mut value = HeaderValue::from_str(&format!("Bearer {secret}"))
                .map_err(|_| DeliveryError::Config("secret is not a valid header value".into()))?;
            value.set_sensitive(true);
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(DeliveryError::Status(response.status().as_u16())),
            Err(e) => Err(http_error(e)),
        }
    }

    /// Send a plain-text e-mail to `to` with the `Message-ID` derived from `key`.
    pub async fn email(
        &self,
        to: &str,
        key: Uuid,
        subject: String,
        body: String,
    ) -> Result<(), DeliveryError> {
        let to = to
            .parse::<Mailbox>()
            .map_err(|_| DeliveryError::Config("target is not a valid e-mail address".into()))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(format!("<{}>", message_id(key))))
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| DeliveryError::Config(format!("e-mail cannot be built: {e}")))?;
        self.smtp
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| smtp_error(&e))
    }
}

/// A reqwest error without its URL.
fn http_error(e: reqwest::Error) -> DeliveryError {
    if e.is_timeout() {
        DeliveryError::Timeout
    } else if e.is_connect() {
        DeliveryError::Connect(root_cause(&e))
    } else if e.is_builder() {
        DeliveryError::Config("the request cannot be built".into())
    } else {
        DeliveryError::Transport(e.without_url().to_string())
    }
}

/// The innermost cause of `e` (e.g. "Connection refused"): never holds the URL.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// An SMTP error by its class and reply code only.
fn smtp_error(e: &lettre::transport::smtp::Error) -> DeliveryError {
    let code = e
        .status()
        .map_or_else(|| "without a code".to_owned(), |c| c.to_string());
    if e.is_permanent() {
        DeliveryError::SmtpPermanent(code)
    } else if e.is_transient() {
        DeliveryError::SmtpTransient(code)
    } else if e.is_timeout() {
        DeliveryError::Timeout
    } else if e.is_tls() {
        DeliveryError::Connect("TLS handshake failed".into())
    } else if e.is_client() {
        DeliveryError::Config("the SMTP client refused the message".into())
    } else {
        DeliveryError::Connect("SMTP connection failed".into())
    }
}
