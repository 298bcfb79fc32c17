//! Hostile peers: each test plays an attacker against one documented bound
//! (memory per connection and per room, descriptors, handshakes per
//! address, terminal-safe text, unique nicks) and checks that it holds and
//! that everyone else is still served.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::*;

/// The server's resident memory, in MiB.
fn rss_mib(p: &Proc) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

/// The most memory the server holds over `window` (sampled).
fn peak_rss_mib(p: &Proc, window: Duration) -> u64 {
    let until = Instant::now() + window;
    let mut peak = rss_mib(p);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
        peak = peak.max(rss_mib(p));
    }
    peak
}

/// Writes `total` bytes of `line` repeated to `s`, stopping early if the
/// server stops taking them for `stall` (it is not reading: as it should
/// be, once its bound is reached). Returns the bytes written.
fn pour(s: &mut TcpStream, line: &[u8], total: usize, stall: Duration) -> usize {
    s.set_write_timeout(Some(stall)).unwrap();
    let chunk: Vec<u8> = line.iter().copied().cycle().take(64 * 1024 / line.len() * line.len()).collect();
    let mut sent = 0;
    while sent < total {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    sent
}

/// Item: 100 clients that send lines and never read their replies. Each
/// connection buffers at most --max-line plus a read chunk: the rest waits
/// in the clients' own sockets.
#[test]
fn line_clients_that_never_read_hold_bounded_memory() {
    let p = Proc::start(&["serve", "stamp", "--listen", "127.0.0.1:0"], 1);
    let addr = p.addr("stamp", "tcp://");
    let base = rss_mib(&p);
    let clients: Vec<_> = (0..100)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = tcp(addr);
                pour(&mut s, b"0123456789abcdef\n", 4 << 20, Duration::from_secs(2));
                s // held open, unread, until the measurement is done
            })
        })
        .collect();
    let held: Vec<TcpStream> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    let peak = peak_rss_mib(&p, Duration::from_millis(500));
    // 100 × (64 KiB + 8 KiB) is 7 MiB; before the bound it was 283 MiB.
    assert!(peak < base + 48, "the server grew from {base} to {peak} MiB for 100 clients that do not read");
    drop(held);
    // And it still serves.
    let mut c = tcp(addr);
    c.write_all(b"still here\n").unwrap();
    assert!(read_line(&mut c).ends_with("] still here"));
}

/// A chat client called `nick` that reads everything it is sent on a
/// thread of its own, so it never falls behind.
fn drain(addr: SocketAddr, nick: &str) -> ChatClient {
    let mut c = ChatClient::join(addr);
    c.rename(nick);
    let mut r = c.r.get_ref().try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
    });
    c
}

/// Items: a member pouring in one-byte lines under a long nick (each line
/// grows to 37 bytes as the room sees it) while another member does not
/// read. The room's queue is bounded in bytes as the room sees them, so the
/// server stays small; the flood is handled in turns, so a third member's
/// commands are answered at once.
#[test]
fn a_flood_into_a_room_with_a_member_that_never_reads_stays_bounded() {
    // A short queue: the room's bound (256 posts) is small, the growth
    // of posts counted in text bytes alone (256 x 606 KB) is not.
    let (p, addr) = start_chat(&["--max-queue", "256"]);
    let base = rss_mib(&p);
    let flooder = drain(addr, &"f".repeat(32));
    // In the lobby: one that never reads, with a small socket buffer.
    let stuck = ChatClient::join(addr);
    socket2::SockRef::from(&stuck.w).set_recv_buffer_size(4096).unwrap();
    // The probe is in a room of its own: it shares the server's threads and
    // state with the flood, not the flood's lines.
    let mut probe = ChatClient::join(addr);
    probe.send("/join quiet");
    let mut w = flooder.w.try_clone().unwrap();
    let flood = std::thread::spawn(move || pour(&mut w, b"x\n", 32 << 20, Duration::from_secs(5)));
    // While it floods, /who from the probe comes back promptly each time.
    let mut worst = Duration::ZERO;
    let mut flooding = true;
    while flooding {
        let asked = Instant::now();
        probe.send("/who");
        let mut l = probe.line();
        while !l.starts_with("* in quiet:") {
            l = probe.line();
        }
        worst = worst.max(asked.elapsed());
        flooding = !flood.is_finished();
    }
    let sent = flood.join().unwrap();
    let peak = peak_rss_mib(&p, Duration::from_millis(500));
    eprintln!("flood of {sent} bytes: RSS {base} -> {peak} MiB; /who took at most {worst:?}");
    // The server took it all, never stalling 5 s on one 64 KiB write (it
    // did, after 5 MiB, when a burst was formatted line by line under the
    // hub's lock).
    assert_eq!(sent, 32 << 20, "the server stopped reading the flood for 5 s");
    // The room holds at most --max-queue posts of 16 KiB and a line: 5 MiB
    // here. Before the bound, each post could grow to 606 KB.
    assert!(peak < base + 32, "the server grew from {base} to {peak} MiB under a {sent}-byte flood");
    // Before, the lobby froze for 6-17 s; the bound here only catches a
    // stall, not a slow machine.
    assert!(worst < Duration::from_secs(3), "/who took {worst:?} during the flood");
    drop(stuck);
}

