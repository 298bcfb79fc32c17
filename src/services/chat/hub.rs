//! The chat's shared state, in memory: who is connected under which nick,
//! in which room, and a broadcast channel per room.
//!
//! A room's `broadcast` channel is everyone's outbound queue at once: one
//! send serves the whole room whatever its size, and its capacity bounds how
//! far a member may fall behind. A member that falls further behind is
//! disconnected (the receiver reports `Lagged`) — a slow reader never grows
//! the server's memory and never holds anyone else up. Direct messages go
//! through a small queue per member.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

/// The room everyone starts in.
pub const LOBBY: &str = "lobby";
/// Queue length for direct messages to one member.
const DIRECT_QUEUE: usize = 64;

/// Rooms whose history is kept at most; past it, the history of a room
/// no one is in is dropped, and a new room keeps none while all are in use.
pub const MAX_HISTORY_ROOMS: usize = 256;
/// Bytes one room's history holds at most, whatever `--history` says: with
/// [`MAX_HISTORY_ROOMS`], history never holds more than 64 MiB.
pub const HISTORY_ROOM_BYTES: usize = 256 * 1024;

/// One line on its way to a room: who sent it (0 for a notice everyone
/// sees), its place in the room's history (0 for none), and the bytes,
/// newline included.
#[derive(Clone, Debug)]
pub struct Post {
    /// Sender's member id; its own posts are not echoed back to it.
    pub from: u64,
    /// The room's id for its first line, rising by one per line; 0 for a
    /// notice.
    pub id: u64,
    /// The line.
    pub line: Bytes,
}

/// A line kept in a room's history.
#[derive(Clone, Debug)]
pub struct Kept {
    /// Its id in the room.
    pub id: u64,
    /// When it was said.
    pub at: chrono::DateTime<chrono::Local>,
    /// The line, newline included.
    pub line: Bytes,
}

/// A room's last posts. Ids rise by one per post from a start taken from
/// the clock when the room's history began, so a client's last id from
/// before a restart is older than anything here.
#[derive(Debug)]
pub struct History {
    posts: VecDeque<Kept>,
    bytes: usize,
    /// The first id it gave.
    base: u64,
    next: u64,
    cap: usize,
}

impl History {
    fn new(cap: usize) -> Self {
        let start = chrono::Utc::now().timestamp_micros().max(1) as u64;
        History { posts: VecDeque::new(), bytes: 0, base: start, next: start, cap }
    }

    /// Keeps each line of a post, one id each; returns the first id.
    fn keep(&mut self, post: &Bytes) -> u64 {
        let first = self.next;
        let at = chrono::Local::now();
        let mut start = 0;
        while start < post.len() {
            let end = memchr::memchr(b'\n', &post[start..]).map_or(post.len(), |i| start + i + 1);
            let id = self.next;
            self.next += 1;
            if self.cap > 0 {
                self.bytes += end - start;
                self.posts.push_back(Kept { id, at, line: post.slice(start..end) });
            }
            start = end;
        }
        while self.posts.len() > self.cap || self.bytes > HISTORY_ROOM_BYTES {
            let Some(old) = self.posts.pop_front() else { break };
            self.bytes -= old.line.len();
        }
        first
    }

    /// The posts kept, oldest first.
    pub fn posts(&self) -> impl Iterator<Item = &Kept> {
        self.posts.iter()
    }

    /// The posts after `id`, and how many between it and them are lost:
    /// `None` when `id` is from before this history began (the server
    /// restarted), so the count is unknown.
    pub fn since(&self, id: u64) -> (Vec<Kept>, Option<u64>) {
        let after: Vec<Kept> = self.posts.iter().filter(|p| p.id > id).cloned().collect();
        if id.saturating_add(1) < self.base || id >= self.next {
            return (self.posts.iter().cloned().collect(), None);
        }
        let first = after.first().map_or(self.next, |p| p.id);
        (after, Some(first - (id + 1)))
    }
}

