//! The chat broker: protocol, rooms, nicks, direct messages, limits, raw
//! mode against ncat --broker, and a thousand clients in one room.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;

use crate::support::*;

#[test]
fn two_users_chat_and_message_directly() {
    let (_p, addr) = start_chat(&[]);
    let mut a = ChatClient::join(addr);
    let mut b = ChatClient::join(addr);
    assert_eq!(a.line(), format!("* {} joined", b.nick));
    let (a_was, b_was) = (a.nick.clone(), b.nick.clone());
    a.rename("alice");
    assert_eq!(b.next_said(), format!("* {a_was} is now alice"));
    b.rename("bob");
    assert_eq!(a.next_said(), format!("* {b_was} is now bob"));
    a.send("hello bob");
    assert_eq!(b.next_said(), "<alice> hello bob");
    b.send("hi alice");
    // Not echoed to the sender: alice's next line is bob's.
    assert_eq!(a.next_said(), "<bob> hi alice");
    a.send("/msg bob just for you");
    assert_eq!(b.next_said(), "<alice> (direct) just for you");
    a.send("/who");
    assert_eq!(a.next_said(), "* in lobby: alice, bob");
    a.send("/rooms");
    assert_eq!(a.next_said(), "* rooms: lobby (2)");
    a.send("/msg nobody hi");
    assert_eq!(a.next_said(), "! no such user: nobody");
    b.send("/quit");
    assert_eq!(b.next_said(), "* bye");
    assert_eq!(a.line(), "* bob left");
}

#[test]
fn crowded_rooms_hear_no_joins_and_leaves() {
    let (_p, addr) = start_chat(&["--quiet-above", "2"]);
    let mut a = ChatClient::join(addr);
    let b = ChatClient::join(addr);
    assert_eq!(a.line(), format!("* {} joined", b.nick), "two members: announced");
    let mut c = ChatClient::join(addr);
    c.send("hi");
    // The third member's arrival is not announced: its line comes first.
    assert_eq!(a.line(), format!("<{}> hi", c.nick));
    // c leaves unannounced (three members): /who is the next line a gets
    // once the server has seen it go.
    drop(c);
    let both = format!("* in lobby: {}, {}", a.nick, b.nick);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        a.send("/who");
        if a.line() == both {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "c never left");
    }
    // Two members again: b's leaving is announced.
    let b_nick = b.nick.clone();
    drop(b);
    assert_eq!(a.line(), format!("* {b_nick} left"));
}

#[test]
fn rooms_isolate() {
    let (_p, addr) = start_chat(&[]);
    let mut a = ChatClient::join(addr);
    let mut c = ChatClient::join(addr);
    c.rename("carol");
    a.next_said(); // carol's rename
    c.send("/join dev");
    assert_eq!(c.line(), "* carol joined");
    a.send("lobby only");
    c.send("/who");
    assert_eq!(c.next_said(), "* in dev: carol", "a lobby line reached dev");
    c.send("dev only");
    a.send("/rooms");
    assert_eq!(a.next_said(), "* rooms: dev (1), lobby (1)", "a dev line reached the lobby");
}

#[test]
fn nick_clash_and_bad_input_are_refused_with_reasons() {
    let (_p, addr) = start_chat(&["--max-line", "64"]);
    let mut a = ChatClient::join(addr);
    let mut b = ChatClient::join(addr);
    a.rename("alice");
    b.next_said();
    b.send("/nick alice");
    assert_eq!(b.next_said(), "! nick alice is taken");
    b.send("/nick bad!name");
    assert!(b.next_said().starts_with("! invalid nick bad!name"));
    b.send("/dance");
    assert_eq!(b.next_said(), "! unknown command /dance: /help lists the commands");
    b.send("/msg alice");
    assert_eq!(b.next_said(), "! usage: /msg NICK text");
    b.send("/help");
    assert_eq!(b.next_said(), "* commands:");
    // A long line is refused and dropped; the connection goes on.
    b.send(&"x".repeat(200));
    let l = loop {
        let l = b.next_said();
        if !l.starts_with("* ") {
            break l;
        }
    };
    assert_eq!(l, "! line too long (max 64 bytes)");
    // Invalid UTF-8 is replaced, never a crash.
    b.w.write_all(b"\xff\xfe bytes\n").unwrap();
    assert_eq!(a.next_said(), format!("<{}> \u{fffd}\u{fffd} bytes", b.nick));
}

#[test]
fn rate_limit() {
    let (_p, addr) = start_chat(&["--rate", "2/s"]);
    let mut a = ChatClient::join(addr);
    for i in 0..5 {
        a.send(&format!("line {i}"));
    }
    assert_eq!(a.next_said(), "! slow down: at most 2 lines per second");
}

