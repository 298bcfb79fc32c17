//! Every service over TCP, UDP, IPv6 and a Unix socket.

use std::io::Write;
use std::net::UdpSocket;
use std::os::unix::net::UnixStream;

use crate::support::*;

fn stamp_ok(line: &str, msg: &str) {
    // [Fri Sep 30 16:26:40 2016] msg
    assert!(line.starts_with('[') && line.ends_with(&format!("] {msg}")), "{line:?}");
    let time = &line[1..line.len() - msg.len() - 2];
    chrono::NaiveDateTime::parse_from_str(time, "%a %b %e %H:%M:%S %Y").unwrap_or_else(|e| panic!("{time:?}: {e}"));
}

#[test]
fn every_service_on_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    let esock = dir.path().join("e.sock");
    let gsock = dir.path().join("g.sock");
    let ssock = dir.path().join("s.sock");
    let (e, g, s) = (
        format!("echo=unix://{}", esock.display()),
        format!("greet=unix://{}", gsock.display()),
        format!("stamp=unix://{}", ssock.display()),
    );
    #[rustfmt::skip]
    let args = ["serve", "echo", "stamp", "greet",
        "--listen", "echo=127.0.0.1:0", "--listen", "echo=[::1]:0", "--listen", "echo=udp://127.0.0.1:0",
        "--listen", "echo=udp://[::1]:0", "--listen", &e,
        "--listen", "stamp=[::1]:0", "--listen", "stamp=udp://[::1]:0", "--listen", "stamp=udp://127.0.0.1:0", "--listen", &s,
        "--listen", "greet=127.0.0.1:0", "--listen", "greet=[::1]:0", "--listen", &g];
    let p = Proc::start(&args, 12);

    // echo over TCP v4 and v6, binary-safe.
    for n in [0, 1] {
        let ep = p.endpoint("echo", n);
        let mut c = tcp(ep.trim_start_matches("tcp://").parse().unwrap());
        c.write_all(b"\x00\xffbinary\r\n").unwrap();
        assert_eq!(read_n(&mut c, 10), b"\x00\xffbinary\r\n", "{ep}");
    }
    // echo over UDP v4 and v6.
    for ep in p.listeners.iter().filter(|(s, e)| s == "echo" && e.starts_with("udp://")).map(|(_, e)| e) {
        let target: std::net::SocketAddr = ep.trim_start_matches("udp://").parse().unwrap();
        let u = UdpSocket::bind(if target.is_ipv6() { "[::1]:0" } else { "127.0.0.1:0" }).unwrap();
        u.set_read_timeout(Some(WAIT)).unwrap();
        u.send_to(b"dgram", target).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = u.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"dgram", "{ep}");
    }
    // echo over Unix, and half-close: the echo finishes, then closes.
    let mut c = UnixStream::connect(&esock).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(b"over unix").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut c), b"over unix");

    // stamp over TCP v6 and Unix, UDP v4 and v6.
    let mut c = tcp(p.addr("stamp", "tcp://"));
    c.write_all(b"data\r\nmore\n").unwrap();
    stamp_ok(&read_line(&mut c), "data");
    stamp_ok(&read_line(&mut c), "more");
    let mut c = UnixStream::connect(&ssock).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(b"via unix\n").unwrap();
    stamp_ok(&read_line(&mut c), "via unix");
    for ep in p.listeners.iter().filter(|(s, e)| s == "stamp" && e.starts_with("udp://")).map(|(_, e)| e) {
        let target: std::net::SocketAddr = ep.trim_start_matches("udp://").parse().unwrap();
        let u = UdpSocket::bind(if target.is_ipv6() { "[::1]:0" } else { "127.0.0.1:0" }).unwrap();
        u.set_read_timeout(Some(WAIT)).unwrap();
        u.send_to(b"hello", target).unwrap();
        let mut buf = [0u8; 128];
        let (n, _) = u.recv_from(&mut buf).unwrap();
        stamp_ok(&text(&buf[..n]), "hello");
    }

    // greet over TCP v4, v6 and Unix.
    for n in [0, 1] {
        let mut c = tcp(p.endpoint("greet", n).trim_start_matches("tcp://").parse().unwrap());
        assert_eq!(read_line(&mut c), "Welcome!");
        c.write_all(b"ada\n").unwrap();
        assert_eq!(read_line(&mut c), "Hello, ada!");
        c.write_all(b"exit\n").unwrap();
        assert_eq!(read_to_eof(&mut c), b"");
    }
    let mut c = UnixStream::connect(&gsock).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(read_line(&mut c), "Welcome!");
    c.write_all(b"unix\n").unwrap();
    assert_eq!(read_line(&mut c), "Hello, unix!");
}

