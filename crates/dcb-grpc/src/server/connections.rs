//! The connections a server accepts: at most so many at a time, each with a deadline to start
//! speaking HTTP/2, TCP keepalive on, and TLS when configured.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tonic::transport::server::Connected;

use crate::limits::{TCP_KEEPALIVE_IDLE, TCP_KEEPALIVE_INTERVAL, TCP_KEEPALIVE_RETRIES};

/// The connections of `listener`, at most `max` at a time: the next one is accepted only when a
/// slot is free, so a flood of clients waits in the kernel's backlog instead of taking memory and
/// tasks here. Each must start within `handshake` (see [`Limited`]), and has TCP keepalive on, so
/// that the slot of a client that vanished without a reset comes back.
pub(super) fn limited(
    listener: TcpListener,
    max: usize,
    handshake: Duration,
) -> impl Stream<Item = Result<Limited<tokio::net::TcpStream>, std::io::Error>> {
    let slots = Arc::new(Semaphore::new(max));
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE_IDLE))
        .with_keepalive_interval(Some(TCP_KEEPALIVE_INTERVAL))
        .with_keepalive_retries(Some(TCP_KEEPALIVE_RETRIES));
    futures_util::stream::unfold((incoming, slots), move |(mut incoming, slots)| async move {
        if slots.available_permits() == 0 {
            tracing::warn!("connection limit reached: new clients wait until one leaves");
        }
        let slot = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
        loop {
            match incoming.next().await? {
                Ok(stream) => {
                    let limited = Limited {
                        remote: stream.peer_addr().ok(),
                        stream,
                        _slot: slot,
                        handshake: Some(Box::pin(tokio::time::sleep(handshake))),
                        received: 0,
                    };
                    return Some((Ok(limited), (incoming, slots)));
                }
                // Out of file descriptors, typically: pause instead of spinning on the error.
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// The length of the HTTP/2 client preface. A connection that has not sent this much within the
/// handshake timeout is closed.
const PREFACE_BYTES: usize = 24;

/// The connections of `incoming` after a TLS handshake with `acceptor`, within their handshake
/// deadline; the deadline then runs on for the HTTP/2 preface, which [`Limited`] now sees
/// decrypted (behind tonic's own TLS it saw only the handshake's bytes, so a client that finished
/// the handshake and sent nothing more held its slot for ever). Handshakes run concurrently, as
/// many as there are connection slots; a failed one closes its connection and frees its slot.
#[cfg(feature = "tls")]
pub(super) fn with_tls(
    incoming: impl Stream<Item = Result<Limited<tokio::net::TcpStream>, std::io::Error>>,
    acceptor: tokio_rustls::TlsAcceptor,
    max: usize,
) -> impl Stream<Item = Result<Limited<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>, std::io::Error>>
{
    incoming
        // Each handshake in a task of its own, so that their signatures spread over the runtime's
        // threads instead of running one by one in the accept loop.
        .map(move |accepted| tokio::spawn(tls_handshake(accepted, acceptor.clone())))
        .buffer_unordered(max)
        .filter_map(|handshake| std::future::ready(handshake.ok().flatten()))
}

/// The TLS handshake of one accepted connection, within its deadline; `None` when it failed.
#[cfg(feature = "tls")]
async fn tls_handshake(
    accepted: Result<Limited<tokio::net::TcpStream>, std::io::Error>,
    acceptor: tokio_rustls::TlsAcceptor,
) -> Option<Result<Limited<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>, std::io::Error>> {
    let Limited { stream, _slot, handshake, remote, .. } = match accepted {
        Ok(accepted) => accepted,
        Err(error) => return Some(Err(error)),
    };
    // Nothing has read the connection yet, so its deadline is still set.
    let deadline = handshake.expect("a fresh connection has its deadline").deadline();
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(Ok(Limited {
            stream,
            _slot,
            handshake: Some(Box::pin(tokio::time::sleep_until(deadline))),
            received: 0,
            remote,
        })),
        Ok(Err(error)) => {
            tracing::debug!(?remote, %error, "a TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(?remote, "a TLS handshake did not finish in time");
            None
        }
    }
}

/// The TLS acceptor of a PEM certificate chain and private key, offering HTTP/2 only.
#[cfg(feature = "tls")]
pub(super) fn tls_acceptor(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<tokio_rustls::TlsAcceptor, crate::Error> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let invalid = |what: &str, error: &dyn std::fmt::Display| crate::Error::Tls(format!("{what}: {error}"));
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("reading the certificate chain", &e))?;
    if certs.is_empty() {
        return Err(crate::Error::Tls("the certificate file holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| invalid("reading the private key", &e))?;
    // The backend named, not the process's default, which is missing when a program links two.
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("the TLS versions", &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid("the certificate and key", &e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A connection holding its slot until it closes.
///
/// Until it has sent [`PREFACE_BYTES`], it is closed at its handshake deadline: hyper waits for the
/// HTTP/2 preface without a timeout (its keepalive pings start only after it), so a client that
/// connects and sends nothing would otherwise hold a slot for ever. With TLS, `S` is the
/// decrypted stream (see [`with_tls`]), so the preface is counted, not the TLS handshake.
pub(super) struct Limited<S> {
    stream: S,
    _slot: tokio::sync::OwnedSemaphorePermit,
    /// The handshake deadline, until [`PREFACE_BYTES`] have been received.
    handshake: Option<Pin<Box<tokio::time::Sleep>>>,
    received: usize,
    /// The client's address, for logs.
    remote: Option<std::net::SocketAddr>,
}

impl<S: Connected> Connected for Limited<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> S::ConnectInfo {
        self.stream.connect_info()
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Limited<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let filled = buf.filled().len();
        let this = &mut *self;
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Some(deadline) = &mut this.handshake {
            match poll {
                Poll::Ready(Ok(())) => {
                    let read = buf.filled().len() - filled;
                    this.received += read;
                    // At the end of the stream too: the connection closes by itself.
                    if this.received >= PREFACE_BYTES || read == 0 {
                        this.handshake = None;
                    }
                }
                Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                    tracing::debug!(remote = ?this.remote, "a connection did not start in time");
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client sent no HTTP/2 preface in time",
                    )));
                }
                _ => {}
            }
        }
        poll
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Limited<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
