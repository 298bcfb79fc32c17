//! TLS for every TCP service and client (rustls, with the ring provider).
//!
//! A TLS connection reaches its user as an ordinary [`Stream`]: after the
//! handshake, a small task moves bytes between the TLS session and one end
//! of a Unix socket pair, and the service gets the other end. Every service
//! and client then works over TLS unchanged, including the fast paths that
//! need a real socket (readiness without a buffer, `splice(2)` in the
//! relay); the price is one copy through a socket pair, small next to the
//! encryption itself. Half-close carries through: the service's
//! `shutdown_write` becomes a `close_notify`, and the peer's becomes EOF.
//!
//! Servers use a certificate from `--tls-cert`/`--tls-key`, or an ephemeral
//! self-signed one whose SHA-256 fingerprint they print, which clients pin
//! with `--tls-fingerprint`. Clients verify against the system roots,
//! `--tls-ca FILE`, a pinned fingerprint, or nothing with `--insecure`.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::bridge::{Carrier, Far, Pump};
use crate::conn::Stream;
use crate::error::Error;

/// How long a peer has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Once a TLS stream's owner has dropped it, how long what it wrote may
/// take to reach the peer.
const LINGER: Duration = Duration::from_secs(10);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Usage(format!("{what}: {e}"))
}

/// The SHA-256 fingerprint of a DER certificate, as `AB:CD:…` (the form
/// `openssl x509 -fingerprint -sha256` prints).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = String::with_capacity(95);
    for (i, b) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// Parses a SHA-256 fingerprint: 64 hex digits, with or without colons, in
/// either case, optionally prefixed by `sha256:` or `SHA256:`.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let hex: String =
        s.trim().trim_start_matches("sha256:").trim_start_matches("SHA256:").chars().filter(|c| *c != ':').collect();
    let bad = || format!("invalid fingerprint '{s}': 64 hex digits (colons allowed), as the server prints it");
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// A self-signed certificate and its private key, in PEM.
#[derive(Debug)]
pub struct SelfSigned {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
    /// Its SHA-256 fingerprint, as [`fingerprint`] writes it.
    pub fingerprint: String,
}

/// Generates a self-signed certificate (ECDSA P-256) valid for `names`
/// (host names or IP addresses).
pub fn self_signed(names: &[String]) -> Result<SelfSigned, Error> {
    let made =
        rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| config_err("cannot make a certificate", e))?;
    Ok(SelfSigned {
        cert_pem: made.cert.pem(),
        key_pem: made.signing_key.serialize_pem(),
        fingerprint: fingerprint(made.cert.der()),
    })
}

/// The names an ephemeral or generated certificate is made for by default.
pub fn default_names() -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if let Some(host) = crate::sys::hostname()
        && !host.is_empty()
        && !names.contains(&host)
    {
        names.push(host);
    }
    names
}

fn load_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let what = format!("{flag} {}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| config_err(&what, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_err(&what, e))?;
    if certs.is_empty() {
        return Err(config_err(&what, "no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)"));
    }
    Ok(certs)
}

fn load_key(path: &Path, flag: &str) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| config_err(&format!("{flag} {}", path.display()), format!("{e}; expected a PEM private key")))
}

fn roots_from(path: &Path, flag: &str) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, flag)? {
        roots.add(cert).map_err(|e| config_err(&format!("{flag} {}", path.display()), e))?;
    }
    Ok(roots)
}

/// A server's TLS side: certificate, key, and whether clients must present
/// a certificate (mutual TLS).
#[derive(Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    fingerprint: String,
    ephemeral: bool,
    client_auth: bool,
}

