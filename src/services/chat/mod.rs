//! `chat`: a line chat server any line client can use (`sockit connect`, nc,
//! telnet), or with `--raw` a byte broker like `ncat --broker`.
//!
//! Protocol (UTF-8 lines; invalid bytes are replaced): on connect a welcome
//! line names the assigned `guest-N` nick; the user is in room `lobby`. A
//! plain line goes to everyone else in the room as `<nick> text`; commands
//! are listed in [`protocol::HELP`]; errors are lines starting with `! `;
//! notices start with `* ` (`* guest-3 is now alice`, `* alice joined`,
//! `* alice left`, `* server shutting down`).

#[cfg(feature = "redis")]
pub mod cluster;
pub mod hub;
pub mod protocol;
pub mod web;

/// Without the `redis` feature no chat is ever clustered: this stand-in
/// has no values, so every `Some(cluster)` branch is provably dead and the
/// code that scales out needs no `cfg` of its own.
#[cfg(not(feature = "redis"))]
mod cluster {
    use std::collections::BTreeMap;

    /// A Redis link that cannot exist in this build.
    #[derive(Debug)]
    pub enum Cluster {}

    impl Cluster {
        pub async fn next_guest(&self) -> Option<u64> {
            match *self {}
        }
        pub async fn claim(&self, _: &str) -> Result<bool, String> {
            match *self {}
        }
        pub async fn release(&self, _: &str) {
            match *self {}
        }
        pub async fn nick_exists(&self, _: &str) -> Result<bool, String> {
            match *self {}
        }
        pub async fn room_members(&self, _: &str) -> Option<Vec<String>> {
            match *self {}
        }
        pub async fn rooms(&self) -> Option<BTreeMap<String, usize>> {
            match *self {}
        }
    }
}

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use self::cluster::Cluster;
use self::hub::{Event, Hub, Inbox, LOBBY, Post, said};
use self::protocol::{Command, HELP, parse, valid_name};
use crate::{Conn, Lines, Service};

/// Default `--max-line` for chat: 4 KiB.
pub const DEFAULT_MAX_LINE: usize = 4 * 1024;
/// Default `--max-queue`: how many posts (a line, or a burst of one
/// client's lines of at most [`MAX_BURST`] bytes as the room sees them) a
/// client may fall behind.
pub const DEFAULT_QUEUE: usize = 1024;
/// Most bytes gathered into one write to a client.
const BATCH: usize = 64 * 1024;
/// How long a goodbye line may take to write to a client.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);
/// A client's buffered plain lines go to the room as one post until they
/// reach this many bytes, counted as the room sees them (`<nick> text`, not
/// the text alone): a post costs one queue slot whatever it holds, so a
/// room's queue holds at most `--max-queue` posts of at most 16 KiB plus
/// one line (of at most `--max-line` as the room sees it) — 20 MiB at the
/// defaults, whatever the lines' sizes.
pub const MAX_BURST: usize = 16 * 1024;
/// The start of every guest's nick; chosen nicks may not start so.
const GUEST_PREFIX: &str = "guest-";
/// How many guest nicks a new member tries before giving up.
const GUEST_TRIES: usize = 16;
/// How long a member with a full direct queue may read nothing before it is
/// cut off.
const DIRECT_STALL: Duration = Duration::from_secs(5);
/// How often a client stuck in a write is checked for falling behind.
const LAG_CHECK: Duration = Duration::from_millis(100);

/// Default `--quiet-above`: rooms with more members than this get no join
/// and leave notices.
pub const DEFAULT_QUIET_ABOVE: usize = 1000;

/// A chat's limits.
#[derive(Clone, Copy, Debug)]
pub struct ChatConfig {
    /// Longest line, newline excluded (`--max-line`).
    pub max_line: usize,
    /// Posts a client may fall behind before it is disconnected
    /// (`--max-queue`).
    pub queue: usize,
    /// Lines per second a client may send (`--rate`).
    pub rate: Option<u32>,
    /// Rooms with more members than this get no `* nick joined` / `* nick
    /// left` notices (`--quiet-above`): in a crowd they are noise, and a
    /// crowd arriving at once would bury every line under them.
    pub quiet_above: usize,
    /// Posts of each room kept for members who join and clients that come
    /// back (`--history`); 0 keeps none.
    pub history: usize,
}

