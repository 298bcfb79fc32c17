//! The TLS and access-control flags several commands share, and `sockit
//! cert`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sockit::acl::{Acl, Cidr};
use sockit::endpoint::{Endpoint, Listener};
use sockit::error::{Error, ExitCode};
use sockit::logging;
use sockit::tls::{ClientTls, ServerTls, Verify, parse_fingerprint};
use sockit::units::{parse_duration, usize_size_in};
use sockit::ws::WsConfig;

/// `--allow` / `--deny`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct AclArgs {
    /// Accept only peers in this address block (e.g. 10.0.0.0/8, ::1);
    /// repeatable. Checked before any byte is read; refusals are logged.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub allow: Vec<Cidr>,

    /// Refuse peers in this address block; repeatable, and wins over --allow.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub deny: Vec<Cidr>,
}

fn parse_cidr(s: &str) -> Result<Cidr, String> {
    s.parse()
}

impl AclArgs {
    /// The rules.
    pub fn acl(&self) -> Acl {
        Acl { allow: self.allow.clone(), deny: self.deny.clone() }
    }
}

/// A server's TLS flags, for `tls://` listeners.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TlsServerArgs {
    /// TLS certificate chain (PEM) for tls:// listeners. Without it, an
    /// ephemeral self-signed certificate is made, and its fingerprint
    /// printed for clients to pin.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require TLS clients to present a certificate signed by a CA in this
    /// PEM file (mutual TLS).
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
}

impl TlsServerArgs {
    /// The TLS side for `endpoints`, if any of them is `tls://` (else
    /// `None`). An ephemeral certificate covers the listeners' host names,
    /// and its fingerprint is printed.
    pub fn server(&self, endpoints: &[&Endpoint]) -> Result<Option<Arc<ServerTls>>, Error> {
        let hosts: Vec<String> = endpoints.iter().filter_map(|e| e.tls_at().map(|hp| hp.host.clone())).collect();
        if hosts.is_empty() {
            if self.tls_cert.is_some() || self.tls_client_ca.is_some() {
                return Err(Error::Usage(
                    "TLS flags given, but no listener is tls://: listen on tls://HOST:PORT".into(),
                ));
            }
            return Ok(None);
        }
        let cert_key = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        let tls = ServerTls::new(cert_key, self.tls_client_ca.as_deref(), &hosts)?;
        logging::certificate(tls.fingerprint(), tls.is_ephemeral());
        Ok(Some(Arc::new(tls)))
    }
}

/// How a client checks a TLS server.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TlsVerifyArgs {
    /// Trust the TLS server certificates this PEM file's CAs signed (or the
    /// certificate itself, for a self-signed one), instead of the system's.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["tls_fingerprint", "insecure"])]
    pub tls_ca: Option<PathBuf>,

    /// Accept only the TLS server certificate with this SHA-256
    /// fingerprint, as the server prints it (AB:CD:… or hex).
    #[arg(long, value_name = "SHA256", value_parser = parse_fingerprint, conflicts_with = "insecure")]
    pub tls_fingerprint: Option<[u8; 32]>,

    /// Do not check the TLS server's certificate at all. Anyone on the path
    /// can read and change the traffic; prefer --tls-fingerprint.
    #[arg(long)]
    pub insecure: bool,
}

impl TlsVerifyArgs {
    /// The verification these flags ask for.
    pub fn verify(&self) -> Verify {
        match (&self.tls_ca, self.tls_fingerprint, self.insecure) {
            (Some(ca), _, _) => Verify::Ca(ca.clone()),
            (None, Some(pin), _) => Verify::Fingerprint(pin),
            (None, None, true) => Verify::Insecure,
            (None, None, false) => Verify::System,
        }
    }

    /// A TLS client for `endpoint` when it is `tls://`.
    pub fn client(&self, endpoint: &Endpoint) -> Result<Option<ClientTls>, Error> {
        self.client_with_cert(endpoint, None)
    }

    fn client_with_cert(
        &self,
        endpoint: &Endpoint,
        cert_key: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<Option<ClientTls>, Error> {
        match endpoint.tls_at() {
            Some(_) => ClientTls::new(&self.verify(), cert_key).map(Some),
            None => Ok(None),
        }
    }
}

/// A TLS client's flags: verification, and a certificate to present.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TlsClientArgs {
    #[command(flatten)]
    pub verify: TlsVerifyArgs,

    /// Present this certificate (PEM) to a TLS server that asks for one
    /// (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl TlsClientArgs {
    /// A TLS client for `endpoint` when it is `tls://`.
    pub fn client(&self, endpoint: &Endpoint) -> Result<Option<ClientTls>, Error> {
        let cert_key = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        if cert_key.is_some() && endpoint.tls_at().is_none() {
            return Err(Error::Usage(format!("--tls-cert needs a tls:// or wss:// endpoint, not {endpoint}")));
        }
        self.verify.client_with_cert(endpoint, cert_key)
    }
}