#[test]
fn stamp_utc_and_invalid_utf8() {
    // A zone far from UTC, so local time and --utc differ.
    let mut cmd = sockit();
    cmd.env("TZ", "Asia/Kolkata").args(["serve", "stamp", "--utc", "--listen", "127.0.0.1:0"]);
    let p = Proc::spawn(cmd, 1);
    let mut c = tcp(p.addr("stamp", "tcp://"));
    let before = chrono::Utc::now().format("%H:%M").to_string();
    c.write_all(b"\xff\xfe bytes\n").unwrap();
    let line = read_n(&mut c, 27 + 9);
    let after = chrono::Utc::now().format("%H:%M").to_string();
    let stamp = text(&line[..27]);
    assert!(stamp.contains(&before) || stamp.contains(&after), "{stamp:?} is not UTC ({before})");
    // The invalid bytes come back verbatim, and the server keeps serving.
    assert_eq!(&line[27..], b"\xff\xfe bytes\n");
    let mut c2 = tcp(p.addr("stamp", "tcp://"));
    c2.write_all(b"ok\n").unwrap();
    stamp_ok(&read_line(&mut c2), "ok");
}

#[test]
fn greet_survives_garbage() {
    let p = Proc::start(&["serve", "greet", "--listen", "127.0.0.1:0"], 1);
    let mut c = tcp(p.addr("greet", "tcp://"));
    assert_eq!(read_line(&mut c), "Welcome!");
    c.write_all(b"\x00\x01\xc3\x28\n").unwrap();
    let reply = read_n(&mut c, 13);
    assert_eq!(reply, b"Hello, \x00\x01\xc3\x28!\n");
    // This client has sent a newline, so `exit` waits for its own.
    c.write_all(b"exit\n").unwrap();
    assert_eq!(read_to_eof(&mut c), b"");
}

#[test]
fn one_mib_of_random_bytes_through_echo() {
    let p = Proc::start(&["serve", "echo", "--listen", "127.0.0.1:0"], 1);
    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let mut c = tcp(p.addr("echo", "tcp://"));
    let mut w = c.try_clone().unwrap();
    let d2 = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&d2).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let back = read_to_eof(&mut c);
    writer.join().unwrap();
    assert!(back == data, "echo changed the bytes ({} back of {})", back.len(), data.len());
}

#[test]
fn thousand_concurrent_connections_all_served() {
    let p = Proc::start(&["serve", "echo", "--listen", "127.0.0.1:0"], 1);
    let addr = p.addr("echo", "tcp://");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let served = rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Open all first, so all 1000 are connected at once.
        let mut conns = Vec::new();
        for _ in 0..1000 {
            conns.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let tasks: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                tokio::spawn(async move {
                    let msg = format!("conn {i:04}\n");
                    s.write_all(msg.as_bytes()).await.unwrap();
                    let mut buf = vec![0u8; msg.len()];
                    s.read_exact(&mut buf).await.unwrap();
                    buf == msg.as_bytes()
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(tokio::time::timeout(WAIT, t).await.unwrap().unwrap());
        }
        ok
    });
    assert_eq!(served, 1000, "{}", p.stderr());
}

#[test]
fn json_log_events() {
    let mut p = Proc::start(&["serve", "echo", "--log-format", "json", "--listen", "127.0.0.1:0"], 1);
    let mut c = tcp(p.addr("echo", "tcp://"));
    c.write_all(b"12345").unwrap();
    assert_eq!(read_n(&mut c, 5), b"12345");
    drop(c);
    p.wait_stderr(|l| l.contains("\"closed\""));
    let events = json_events(&p.stderr());
    let listening = events.iter().find(|e| e["message"].starts_with("listening on tcp://127.0.0.1:")).unwrap();
    assert_eq!(listening["service"], "echo");
    assert!(events.iter().any(|e| e["message"] == "accepted"), "{events:?}");
    let closed = events.iter().find(|e| e["message"] == "closed").unwrap();
    assert_eq!((closed["bytes_in"].as_str(), closed["bytes_out"].as_str()), ("5", "5"));
}