/// What this instance tells the others, when scaled out (see the
/// `cluster` module, built with the `redis` feature).
#[derive(Clone, Debug)]
pub enum Event {
    /// A line for everyone in `room`, on every instance.
    Room {
        /// The room.
        room: String,
        /// The line, newline included.
        line: Bytes,
    },
    /// A line for the member called `to`, wherever it is.
    Direct {
        /// The nick.
        to: String,
        /// The line, newline included.
        line: Bytes,
    },
    /// `nick` is now in `room` here.
    Joined {
        /// The nick.
        nick: String,
        /// The room.
        room: String,
    },
    /// `nick` is no longer in `room` here.
    Left {
        /// The nick.
        nick: String,
        /// The room.
        room: String,
    },
}

/// How many events may wait for the cluster link before new ones are dropped.
const OUTBOX: usize = 4096;

/// What a member holds to hear its room and its direct messages.
#[derive(Debug)]
pub struct Inbox {
    /// The member's id.
    pub id: u64,
    /// Its nick.
    pub nick: String,
    /// The room it is in.
    pub room_name: String,
    /// Its room's posts.
    pub room: broadcast::Receiver<Post>,
    /// Where its own lines for the room go: saying something takes no lock.
    pub say: broadcast::Sender<Post>,
    /// Direct messages and replies meant for it alone.
    pub direct: mpsc::Receiver<Bytes>,
    /// Its room's history.
    pub history: Arc<Mutex<History>>,
    /// Whether room lines reach it marked with their id (`/ids`).
    pub ids: bool,
}

/// Why a change was refused; the text is the `! ` line sent back.
pub type Declined = String;

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
    histories: HashMap<String, Arc<Mutex<History>>>,
}

/// The in-memory chat state.
#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    next_id: AtomicU64,
    queue: usize,
    quiet_above: usize,
    history: usize,
    outbox: Option<mpsc::Sender<Event>>,
}

/// Appends `<nick> text` and a newline to `out`: a line as the room sees
/// it. Its length is [`said_len`].
pub fn said(out: &mut Vec<u8>, nick: &str, text: &str) {
    out.reserve(said_len(nick, text));
    out.push(b'<');
    out.extend_from_slice(nick.as_bytes());
    out.extend_from_slice(b"> ");
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
}

/// The bytes `<nick> text\n` takes.
pub fn said_len(nick: &str, text: &str) -> usize {
    nick.len() + text.len() + 4
}

/// A line of text with its newline.
pub fn line(text: &str) -> Bytes {
    let mut v = Vec::with_capacity(text.len() + 1);
    v.extend_from_slice(text.as_bytes());
    v.push(b'\n');
    Bytes::from(v)
}

impl Hub {
    /// A hub whose members may fall `queue` posts behind, and whose rooms
    /// of more than `quiet_above` members hear no joins and leaves.
    pub fn new(queue: usize, quiet_above: usize) -> Self {
        Hub {
            state: Mutex::default(),
            next_id: AtomicU64::new(1),
            queue: queue.max(1),
            quiet_above,
            history: 0,
            outbox: None,
        }
    }

    /// Keeps the last `n` posts of each room (`--history`), for members who
    /// join and for clients that come back.
    pub fn with_history(self, n: usize) -> Self {
        Hub { history: n, ..self }
    }

    /// A hub that also hands its events to a cluster link (the receiver).
    pub fn clustered(queue: usize, quiet_above: usize) -> (Self, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(OUTBOX);
        (Hub { outbox: Some(tx), ..Hub::new(queue, quiet_above) }, rx)
    }