/// Default `--history`.
pub const DEFAULT_HISTORY: usize = 100;

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            max_line: DEFAULT_MAX_LINE,
            queue: DEFAULT_QUEUE,
            rate: None,
            quiet_above: DEFAULT_QUIET_ABOVE,
            history: DEFAULT_HISTORY,
        }
    }
}

/// The line chat service.
#[derive(Debug)]
pub struct Chat {
    hub: Arc<Hub>,
    cluster: Option<Arc<Cluster>>,
    config: ChatConfig,
}

impl Chat {
    /// A chat whose state lives in memory, in this process alone.
    pub fn new(config: ChatConfig) -> Self {
        let config = ChatConfig { queue: config.queue.max(1), ..config };
        Chat {
            hub: Arc::new(Hub::new(config.queue, config.quiet_above).with_history(config.history)),
            cluster: None,
            config,
        }
    }

    /// A chat that is one with every other instance on the Redis at `url`.
    /// Run the returned future (until `stop`) to keep the link. Needs the
    /// `redis` feature.
    #[cfg(feature = "redis")]
    pub fn with_redis(
        url: &str,
        config: ChatConfig,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<(Self, impl Future<Output = ()> + Send + 'static), String> {
        let config = ChatConfig { queue: config.queue.max(1), ..config };
        let cluster = Cluster::new(url)?;
        let (hub, outbox) = Hub::clustered(config.queue, config.quiet_above);
        let hub = Arc::new(hub.with_history(config.history));
        let link = cluster.clone().run(hub.clone(), outbox, stop);
        Ok((Chat { hub, cluster: Some(cluster), config }, link))
    }

    /// Joins a new member under a `guest-N` nick that no one else has,
    /// here or (scaled out) on any instance: a user may have taken the next
    /// guest's name with `/nick`, so a taken one is skipped for the next.
    async fn join_as_guest(&self) -> io::Result<Inbox> {
        for _ in 0..GUEST_TRIES {
            let id = self.hub.next_id();
            let n = match &self.cluster {
                Some(c) => c.next_guest().await.unwrap_or(id),
                None => id,
            };
            let nick = format!("{GUEST_PREFIX}{n}");
            let claimed = match &self.cluster {
                Some(c) if !self.hub.has_nick(&nick) => match c.claim(&nick).await {
                    Ok(false) => continue,
                    Ok(true) => true,
                    Err(_) => false, // link down: unique here, for now
                },
                _ => false,
            };
            match self.hub.join(id, nick) {
                Ok(inbox) => return Ok(inbox),
                Err(nick) if claimed => self.release(&nick).await,
                Err(_) => {}
            }
        }
        Err(io::Error::other("no free guest nick (every one tried was taken)"))
    }

    async fn release(&self, nick: &str) {
        if let Some(c) = &self.cluster {
            c.release(nick).await;
        }
    }
}

/// Lines per second allowed to one client (`--rate`), as a token bucket
/// that holds one second's worth.
#[derive(Debug)]
struct RateLimit {
    per_sec: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    fn new(per_sec: u32) -> Self {
        RateLimit { per_sec: per_sec as f64, tokens: per_sec as f64, at: Instant::now() }
    }
    fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.per_sec).min(self.per_sec);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Service for Chat {
    async fn serve(&self, conn: Conn) -> io::Result<()> {
        let stop = conn.shutdown_token().clone();
        let mut lines = Lines::new(conn).with_max(self.config.max_line).skip_long_lines();
        let mut inbox = self.join_as_guest().await?;
        let result = self.session(&mut lines, &mut inbox, &stop).await;
        self.hub.leave(inbox.id);
        self.release(&inbox.nick).await;
        result
    }

    fn busy_message(&self) -> Option<&[u8]> {
        Some(super::BUSY_LINE)
    }

    fn line_limit(&self) -> Option<usize> {
        Some(self.config.max_line)
    }
}

impl Chat {
    async fn session(
        &self,
        lines: &mut Lines,
        inbox: &mut Inbox,
        stop: &tokio_util::sync::CancellationToken,
    ) -> io::Result<()> {
        let welcome = format!("Welcome to sockit chat, {}! You are in {LOBBY}; /help lists the commands.", inbox.nick);
        lines.send(welcome.as_bytes()).await?;
        history(lines, inbox, 0).await?;
        let mut rate = self.config.rate.map(RateLimit::new);
        let mut out = Gathered::default();
        // Made once: a fresh one per wake-up would register and drop a
        // waiter each time, for every member of a crowded room.
        let stopped = stop.cancelled();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                biased;
                _ = &mut stopped => {
                    let _ = tokio::time::timeout(GOODBYE_TIMEOUT, lines.send(b"* server shutting down")).await;
                    return Ok(());
                }
                post = inbox.room.recv() => {
                    match gather_ready(post, &mut inbox.room, (inbox.id, inbox.ids), &mut out) {
                        Ok(true) => {}
                        Ok(false) => return Ok(()),
                        Err(missed) => return kick(lines, missed).await,
                    }
                }
                direct = inbox.direct.recv() => {
                    let Some(line) = direct else { return Ok(()) };
                    out.push(line);
                    while !out.is_full() && let Ok(line) = inbox.direct.try_recv() {
                        out.push(line);
                    }
                }
                line = lines.next() => {
                    let Some(line) = line? else { return Ok(()) };
                    // Handle the whole burst that is already buffered; plain
                    // lines go to the room together, up to MAX_BURST bytes
                    // as the room sees them.
                    let mut said = Vec::new();
                    let mut next = Some(line);
                    while let Some(line) = next {
                        // A command (here /quit) first sends what was said.
                        if !self.command(&line, lines, inbox, &mut rate, &mut said).await? {
                            return Ok(());
                        }
                        next = if said.len() < MAX_BURST { lines.next_buffered() } else { None };
                    }
                    if !said.is_empty() {
                        // Exactly sized: a room holds --max-queue of these.
                        self.hub.say(inbox, Bytes::copy_from_slice(&said));
                    }
                    // A client pouring lines in gives the others their turn
                    // on this thread once its budget is spent.
                    tokio::task::consume_budget().await;
                    continue;
                }
            }
            // Room posts and direct lines go out through one watched write:
            // a member that stops reading is cut off once it falls
            // --max-queue posts behind its room, or once its direct queue
            // is full and it has read nothing for DIRECT_STALL. (A full
            // direct queue alone is no reason: anyone could fill it, and a
            // member on a slow link catches up.)
            if out.len > 0 {
                let behind = |stalled: Duration| {
                    let room = inbox.room.len();
                    let direct = inbox.direct.capacity() == 0 && stalled >= DIRECT_STALL;
                    (room >= self.config.queue || direct).then_some(room as u64)
                };
                if let Err(missed) = write_watching(lines.conn(), &mut out, behind).await? {
                    return kick(lines, missed).await;
                }
            }
        }
    }

    /// Handles one line from the client; false ends the session. A plain
    /// line is added to `burst` as the room sees it (sent by the caller with
    /// the rest of its burst); before any command, what was said is sent, to
    /// keep order. Control characters and escape sequences never reach
    /// anyone: the line is [cleaned](crate::text::clean) first.
    async fn command(
        &self,
        line: &[u8],
        lines: &mut Lines,
        inbox: &mut Inbox,
        rate: &mut Option<RateLimit>,
        burst: &mut Vec<u8>,
    ) -> io::Result<bool> {
        let mut text = crate::text::clean_bytes(line);
        // Invalid bytes grow threefold as U+FFFD: a line stays within
        // --max-line as the room sees it.
        if text.len() > self.config.max_line {
            let mut end = self.config.max_line;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        let cmd = parse(&text);
        let limited = matches!(cmd, Command::Say(_) | Command::Msg(..));
        if limited
            && let Some(r) = rate.as_mut()
            && !r.allow()
        {
            let msg = format!("! slow down: at most {} lines per second", r.per_sec);
            lines.send(msg.as_bytes()).await?;
            return Ok(true);
        }
        if let Command::Say(t) = cmd {
            if !t.is_empty() {
                said(burst, &inbox.nick, t);
            }
            return Ok(true);
        }
        if !burst.is_empty() {
            self.hub.say(inbox, Bytes::copy_from_slice(&std::mem::take(burst)));
        }
        let reply: Vec<String> = match cmd {
            Command::Say(_) => vec![], // handled above
            Command::Nick(n) if !valid_name(n) => {
                vec![format!("! invalid nick {n}: use letters, digits, - and _, at most 32")]
            }
            // Guests' names are the server's to give: no one can squat the
            // next guest's, so they stay unique by construction.
            Command::Nick(n) if n.starts_with(GUEST_PREFIX) && n != inbox.nick => {
                vec![format!("! nicks starting with {GUEST_PREFIX} are given to guests: choose another")]
            }
            Command::Nick(n) => self.rename(inbox, n).await.err().into_iter().collect(),
            Command::Join(r) if !valid_name(r) => {
                vec![format!("! invalid room {r}: use letters, digits, - and _, at most 32")]
            }
            Command::Join(r) => match self.hub.switch(inbox, r) {
                Ok(()) => {
                    history(lines, inbox, 0).await?;
                    vec![]
                }
                Err(declined) => vec![declined],
            },
            Command::Ids => {
                inbox.ids = true;
                vec!["* ids on: room lines start with #ID; /since ID gives what came after".into()]
            }
            Command::Since(id) => {
                history(lines, inbox, id).await?;
                vec![]
            }
            Command::Rooms => {
                let rooms: Vec<String> = self.rooms().await.iter().map(|(r, n)| format!("{r} ({n})")).collect();
                vec![format!("* rooms: {}", rooms.join(", "))]
            }
            Command::Who => {
                let (room, nicks) = self.who(inbox).await;
                vec![format!("* in {room}: {}", nicks.join(", "))]
            }
            Command::Msg(to, t) => self.direct(inbox.id, to, t).await.err().into_iter().collect(),
            Command::Quit => {
                lines.send(b"* bye").await?;
                return Ok(false);
            }
            Command::Help => HELP.iter().map(|s| s.to_string()).collect(),
            Command::Usage(u) => vec![format!("! {u}")],
            Command::Unknown(c) => vec![format!("! unknown command /{c}: /help lists the commands")],
        };
        for r in reply {
            lines.send(r.as_bytes()).await?;
        }
        Ok(true)
    }
}