/// One sender, one reader that never reads, one that reads everything: the
/// slow one is cut off (the server logs why), the fast one misses nothing.
fn slow_reader_is_cut_off(extra: &[&str]) {
    const LINES: usize = 20_000;
    const STEP: usize = 100;
    let (mut p, addr) = start_chat(extra);
    let mut sender = tcp(addr);
    let slow = tcp(addr); // never reads
    let fast = tcp(addr);
    let (progress, seen) = std::sync::mpsc::channel();
    let (ready, registered) = std::sync::mpsc::channel();
    let fast_reader = std::thread::spawn(move || {
        let mut r = BufReader::new(fast);
        let mut l = String::new();
        while !l.contains("sync") {
            l.clear();
            assert!(r.read_line(&mut l).unwrap() > 0, "the fast reader was disconnected");
        }
        let _ = ready.send(());
        let mut got = 0;
        while got < LINES {
            let mut l = String::new();
            assert!(r.read_line(&mut l).unwrap() > 0, "the fast reader was disconnected");
            if l.contains("payload ") {
                got += 1;
                if got % STEP == 0 {
                    let _ = progress.send(got);
                }
            }
        }
    });
    // The broker registers a client some time after it connects: the fast
    // reader (connected last) has been registered once it hears the sender.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        sender.write_all(b"sync\n").unwrap();
        if registered.recv_timeout(std::time::Duration::from_millis(50)).is_ok() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the fast reader never heard the sender");
    }
    // 20 MB for a reader that never reads: more than its socket buffers and
    // its queue hold. The sender keeps pace with the fast reader, so only
    // the slow one falls behind.
    let pad = "p".repeat(1000);
    for batch in 0..LINES / STEP {
        let burst: String = (0..STEP).map(|i| format!("payload {} {pad}\n", batch * STEP + i)).collect();
        sender.write_all(burst.as_bytes()).unwrap();
        let got = seen.recv_timeout(WAIT).unwrap_or_else(|_| p.fail("the fast reader stalled"));
        assert_eq!(got, (batch + 1) * STEP);
    }
    fast_reader.join().unwrap();
    let cut = p.wait_stderr(|l| l.contains("too slow to read"));
    assert!(cut.contains("closed with error"), "{cut}");
    drop(slow);
}

#[test]
fn a_slow_reader_is_cut_off_and_a_fast_one_gets_everything() {
    slow_reader_is_cut_off(&["--max-queue", "256"]);
}

#[test]
fn raw_mode_cuts_off_a_slow_reader_too() {
    slow_reader_is_cut_off(&["--raw", "--max-queue", "32"]);
}

#[test]
fn shutdown_tells_every_client() {
    let (mut p, addr) = start_chat(&[]);
    let mut a = ChatClient::join(addr);
    p.signal("TERM");
    assert_eq!(a.next_said(), "* server shutting down");
    assert_eq!(p.wait_exit().code(), Some(0));
}

/// Reads one line, or None if none comes within `t`.
fn line_within(r: &mut BufReader<TcpStream>, t: std::time::Duration) -> Option<String> {
    r.get_ref().set_read_timeout(Some(t)).unwrap();
    let mut l = String::new();
    let got = r.read_line(&mut l).ok().filter(|&n| n > 0).map(|_| l);
    r.get_ref().set_read_timeout(Some(WAIT)).unwrap();
    got
}

/// Reads lines until `want` (bounded), dropping what comes before it.
fn skip_to(r: &mut BufReader<TcpStream>, want: &str) {
    while line_within(r, WAIT).unwrap_or_else(|| panic!("never got {want:?}")) != want {}
}

/// The raw broker scenario, run against any broker: bytes verbatim to all
/// the others, never back to the sender.
fn raw_broker_behaves(addr: SocketAddr) {
    let mut c: Vec<(BufReader<TcpStream>, TcpStream)> = (0..3)
        .map(|_| {
            let s = tcp(addr);
            (BufReader::new(s.try_clone().unwrap()), s)
        })
        .collect();
    // A broker registers a client some time after it connects: sync until
    // each client has heard another, then clear the extra sync lines out.
    let short = std::time::Duration::from_millis(200);
    for (from, to) in [(0, 1), (1, 0), (0, 2)] {
        loop {
            c[from].1.write_all(b"sync\n").unwrap();
            if line_within(&mut c[to].0, short).is_some() {
                break;
            }
        }
    }
    for from in 0..3 {
        c[from].1.write_all(format!("end {from}\n").as_bytes()).unwrap();
        for to in (0..3).filter(|&t| t != from) {
            skip_to(&mut c[to].0, &format!("end {from}\n"));
        }
    }
    c[1].1.write_all(b"\x00from b\xff\n").unwrap();
    for to in [0, 2] {
        let mut got = vec![0u8; 9];
        std::io::Read::read_exact(&mut c[to].0, &mut got).unwrap();
        assert_eq!(got, b"\x00from b\xff\n", "bytes pass verbatim");
    }
    c[2].1.write_all(b"from c\n").unwrap();
    // b's next line is c's: its own never came back to it.
    assert_eq!(line_within(&mut c[1].0, WAIT).as_deref(), Some("from c\n"));
    assert_eq!(line_within(&mut c[0].0, WAIT).as_deref(), Some("from c\n"));
}

