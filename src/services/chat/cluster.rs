//! Scale-out on Redis: any number of chat instances, on one machine or many,
//! act as one chat.
//!
//! - Room lines, notices and direct messages travel on one pub/sub channel,
//!   [`CHANNEL`], as JSON; each instance delivers what others published.
//! - A nick is claimed with `SET sockit:chat:nick:<nick> <instance> NX EX`,
//!   so it is unique across instances. Who is in a room is a sorted set per
//!   room, `sockit:chat:room:<room>`, of nicks scored by when they expire;
//!   `sockit:chat:rooms` scores the rooms the same way. `/who` reads its
//!   room's set alone, so its cost is the room's, never the keyspace's (no
//!   `KEYS`, no scan). Entries expire after [`TTL`] unless refreshed, so a
//!   crashed instance's users vanish within that time.
//! - If Redis goes away, the instance keeps serving its own users, tells
//!   them `* cluster link lost`, and reconnects with backoff; once back it
//!   re-claims its nicks, and tells them `* cluster link restored`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::hub::{Event, Hub};

/// The pub/sub channel every instance publishes to and listens on.
pub const CHANNEL: &str = "sockit:chat:events";
/// How long a nick or presence key lives without a refresh.
pub const TTL: Duration = Duration::from_secs(30);
/// How long the goodbye to Redis (giving nicks and places up) may take at
/// shutdown.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often keys are refreshed.
const REFRESH: Duration = Duration::from_secs(10);
const NICK_KEY: &str = "sockit:chat:nick:";
const ROOM_KEY: &str = "sockit:chat:room:";
const ROOMS_KEY: &str = "sockit:chat:rooms";
/// Most rooms `/rooms` lists when scaled out.
const MAX_ROOMS_LISTED: usize = 100;
const GUEST_KEY: &str = "sockit:chat:guests";
/// Most events sent to Redis in one pipeline.
const PUBLISH_BATCH: usize = 256;

/// One instance's link to the others.
pub struct Cluster {
    id: String,
    client: redis::Client,
    con: std::sync::Mutex<Option<ConnectionManager>>,
    up: AtomicBool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("id", &self.id).field("up", &self.is_up()).finish()
    }
}

fn redis_err(e: redis::RedisError) -> String {
    e.to_string()
}

impl Cluster {
    /// A link to the Redis at `url`; nothing connects until [`Cluster::run`].
    pub fn new(url: &str) -> Result<Arc<Self>, String> {
        let client =
            redis::Client::open(url).map_err(|e| format!("invalid --redis '{url}': {e} (write redis://HOST:PORT)"))?;
        let id = format!("{}-{}", std::process::id(), rand_suffix());
        Ok(Arc::new(Cluster { id, client, con: Default::default(), up: AtomicBool::new(false) }))
    }

