//! sockit as a library, in-process, the way a user of the crate runs it:
//! bind port 0, serve a custom protocol with `Server`, talk to it, then
//! cancel the shutdown token and see `run_until` return.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sockit::{Conn, DatagramSession, Datagrams, Endpoint, Limits, Lines, Server, Service};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use crate::support::WAIT;

/// Every line back in upper case.
struct Upper;

impl Service for Upper {
    async fn serve(&self, conn: Conn) -> io::Result<()> {
        let mut lines = Lines::new(conn);
        while let Some(line) = lines.next().await? {
            lines.send(&line.to_ascii_uppercase()).await?;
        }
        Ok(())
    }
}

/// Replies `N: datagram`, N counting the peer's datagrams: state that
/// lives as long as the peer's session.
struct Counter;

impl DatagramSession for Counter {
    async fn serve(&self, mut datagrams: Datagrams) -> io::Result<()> {
        let mut n = 0;
        while let Some(d) = datagrams.recv().await {
            n += 1;
            datagrams.send(format!("{n}: {}", String::from_utf8_lossy(&d)).as_bytes()).await?;
        }
        Ok(())
    }
}

/// The socket address of a bound `tcp://` or `udp://` endpoint.
fn addr(endpoint: &Endpoint) -> SocketAddr {
    let s = endpoint.to_string();
    s.split_once("://").map_or(s.as_str(), |(_, a)| a).parse().unwrap()
}

async fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    timeout(WAIT, r.read_line(&mut l)).await.expect("no reply in time").unwrap();
    l
}

#[tokio::test]
async fn a_custom_line_service_runs_in_process_and_stops_on_its_token() {
    let listener = "127.0.0.1:0".parse::<Endpoint>().unwrap().bind_stream().await.unwrap();
    let server = Server::new(Limits { grace: Duration::from_millis(300), ..Limits::default() });
    let bound = server.serve_stream(listener, "upper", Arc::new(Upper)).unwrap();
    let token = server.shutdown_token();
    let running = tokio::spawn(server.run_until(std::future::pending::<()>()));

    let mut a = BufReader::new(TcpStream::connect(addr(&bound)).await.unwrap());
    let mut b = BufReader::new(TcpStream::connect(addr(&bound)).await.unwrap());
    a.get_mut().write_all(b"hello\n").await.unwrap();
    b.get_mut().write_all(b"sockit\nagain\n").await.unwrap();
    assert_eq!(line(&mut a).await, "HELLO\n");
    assert_eq!(line(&mut b).await, "SOCKIT\n");
    assert_eq!(line(&mut b).await, "AGAIN\n");
    drop(a);

    // Shutdown: the listener closes, the open connection is closed after
    // the grace period, and run_until returns.
    token.cancel();
    timeout(WAIT, running).await.expect("run_until did not return").unwrap();
    let mut rest = Vec::new();
    let n = timeout(WAIT, b.read_to_end(&mut rest)).await.expect("not closed").unwrap();
    assert_eq!(n, 0, "{rest:?}");
}

async fn ask(c: &UdpSocket, to: SocketAddr, what: &str) -> String {
    c.send_to(what.as_bytes(), to).await.unwrap();
    let mut buf = [0u8; 256];
    let (n, from) = timeout(WAIT, c.recv_from(&mut buf)).await.expect("no reply in time").unwrap();
    assert_eq!(from, to, "the reply comes from the address written to");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Waits (bounded) until `server` has `n` connections or sessions open.
async fn until_open(server: &Server, n: usize) {
    timeout(WAIT, async {
        while server.open_connections() != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} open, not {n}", server.open_connections()));
}

#[tokio::test]
async fn a_custom_datagram_session_keeps_state_per_peer_within_the_limits() {
    let socket = "udp://127.0.0.1:0".parse::<Endpoint>().unwrap().bind_datagram().await.unwrap();
    let limits = Limits { max_conns: 2, idle_timeout: Some(Duration::from_secs(2)), ..Limits::default() };
    let server = Server::new(limits);
    let to = addr(&server.serve_datagram_sessions(socket, "counter", Arc::new(Counter)).unwrap());
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 1..=3 {
        assert_eq!(ask(&a, to, "a").await, format!("{i}: a"));
        assert_eq!(ask(&b, to, "b").await, format!("{i}: b"));
    }
    // Two sessions, at --max-conns; idle, they expire and give their places back.
    assert_eq!(server.open_connections(), 2);
    until_open(&server, 0).await;
    // A third peer then gets a session, and a returning one a fresh one.
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(ask(&c, to, "c").await, "1: c");
    assert_eq!(ask(&a, to, "a").await, "1: a");

    let token = server.shutdown_token();
    let running = tokio::spawn(server.run_until(std::future::pending::<()>()));
    token.cancel();
    timeout(WAIT, running).await.expect("run_until did not return").unwrap();
}

/// Sends on its channel when dropped.
struct OnDrop(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[tokio::test]
async fn background_tasks_run_under_the_servers_shutdown() {
    let server = Server::new(Limits { grace: Duration::from_millis(300), ..Limits::default() });
    let token = server.shutdown_token();
    // One that watches the token: its goodbye is done before run_until returns.
    let (said_goodbye, goodbye) = tokio::sync::oneshot::channel();
    let watching = token.clone();
    server.spawn(async move {
        watching.cancelled().await;
        tokio::time::sleep(Duration::from_millis(50)).await; // the goodbye's own work
        let _ = said_goodbye.send(());
    });
    // One that ignores it: dropped when the grace period is over.
    let (dropped_tx, mut dropped) = tokio::sync::oneshot::channel();
    server.spawn(async move {
        let _guard = OnDrop(Some(dropped_tx));
        std::future::pending::<()>().await
    });
    token.cancel();
    timeout(WAIT, server.run_until(std::future::pending::<()>())).await.expect("run_until did not return");
    assert!(goodbye.await.is_ok(), "the goodbye was cut off");
    assert!(dropped.try_recv().is_ok(), "the task that ignored shutdown still runs");
}