impl Chat {
    /// `/nick`: unique here, and across instances when scaled out.
    async fn rename(&self, inbox: &mut Inbox, nick: &str) -> Result<(), String> {
        let mut claimed = false;
        if !self.hub.has_nick(nick)
            && let Some(c) = &self.cluster
        {
            match c.claim(nick).await {
                Ok(false) => return Err(format!("! nick {nick} is taken")),
                Ok(true) => claimed = true,
                Err(_) => {} // link down: unique here, for now
            }
        }
        match self.hub.rename(inbox.id, nick) {
            Ok(old) => {
                inbox.nick = nick.to_string();
                if let Some(c) = &self.cluster {
                    c.release(&old).await;
                }
                Ok(())
            }
            Err(refusal) => {
                if let (true, Some(c)) = (claimed, &self.cluster) {
                    c.release(nick).await;
                }
                Err(refusal)
            }
        }
    }

    /// `/msg`: here if `to` is here, else through the cluster.
    async fn direct(&self, id: u64, to: &str, text: &str) -> Result<(), String> {
        let Some(line) = self.hub.direct(id, to, text)? else { return Ok(()) };
        match &self.cluster {
            Some(c) => match c.nick_exists(to).await {
                Ok(true) => {
                    self.hub.publish(Event::Direct { to: to.to_string(), line });
                    Ok(())
                }
                Ok(false) => Err(format!("! no such user: {to}")),
                Err(_) => Err(format!("! no such user here: {to} (the cluster link is down)")),
            },
            None => Err(format!("! no such user: {to}")),
        }
    }