    /// Whether the link is up now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn con(&self) -> Option<ConnectionManager> {
        if !self.is_up() {
            return None;
        }
        self.con.lock().unwrap().clone()
    }

    /// A cluster-wide guest number, if the link is up.
    pub async fn next_guest(&self) -> Option<u64> {
        let mut con = self.con()?;
        redis::cmd("INCR").arg(GUEST_KEY).query_async(&mut con).await.ok()
    }

    /// Claims `nick` for this instance: `Ok(false)` if another instance
    /// holds it; `Err` if the link is down (the caller decides locally).
    pub async fn claim(&self, nick: &str) -> Result<bool, String> {
        let mut con = self.con().ok_or("cluster link down")?;
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{NICK_KEY}{nick}"))
            .arg(&self.id)
            .arg("NX")
            .arg("EX")
            .arg(TTL.as_secs())
            .query_async(&mut con)
            .await
            .map_err(redis_err)?;
        Ok(set.is_some())
    }

    /// Gives `nick` up.
    pub async fn release(&self, nick: &str) {
        if let Some(mut con) = self.con() {
            let _: Result<i64, _> = redis::cmd("DEL").arg(format!("{NICK_KEY}{nick}")).query_async(&mut con).await;
        }
    }

    /// Whether some instance holds `nick`.
    pub async fn nick_exists(&self, nick: &str) -> Result<bool, String> {
        let mut con = self.con().ok_or("cluster link down")?;
        redis::cmd("EXISTS").arg(format!("{NICK_KEY}{nick}")).query_async(&mut con).await.map_err(redis_err)
    }

    /// The nicks in `room` on every instance (None if the link is down):
    /// one sorted-set read, its cost bounded by the room's size.
    pub async fn room_members(&self, room: &str) -> Option<Vec<String>> {
        let mut con = self.con()?;
        let key = format!("{ROOM_KEY}{room}");
        let now = unix_now();
        let (nicks,): (Vec<String>,) = redis::pipe()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(now)
            .ignore()
            .cmd("ZRANGEBYSCORE")
            .arg(&key)
            .arg(now)
            .arg("+inf")
            .query_async(&mut con)
            .await
            .ok()?;
        Some(nicks)
    }

    /// Every room with anyone in it, and how many (None if the link is
    /// down); at most 100 rooms.
    pub async fn rooms(&self) -> Option<BTreeMap<String, usize>> {
        let mut con = self.con()?;
        let now = unix_now();
        let rooms: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(ROOMS_KEY)
            .arg(now)
            .arg("+inf")
            .arg("LIMIT")
            .arg(0)
            .arg(MAX_ROOMS_LISTED)
            .query_async(&mut con)
            .await
            .ok()?;
        let mut pipe = redis::pipe();
        for room in &rooms {
            pipe.cmd("ZCOUNT").arg(format!("{ROOM_KEY}{room}")).arg(now).arg("+inf");
        }
        let counts: Vec<usize> = pipe.query_async(&mut con).await.ok()?;
        Some(rooms.into_iter().zip(counts).filter(|(_, n)| *n > 0).collect())
    }

    /// Runs the link until `stop`: publishes the hub's events, delivers the
    /// others', keeps keys fresh, and reconnects with backoff.
    pub async fn run(self: Arc<Self>, hub: Arc<Hub>, mut outbox: mpsc::Receiver<Event>, stop: CancellationToken) {
        let publisher = {
            let me = self.clone();
            async move {
                // Everything queued goes out in one pipeline: one round
                // trip per batch, not per line.
                let mut batch = Vec::with_capacity(PUBLISH_BATCH);
                while outbox.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
                    me.publish(&batch).await;
                    batch.clear();
                }
            }
        };
        let refresher = {
            let me = self.clone();
            let hub = hub.clone();
            async move {
                loop {
                    tokio::time::sleep(REFRESH).await;
                    me.refresh(&hub, false).await;
                }
            }
        };
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = publisher => {}
            _ = refresher => {}
            _ = self.clone().subscribe_forever(hub.clone()) => {}
        }
        // Leaving: give the nicks and room places up at once.
        if let Some(mut con) = self.con() {
            let mut pipe = redis::pipe();
            for (nick, room) in hub.members() {
                pipe.cmd("DEL").arg(format!("{NICK_KEY}{nick}")).ignore();
                pipe.cmd("ZREM").arg(format!("{ROOM_KEY}{room}")).arg(nick).ignore();
            }
            // Bounded: a stalled Redis must not hold shutdown for the
            // whole grace period (the keys expire anyway).
            let _ = tokio::time::timeout(LEAVE_TIMEOUT, pipe.query_async::<()>(&mut con)).await;
        }
    }

    async fn publish(&self, events: &[Event]) {
        let mut pipe = redis::pipe();
        for event in events {
            let payload = match event {
                Event::Room { room, line } => {
                    json!({"o": self.id, "room": room, "line": String::from_utf8_lossy(line)})
                }
                Event::Direct { to, line } => json!({"o": self.id, "to": to, "line": String::from_utf8_lossy(line)}),
                Event::Joined { nick, room } => {
                    place(&mut pipe, nick, room, unix_now() + TTL.as_secs());
                    continue;
                }
                Event::Left { nick, room } => {
                    pipe.cmd("ZREM").arg(format!("{ROOM_KEY}{room}")).arg(nick).ignore();
                    continue;
                }
            };
            pipe.cmd("PUBLISH").arg(CHANNEL).arg(payload.to_string()).ignore();
        }
        if let Some(mut con) = self.con()
            && let Err(e) = pipe.query_async::<()>(&mut con).await
        {
            debug!("publish failed: {e}");
        }
    }

    /// Re-sets this instance's nicks and room places with a fresh expiry.
    /// After an outage (`reclaim`), nicks are claimed again with NX.
    async fn refresh(&self, hub: &Hub, reclaim: bool) {
        let Some(mut con) = self.con() else { return };
        let members = hub.members();
        let expires = unix_now() + TTL.as_secs();
        let mut pipe = redis::pipe();
        for (nick, room) in &members {
            let c = pipe.cmd("SET").arg(format!("{NICK_KEY}{nick}")).arg(&self.id);
            if reclaim {
                c.arg("NX");
            }
            c.arg("EX").arg(TTL.as_secs()).ignore();
            place(&mut pipe, nick, room, expires);
        }
        // Rooms no one refreshed are dropped from the list.
        pipe.cmd("ZREMRANGEBYSCORE").arg(ROOMS_KEY).arg("-inf").arg(unix_now()).ignore();
        if let Err(e) = pipe.query_async::<()>(&mut con).await {
            debug!("refresh failed: {e}");
        }
    }

    async fn subscribe_forever(self: Arc<Self>, hub: Arc<Hub>) {
        let mut backoff = Duration::from_millis(100);
        let mut ever_up = false;
        loop {
            match self.connect().await {
                Ok(mut messages) => {
                    self.up.store(true, Ordering::Relaxed);
                    backoff = Duration::from_millis(100);
                    self.refresh(&hub, ever_up).await;
                    if ever_up {
                        info!("cluster link restored");
                        hub.notice_all("* cluster link restored");
                    } else {
                        info!(instance = %self.id, "cluster link up");
                    }
                    ever_up = true;
                    while let Some(msg) = messages.next().await {
                        self.deliver(&hub, msg.get_payload_bytes());
                    }
                    self.up.store(false, Ordering::Relaxed);
                    warn!("cluster link lost: serving local users only; reconnecting");
                    hub.notice_all("* cluster link lost");
                }
                Err(e) => debug!("cluster connect failed: {e}"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn connect(&self) -> Result<redis::aio::PubSubStream, redis::RedisError> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(CHANNEL).await?;
        let con = self.client.get_connection_manager().await?;
        *self.con.lock().unwrap() = Some(con);
        Ok(pubsub.into_on_message())
    }

    fn deliver(&self, hub: &Hub, payload: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(payload) else { return };
        if v["o"].as_str() == Some(self.id.as_str()) {
            return;
        }
        // Another instance cleaned its users' text; a stranger with access
        // to the channel may not have.
        let Some(line) = v["line"].as_str().map(|l| Bytes::from(clean_line(l))) else { return };
        if let Some(room) = v["room"].as_str() {
            hub.deliver_room(room, line);
        } else if let Some(to) = v["to"].as_str() {
            hub.deliver_direct(to, line);
        }
    }
}

/// `line` (one or more lines, each with its newline) without control
/// characters or escape sequences.
fn clean_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for l in line.split_terminator('\n') {
        out.push_str(&crate::text::clean(l));
        out.push('\n');
    }
    out
}

/// Puts `nick` in `room`'s set until `expires`, and the room in the list of
/// rooms. Both keys themselves expire too (twice [`TTL`] after the last
/// refresh), so what a crashed instance left, or a flood of throw-away
/// rooms, does not stay in Redis.
fn place(pipe: &mut redis::Pipeline, nick: &str, room: &str, expires: u64) {
    let key = format!("{ROOM_KEY}{room}");
    pipe.cmd("ZADD").arg(&key).arg(expires).arg(nick).ignore();
    pipe.cmd("EXPIRE").arg(&key).arg(2 * TTL.as_secs()).ignore();
    pipe.cmd("ZADD").arg(ROOMS_KEY).arg(expires).arg(room).ignore();
    pipe.cmd("EXPIRE").arg(ROOMS_KEY).arg(2 * TTL.as_secs()).ignore();
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A few random hex digits to tell instances with the same pid apart.
fn rand_suffix() -> String {
    use std::hash::{BuildHasher, RandomState};
    format!("{:08x}", RandomState::new().hash_one(std::time::SystemTime::now()) as u32)
}
