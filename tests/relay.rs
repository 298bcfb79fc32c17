//! `sockit relay`: bytes intact both ways, half-close kept, UDP sessions,
//! limits, and a dead upstream.

use std::io::Write;
use std::net::UdpSocket;
use std::process::Command;

use crate::support::*;

#[test]
fn relays_bytes_intact_in_both_copy_modes() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix://{}", dir.path().join("echo.sock").display());
    let echo = Proc::start(&["serve", "echo", "--listen", "127.0.0.1:0", "--listen", &unix], 2);
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i.wrapping_mul(31) >> 3) as u8).collect();
    for copy in ["splice", "buffered"] {
        for to in [echo.endpoint("echo", 0), echo.endpoint("echo", 1)] {
            let relay = Proc::start(&["relay", "--copy", copy, "127.0.0.1:0", &to], 1);
            let out = run(&["connect", &relay.endpoint("relay", 0)], &data);
            assert_ok(&out);
            assert!(out.stdout == data, "{copy} to {to}: {} bytes back of {}", out.stdout.len(), data.len());
        }
    }
}

#[test]
fn half_close_reply_is_not_cut_off() {
    // socat's child answers only after EOF: the relay must pass the
    // half-close on and keep the other direction open for the reply.
    need("socat");
    let port = free_port();
    let mut cmd = Command::new("socat");
    // -t 10: socat itself waits only 0.5 s after the client's EOF for the
    // reply by default, which a loaded machine can miss.
    cmd.args(["-t", "10", &format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"), "SYSTEM:sleep 0.3; tr a-z A-Z"]);
    let _upper = Proc::spawn(cmd, 0);
    wait_tcp_listening(port);
    for copy in ["splice", "buffered"] {
        let mut relay = Proc::start(&["relay", "--copy", copy, "127.0.0.1:0", &format!("127.0.0.1:{port}")], 1);
        let mut c = tcp(relay.endpoint("relay", 0).trim_start_matches("tcp://").parse().unwrap());
        c.write_all(b"late reply\n").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let got = read_to_eof(&mut c);
        assert_eq!(text(&got), "LATE REPLY\n", "{copy}:\n{}", relay.stderr());
        // One log line per closed connection, with the bytes each way.
        let closed = relay.wait_stderr(|l| l.contains("closed"));
        assert!(closed.contains("bytes_in=11") && closed.contains("bytes_out=11"), "{closed}");
    }
}

#[test]
fn limits_apply_and_a_dead_upstream_does_not_stop_the_relay() {
    let echo = Proc::start(&["serve", "echo", "--listen", "127.0.0.1:0"], 1);
    let relay = Proc::start(&["relay", "--max-conns", "1", "127.0.0.1:0", &echo.endpoint("echo", 0)], 1);
    let addr = relay.endpoint("relay", 0).trim_start_matches("tcp://").parse().unwrap();
    let mut a = tcp(addr);
    a.write_all(b"first\n").unwrap();
    assert_eq!(read_line(&mut a), "first");
    let mut b = tcp(addr);
    assert_eq!(read_until_closed(&mut b), b"", "the second connection is refused");
    a.write_all(b"still\n").unwrap();
    assert_eq!(read_line(&mut a), "still");

    let port = free_port();
    let mut dead = Proc::start(&["relay", "127.0.0.1:0", &format!("127.0.0.1:{port}")], 1);
    let daddr = dead.endpoint("relay", 0).trim_start_matches("tcp://").parse().unwrap();
    for _ in 0..2 {
        let mut c = tcp(daddr);
        assert_eq!(read_until_closed(&mut c), b"");
    }
    let line = dead.wait_stderr(|l| l.contains("closed with error"));
    assert!(line.contains(&format!("cannot connect to tcp://127.0.0.1:{port}")), "{line}");
}

#[test]
fn udp_sessions_per_client_and_expiry() {
    let echo = Proc::start(&["serve", "echo", "--listen", "udp://127.0.0.1:0"], 1);
    let mut relay =
        Proc::start(&["relay", "--idle-timeout", "300ms", "udp://127.0.0.1:0", &echo.endpoint("echo", 0)], 1);
    let target: std::net::SocketAddr = relay.endpoint("relay", 0).trim_start_matches("udp://").parse().unwrap();
    let clients: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    for (i, c) in clients.iter().enumerate() {
        c.set_read_timeout(Some(WAIT)).unwrap();
        c.send_to(format!("client {i}").as_bytes(), target).unwrap();
    }
    for (i, c) in clients.iter().enumerate() {
        let mut buf = [0u8; 64];
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (format!("client {i}").as_bytes(), target));
    }
    // Idle sessions expire and are logged; a client that comes back gets a new one.
    for _ in 0..3 {
        relay.wait_stderr(|l| l.contains("session closed"));
    }
    clients[0].send_to(b"again", target).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = clients[0].recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"again");
}

