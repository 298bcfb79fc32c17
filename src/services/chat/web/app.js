// sockit chat in a browser. Every peer text is put on the page with
// textContent, never as HTML, and the page's Content-Security-Policy allows
// no inline script: what anyone types is shown as text and never runs.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const log = $("log"), state = $("state"), line = $("line");
  let ws = null, nick = "", me = "", room = "lobby", joining = "", backoff = 500, timer = null, wanted = false;
  // The id of the last room line seen (from /ids), and whether the history a
  // new connection gets first is to be skipped: after a reconnect, /since
  // gives exactly what was missed instead.
  let lastId = 0, skipHistory = false;

  function show(text, cls) {
    const div = document.createElement("div");
    div.textContent = text;
    if (cls) div.className = cls;
    const atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    log.appendChild(div);
    while (log.childElementCount > 2000) log.firstElementChild.remove();
    if (atEnd) log.scrollTop = log.scrollHeight;
  }

  function classify(text) {
    if (text.startsWith("! ")) return "error";
    if (text.startsWith("* ")) return "notice";
    if (/^<[^>]+> \(direct\) /.test(text)) return "direct";
    return "";
  }

  function setState(s, label) {
    state.className = "state " + s;
    state.textContent = label;
  }

  function received(text) {
    let cls = "";
    const marked = /^#(\d+) (.*)$/.exec(text);
    if (marked) {
      const id = Number(marked[1]);
      if (id <= lastId) return; // seen already
      lastId = id;
      text = marked[2];
    }
    if (text.startsWith("[")) {
      if (skipHistory && !marked) return;
      cls = "history";
    } else if (text.startsWith("* history of ")) {
      if (skipHistory) return;
    } else if (text.startsWith("* ids on") || / is up to date$/.test(text)) {
      return;
    } else if (!text.startsWith("Welcome")) {
      skipHistory = false;
    }
    let m = /^Welcome to sockit chat, (\S+)! You are in (\S+);/.exec(text);
    if (m) me = m[1];
    m = /^\* (\S+) is now (\S+)$/.exec(text);
    if (m && m[1] === me) me = m[2];
    if (text === "* " + me + " joined" && joining) {
      if (joining !== room) lastId = 0; // ids are per room
      room = joining; $("room").textContent = room; joining = "";
    }
    show(text, cls || classify(text));
  }

  function connect() {
    clearTimeout(timer);
    setState("connecting", "connecting…");
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
    ws = new WebSocket(url);
    ws.onopen = () => {
      backoff = 500;
      setState("open", "connected");
      ws.send("/ids");
      if (nick) ws.send("/nick " + nick);
      if (room !== "lobby") { joining = room; ws.send("/join " + room); }
      if (lastId) ws.send("/since " + lastId);
    };
    ws.onmessage = (e) => {
      const text = typeof e.data === "string" ? e.data : "";
      for (const l of text.split("\n")) if (l !== "") received(l);
    };
    ws.onclose = (e) => {
      ws = null;
      const why = e.reason ? " (" + e.reason + ")" : "";
      if (!wanted) return setState("closed", "closed" + why);
      setState("closed", "reconnecting in " + Math.round(backoff / 1000) + "s" + why);
      show("* disconnected" + why + "; reconnecting", "notice");
      skipHistory = true;
      timer = setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 30000);
    };
  }

  function send(text) {
    if (!ws || ws.readyState !== WebSocket.OPEN) { show("! not connected; the line was not sent", "error"); return; }
    ws.send(text);
    if (text.startsWith("/nick ")) nick = text.slice(6).trim();
    else if (text.startsWith("/join ")) joining = text.slice(6).trim();
    else if (!text.startsWith("/")) show("<" + me + "> " + text, "mine");
  }

  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    nick = $("nick").value.trim();
    $("login").hidden = true;
    log.hidden = false; $("tools").hidden = false; $("say").hidden = false;
    wanted = true;
    connect();
    line.focus();
  });
  $("say").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = line.value;
    if (text.trim() === "") return;
    send(text);
    line.value = "";
  });
  for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => send(b.dataset.cmd));
  setState("closed", "not joined");
})();