    /// `/who`: everyone in the member's room, on every instance; scaled
    /// out, one read of that room's set (never the whole keyspace).
    async fn who(&self, inbox: &Inbox) -> (String, Vec<String>) {
        let (room, mut nicks) = self.hub.who(inbox.id);
        if let Some(c) = &self.cluster
            && let Some(there) = c.room_members(&room).await
        {
            // This instance's own view is fresher than Redis's.
            nicks.extend(there);
            nicks.sort();
            nicks.dedup();
        }
        (room, nicks)
    }

    /// `/rooms`: every room and its head count, on every instance.
    async fn rooms(&self) -> Vec<(String, usize)> {
        let here = self.hub.rooms();
        if let Some(c) = &self.cluster
            && let Some(mut all) = c.rooms().await
        {
            // Redis counts this instance's members too, once published.
            for (room, n) in here {
                let count = all.entry(room).or_default();
                *count = (*count).max(n);
            }
            return all.into_iter().collect();
        }
        here
    }
}

/// Posts gathered for one write, shared with everyone else they go to:
/// written with one `writev`, never copied.
#[derive(Default)]
struct Gathered {
    posts: Vec<Bytes>,
    len: usize,
}

/// Most posts in one write.
const MAX_IOV: usize = 64;

impl Gathered {
    fn push(&mut self, line: Bytes) {
        self.len += line.len();
        self.posts.push(line);
    }