#[test]
fn udp_to_tcp_is_a_usage_error() {
    let out = run(&["relay", "udp://127.0.0.1:0", "127.0.0.1:9"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("UDP relays only to UDP"), "{}", text(&out.stderr));
}

/// Binds a UDP socket on `ip` that waits at most [`WAIT`] for a datagram.
fn udp_on(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// The next datagram on `s` and where it came from (bounded).
fn recv_datagram(s: &UdpSocket) -> (String, std::net::SocketAddr) {
    let mut buf = [0u8; 256];
    let (n, from) = s.recv_from(&mut buf).unwrap_or_else(|e| panic!("no datagram came: {e}"));
    (text(&buf[..n]), from)
}

#[test]
fn udp_session_lives_while_only_the_client_sends() {
    // An upstream that never replies: only the client's datagrams show the
    // session is in use, and they must keep it alive.
    let upstream = udp_on("127.0.0.1");
    let to = format!("udp://{}", upstream.local_addr().unwrap());
    // A client pace of an eighth of the timeout leaves a slow machine room
    // for a long scheduling stall before the session could expire.
    let idle = std::time::Duration::from_secs(2);
    let mut relay = Proc::start(&["relay", "--idle-timeout", "2s", "udp://127.0.0.1:0", &to], 1);
    let target: std::net::SocketAddr = relay.endpoint("relay", 0).trim_start_matches("udp://").parse().unwrap();
    let client = udp_on("127.0.0.1");
    let started = std::time::Instant::now();
    let mut sources = Vec::new();
    let mut i = 0;
    // Bounded: 2 idle timeouts of traffic, one datagram every eighth of one.
    while started.elapsed() < idle * 2 {
        client.send_to(format!("ping {i}").as_bytes(), target).unwrap();
        let (got, from) = recv_datagram(&upstream);
        assert_eq!(got, format!("ping {i}"));
        sources.push(from.port());
        i += 1;
        std::thread::sleep(idle / 8); // the client's pace, not a wait for an event
    }
    sources.dedup();
    assert_eq!(sources.len(), 1, "the session expired and was recreated while the client sent: ports {sources:?}");
    // Once the client stops, the session does expire, its traffic counted.
    let closed = relay.wait_stderr(|l| l.contains("session closed"));
    assert!(closed.contains(&format!("datagrams_in={i}")) && closed.contains("datagrams_out=0"), "{closed}");
}

#[test]
fn udp_relay_applies_allow_and_deny() {
    let upstream = udp_on("127.0.0.1");
    let to = format!("udp://{}", upstream.local_addr().unwrap());
    for rule in [["--allow", "127.0.0.2"], ["--deny", "127.0.0.1"]] {
        let relay = Proc::start(&["relay", rule[0], rule[1], "udp://127.0.0.1:0", &to], 1);
        let target: std::net::SocketAddr = relay.endpoint("relay", 0).trim_start_matches("udp://").parse().unwrap();
        let refused = udp_on("127.0.0.1");
        let admitted = udp_on("127.0.0.2");
        // The refused datagram goes first: had it been relayed, the upstream
        // would see it before the admitted ones.
        refused.send_to(b"refused", target).unwrap();
        admitted.send_to(b"admitted 1", target).unwrap();
        refused.send_to(b"refused again", target).unwrap();
        admitted.send_to(b"admitted 2", target).unwrap();
        for want in ["admitted 1", "admitted 2"] {
            assert_eq!(recv_datagram(&upstream).0, want, "{rule:?}");
        }
    }
}

/// `sockit ARGS` under an open-file limit of `n` (soft and hard, so it
/// cannot raise it).
fn under_open_file_limit(n: u32, args: &[&str]) -> Proc {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!("ulimit -n {n} && exec \"$0\" \"$@\"")).arg(env!("CARGO_BIN_EXE_sockit")).args(args);
    Proc::spawn(cmd, 1)
}

#[test]
fn udp_sessions_reserve_their_upstream_socket_from_the_open_file_budget() {
    // 72 descriptors less the 64 kept back leave 8 for sessions, each of
    // which holds an upstream socket: the ninth client waits until one of
    // the first eight expires, and the server never runs out.
    let echo = Proc::start(&["serve", "echo", "--listen", "udp://127.0.0.1:0"], 1);
    let mut relay =
        under_open_file_limit(72, &["relay", "--idle-timeout", "3s", "udp://127.0.0.1:0", &echo.endpoint("echo", 0)]);
    let log = relay.stderr();
    assert!(log.contains("at most 8 sessions at once, not --max-conns 10000"), "{log}");
    let target: std::net::SocketAddr = relay.endpoint("relay", 0).trim_start_matches("udp://").parse().unwrap();
    let clients: Vec<UdpSocket> = (0..9).map(|_| udp_on("127.0.0.1")).collect();
    for (i, c) in clients[..8].iter().enumerate() {
        c.send_to(format!("client {i}").as_bytes(), target).unwrap();
        assert_eq!(recv_datagram(c).0, format!("client {i}"));
    }
    clients[8].send_to(b"one too many", target).unwrap();
    relay.wait_stderr(|l| l.contains("open-file limit reached"));
    // Once the others expire, the ninth gets a session (bounded: each
    // try waits at most a short read timeout).
    let late = &clients[8];
    late.set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        late.send_to(b"late", target).unwrap();
        let mut buf = [0u8; 64];
        if let Ok(n) = late.recv(&mut buf) {
            assert_eq!(&buf[..n], b"late");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the ninth client never got a session:\n{}", relay.stderr());
    }
}

#[test]
fn udp_sessions_count_against_max_conns() {
    let upstream = udp_on("127.0.0.1");
    let to = format!("udp://{}", upstream.local_addr().unwrap());
    let mut relay = Proc::start(&["relay", "--max-conns", "1", "--idle-timeout", "2s", "udp://127.0.0.1:0", &to], 1);
    let target: std::net::SocketAddr = relay.endpoint("relay", 0).trim_start_matches("udp://").parse().unwrap();
    let (a, b) = (udp_on("127.0.0.1"), udp_on("127.0.0.1"));
    a.send_to(b"a", target).unwrap();
    assert_eq!(recv_datagram(&upstream).0, "a");
    b.send_to(b"b, refused", target).unwrap();
    relay.wait_stderr(|l| l.contains("session limit reached (--max-conns)"));
    // A's session expires; then B gets one (once the server has released
    // A's place, a moment after the close is logged), and its datagram is
    // the next the upstream sees.
    relay.wait_stderr(|l| l.contains("session closed"));
    upstream.set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        b.send_to(b"b, admitted", target).unwrap();
        let mut buf = [0u8; 64];
        if let Ok(n) = upstream.recv(&mut buf) {
            assert_eq!(&buf[..n], b"b, admitted");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "B never got a session:\n{}", relay.stderr());
    }
}

#[test]
fn udp_sessions_close_at_shutdown_with_their_counts() {
    let echo = Proc::start(&["serve", "echo", "--listen", "udp://127.0.0.1:0"], 1);
    let mut relay = Proc::start(&["relay", "udp://127.0.0.1:0", &echo.endpoint("echo", 0)], 1);
    let target: std::net::SocketAddr = relay.endpoint("relay", 0).trim_start_matches("udp://").parse().unwrap();
    let c = udp_on("127.0.0.1");
    for i in 0..3 {
        c.send_to(format!("{i}").as_bytes(), target).unwrap();
        assert_eq!(recv_datagram(&c).0, format!("{i}"));
    }
    relay.signal("TERM");
    let closed = relay.wait_stderr(|l| l.contains("session closed"));
    assert!(closed.contains("datagrams_in=3 datagrams_out=3"), "{closed}");
    assert!(
        closed.contains(&format!("peer={}", c.local_addr().unwrap())),
        "one span per session, with its peer: {closed}"
    );
    assert_eq!(relay.wait_exit().code(), Some(0), "{}", relay.stderr());
}