#[test]
fn raw_mode_behaves_like_ncat_broker() {
    need("ncat");
    let port = free_port();
    let mut cmd = Command::new("ncat");
    cmd.args(["--broker", "-l", "127.0.0.1", &port.to_string()]);
    let _ncat = Proc::spawn(cmd, 0);
    wait_tcp_listening(port);
    raw_broker_behaves(format!("127.0.0.1:{port}").parse().unwrap());
    let (_p, addr) = start_chat(&["--raw"]);
    raw_broker_behaves(addr);
}

#[test]
fn thousand_clients_in_one_room_all_receive_a_broadcast() {
    let (_p, addr) = start_chat(&[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let received = rt.block_on(async move {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let mut readers = Vec::new();
        for _ in 0..1000 {
            let s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (r, w) = s.into_split();
            let mut lines = tokio::io::BufReader::new(r).lines();
            let welcome = lines.next_line().await.unwrap().unwrap();
            assert!(welcome.starts_with("Welcome"), "{welcome}");
            readers.push((lines, w));
        }
        let (_, mut sender) = readers.pop().unwrap();
        sender.write_all(b"to everyone\n").await.unwrap();
        let tasks: Vec<_> = readers
            .into_iter()
            .map(|(mut lines, w)| {
                tokio::spawn(async move {
                    let _keep = w;
                    while let Ok(Some(l)) = lines.next_line().await {
                        if l.ends_with("> to everyone") {
                            return true;
                        }
                    }
                    false
                })
            })
            .collect();
        let mut n = 0;
        for t in tasks {
            n += usize::from(tokio::time::timeout(WAIT, t).await.unwrap().unwrap());
        }
        n
    });
    assert_eq!(received, 999);
}

#[test]
fn history_on_join_ids_and_since() {
    let (_s, addr) = start_chat(&["--history", "3"]);
    let mut a = ChatClient::join(addr);
    a.rename("alice");
    for i in 1..=4 {
        a.send(&format!("line {i}"));
    }
    // A command after the lines: once answered, the lines are posted.
    a.send("/who");
    a.expect("* in lobby: alice");
    let mut b = ChatClient::join(addr);
    assert_eq!(b.line(), "* history of lobby, 3 lines:", "the last 3 of 4 posts");
    for i in 2..=4 {
        let l = b.line();
        assert!(l.starts_with('[') && l.ends_with(&format!("] <alice> line {i}")), "{l}");
    }
    b.send("/ids");
    b.expect("* ids on: room lines start with #ID; /since ID gives what came after");
    a.send("line 5");
    let l = b.next_said();
    let (id, rest) = l.strip_prefix('#').and_then(|l| l.split_once(' ')).unwrap_or_else(|| panic!("{l}"));
    let id: u64 = id.parse().unwrap();
    assert_eq!(rest, "<alice> line 5");
    // What came after id - 2: line 4 and line 5, nothing lost.
    b.send(&format!("/since {}", id - 2));
    assert_eq!(b.line(), "* history of lobby, 2 lines:");
    assert!(b.line().starts_with(&format!("#{} [", id - 1)));
    assert!(b.line().ends_with("] <alice> line 5"));
    b.send(&format!("/since {id}"));
    assert_eq!(b.line(), "* lobby is up to date");
    // line 1 and 2 fell out of a 3-post history: 2 lost, 3 kept.
    b.send(&format!("/since {}", id - 5));
    assert_eq!(b.line(), "* 2 lines of lobby were lost (older than its history)");
    assert_eq!(b.line(), "* history of lobby, 3 lines:");
    for i in 3..=5 {
        assert!(b.line().ends_with(&format!("] <alice> line {i}")));
    }
    // An id from before this server began (a restart): lost, count unknown.
    b.send("/since 7");
    assert_eq!(b.line(), "* lines of lobby from before its history began are lost");
}