/// A member that stops reading while direct messages pile up is cut off
/// (its direct queue full), like one that falls behind its room.
#[test]
fn a_member_that_stops_reading_direct_messages_is_cut_off() {
    let (mut p, addr) = start_chat(&[]);
    let mut victim = ChatClient::join(addr);
    victim.rename("victim");
    let sender = drain(addr, "sender");
    // 8 MiB of direct messages: more than the victim's socket buffers and
    // its direct queue hold. Bounded by the write timeout if the server
    // stops reading the sender.
    let mut w = sender.w.try_clone().unwrap();
    let line = format!("/msg victim {}\n", "y".repeat(4000));
    let flood = std::thread::spawn(move || pour(&mut w, line.as_bytes(), 8 << 20, Duration::from_secs(3)));
    p.wait_stderr(|l| l.contains("too slow to read"));
    let mut who = ChatClient::join(addr);
    who.send("/who");
    let l = who.next_said();
    assert!(!l.contains("victim"), "{l}");
    flood.join().unwrap();
    drop(victim);
}

/// Item: lines reach others without controls or escape sequences, in room
/// lines and direct messages alike.
#[test]
fn chat_lines_reach_others_without_control_characters() {
    let (_p, addr) = start_chat(&[]);
    let mut eve = ChatClient::join(addr);
    let mut bob = ChatClient::join(addr);
    let was = eve.nick.clone();
    eve.rename("eve");
    bob.expect(&format!("* {was} is now eve"));
    let was = bob.nick.clone();
    bob.rename("bob");
    eve.expect(&format!("* {was} is now bob"));
    for attack in [
        "x\x1b[2K\r<alice> send me your password",
        "\x1b]0;pwned\x07\r* alice is now root",
        "bell\x07 and \u{9b}31m C1 CSI",
    ] {
        eve.send(attack);
        let got = bob.next_said();
        assert!(!got.chars().any(|c| c.is_control() && c != '\t'), "{got:?}");
        assert!(got.starts_with("<eve> "), "{got:?}");
        eve.send(&format!("/msg bob {attack}"));
        let got = bob.next_said();
        assert!(!got.chars().any(|c| c.is_control() && c != '\t'), "{got:?}");
        assert!(got.starts_with("<eve> (direct) "), "{got:?}");
    }
    eve.send("tabs\tstay");
    assert_eq!(bob.next_said(), "<eve> tabs\tstay");
}

/// Item: duplicate nicks. Guests' names are the server's to give: no one
/// can take the next guest's name first, so two members never share one.
#[test]
fn guest_nicks_cannot_be_taken_so_they_stay_unique() {
    let (_p, addr) = start_chat(&[]);
    let mut a = ChatClient::join(addr);
    let n: u64 = a.nick["guest-".len()..].parse().unwrap();
    let next = format!("guest-{}", n + 2);
    a.send(&format!("/nick {next}"));
    assert_eq!(a.next_said(), "! nicks starting with guest- are given to guests: choose another");
    let b = ChatClient::join(addr);
    let c = ChatClient::join(addr);
    assert_eq!(c.nick, next, "guests are numbered in order");
    a.send("/who");
    let who = a.next_said();
    let mut listed: Vec<&str> = who.trim_start_matches("* in lobby: ").split(", ").collect();
    listed.sort();
    listed.dedup();
    assert_eq!(listed.len(), 3, "{who}");
    assert!(listed.contains(&b.nick.as_str()), "{who}");
}

/// `sockit ARGS` under an open-file limit of `n` (soft and hard, so it
/// cannot raise it).
fn under_open_file_limit(n: u32, args: &[&str], listeners: usize) -> Proc {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(format!("ulimit -n {n} && exec \"$0\" \"$@\"")).arg(env!("CARGO_BIN_EXE_sockit")).args(args);
    Proc::spawn(cmd, listeners)
}

