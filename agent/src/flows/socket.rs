//! The stream's unix socket, `<run dir>/flows.sock`: root only (the directory 0700, the
//! socket 0600), since flows say who talks to whom. A client sends one JSON line (a
//! [`Request`]) and reads JSON lines ([`super::StreamItem`]s): the agent's recent window,
//! then, when it follows, every new record until it hangs up.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::hub::FlowHub;
use super::record::{Lost, LostSource, StreamItem, rfc3339_ns};
use crate::dataplane::kernel_clock::unix_ns;
use crate::log;

pub const SOCKET_NAME: &str = "flows.sock";

pub fn path_in(run_dir: &Path) -> PathBuf {
    run_dir.join(SOCKET_NAME)
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Request {
    /// Go on streaming new records after the recent window.
    pub follow: bool,
}

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the socket (replacing one a stopped agent left), root only.
pub fn bind(run_dir: &Path) -> std::io::Result<UnixListener> {
    std::fs::create_dir_all(run_dir)?;
    std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o700))?;
    let path = path_in(run_dir);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves clients until the listener fails; each client on a task of its own.
pub async fn serve(listener: UnixListener, hub: Arc<FlowHub>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_client(stream, Arc::clone(&hub)));
            }
            Err(e) => {
                log::error("the flows socket failed", &[("error", &e)]);
                return;
            }
        }
    }
}

async fn serve_client(stream: UnixStream, hub: Arc<FlowHub>) {
    let (read, write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read);
    let request_line = reader.read_line(&mut line);
    let request: Request = match tokio::time::timeout(REQUEST_TIMEOUT, request_line).await {
        Ok(Ok(_)) => match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(_) => return,
        },
        _ => return,
    };
    // A client that hangs up ends its task with a write error; nothing to report.
    let _ = stream_to(BufWriter::new(write), &hub, request).await;
}

async fn stream_to<W: AsyncWriteExt + Unpin>(
    mut out: W,
    hub: &FlowHub,
    request: Request,
) -> std::io::Result<()> {
    let (window, mut live) = hub.subscribe();
    for item in &window {
        write_item(&mut out, item).await?;
    }
    out.flush().await?;
    if !request.follow {
        return out.shutdown().await;
    }
    loop {
        let next = live.recv().await;
        let mut batch = vec![next];
        // Whatever else is waiting goes out with it, in one flush.
        loop {
            match live.try_recv() {
                Ok(item) => batch.push(Ok(item)),
                Err(TryRecvError::Lagged(n)) => batch.push(Err(RecvError::Lagged(n))),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => {
                    batch.push(Err(RecvError::Closed));
                    break;
                }
            }
        }
        for received in batch {
            match received {
                Ok(item) => write_item(&mut out, &item).await?,
                Err(RecvError::Lagged(missed)) => {
                    let now = unix_ns(std::time::SystemTime::now());
                    let lost = StreamItem::Lost(Lost {
                        time: rfc3339_ns(now),
                        time_ns: now,
                        source: LostSource::Client,
                        events: missed,
                        since: None,
                    });
                    write_item(&mut out, &lost).await?;
                }
                Err(RecvError::Closed) => return out.flush().await,
            }
        }
        out.flush().await?;
    }
}

async fn write_item<W: AsyncWriteExt + Unpin>(
    out: &mut W,
    item: &StreamItem,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(item).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::hub::LIVE;
    use tokio::io::AsyncBufReadExt;

    fn kernel_loss(n: u64) -> StreamItem {
        StreamItem::Lost(Lost {
            time: rfc3339_ns(n),
            time_ns: n,
            source: LostSource::Kernel,
            events: n,
            since: None,
        })
    }

    #[tokio::test]
    async fn a_client_that_reads_too_slowly_is_told_what_it_lost_and_the_agent_goes_on() {
        let hub = FlowHub::new();
        hub.push(kernel_loss(1));
        // A pipe of 4 KiB: the streaming task blocks on it while the client does not read.
        let (client, agent_side) = tokio::io::duplex(4096);
        let streaming = tokio::spawn({
            let hub = Arc::clone(&hub);
            async move { stream_to(agent_side, &hub, Request { follow: true }).await }
        });
        let mut lines = BufReader::new(client).lines();
        let first: StreamItem =
            serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert_eq!(first.time_ns(), 1, "the window comes first");
        // The agent pushes far more than the pipe and the client's lag allow; pushing never
        // waits for the client.
        let total = LIVE as u64 * 2;
        for n in 0..total {
            hub.push(kernel_loss(n + 2));
        }
        let mut received = 0u64;
        let mut told_lost = 0u64;
        while received + told_lost < total {
            let line = lines.next_line().await.unwrap().unwrap();
            match serde_json::from_str::<StreamItem>(&line).unwrap() {
                StreamItem::Lost(l) if l.source == LostSource::Client => told_lost += l.events,
                _ => received += 1,
            }
        }
        assert!(told_lost > 0, "{received} received, none told lost");
        assert_eq!(received + told_lost, total);
        streaming.abort();
    }
}
