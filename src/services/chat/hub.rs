//! The chat's shared state, in memory: who is connected under which nick,
//! in which room, and a broadcast channel per room.
//!
//! A room's `broadcast` channel is everyone's outbound queue at once: one
//! send serves the whole room whatever its size, and its capacity bounds how
//! far a member may fall behind. A member that falls further behind is
//! disconnected (the receiver reports `Lagged`) — a slow reader never grows
//! the server's memory and never holds anyone else up. Direct messages go
//! through a small queue per member.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

/// The room everyone starts in.
pub const LOBBY: &str = "lobby";
/// Queue length for direct messages to one member.
const DIRECT_QUEUE: usize = 64;

/// One line on its way to a room: who sent it (0 for a notice everyone
/// sees), and the bytes, newline included.
#[derive(Clone, Debug)]
pub struct Post {
    /// Sender's member id; its own posts are not echoed back to it.
    pub from: u64,
    /// The line.
    pub line: Bytes,
}

/// What a member holds to hear its room and its direct messages.
#[derive(Debug)]
pub struct Inbox {
    /// The member's id.
    pub id: u64,
    /// Its nick.
    pub nick: String,
    /// Its room's posts.
    pub room: broadcast::Receiver<Post>,
    /// Direct messages and replies meant for it alone.
    pub direct: mpsc::Receiver<Bytes>,
}

/// Why a change was refused; the text is the `! ` line sent back.
pub type Refusal = String;

#[derive(Debug)]
struct Member {
    nick: String,
    room: String,
    direct: mpsc::Sender<Bytes>,
}

#[derive(Debug)]
struct Room {
    tx: broadcast::Sender<Post>,
    members: usize,
}

#[derive(Debug, Default)]
struct State {
    members: HashMap<u64, Member>,
    nicks: HashMap<String, u64>,
    rooms: BTreeMap<String, Room>,
}

/// The in-memory chat state.
#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    next_id: AtomicU64,
    queue: usize,
}

/// A line of text with its newline.
pub fn line(text: &str) -> Bytes {
    let mut v = Vec::with_capacity(text.len() + 1);
    v.extend_from_slice(text.as_bytes());
    v.push(b'\n');
    Bytes::from(v)
}

impl Hub {
    /// A hub whose members may fall `queue` lines behind.
    pub fn new(queue: usize) -> Self {
        Hub { state: Mutex::default(), next_id: AtomicU64::new(1), queue: queue.max(1) }
    }

    /// Adds a member as `guest-N` in the lobby, announcing it there.
    pub fn join(&self) -> Inbox {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let nick = format!("guest-{id}");
        let (tx, direct) = mpsc::channel(DIRECT_QUEUE);
        let mut st = self.state.lock().unwrap();
        st.members.insert(id, Member { nick: nick.clone(), room: LOBBY.into(), direct: tx });
        st.nicks.insert(nick.clone(), id);
        let room = self.enter(&mut st, LOBBY);
        Self::announce(&st, LOBBY, &format!("* {nick} joined"), id);
        Inbox { id, nick, room, direct }
    }

    /// Removes a member, announcing it to its room.
    pub fn leave(&self, id: u64) {
        let mut st = self.state.lock().unwrap();
        let Some(m) = st.members.remove(&id) else { return };
        st.nicks.remove(&m.nick);
        Self::announce(&st, &m.room, &format!("* {} left", m.nick), id);
        Self::exit(&mut st, &m.room);
    }

    /// Sends `text` from member `id` to the others in its room, as
    /// `<nick> text`.
    pub fn say(&self, id: u64, text: &str) {
        let st = self.state.lock().unwrap();
        if let Some(m) = st.members.get(&id)
            && let Some(room) = st.rooms.get(&m.room)
        {
            let _ = room.tx.send(Post { from: id, line: line(&format!("<{}> {text}", m.nick)) });
        }
    }

    /// Renames member `id`; the room is told `* old is now new`.
    pub fn rename(&self, id: u64, nick: &str) -> Result<String, Refusal> {
        let mut st = self.state.lock().unwrap();
        if let Some(&holder) = st.nicks.get(nick) {
            return Err(if holder == id {
                format!("! you are already {nick}")
            } else {
                format!("! nick {nick} is taken")
            });
        }
        let m = st.members.get_mut(&id).ok_or("! not connected")?;
        let old = std::mem::replace(&mut m.nick, nick.to_string());
        let room = m.room.clone();
        st.nicks.remove(&old);
        st.nicks.insert(nick.to_string(), id);
        Self::announce(&st, &room, &format!("* {old} is now {nick}"), 0);
        Ok(old)
    }

    /// Moves member `id` to `room`; returns the new room's receiver.
    pub fn switch(&self, id: u64, room: &str) -> Result<broadcast::Receiver<Post>, Refusal> {
        let mut st = self.state.lock().unwrap();
        let m = st.members.get_mut(&id).ok_or("! not connected")?;
        if m.room == room {
            return Err(format!("! you are already in {room}"));
        }
        let old = std::mem::replace(&mut m.room, room.to_string());
        let nick = m.nick.clone();
        Self::announce(&st, &old, &format!("* {nick} left"), id);
        Self::exit(&mut st, &old);
        let rx = self.enter(&mut st, room);
        Self::announce(&st, room, &format!("* {nick} joined"), 0);
        Ok(rx)
    }

    /// `/rooms`: each room and how many are in it.
    pub fn rooms(&self) -> Vec<(String, usize)> {
        let st = self.state.lock().unwrap();
        st.rooms.iter().map(|(name, r)| (name.clone(), r.members)).collect()
    }

    /// `/who`: the nicks in member `id`'s room, sorted.
    pub fn who(&self, id: u64) -> (String, Vec<String>) {
        let st = self.state.lock().unwrap();
        let Some(room) = st.members.get(&id).map(|m| m.room.clone()) else { return (String::new(), vec![]) };
        let mut nicks: Vec<String> = st.members.values().filter(|m| m.room == room).map(|m| m.nick.clone()).collect();
        nicks.sort();
        (room, nicks)
    }

    /// `/msg`: `<from> (direct) text` to `to` alone.
    pub fn direct(&self, id: u64, to: &str, text: &str) -> Result<(), Refusal> {
        let st = self.state.lock().unwrap();
        let from = st.members.get(&id).map(|m| m.nick.clone()).ok_or("! not connected")?;
        let target = st.nicks.get(to).and_then(|t| st.members.get(t)).ok_or_else(|| format!("! no such user: {to}"))?;
        target
            .direct
            .try_send(line(&format!("<{from}> (direct) {text}")))
            .map_err(|_| format!("! {to} is not keeping up; message not delivered"))
    }

    /// Sends `text` to every room (a server notice).
    pub fn notice_all(&self, text: &str) {
        let st = self.state.lock().unwrap();
        for room in st.rooms.values() {
            let _ = room.tx.send(Post { from: 0, line: line(text) });
        }
    }

    fn enter(&self, st: &mut State, room: &str) -> broadcast::Receiver<Post> {
        let r = st
            .rooms
            .entry(room.to_string())
            .or_insert_with(|| Room { tx: broadcast::channel(self.queue).0, members: 0 });
        r.members += 1;
        r.tx.subscribe()
    }

    fn exit(st: &mut State, room: &str) {
        if let Some(r) = st.rooms.get_mut(room) {
            r.members -= 1;
            if r.members == 0 {
                st.rooms.remove(room);
            }
        }
    }

    fn announce(st: &State, room: &str, text: &str, from: u64) {
        if let Some(r) = st.rooms.get(room) {
            let _ = r.tx.send(Post { from, line: line(text) });
        }
    }
}