    /// The next member id; `guest-{id}` is its nick unless a cluster
    /// numbers guests.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds member `id` as `nick` in the lobby, announcing it there; hands
    /// the nick back if someone here has it already.
    pub fn join(&self, id: u64, nick: String) -> Result<Inbox, String> {
        let mut st = self.state.lock().unwrap();
        if st.nicks.contains_key(&nick) {
            return Err(nick);
        }
        let (tx, direct) = mpsc::channel(DIRECT_QUEUE);
        st.members.insert(id, Member { nick: nick.clone(), room: LOBBY.into(), direct: tx });
        st.nicks.insert(nick.clone(), id);
        let (room, say, history) = self.enter(&mut st, LOBBY);
        self.presence(&st, LOBBY, &format!("* {nick} joined"), id);
        self.publish(Event::Joined { nick: nick.clone(), room: LOBBY.into() });
        Ok(Inbox { id, nick, room_name: LOBBY.into(), room, say, direct, history, ids: false })
    }

    /// Whether `nick` is taken here.
    pub fn has_nick(&self, nick: &str) -> bool {
        self.state.lock().unwrap().nicks.contains_key(nick)
    }

    /// Every member here: (nick, room).
    pub fn members(&self) -> Vec<(String, String)> {
        let st = self.state.lock().unwrap();
        st.members.values().map(|m| (m.nick.clone(), m.room.clone())).collect()
    }

    /// The room member `id` is in.
    pub fn room_of(&self, id: u64) -> Option<String> {
        self.state.lock().unwrap().members.get(&id).map(|m| m.room.clone())
    }

    /// A line from another instance for `room`.
    pub fn deliver_room(&self, room: &str, line: Bytes) {
        let st = self.state.lock().unwrap();
        if let Some(r) = st.rooms.get(room) {
            let mut history = st.histories.get(room).map(|h| h.lock().unwrap());
            let id = history.as_mut().map_or(0, |h| h.keep(&line));
            let _ = r.tx.send(Post { from: 0, id, line });
        }
    }

    /// A line from another instance for the member called `to`, if here.
    pub fn deliver_direct(&self, to: &str, line: Bytes) -> bool {
        let st = self.state.lock().unwrap();
        match st.nicks.get(to).and_then(|id| st.members.get(id)) {
            Some(m) => m.direct.try_send(line).is_ok(),
            None => false,
        }
    }

    /// Hands an event to the cluster link, if any; when the link is too far
    /// behind the event is dropped rather than queued without bound.
    pub fn publish(&self, event: Event) {
        if let Some(tx) = &self.outbox
            && tx.try_send(event).is_err()
        {
            tracing::debug!("cluster outbox full: event dropped");
        }
    }

    /// Removes a member, announcing it to its room.
    pub fn leave(&self, id: u64) {
        let mut st = self.state.lock().unwrap();
        let Some(m) = st.members.remove(&id) else { return };
        st.nicks.remove(&m.nick);
        self.presence(&st, &m.room, &format!("* {} left", m.nick), id);
        Self::exit(&mut st, &m.room);
        self.publish(Event::Left { nick: m.nick, room: m.room });
    }

    /// Sends `lines` (`<nick> text` lines, formatted by the caller with
    /// [`said`]) from `inbox`'s member to the others in its room — in one
    /// post, so a burst costs the room one queue slot, not one per line
    /// (the caller bounds the burst in bytes). Takes no lock: a member
    /// pouring lines in never holds anyone else up.
    pub fn say(&self, inbox: &Inbox, lines: Bytes) {
        // Kept and sent under the room's history lock: ids reach every
        // member in order.
        let mut history = inbox.history.lock().unwrap();
        let id = history.keep(&lines);
        let _ = inbox.say.send(Post { from: inbox.id, id, line: lines.clone() });
        drop(history);
        self.publish(Event::Room { room: inbox.room_name.clone(), line: lines });
    }

    /// Renames member `id`; the room is told `* old is now new`.
    pub fn rename(&self, id: u64, nick: &str) -> Result<String, Declined> {
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
        self.announce(&st, &room, &format!("* {old} is now {nick}"), 0);
        self.publish(Event::Left { nick: old.clone(), room: room.clone() });
        self.publish(Event::Joined { nick: nick.to_string(), room });
        Ok(old)
    }