impl ServerTls {
    /// From PEM files (`--tls-cert`, `--tls-key`), or, with neither, an
    /// ephemeral self-signed certificate for [`default_names`] and `extra`
    /// names. With `client_ca`, clients must present a certificate it
    /// signed.
    pub fn new(cert_key: Option<(&Path, &Path)>, client_ca: Option<&Path>, extra: &[String]) -> Result<Self, Error> {
        let (certs, key, ephemeral) = match cert_key {
            Some((cert, key)) => (load_certs(cert, "--tls-cert")?, load_key(key, "--tls-key")?, false),
            None => {
                let mut names = default_names();
                names.extend(extra.iter().filter(|n| !n.is_empty() && !names.contains(n)).cloned().collect::<Vec<_>>());
                let made = self_signed(&names)?;
                let cert = CertificateDer::from_pem_slice(made.cert_pem.as_bytes())
                    .map_err(|e| config_err("certificate", e))?;
                let key = PrivateKeyDer::from_pem_slice(made.key_pem.as_bytes()).map_err(|e| config_err("key", e))?;
                (vec![cert], key, true)
            }
        };
        let fp = fingerprint(&certs[0]);
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_err("TLS", e))?;
        let builder = match client_ca {
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots_from(ca, "--tls-client-ca")?),
                    provider(),
                )
                .build()
                .map_err(|e| config_err("--tls-client-ca", e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config =
            builder.with_single_cert(certs, key).map_err(|e| config_err("--tls-cert/--tls-key do not match", e))?;
        Ok(ServerTls { config: Arc::new(config), fingerprint: fp, ephemeral, client_auth: client_ca.is_some() })
    }

    /// The certificate's SHA-256 fingerprint, for clients to pin.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether the certificate was made at start (and dies with the process).
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_cert(&self) -> bool {
        self.client_auth
    }

    /// Runs the server side of the handshake (within [`HANDSHAKE_TIMEOUT`])
    /// and returns the plaintext stream, its [`Pump`] already running as a
    /// task of its own.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<Stream> {
        let (stream, pump) = self.handshake(tcp).await?;
        tokio::spawn(pump);
        Ok(stream)
    }

    /// Runs the server side of the handshake (within [`HANDSHAKE_TIMEOUT`])
    /// and returns the plaintext stream and the [`Pump`] that carries it,
    /// for the caller to run where it tracks its tasks (a server runs it
    /// under its shutdown).
    pub async fn handshake(&self, tcp: TcpStream) -> io::Result<(Stream, Pump)> {
        let peer = tcp.peer_addr().ok();
        let (tls, verified) = self.handshake_raw(tcp).await?;
        bridge(tls, peer, verified)
    }

    /// Runs the server side of the handshake (within [`HANDSHAKE_TIMEOUT`])
    /// and returns the TLS session itself, and whether the client proved
    /// itself with a certificate `--tls-client-ca` verified: for a protocol
    /// layered on TLS (`wss://`) to bridge.
    pub async fn handshake_raw(
        &self,
        tcp: TcpStream,
    ) -> io::Result<(tokio_rustls::server::TlsStream<TcpStream>, bool)> {
        let tls =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_rustls::TlsAcceptor::from(self.config.clone()).accept(tcp))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("TLS handshake failed: {e} (is the client speaking TLS?)"))
                })?;
        let verified = tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty()) && self.client_auth;
        Ok((tls, verified))
    }
}

/// How a client checks the server's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Against the system's trusted roots.
    System,
    /// Against the certificates in this PEM file (`--tls-ca`).
    Ca(PathBuf),
    /// The server's certificate must have this SHA-256 fingerprint
    /// (`--tls-fingerprint`); names and dates are not checked.
    Fingerprint([u8; 32]),
    /// Not at all (`--insecure`).
    Insecure,
}

/// A client's TLS side.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
}

impl ClientTls {
    /// A client that verifies as `verify` says and, with `cert_key`,
    /// presents that certificate (mutual TLS).
    pub fn new(verify: &Verify, cert_key: Option<(&Path, &Path)>) -> Result<Self, Error> {
        Self::build(verify, cert_key, true)
    }

    /// The rustls configuration for an HTTP client: ALPN offers HTTP/2 and
    /// HTTP/1.1, and a system without root certificates is not an error
    /// until an https:// URL needs one.
    pub fn http(verify: &Verify) -> Result<ClientConfig, Error> {
        let mut config = Arc::unwrap_or_clone(Self::build(verify, None, false)?.config);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    fn build(verify: &Verify, cert_key: Option<(&Path, &Path)>, need_roots: bool) -> Result<Self, Error> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_err("TLS", e))?;
        let builder = match verify {
            Verify::System => {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 && need_roots {
                    return Err(Error::Usage(
                        "no trusted root certificates found on this system: give --tls-ca FILE, or pin --tls-fingerprint".into(),
                    ));
                }
                builder.with_root_certificates(roots)
            }
            Verify::Ca(path) => builder.with_root_certificates(roots_from(path, "--tls-ca")?),
            Verify::Fingerprint(pin) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned { pin: Some(*pin), provider: provider() })),
            Verify::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned { pin: None, provider: provider() })),
        };
        let config = match cert_key {
            Some((cert, key)) => builder
                .with_client_auth_cert(load_certs(cert, "--tls-cert")?, load_key(key, "--tls-key")?)
                .map_err(|e| config_err("--tls-cert/--tls-key", e))?,
            None => builder.with_no_client_auth(),
        };
        Ok(ClientTls { config: Arc::new(config) })
    }

    /// Runs the client side of the handshake with `host` (a name or an IP
    /// address) and returns the plaintext stream.
    pub async fn connect(&self, tcp: TcpStream, host: &str) -> io::Result<Stream> {
        let peer = tcp.peer_addr().ok();
        let tls = self.connect_raw(tcp, host).await?;
        let (stream, pump) = bridge(tls, peer, false)?;
        tokio::spawn(pump);
        Ok(stream)
    }

    /// Runs the client side of the handshake with `host` and returns the
    /// TLS session itself, for a protocol layered on TLS (`wss://`).
    pub async fn connect_raw(
        &self,
        tcp: TcpStream,
        host: &str,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("'{host}' as a TLS server name: {e}")))?;
        tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            tokio_rustls::TlsConnector::from(self.config.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
        .map_err(handshake_err)
    }
}

