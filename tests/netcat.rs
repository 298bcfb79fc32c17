//! `sockit connect` and `sockit listen`: the close model, UDP, errors.

use std::io::Write;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn connect_pipes_binary_both_ways() {
    let p = Proc::start(&["serve", "echo", "--listen", "127.0.0.1:0"], 1);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let out = run(&["connect", &p.addr("echo", "tcp://").to_string()], &data);
    assert_ok(&out);
    assert!(out.stdout == data, "{} bytes back of {}", out.stdout.len(), data.len());
}

#[test]
fn connect_exits_when_the_peer_closes_first() {
    let p = Proc::start(&["serve", "greet", "--listen", "127.0.0.1:0"], 1);
    let mut c = Proc::start(&["connect", &p.addr("greet", "tcp://").to_string()], 0);
    c.stdin().write_all(b"bo\nexit\n").unwrap();
    assert_eq!(c.read_stdout_until("Hello, bo!\n"), "Welcome!\nHello, bo!\n");
    // stdin is still open; the peer closed after `exit`.
    assert_eq!(c.wait_exit().code(), Some(0));
}

#[test]
fn quit_after_stdin_eof() {
    // A peer that never closes: `sockit listen` with its stdin held open.
    let l = Proc::start(&["listen", "127.0.0.1:0"], 1);
    let ep = l.endpoint("listen", 0);
    let started = Instant::now();
    let out = run(&["connect", "-q", "300ms", &ep], b"bye\n");
    assert_ok(&out);
    assert!(started.elapsed() < Duration::from_secs(5));
    // --send-only ends at stdin EOF too.
    let l2 = Proc::start(&["listen", "127.0.0.1:0"], 1);
    let out = run(&["connect", "--send-only", &l2.endpoint("listen", 0)], b"x\n");
    assert_ok(&out);
}

#[test]
fn no_shutdown_keeps_the_write_half_open() {
    // Echo finishes only when it sees EOF; with --no-shutdown it never does,
    // so -q has to end the session, and the echo arrives first.
    let p = Proc::start(&["serve", "echo", "--listen", "127.0.0.1:0"], 1);
    let out = run(&["connect", "--no-shutdown", "-q", "500ms", &p.addr("echo", "tcp://").to_string()], b"kept\n");
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "kept\n");
}

#[test]
fn recv_only_ignores_stdin() {
    let mut l = Proc::start(&["listen", "127.0.0.1:0"], 1);
    let ep = l.endpoint("listen", 0);
    let mut c = Proc::start(&["connect", "--recv-only", &ep], 0);
    c.stdin().write_all(b"must not be sent\n").unwrap();
    l.stdin().write_all(b"to the client\n").unwrap();
    assert_eq!(c.read_stdout_until("\n"), "to the client\n");
    l.close_stdin();
    assert_eq!(c.wait_exit().code(), Some(0));
    assert!(l.wait_exit().success());
}

#[test]
fn connect_errors_are_clear_with_stable_codes() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    drop(held);
    let out = run(&["connect", &format!("127.0.0.1:{port}")], b"");
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("nothing is listening there"), "{}", text(&out.stderr));

    let out = run(&["connect", "localhost"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing port: write HOST:PORT"), "{}", text(&out.stderr));

    let out = run(&["connect", "no-such-host.invalid:80"], b"");
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("cannot resolve 'no-such-host.invalid'"), "{}", text(&out.stderr));

    let out = run(&["connect", "unix:///nonexistent/s.sock"], b"");
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn connect_udp_line_per_datagram() {
    let p = Proc::start(&["serve", "stamp", "--listen", "udp://127.0.0.1:0"], 1);
    let out = run(&["connect", "-q", "2s", &p.endpoint("stamp", 0)], b"one\ntwo\n");
    assert_ok(&out);
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().any(|l| l.ends_with("] one")) && lines.iter().any(|l| l.ends_with("] two")));
}

