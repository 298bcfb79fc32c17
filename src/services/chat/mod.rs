//! `chat`: a line chat server any line client can use (`sockit connect`, nc,
//! telnet), or with `--raw` a byte broker like `ncat --broker`.
//!
//! Protocol (UTF-8 lines; invalid bytes are replaced): on connect a welcome
//! line names the assigned `guest-N` nick; the user is in room `lobby`. A
//! plain line goes to everyone else in the room as `<nick> text`; commands
//! are listed in [`protocol::HELP`]; errors are lines starting with `! `;
//! notices start with `* ` (`* guest-3 is now alice`, `* alice joined`,
//! `* alice left`, `* server shutting down`).

pub mod cluster;
pub mod hub;
pub mod protocol;

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
use self::hub::{Event, Hub, Inbox, LOBBY, Post};
use self::protocol::{Command, HELP, parse, valid_name};
use crate::{Conn, Lines, Service};

/// Default `--max-line` for chat: 4 KiB.
pub const DEFAULT_MAX_LINE: usize = 4 * 1024;
/// Default `--max-queue`: how many posts (a line, or a burst of one
/// client's lines of at most [`MAX_BURST`] bytes) a client may fall behind.
pub const DEFAULT_QUEUE: usize = 1024;
/// Most bytes gathered into one write to a client.
const BATCH: usize = 64 * 1024;
/// How long a goodbye line may take to write to a client.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);
/// A client's buffered plain lines go to the room as one post until they
/// reach this many bytes: a post costs one queue slot whatever it holds, so
/// this bounds a room's queue at `--max-queue` × 16 KiB (plus one line).
pub const MAX_BURST: usize = 16 * 1024;
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
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig { max_line: DEFAULT_MAX_LINE, queue: DEFAULT_QUEUE, rate: None, quiet_above: DEFAULT_QUIET_ABOVE }
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
        Chat { hub: Arc::new(Hub::new(config.queue, config.quiet_above)), cluster: None, config }
    }

    /// A chat that is one with every other instance on the Redis at `url`.
    /// Run the returned future (until `stop`) to keep the link.
    pub fn with_redis(
        url: &str,
        config: ChatConfig,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<(Self, impl Future<Output = ()> + Send + 'static), String> {
        let config = ChatConfig { queue: config.queue.max(1), ..config };
        let cluster = Cluster::new(url)?;
        let (hub, outbox) = Hub::clustered(config.queue, config.quiet_above);
        let hub = Arc::new(hub);
        let link = cluster.clone().run(hub.clone(), outbox, stop);
        Ok((Chat { hub, cluster: Some(cluster), config }, link))
    }

    /// A new member's nick: `guest-N`, numbered cluster-wide when scaled out.
    async fn guest_nick(&self, id: u64) -> String {
        if let Some(c) = &self.cluster
            && let Some(n) = c.next_guest().await
        {
            let nick = format!("guest-{n}");
            if !self.hub.has_nick(&nick) && c.claim(&nick).await.unwrap_or(true) {
                return nick;
            }
        }
        format!("guest-{id}")
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
        let id = self.hub.next_id();
        let nick = self.guest_nick(id).await;
        let mut inbox = self.hub.join(id, nick);
        let result = self.session(&mut lines, &mut inbox, &stop).await;
        self.hub.leave(inbox.id);
        if let Some(c) = &self.cluster {
            c.release(&inbox.nick).await;
        }
        result
    }

    fn busy_message(&self) -> Option<&[u8]> {
        Some(super::BUSY_LINE)
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
                    match gather_ready(post, &mut inbox.room, inbox.id, &mut out) {
                        Ok(true) => {}
                        Ok(false) => return Ok(()),
                        Err(missed) => return kick(lines, missed).await,
                    }
                    if out.len > 0
                        && let Err(missed) = write_watching(lines.conn(), &mut out, &inbox.room, self.config.queue).await?
                    {
                        return kick(lines, missed).await;
                    }
                }
                direct = inbox.direct.recv() => {
                    if let Some(line) = direct {
                        lines.conn().write_all(&line).await?;
                    }
                }
                line = lines.next() => {
                    let Some(line) = line? else { return Ok(()) };
                    // Handle the whole burst that is already buffered; plain
                    // lines go to the room together.
                    let mut said = Vec::new();
                    let mut next = Some(line);
                    while let Some(line) = next {
                        // A command (here /quit) first sends what was said.
                        if !self.command(&line, lines, inbox, &mut rate, &mut said).await? {
                            return Ok(());
                        }
                        let bytes: usize = said.iter().map(|t| t.len()).sum();
                        next = if bytes < MAX_BURST { lines.next_buffered() } else { None };
                    }
                    if !said.is_empty() {
                        self.hub.say(inbox.id, &said);
                    }
                }
            }
        }
    }

    /// Handles one line from the client; false ends the session. A plain
    /// line is added to `said` (sent by the caller with the rest of its
    /// burst); before any command, what was said is sent, to keep order.
    async fn command(
        &self,
        line: &[u8],
        lines: &mut Lines,
        inbox: &mut Inbox,
        rate: &mut Option<RateLimit>,
        said: &mut Vec<String>,
    ) -> io::Result<bool> {
        let text = String::from_utf8_lossy(line);
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
                said.push(t.to_string());
            }
            return Ok(true);
        }
        if !said.is_empty() {
            self.hub.say(inbox.id, &std::mem::take(said));
        }
        let reply: Vec<String> = match cmd {
            Command::Say(_) => vec![], // handled above
            Command::Nick(n) if !valid_name(n) => {
                vec![format!("! invalid nick {n}: use letters, digits, - and _, at most 32")]
            }
            Command::Nick(n) => self.rename(inbox, n).await.err().into_iter().collect(),
            Command::Join(r) if !valid_name(r) => {
                vec![format!("! invalid room {r}: use letters, digits, - and _, at most 32")]
            }
            Command::Join(r) => match self.hub.switch(inbox.id, r) {
                Ok(rx) => {
                    inbox.room = rx;
                    vec![]
                }
                Err(refusal) => vec![refusal],
            },
            Command::Rooms => {
                let rooms: Vec<String> = self.rooms().await.iter().map(|(r, n)| format!("{r} ({n})")).collect();
                vec![format!("* rooms: {}", rooms.join(", "))]
            }
            Command::Who => {
                let (room, nicks) = self.who(inbox.id).await;
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

    /// `/who`: everyone in the member's room, on every instance.
    async fn who(&self, id: u64) -> (String, Vec<String>) {
        if let Some(c) = &self.cluster
            && let (Some(all), Some(room)) = (c.everyone().await, self.hub.room_of(id))
        {
            let mut nicks: Vec<String> = all.into_iter().filter(|(_, r)| *r == room).map(|(n, _)| n).collect();
            // This instance's own view is fresher than its presence key.
            for (n, r) in self.hub.members() {
                if r == room && !nicks.contains(&n) {
                    nicks.push(n);
                }
            }
            nicks.sort();
            return (room, nicks);
        }
        self.hub.who(id)
    }

    /// `/rooms`: every room and its head count, on every instance.
    async fn rooms(&self) -> Vec<(String, usize)> {
        if let Some(c) = &self.cluster
            && let Some(mut all) = c.everyone().await
        {
            all.extend(self.hub.members());
            let mut rooms: std::collections::BTreeMap<String, usize> = Default::default();
            for room in all.into_values() {
                *rooms.entry(room).or_default() += 1;
            }
            return rooms.into_iter().collect();
        }
        self.hub.rooms()
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
    me: u64,
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

/// Writes `out` to the client; while the client is not reading, checks
/// every [`LAG_CHECK`] how far behind its room it has fallen, and gives up
/// (`Err(posts behind)`) past `queue` — a client stuck in a write would
/// otherwise never see its receiver lag.
async fn write_watching(
    conn: &mut Conn,
    out: &mut Gathered,
    rx: &broadcast::Receiver<Post>,
    queue: usize,
) -> io::Result<Result<(), u64>> {
    let mut done = 0;
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
            n = conn.write_vectored(&iov[..n]) => done += n?,
            _ = tokio::time::sleep(LAG_CHECK) => {
                if rx.len() >= queue {
                    return Ok(Err(rx.len() as u64));
                }
            }
        }
    }
    out.clear();
    Ok(Ok(()))
}

fn gather(out: &mut Gathered, post: Post, me: u64) {
    if post.from != me {
        out.push(post.line);
    }
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
                    let behind = match gather_ready(post, &mut rx, id, &mut out) {
                        Ok(true) if out.len == 0 => continue,
                        Ok(true) => write_watching(&mut conn, &mut out, &rx, self.queue).await?.err(),
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
                    let _ = self.tx.send(Post { from: id, line: input.split().freeze() });
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