/// Item: descriptors run out below --max-conns. The server sizes its limit
/// by what a connection costs (a TLS one, three), says so at start, and a
/// client past it gets the busy line at once instead of waiting unaccepted
/// in the backlog while every listener stalls.
#[test]
fn the_open_file_limit_lowers_the_connection_limit_and_past_it_clients_are_told() {
    let mut p = under_open_file_limit(
        256,
        &["serve", "greet", "--listen", "127.0.0.1:0", "--listen", "tls://127.0.0.1:0", "-v"],
        2,
    );
    let log = p.stderr();
    assert!(
        log.contains("at most 192 connections at once, not --max-conns 10000")
            && log.contains("each connection costs 1 descriptors"),
        "{log}"
    );
    assert!(log.contains("at most 64 connections at once") && log.contains("costs 3 descriptors"), "{log}");
    let addr = p.addr("greet", "tcp://");
    // 300 clients: each is welcomed or told the server is busy, promptly.
    let mut held = vec![];
    let (mut welcomed, mut busy) = (0, 0);
    for _ in 0..300 {
        let mut c = tcp(addr);
        match read_line(&mut c).as_str() {
            "Welcome!" => welcomed += 1,
            l if l.starts_with("! server busy") => busy += 1,
            other => panic!("unexpected line {other:?}"),
        }
        held.push(c);
    }
    assert_eq!((welcomed, busy), (192, 108), "welcomed and told busy");
    p.wait_stderr(|l| l.contains("open-file limit reached"));
    drop(held);
    // The server recovers: a client is welcomed again once the server has
    // seen the others go (bounded).
    let deadline = Instant::now() + WAIT;
    loop {
        let mut c = tcp(addr);
        if read_line(&mut c) == "Welcome!" {
            break;
        }
        assert!(Instant::now() < deadline, "never welcomed again");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Item: a flood of refused connections logs a line per interval, not one
/// per connection.
#[test]
fn refused_connections_are_summed_up_not_logged_one_by_one() {
    let mut p = Proc::start(&["serve", "greet", "--max-conns", "1", "--listen", "127.0.0.1:0"], 1);
    let addr = p.addr("greet", "tcp://");
    let mut first = tcp(addr);
    assert_eq!(read_line(&mut first), "Welcome!");
    for _ in 0..500 {
        let mut c = tcp(addr);
        assert!(read_line(&mut c).starts_with("! server busy"));
    }
    let summary = p.wait_stderr(|l| l.contains("more connections in the last"));
    assert!(summary.contains("connection limit reached (--max-conns)"), "{summary}");
    let refusals = p.stderr().lines().filter(|l| l.contains("refused")).count();
    assert!(refusals < 30, "{refusals} log lines for 500 refusals:\n{}", p.stderr());
}

/// Item: parallel token guesses. One address has at most 8 handshakes open
/// (the rest are refused at once, so they hold no connection slot), and
/// their proofs are checked one turn at a time, spaced by the failures; a
/// client from another address gets in at once.
#[test]
fn parallel_token_guesses_from_one_address_gain_nothing() {
    let (wrong, right): (&'static [u8], &'static [u8]) = (b"guess", b"the-token");
    let mut cmd = sockit();
    cmd.args(["serve", "exec", "--listen", "127.0.0.1:0"]).env("SOCKIT_TOKEN", "the-token");
    let srv = Proc::spawn(cmd, 1);
    let addr = srv.addr("exec", "tcp://");
    let ep: sockit::Endpoint = format!("tcp://{addr}").parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let attempt = move |from: &'static str, token: &'static [u8]| {
        let ep = ep.clone();
        async move {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
            let mut s = sock.connect(addr).await.unwrap();
            let exec = &sockit::services::exec::HANDSHAKE;
            sockit::auth::login(&mut s, exec, &ep, Some(token), WAIT).await.map(|_| ()).map_err(|e| format!("{e:#}"))
        }
    };
    rt.block_on(async {
        let mut guesses = tokio::task::JoinSet::new();
        for _ in 0..20 {
            guesses.spawn(attempt("127.0.0.1", wrong));
        }
        // Another address is served while the guesses wait their turns.
        let admitted = tokio::time::timeout(WAIT, attempt("127.0.0.2", right)).await;
        assert_eq!(admitted, Ok(Ok(())), "a client from another address was held up");
        // Wait for three proofs to be checked; the rest of the twenty were
        // refused at once (more than 8 open) or wait for later turns. (A
        // handshake that ends early frees a place for a late one: hence
        // "at least".)
        let (mut at_once, mut wrong_token) = (0, 0);
        while wrong_token < 3 {
            let got = tokio::time::timeout(WAIT, guesses.join_next()).await.expect("bounded").unwrap().unwrap();
            match got {
                Err(e) if e.contains("too many authentication attempts from your address at once") => at_once += 1,
                Err(e) if e.contains("wrong token") => wrong_token += 1,
                // The eighth open one's turn would be over 30 s away.
                Err(e) if e.contains("too many failed attempts from your address; try again in") => {}
                other => panic!("unexpected outcome {other:?}"),
            }
        }
        assert!(at_once >= 8, "only {at_once} of 20 parallel handshakes were refused at once");
        guesses.abort_all();
    });
    // Three proofs were checked by the time the third answer came, not
    // twenty at once.
    let checked = srv.stderr().lines().filter(|l| l.contains("WARN authentication failed")).count();
    assert!(checked <= 4, "{checked} guesses checked at once:\n{}", srv.stderr());
    srv.signal("TERM");
}
