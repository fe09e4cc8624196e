//! A minimal SMTP server for tests ([`SmtpSink`]): speaks EHLO/HELO, MAIL FROM, RCPT TO, DATA,
//! RSET, NOOP and QUIT over plain TCP on a free port, and records every message it accepted
//! with its envelope and `Message-ID`. It can refuse the first messages with a transient
//! `451` reply, to test a sender's retries.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// One message the sink accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpMessage {
    /// The envelope sender (`MAIL FROM`), without angle brackets.
    pub from: String,
    /// The envelope recipients (`RCPT TO`), without angle brackets.
    pub to: Vec<String>,
    /// The message (headers and body) as received, dot-stuffing removed, CRLF line ends.
    pub data: String,
    /// The `Message-ID` header, without angle brackets.
    pub message_id: Option<String>,
}

#[derive(Debug, Default)]
struct Shared {
    messages: Mutex<Vec<SmtpMessage>>,
    /// Transactions still to refuse with `451`.
    refuse: AtomicUsize,
}

/// A running SMTP sink; dropping it stops the server.
#[derive(Debug)]
pub struct SmtpSink {
    port: u16,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl SmtpSink {
    /// Start a sink on a free port of 127.0.0.1 that accepts every message.
    pub async fn start() -> anyhow::Result<SmtpSink> {
        SmtpSink::start_refusing(0).await
    }

    /// Start a sink that answers the first `refused` `MAIL FROM`s with a transient `451`.
    pub async fn start_refusing(refused: usize) -> anyhow::Result<SmtpSink> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the SMTP sink")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            messages: Mutex::new(Vec::new()),
            refuse: AtomicUsize::new(refused),
        });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = serving.clone();
                tokio::spawn(async move {
                    let _ = session(stream, &shared).await;
                });
            }
        });
        Ok(SmtpSink { port, shared, task })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smtp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The messages accepted so far, in order.
    pub fn messages(&self) -> Vec<SmtpMessage> {
        self.shared
            .messages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `Message-ID` of a message's header section, without angle brackets.
fn message_id(data: &str) -> Option<String> {
    let headers = data.split("\r\n\r\n").next().unwrap_or_default();
    // Unfold continuation lines first.
    let unfolded = headers.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("message-id").then(|| {
            value
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

/// The address in `MAIL FROM:<a>` / `RCPT TO:<a>` after the command's `prefix`.
fn address(line: &str, prefix: &str) -> String {
    let rest = line[prefix.len()..].trim();
    let rest = rest.split_whitespace().next().unwrap_or_default();
    rest.trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

async fn session(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 testkit SMTP sink ready\r\n").await?;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end_matches(['\r', '\n']);
        let upper = command.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-testkit greets you\r\n250-8BITMIME\r\n250 SIZE 10485760\r\n"
        } else if upper.starts_with("HELO") {
            b"250 testkit\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            let refuse = shared
                .refuse
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if refuse {
                b"451 4.3.0 try again later\r\n"
            } else {
                from = Some(address(command, "MAIL FROM:"));
                to.clear();
                b"250 2.1.0 ok\r\n"
            }
        } else if upper.starts_with("RCPT TO:") {
            if from.is_none() {
                b"503 5.5.1 MAIL first\r\n"
            } else {
                to.push(address(command, "RCPT TO:"));
                b"250 2.1.5 ok\r\n"
            }
        } else if upper == "DATA" {
            if from.is_none() || to.is_empty() {
                b"503 5.5.1 MAIL and RCPT first\r\n"
            } else {
                write
                    .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    let l = line.trim_end_matches(['\r', '\n']);
                    if l == "." {
                        break;
                    }
                    data.push_str(
                        l.strip_prefix('.')
                            .filter(|_| l.starts_with(".."))
                            .unwrap_or(l),
                    );
                    data.push_str("\r\n");
                }
                let message = SmtpMessage {
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    message_id: message_id(&data),
                    data,
                };
                shared
                    .messages
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(message);
                b"250 2.0.0 queued\r\n"
            }
        } else if upper == "RSET" {
            from = None;
            to.clear();
            b"250 2.0.0 ok\r\n"
        } else if upper.starts_with("NOOP") {
            b"250 2.0.0 ok\r\n"
        } else if upper == "QUIT" {
            write.write_all(b"221 2.0.0 bye\r\n").await?;
            return Ok(());
        } else {
            b"502 5.5.2 command not implemented\r\n"
        };
        write.write_all(reply).await?;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;

    async fn expect(stream: &mut BufReader<TcpStream>, code: &str) {
        loop {
            let mut line = String::new();
            stream.read_line(&mut line).await.expect("reply");
            assert!(line.starts_with(code), "{line:?} should start with {code}");
            if line.as_bytes().get(3) != Some(&b'-') {
                return;
            }
        }
    }

    async fn say(stream: &mut BufReader<TcpStream>, line: &str, code: &str) {
        stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("write");
        expect(stream, code).await;
    }

    #[tokio::test]
    async fn records_a_message_with_its_envelope_and_message_id_after_a_refusal() {
        let sink = SmtpSink::start_refusing(1).await.expect("sink");
        let mut s = BufReader::new(
            TcpStream::connect(("127.0.0.1", sink.port()))
                .await
                .expect("connect"),
        );
        expect(&mut s, "220").await;
        say(&mut s, "EHLO client", "250").await;
        say(&mut s, "MAIL FROM:<a@example.test>", "451").await;
        say(&mut s, "RCPT TO:<b@example.test>", "503").await;
        say(&mut s, "MAIL FROM:<a@example.test> BODY=8BITMIME", "250").await;
        say(&mut s, "RCPT TO:<b@example.test>", "250").await;
        say(&mut s, "DATA", "354").await;
        say(
            &mut s,
            "Message-ID:\r\n <k1@x>\r\nSubject: hi\r\n\r\n..dotted\r\nbody\r\n.",
            "250",
        )
        .await;
        say(&mut s, "QUIT", "221").await;
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        let m = sink.messages();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].from, "a@example.test");
        assert_eq!(m[0].to, ["b@example.test"]);
        assert_eq!(m[0].message_id.as_deref(), Some("k1@x"));
        assert!(
            m[0].data.contains("\r\n.dotted\r\nbody\r\n"),
            "{:?}",
            m[0].data
        );
    }
}
