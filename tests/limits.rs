//! Every server limit, and shutdown, enforced by the real binary.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn max_conns_refuses_extra_and_keeps_live_ones() {
    let p = Proc::start(&["serve", "greet", "--max-conns", "2", "--listen", "127.0.0.1:0"], 1);
    let addr = p.addr("greet", "tcp://");
    let mut a = tcp(addr);
    let mut b = tcp(addr);
    assert_eq!(read_line(&mut a), "Welcome!");
    assert_eq!(read_line(&mut b), "Welcome!");
    let mut c = tcp(addr);
    let refused = text(&read_to_eof(&mut c));
    assert!(refused.starts_with("! server busy"), "{refused:?}");
    // The live ones are unaffected.
    a.write_all(b"a\n").unwrap();
    assert_eq!(read_line(&mut a), "Hello, a!");
    b.write_all(b"b\n").unwrap();
    assert_eq!(read_line(&mut b), "Hello, b!");
    // A slot frees when one leaves.
    a.write_all(b"exit\n").unwrap();
    read_to_eof(&mut a);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut d = tcp(addr);
        if read_line(&mut d) == "Welcome!" {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
    }
}

#[test]
fn idle_connection_is_closed() {
    let p = Proc::start(&["serve", "echo", "--idle-timeout", "300ms", "--listen", "127.0.0.1:0"], 1);
    let mut c = tcp(p.addr("echo", "tcp://"));
    c.write_all(b"x").unwrap();
    assert_eq!(read_n(&mut c, 1), b"x");
    let started = Instant::now();
    assert_eq!(read_to_eof(&mut c), b"", "the server should close an idle connection");
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[test]
fn max_line_answers_and_closes_with_bounded_memory() {
    let p = Proc::start(
        &[
            "serve",
            "stamp",
            "greet",
            "--max-line",
            "16",
            "--listen",
            "stamp=127.0.0.1:0",
            "--listen",
            "greet=127.0.0.1:0",
        ],
        2,
    );
    // A long line with a newline.
    let mut c = tcp(p.addr("stamp", "tcp://"));
    c.write_all(b"this line is longer than sixteen bytes\n").unwrap();
    assert_eq!(read_line(&mut c), "! line too long (max 16 bytes)");
    assert_eq!(read_to_eof(&mut c), b"");
    // A flood with no newline at all: cut off, not buffered.
    let mut c = tcp(p.addr("greet", "tcp://"));
    assert_eq!(read_line(&mut c), "Welcome!");
    let mut w = c.try_clone().unwrap();
    let flood = std::thread::spawn(move || {
        let chunk = [b'a'; 65536];
        for _ in 0..256 {
            if w.write_all(&chunk).is_err() {
                return true; // the server closed on us, as it should
            }
        }
        false
    });
    // The server closes with our flood unread, so the close may be a reset.
    let reply = text(&read_until_closed(&mut c));
    assert!(reply.contains("! line too long (max 16 bytes)"), "{reply:?}");
    assert!(flood.join().unwrap(), "the server took 16 MiB without a newline");
    // Lines within the limit are fine.
    let mut c = tcp(p.addr("greet", "tcp://"));
    assert_eq!(read_line(&mut c), "Welcome!");
    c.write_all(b"sixteen-bytes-ok\n").unwrap();
    assert_eq!(read_line(&mut c), "Hello, sixteen-bytes-ok!");
}

#[test]
fn shutdown_lets_live_connections_finish_then_exits_zero() {
    let mut p = Proc::start(&["serve", "greet", "--grace", "2s", "--listen", "127.0.0.1:0"], 1);
    let addr = p.addr("greet", "tcp://");
    let mut c = tcp(addr);
    assert_eq!(read_line(&mut c), "Welcome!");
    p.signal("TERM");
    // The listener closes: new connections are refused.
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The live one still works during the grace period...
    c.write_all(b"late\n").unwrap();
    assert_eq!(read_line(&mut c), "Hello, late!");
    // ...and is closed when it ends; the server exits 0.
    assert_eq!(read_to_eof(&mut c), b"");
    assert_eq!(p.wait_exit().code(), Some(0), "{}", p.stderr());
}

#[test]
fn ctrl_c_with_no_connections_exits_at_once() {
    let mut p = Proc::start(&["serve", "echo", "--listen", "127.0.0.1:0", "--listen", "udp://127.0.0.1:0"], 2);
    let started = Instant::now();
    p.signal("INT");
    assert_eq!(p.wait_exit().code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(4), "waited for a grace period with nothing to drain");
}

#[test]
fn port_in_use_is_a_clear_error() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ep = format!("127.0.0.1:{}", held.local_addr().unwrap().port());
    let out = run(&["serve", "echo", "--listen", &ep], b"");
    assert_eq!(out.status.code(), Some(4));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("cannot listen on tcp://{ep}")) && err.contains("in use"), "{err}");
    assert!(err.contains("pick another port"), "{err}");
}

#[test]
fn unix_socket_in_use_and_stale() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let ep = format!("unix://{}", path.display());
    let live = Proc::start(&["serve", "echo", "--listen", &ep], 1);
    let out = run(&["serve", "echo", "--listen", &ep], b"");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    drop(live); // killed: leaves its socket file behind
    assert!(path.exists());
    let again = Proc::start(&["serve", "echo", "--listen", &ep], 1);
    assert_eq!(again.endpoint("echo", 0), ep);
}