/// Arguments of `sockit cert`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Writes a self-signed certificate and its private key (ECDSA P-256, PEM) and
prints the certificate's SHA-256 fingerprint, for clients to pin.

Examples:
  sockit cert                                   server.pem and server.key, for this host
  sockit cert --name files.lan --name 10.0.0.5 --out files
  sockit serve exec --listen tls://0.0.0.0:7022 --tls-cert server.pem --tls-key server.key
  sockit connect tls://files.lan:7007 --tls-ca server.pem

For mutual TLS, make one for the client too, and give the server
--tls-client-ca client.pem, the client --tls-cert client.pem --tls-key client.key.")]
pub struct CertArgs {
    /// A host name or IP address the certificate is for; repeatable
    /// [default: localhost, 127.0.0.1, ::1 and this host's name].
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,

    /// Writes OUT.pem and OUT.key.
    #[arg(long, value_name = "OUT", default_value = "server")]
    pub out: PathBuf,

    /// Replace files that exist.
    #[arg(long)]
    pub force: bool,
}

/// Runs `sockit cert`.
pub fn run_cert(args: CertArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let names = if args.names.is_empty() { sockit::tls::default_names() } else { args.names };
    let made = sockit::tls::self_signed(&names)?;
    let cert_path = args.out.with_extension("pem");
    let key_path = args.out.with_extension("key");
    for path in [&cert_path, &key_path] {
        if path.exists() && !args.force {
            return Err(Error::Usage(format!("{} exists; pass --force to replace it", path.display())).into());
        }
    }
    let write = |path: &PathBuf, text: &str, mode: u32| -> anyhow::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        // `mode` applies only to a new file; a replaced one gets it too.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        f.write_all(text.as_bytes())?;
        Ok(())
    };
    write(&key_path, &made.key_pem, 0o600)?;
    write(&cert_path, &made.cert_pem, 0o644)?;
    eprintln!("wrote {} and {} (for {})", cert_path.display(), key_path.display(), names.join(", "));
    println!("SHA-256 fingerprint: {}", made.fingerprint);
    Ok(ExitCode::Ok)
}

/// How `ws://` and `wss://` endpoints carry bytes.
#[derive(Clone, Debug, clap::Args)]
pub struct WsArgs {
    /// On ws:// and wss:// endpoints, text messages of one line each
    /// (without the newline) instead of binary messages of whatever bytes
    /// come; an incoming message without a newline is read as one line.
    #[arg(long)]
    pub ws_text: bool,

    /// The largest WebSocket message taken; a bigger one closes the
    /// connection with code 1009 naming this limit [default: 64KiB; a line
    /// service's own: --max-line].
    #[arg(long, value_name = "BYTES", value_parser = usize_size_in(WS_MESSAGE_RANGE))]
    pub ws_max_message: Option<usize>,

    /// Ping a WebSocket peer this often, so proxies keep it open and a
    /// vanished peer is noticed; 0 for never.
    #[arg(long, value_name = "DURATION", default_value = "25s", value_parser = parse_duration)]
    pub ws_ping: Duration,

    /// A WebSocket listener admits upgrades from browser pages of its own
    /// origin only (against cross-site WebSocket hijacking); this admits
    /// pages of ORIGIN too (`https://chat.example.com`; `*` for any).
    /// Repeatable.
    #[arg(long, value_name = "ORIGIN")]
    pub web_origin: Vec<String>,
}

/// The range of --ws-max-message.
pub const WS_MESSAGE_RANGE: std::ops::RangeInclusive<u64> = 16..=64 << 20;

impl WsArgs {
    /// The client side's settings (connect, relay's upstream, bench).
    pub fn config(&self) -> WsConfig {
        let mut c = WsConfig {
            lines: self.ws_text,
            text: self.ws_text,
            // At least a second apart: a tiny period would be a ping storm.
            ping: (!self.ws_ping.is_zero()).then_some(self.ws_ping.max(Duration::from_secs(1))),
            ..WsConfig::default()
        };
        if let Some(max) = self.ws_max_message {
            c.max_message = max;
        }
        c
    }

    /// Sets a WebSocket listener's connections up (others are left alone).
    /// A line service's limits are set where it is served.
    pub fn apply(&self, listener: &mut Listener) {
        let config = self.config();
        listener.configure_ws(|w| {
            w.config = config;
            w.origins = self.web_origin.clone();
        });
    }
}