    fn is_full(&self) -> bool {
        self.len >= BATCH || self.posts.len() >= MAX_IOV
    }

    /// The posts from byte `done` on, as slices for one write.
    fn slices<'a>(&'a self, mut done: usize, iov: &mut [io::IoSlice<'a>; MAX_IOV]) -> usize {
        let mut n = 0;
        for p in &self.posts {
            if done >= p.len() {
                done -= p.len();
                continue;
            }
            iov[n] = io::IoSlice::new(&p[done..]);
            done = 0;
            n += 1;
        }
        n
    }

    fn clear(&mut self) {
        self.posts.clear();
        self.len = 0;
    }
}

/// Adds `first` and every post ready now (up to [`BATCH`] bytes) to `out`,
/// skipping the member's own: one write for many posts. `Ok(false)` when the
/// room is gone; `Err(n)` when the member fell `n` posts behind.
fn gather_ready(
    first: Result<Post, RecvError>,
    rx: &mut broadcast::Receiver<Post>,
    me: (u64, bool),
    out: &mut Gathered,
) -> Result<bool, u64> {
    match first {
        Ok(p) => gather(out, p, me),
        Err(RecvError::Lagged(n)) => return Err(n),
        Err(RecvError::Closed) => return Ok(false),
    }
    while !out.is_full() {
        match rx.try_recv() {
            Ok(p) => gather(out, p, me),
            Err(TryRecvError::Lagged(n)) => return Err(n),
            Err(_) => break,
        }
    }
    Ok(true)
}

/// Writes `out` to the client; while the client is not reading, asks
/// `behind` every [`LAG_CHECK`] (telling it how long since a byte went
/// out) whether it has fallen too far behind, and
/// gives up (`Err(posts behind)`) if so — a client stuck in a write would
/// otherwise never see its receiver lag.
async fn write_watching(
    conn: &mut Conn,
    out: &mut Gathered,
    behind: impl Fn(Duration) -> Option<u64>,
) -> io::Result<Result<(), u64>> {
    let mut done = 0;
    let mut progress = tokio::time::Instant::now();
    while done < out.len {
        let mut iov = [io::IoSlice::new(&[]); MAX_IOV];
        let n = out.slices(done, &mut iov);
        // Most writes go through at once: only one that waits gets a timer.
        let now =
            std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *conn).poll_write_vectored(cx, &iov[..n])))
                .await;
        if let Poll::Ready(written) = now {
            done += written?;
            continue;
        }
        tokio::select! {
            biased;
            // Cancel-safe: nothing is written unless it completes.
            n = conn.write_vectored(&iov[..n]) => {
                done += n?;
                progress = tokio::time::Instant::now();
            }
            _ = tokio::time::sleep(LAG_CHECK) => {
                if let Some(n) = behind(progress.elapsed()) {
                    return Ok(Err(n));
                }
            }
        }
    }
    out.clear();
    Ok(Ok(()))
}

/// Adds a post for the member `me.0` (its own are not echoed), marked with
/// its id when the member asked for ids (`me.1`).
fn gather(out: &mut Gathered, post: Post, me: (u64, bool)) {
    if post.from != me.0 {
        if !(me.1 && post.id > 0) {
            return out.push(post.line);
        }
        let (mut start, mut id) = (0, post.id);
        while start < post.line.len() {
            let end = memchr::memchr(b'\n', &post.line[start..]).map_or(post.line.len(), |i| start + i + 1);
            out.push(Bytes::from(format!("#{id} ")));
            out.push(post.line.slice(start..end));
            (start, id) = (end, id + 1);
        }
    }
}

