//! sockit — the socket toolkit.
//!
//! Every classic socket program (echo, timestamp, greeting, chat broker,
//! remote command, file transfer, netcat, relay, load generator) as one
//! binary, built on this small library. A built-in service is written against
//! the same public API a user writes their own protocol with: implement
//! [`Service`] (or, for UDP, [`DatagramService`] for a reply per datagram
//! and [`DatagramSession`] for a session per peer), hand it to a [`Server`]
//! together with a bound [`Listener`] or socket, and the server owns
//! everything else — accepting, address rules, connection and descriptor
//! limits, idle timeouts, per-connection spans and logging, the `listening
//! on` status line, and graceful shutdown (background work joins it through
//! [`Server::spawn`]).
//!
//! ```no_run
//! use sockit::{Conn, Endpoint, Lines, Limits, Server, Service};
//! use std::sync::Arc;
//!
//! struct Upper;
//!
//! impl Service for Upper {
//!     async fn serve(&self, conn: Conn) -> std::io::Result<()> {
//!         let mut lines = Lines::new(conn);
//!         while let Some(line) = lines.next().await? {
//!             lines.send(&line.to_ascii_uppercase()).await?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let endpoint: Endpoint = "127.0.0.1:0".parse()?;
//! let listener = endpoint.bind_stream().await?;
//! let server = Server::new(Limits::default());
//! // Prints `listening on tcp://127.0.0.1:40123 (upper)`; returns that endpoint.
//! server.serve_stream(listener, "upper", Arc::new(Upper))?;
//! server.run_until(tokio::signal::ctrl_c()).await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`endpoint`]: parsing, display, binding and connecting every address kind.
//! - [`conn`]: the stream a service reads and writes — TCP, Unix and TLS
//!   look the same — metered for logs and idle detection.
//! - [`frames`]: typed frames over a stream for the framed protocols;
//!   [`auth`]: the token handshake they speak first, a codec of its own
//!   that hands the stream, and what it buffered, to the protocol's.
//! - [`tls`]: certificates, fingerprints, and the TLS sessions behind
//!   `tls://` endpoints; [`acl`]: `--allow`/`--deny` address rules.
//! - [`lines`]: newline framing with a size limit, also serving clients that
//!   send no newline at all.
//! - [`server`]: the accept loops (one accept step, [`server::Gate`], for
//!   every stream listener; a dispatcher for datagram sessions), limits,
//!   spans, graceful shutdown; the [`Service`], [`DatagramService`] and
//!   [`DatagramSession`] traits.
//! - [`services`]: one module per built-in protocol (the relay's too),
//!   holding both halves: its wire format, its server and, where it has
//!   one, its client (`files`, `exec`).
//! - [`forward`]: moving bytes both ways between two streams (zero-copy
//!   between sockets), keeping half-close.
//! - [`text`]: peer text made safe for a terminal.
//! - [`logging`]: log setup and the `listening on` status line;
//!   [`error`]: errors and exit codes; [`units`]: durations and byte sizes
//!   as flags write them.
//! - [`sys`]: every call to the operating system that std and tokio do not
//!   make (splice, `O_TMPFILE`, `syncfs`, pidfds, `/proc`, limits), as small
//!   safe functions: the one place to port, and the only `unsafe` code.
//!
//! The `sockit` binary (`src/main.rs`, with `src/cli.rs` and
//! `src/commands/`) is a thin command line over this library: argument
//! parsing, reading the token from `--token-file` or `SOCKIT_TOKEN`,
//! progress bars, JSON summaries and turning errors into the process exit
//! code live there, not here.
//!
//! # Features
//!
//! - `cli` (default): what the binary needs — clap with its completions and
//!   man page, progress bars, the HTTP client of `get`, the histograms of
//!   `bench`, anyhow — and `redis`. With it, [`forward::Copy`],
//!   [`logging::LogFormat`] and [`services::files::Policy`] are also
//!   `clap::ValueEnum`s.
//! - `redis`: chat scale-out over Redis, `services::chat::Chat::with_redis`
//!   and `services::chat::cluster`.
//!
//! Everything else — endpoints, connections, the server, lines, frames,
//! the handshake, TLS, address rules, forwarding and every service — is
//! the core, always built. A program that only serves its own protocols
//! depends on `sockit = { version = "0.1", default-features = false }` and
//! compiles none of the command-line, HTTP or Redis crates.
//!
//! # Platforms
//!
//! Linux only; see [`sys`] for what ties sockit to it and the kernel each
//! part needs.
#![warn(missing_docs)]
// Unsafe code is allowed one function at a time, in `sys`, each with the
// reason it is sound.
#![deny(unsafe_code)]

pub mod acl;
pub mod auth;
pub mod bridge;
pub mod conn;
pub mod endpoint;
pub mod error;
pub mod forward;
pub mod frames;
pub mod lines;
pub mod logging;
pub mod server;
pub mod services;
pub mod sys;
pub mod text;
pub mod tls;
pub mod units;
pub mod ws;

pub use conn::{Conn, Peer, Stream};
pub use endpoint::{Endpoint, HostPort, Listener};
pub use error::{Error, Result};
pub use lines::Lines;
pub use server::{DatagramService, DatagramSession, Datagrams, Limits, Server, Service};
