//! Chat scaled out on a real redis-server, started by the test on a free
//! port: three instances act as one chat, and survive Redis going away.

use std::net::SocketAddr;
use std::process::Command;

use crate::support::*;

fn redis(port: u16) -> Proc {
    need("redis-server");
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
    let p = Proc::spawn(cmd, 0);
    wait_tcp_listening(port);
    p
}

fn instance(url: &str) -> (Proc, SocketAddr) {
    let mut p = Proc::start(&["serve", "chat", "-v", "--listen", "127.0.0.1:0", "--redis", url], 1);
    // The link may come up before the listening line, which then has
    // already been read past it.
    if !p.stderr().contains("cluster link up") {
        p.wait_stderr(|l| l.contains("cluster link up"));
    }
    let addr = p.addr("chat", "tcp://");
    (p, addr)
}

#[test]
fn three_instances_act_as_one_chat_and_survive_redis_restarts() {
    let port = free_port();
    let mut server = redis(port);
    let url = format!("redis://127.0.0.1:{port}");
    let (_i1, a1) = instance(&url);
    let (_i2, a2) = instance(&url);
    let (_i3, a3) = instance(&url);

    let mut alice = ChatClient::join(a1);
    let mut friend = ChatClient::join(a1);
    let mut bob = ChatClient::join(a2);
    let mut carol = ChatClient::join(a3);
    let guests: std::collections::HashSet<&String> = [&alice.nick, &friend.nick, &bob.nick, &carol.nick].into();
    assert_eq!(guests.len(), 4, "guest numbers are cluster-wide: {guests:?}");

    // Nicks are unique across instances.
    alice.rename("alice");
    bob.send("/nick alice");
    bob.expect("! nick alice is taken");
    bob.rename("bob");
    carol.rename("carol");

    // A room line reaches every instance; a direct message finds its user.
    alice.send("hello everyone");
    for c in [&mut friend, &mut bob, &mut carol] {
        c.expect("<alice> hello everyone");
    }
    carol.send("/msg bob psst");
    bob.expect("<carol> (direct) psst");
    carol.send("/msg nobody hi");
    carol.expect("! no such user: nobody");

    // /who sees everyone everywhere (presence is published as it changes).
    let want = format!("* in lobby: alice, bob, carol, {}", friend.nick);
    let mut tries = 0;
    loop {
        bob.send("/who");
        let mut l = bob.line();
        while !l.starts_with("* in ") {
            l = bob.line();
        }
        if l == want {
            break;
        }
        tries += 1;
        assert!(tries < 100, "/who never showed everyone: {l}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // Redis goes away: every instance says so and keeps serving locally.
    let _ = server.child.kill();
    let _ = server.child.wait();
    for c in [&mut alice, &mut friend, &mut bob, &mut carol] {
        c.expect("* cluster link lost");
    }
    alice.send("local only");
    friend.expect("<alice> local only");

    // Redis comes back on the same port: the instances rejoin.
    let _server = redis(port);
    for c in [&mut alice, &mut bob, &mut carol] {
        c.expect("* cluster link restored");
    }
    alice.send("back again");
    bob.expect("<alice> back again");
    carol.expect("<alice> back again");
    // Nicks were claimed again: still unique across instances.
    carol.send("/nick alice");
    carol.expect("! nick alice is taken");
}

#[test]
fn a_bad_redis_url_is_a_usage_error() {
    let out = run(&["serve", "chat", "--listen", "127.0.0.1:0", "--redis", "http://nope"], b"");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("invalid --redis"), "{}", text(&out.stderr));
}

/// Asks the Redis at `port` for one INFO section.
fn redis_info(port: u16, section: &str) -> String {
    let out = Command::new("redis-cli").args(["-p", &port.to_string(), "INFO", section]).output().unwrap();
    text(&out.stdout)
}

#[test]
fn who_costs_one_room_and_guest_nicks_stay_unique_across_instances() {
    need("redis-cli");
    let port = free_port();
    let _server = redis(port);
    let url = format!("redis://127.0.0.1:{port}");
    let (_i1, a1) = instance(&url);
    let (_i2, a2) = instance(&url);

    // Guest numbers are cluster-wide, and no one may take a guest's name.
    let mut alice = ChatClient::join(a1);
    let mut bob = ChatClient::join(a2);
    assert_ne!(alice.nick, bob.nick);
    let n: u64 = alice.nick["guest-".len()..].parse().unwrap();
    alice.send(&format!("/nick guest-{}", n + 2));
    assert!(alice.next_said().starts_with("! nicks starting with guest- are given to guests"));
    let taken = alice.nick.clone();

    // /who lists both, from one room's set: no KEYS on a shared Redis.
    let want = format!("* in lobby: {}", {
        let mut v = [taken.clone(), bob.nick.clone()];
        v.sort();
        v.join(", ")
    });
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        bob.send("/who");
        let l = bob.next_said();
        if l == want {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "/who never showed both: {l}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    bob.send("/rooms");
    assert_eq!(bob.next_said(), "* rooms: lobby (2)");
    let stats = redis_info(port, "commandstats");
    assert!(stats.contains("cmdstat_zrangebyscore"), "{stats}");
    assert!(!stats.contains("cmdstat_keys") && !stats.contains("cmdstat_scan"), "{stats}");
}