/// The handshake's error with a hint chosen from rustls's own error, not
/// from its words: a certificate not trusted, or a peer not speaking TLS.
fn handshake_err(e: io::Error) -> io::Error {
    let tls = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let hint = match tls {
        // A pinned fingerprint that differs: [`Pinned`]'s words say it all.
        Some(rustls::Error::General(_)) => "",
        Some(rustls::Error::InvalidCertificate(_)) => {
            " (a self-signed server? pin its fingerprint with --tls-fingerprint, or trust its certificate with --tls-ca)"
        }
        Some(rustls::Error::InvalidMessage(_)) => " (is the server speaking TLS on that port?)",
        None if e.kind() == io::ErrorKind::UnexpectedEof => " (is the server speaking TLS on that port?)",
        _ => "",
    };
    io::Error::new(e.kind(), format!("TLS handshake failed: {e}{hint}"))
}

/// Checks the server's certificate against a pinned fingerprint, or (with
/// no pin) not at all; handshake signatures are always verified, so the
/// server must hold the key of the certificate it shows.
#[derive(Debug)]
struct Pinned {
    pin: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = self.pin else { return Ok(ServerCertVerified::assertion()) };
        let got = ring::digest::digest(&ring::digest::SHA256, end_entity);
        if got.as_ref() == pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate fingerprint is {}, not the pinned one",
                fingerprint(end_entity)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn bridge<S>(tls: S, peer: Option<SocketAddr>, client_verified: bool) -> io::Result<(Stream, Pump)>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let far = Far { peer, client_verified, carrier: Carrier::Tls, verdict: Default::default() };
    crate::bridge::bridge(far, |ours, owner| pump(tls, ours, owner))
}

/// Moves bytes between the TLS session and our end of the pair until both
/// directions are done. Plaintext from the owner goes out until EOF, then a
/// `close_notify`; what the peer sends comes in until its EOF, or until the
/// owner has dropped the stream (there is nobody left to read it).
async fn pump<S: AsyncRead + AsyncWrite>(tls: S, ours: UnixStream, owner: CancellationToken) {
    let (mut from_peer, mut to_peer) = tokio::io::split(tls);
    let (mut from_owner, mut to_owner) = ours.into_split();
    let outgoing = async {
        let _ = tokio::io::copy(&mut from_owner, &mut to_peer).await;
        let _ = to_peer.shutdown().await;
    };
    let incoming = async {
        tokio::select! {
            _ = tokio::io::copy(&mut from_peer, &mut to_owner) => { let _ = to_owner.shutdown().await; }
            _ = owner.cancelled() => {}
        }
    };
    let lingered = async {
        owner.cancelled().await;
        tokio::time::sleep(LINGER).await;
    };
    tokio::select! {
        _ = async { tokio::join!(outgoing, incoming) } => {}
        _ = lingered => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_round_trip() {
        let made = self_signed(&["localhost".into()]).unwrap();
        assert_eq!(made.fingerprint.len(), 95);
        let pin = parse_fingerprint(&made.fingerprint).unwrap();
        let bare: String = made.fingerprint.replace(':', "").to_lowercase();
        assert_eq!(parse_fingerprint(&bare).unwrap(), pin);
        assert_eq!(parse_fingerprint(&format!("SHA256:{bare}")).unwrap(), pin);
        assert!(parse_fingerprint("AB:CD").unwrap_err().contains("64 hex digits"));
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[tokio::test]
    async fn handshake_pin_and_half_close() {
        use tokio::io::AsyncReadExt;
        let server = Arc::new(ServerTls::new(None, None, &[]).unwrap());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let srv = server.clone();
        let echo = tokio::spawn(async move {
            let (tcp, _) = l.accept().await.unwrap();
            let mut s = srv.accept(tcp).await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            s.write_all(&got).await.unwrap();
            s.shutdown_write().unwrap();
        });
        let pin = parse_fingerprint(server.fingerprint()).unwrap();
        let client = ClientTls::new(&Verify::Fingerprint(pin), None).unwrap();
        let mut s = client.connect(TcpStream::connect(addr).await.unwrap(), "127.0.0.1").await.unwrap();
        s.write_all(b"over tls").await.unwrap();
        s.shutdown_write().unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"over tls");
        echo.await.unwrap();

        // A wrong pin is refused, and says what the real fingerprint is.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let srv = server.clone();
        tokio::spawn(async move {
            let (tcp, _) = l.accept().await.unwrap();
            let _ = srv.accept(tcp).await;
        });
        let wrong = ClientTls::new(&Verify::Fingerprint([7; 32]), None).unwrap();
        let err = wrong.connect(TcpStream::connect(addr).await.unwrap(), "127.0.0.1").await.unwrap_err();
        assert!(err.to_string().contains(server.fingerprint()), "{err}");
    }
}