    /// Moves `inbox`'s member to `room`.
    pub fn switch(&self, inbox: &mut Inbox, room: &str) -> Result<(), Declined> {
        let mut st = self.state.lock().unwrap();
        let m = st.members.get_mut(&inbox.id).ok_or("! not connected")?;
        if m.room == room {
            return Err(format!("! you are already in {room}"));
        }
        let old = std::mem::replace(&mut m.room, room.to_string());
        let nick = m.nick.clone();
        self.presence(&st, &old, &format!("* {nick} left"), inbox.id);
        Self::exit(&mut st, &old);
        (inbox.room, inbox.say, inbox.history) = self.enter(&mut st, room);
        inbox.room_name = room.to_string();
        self.presence(&st, room, &format!("* {nick} joined"), 0);
        self.publish(Event::Left { nick: nick.clone(), room: old });
        self.publish(Event::Joined { nick, room: room.to_string() });
        Ok(())
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

    /// `/msg`: `<from> (direct) text` to `to` alone, if `to` is here;
    /// `Ok(Some(line))` hands the line back when `to` is not.
    pub fn direct(&self, id: u64, to: &str, text: &str) -> Result<Option<Bytes>, Declined> {
        let st = self.state.lock().unwrap();
        let from = st.members.get(&id).map(|m| m.nick.clone()).ok_or("! not connected")?;
        let msg = line(&format!("<{from}> (direct) {text}"));
        let Some(target) = st.nicks.get(to).and_then(|t| st.members.get(t)) else { return Ok(Some(msg)) };
        target
            .direct
            .try_send(msg)
            .map(|()| None)
            .map_err(|_| format!("! {to} is not keeping up; message not delivered"))
    }

    /// Sends `text` to every room (a server notice).
    pub fn notice_all(&self, text: &str) {
        let st = self.state.lock().unwrap();
        for room in st.rooms.values() {
            let _ = room.tx.send(Post { from: 0, id: 0, line: line(text) });
        }
    }

    /// A member enters `room`: its posts, its queue for them, its history.
    fn enter(
        &self,
        st: &mut State,
        room: &str,
    ) -> (broadcast::Receiver<Post>, broadcast::Sender<Post>, Arc<Mutex<History>>) {
        if !st.histories.contains_key(room) && st.histories.len() >= MAX_HISTORY_ROOMS {
            // Drop the history of a room no one is in; with none, the
            // oldest room's stays and this one keeps none.
            let empty = st.histories.keys().find(|r| !st.rooms.contains_key(*r)).cloned();
            if let Some(r) = empty {
                st.histories.remove(&r);
            }
        }
        let cap = if st.histories.len() < MAX_HISTORY_ROOMS { self.history } else { 0 };
        let history =
            st.histories.entry(room.to_string()).or_insert_with(|| Arc::new(Mutex::new(History::new(cap)))).clone();
        let r = st
            .rooms
            .entry(room.to_string())
            .or_insert_with(|| Room { tx: broadcast::channel(self.queue).0, members: 0 });
        r.members += 1;
        (r.tx.subscribe(), r.tx.clone(), history)
    }

    fn exit(st: &mut State, room: &str) {
        if let Some(r) = st.rooms.get_mut(room) {
            r.members -= 1;
            if r.members == 0 {
                st.rooms.remove(room);
            }
        }
    }

    /// A join or leave notice, unless the room (its members here, the
    /// one who leaves included) is over the quiet size.
    fn presence(&self, st: &State, room: &str, text: &str, from: u64) {
        if st.rooms.get(room).is_some_and(|r| r.members <= self.quiet_above) {
            self.announce(st, room, text, from);
        }
    }

    /// A notice to a room, here and (scaled out) on every instance.
    fn announce(&self, st: &State, room: &str, text: &str, from: u64) {
        let line = line(text);
        if let Some(r) = st.rooms.get(room) {
            let _ = r.tx.send(Post { from, id: 0, line: line.clone() });
        }
        self.publish(Event::Room { room: room.to_string(), line });
    }
}