/// Sends the room's history after `since` (0: all of it), each line with
/// its time — `[21:30:01] <alice> hi` — and, for a member with ids on, the
/// post's id first. A gap is said: how many lines are lost, or that the
/// history began after `since` (the server restarted).
async fn history(lines: &mut Lines, inbox: &Inbox, since: u64) -> io::Result<()> {
    let (posts, lost) = {
        let h = inbox.history.lock().unwrap();
        if since == 0 { (h.posts().cloned().collect(), Some(0)) } else { h.since(since) }
    };
    let room = &inbox.room_name;
    match lost {
        Some(0) => {}
        Some(n) => lines.send(format!("* {n} lines of {room} were lost (older than its history)").as_bytes()).await?,
        None => lines.send(format!("* lines of {room} from before its history began are lost").as_bytes()).await?,
    }
    if posts.is_empty() {
        if since > 0 {
            lines.send(format!("* {room} is up to date").as_bytes()).await?;
        }
        return Ok(());
    }
    lines.send(format!("* history of {room}, {} lines:", posts.len()).as_bytes()).await?;
    let mut out = Vec::new();
    for p in &posts {
        out.clear();
        if inbox.ids {
            out.extend_from_slice(format!("#{} ", p.id).as_bytes());
        }
        out.extend_from_slice(format!("[{}] ", p.at.format("%H:%M:%S")).as_bytes());
        out.extend_from_slice(p.line.strip_suffix(b"\n").unwrap_or(&p.line));
        lines.send(&out).await?;
    }
    Ok(())
}

/// Disconnects a client that fell too far behind, telling it why.
async fn kick(lines: &mut Lines, missed: u64) -> io::Result<()> {
    let why = format!("! disconnected: too slow to read, {missed} posts behind (the queue holds --max-queue posts)");
    let _ = tokio::time::timeout(GOODBYE_TIMEOUT, lines.send(why.as_bytes())).await;
    Err(io::Error::other(format!("too slow to read: {missed} posts behind")))
}

/// `chat --raw`: bytes from any client go verbatim to all the others, like
/// `ncat --broker`: no nicks, no commands. A client that falls `queue`
/// chunks behind is disconnected.
#[derive(Debug)]
pub struct RawBroker {
    tx: broadcast::Sender<Post>,
    next_id: AtomicU64,
    queue: usize,
}

impl RawBroker {
    /// A broker whose clients may fall `queue` chunks behind.
    pub fn new(queue: usize) -> Self {
        RawBroker { tx: broadcast::channel(queue.max(1)).0, next_id: AtomicU64::new(1), queue: queue.max(1) }
    }
}

impl Service for RawBroker {
    async fn serve(&self, mut conn: Conn) -> io::Result<()> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut rx = self.tx.subscribe();
        let stop = conn.shutdown_token().clone();
        let mut input = BytesMut::new();
        let mut out = Gathered::default();
        let stopped = stop.cancelled();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                biased;
                _ = &mut stopped => return Ok(()),
                post = rx.recv() => {
                    let behind = match gather_ready(post, &mut rx, (id, false), &mut out) {
                        Ok(true) if out.len == 0 => continue,
                        Ok(true) => {
                            let behind = |_| (rx.len() >= self.queue).then_some(rx.len() as u64);
                            write_watching(&mut conn, &mut out, behind).await?.err()
                        }
                        Ok(false) => return Ok(()),
                        Err(n) => Some(n),
                    };
                    if let Some(n) = behind {
                        return Err(io::Error::other(format!("too slow to read: {n} chunks behind")));
                    }
                }
                n = conn.read_lazy(&mut input, BATCH) => {
                    if n? == 0 {
                        return Ok(());
                    }
                    let _ = self.tx.send(Post { from: id, id: 0, line: input.split().freeze() });
                    input = BytesMut::new();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathered_posts_resume_mid_post_after_a_short_write() {
        let mut out = Gathered::default();
        for p in ["ab", "", "cde", "f"] {
            out.push(Bytes::from(p));
        }
        assert_eq!(out.len, 6);
        let all = |done| {
            let mut iov = [io::IoSlice::new(&[]); MAX_IOV];
            let n = out.slices(done, &mut iov);
            iov[..n].iter().flat_map(|s| s.to_vec()).collect::<Vec<u8>>()
        };
        for done in 0..=6 {
            assert_eq!(all(done), &b"abcdef"[done..], "after {done} bytes");
        }
        while !out.is_full() {
            out.push(Bytes::from_static(b"x"));
        }
        assert_eq!(out.posts.len(), MAX_IOV, "one write takes at most MAX_IOV posts");
    }
}