#[test]
fn listen_two_way_then_exit() {
    let mut l = Proc::start(&["listen", "127.0.0.1:0"], 1);
    let mut c = tcp(l.endpoint("listen", 0).trim_start_matches("tcp://").parse().unwrap());
    c.write_all(b"from client\n").unwrap();
    assert_eq!(l.read_stdout_until("\n"), "from client\n");
    l.stdin().write_all(b"from server\n").unwrap();
    assert_eq!(read_line(&mut c), "from server");
    drop(c);
    assert_eq!(l.wait_exit().code(), Some(0));
}

#[test]
fn listen_keep_open_serves_one_after_another() {
    let mut l = Proc::start(&["listen", "-k", "127.0.0.1:0"], 1);
    let addr = l.endpoint("listen", 0).trim_start_matches("tcp://").parse().unwrap();
    for i in 0..3 {
        let mut c = tcp(addr);
        c.write_all(format!("client {i}\n").as_bytes()).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(l.read_stdout_until("\n"), format!("client {i}\n"));
        drop(c);
    }
    assert!(l.child.try_wait().unwrap().is_none(), "listen -k exited");
}

#[test]
fn listen_udp_replies_to_the_last_peer() {
    let mut l = Proc::start(&["listen", "udp://127.0.0.1:0"], 1);
    let target: std::net::SocketAddr = l.endpoint("listen", 0).trim_start_matches("udp://").parse().unwrap();
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    b.set_read_timeout(Some(WAIT)).unwrap();
    a.send_to(b"from a\n", target).unwrap();
    assert_eq!(l.read_stdout_until("\n"), "from a\n");
    b.send_to(b"from b\n", target).unwrap();
    assert_eq!(l.read_stdout_until("\n"), "from b\n");
    l.stdin().write_all(b"reply\n").unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = b.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"reply\n");
}

#[test]
fn listen_sums_up_refused_peers_and_serves_an_allowed_one() {
    // `listen` admits through the server core's accept step: a flood of
    // refused peers logs a line per interval, not one per connection.
    let mut l = Proc::start(&["listen", "-k", "--allow", "127.0.0.2", "127.0.0.1:0"], 1);
    let addr: std::net::SocketAddr = l.endpoint("listen", 0).trim_start_matches("tcp://").parse().unwrap();
    for _ in 0..300 {
        let mut c = tcp(addr);
        assert_eq!(read_until_closed(&mut c), b"", "a peer outside --allow was served");
    }
    let summary = l.wait_stderr(|l| l.contains("more connections in the last"));
    assert!(summary.contains("address not allowed (--allow/--deny)"), "{summary}");
    let refusals = l.stderr().lines().filter(|l| l.contains("refused")).count();
    assert!(refusals < 30, "{refusals} log lines for 300 refusals:\n{}", l.stderr());
    // An allowed peer is still served.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.2:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut ok: std::net::TcpStream = sock.into();
    ok.write_all(b"allowed\n").unwrap();
    assert_eq!(l.read_stdout_until("\n"), "allowed\n");
}

#[test]
fn listen_udp_drops_datagrams_from_denied_peers() {
    let mut l = Proc::start(&["listen", "--deny", "127.0.0.1", "udp://127.0.0.1:0"], 1);
    let target: std::net::SocketAddr = l.endpoint("listen", 0).trim_start_matches("udp://").parse().unwrap();
    let denied = UdpSocket::bind("127.0.0.1:0").unwrap();
    let allowed = UdpSocket::bind("127.0.0.2:0").unwrap();
    allowed.set_read_timeout(Some(WAIT)).unwrap();
    // The denied one goes first: had it been taken, it would be printed first.
    denied.send_to(b"denied\n", target).unwrap();
    allowed.send_to(b"allowed\n", target).unwrap();
    assert_eq!(l.read_stdout_until("\n"), "allowed\n");
    // Replies go to the allowed peer, never to a denied one.
    denied.send_to(b"denied again\n", target).unwrap();
    l.stdin().write_all(b"reply\n").unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = allowed.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"reply\n");
}
