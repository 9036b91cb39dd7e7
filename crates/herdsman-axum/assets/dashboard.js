// herdsman live dashboard.
//
// The page practises what herdsman preaches: however many tabs are open, the
// browser holds one SSE connection per stream and polls the stats once. One
// tab is elected leader (Web Locks, or a BroadcastChannel heartbeat where
// Web Locks is missing); it alone talks to the server and rebroadcasts every
// update on BroadcastChannel('herdsman'). The other tabs are followers and
// render what the leader sends.
//
// The leader prefers SSE. If a stream errors and does not recover within a
// few seconds (or the server answers 503 because SSE is switched off), it
// polls the GET endpoints with If-None-Match instead, and tries SSE again
// every 15 s, switching back once both streams open.
//
// Server data is only ever rendered through textContent, and there are no
// inline handlers, so the page runs under `Content-Security-Policy:
// default-src 'self'`.
(function () {
  "use strict";

  const BOARD = "demo";
  const STREAMS = {
    "active-users": { sse: "/sse/active-users", poll: "/api/active-users" },
    "board-events": {
      sse: "/sse/boards/" + BOARD + "/events",
      poll: "/api/boards/" + BOARD + "/events",
    },
  };
  const STATS_URL = "/_herdsman/stats";

  // Admin routes need a bearer token in production and docker. Open the
  // page as /#token=<token> once: the token moves to this browser's local
  // storage (every tab of the app, the leader included, needs it) and out
  // of the address bar.
  const TOKEN_KEY = "herdsman-admin-token";
  (function takeTokenFromFragment() {
    const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (!match) return;
    try {
      localStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    } catch (_) {
      // Storage may be off; the token then lasts for this page only.
      window.__herdsmanToken = decodeURIComponent(match[1]);
    }
    history.replaceState(null, "", location.pathname + location.search);
  })();
  function adminHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    let token = window.__herdsmanToken;
    try {
      token = localStorage.getItem(TOKEN_KEY) || token;
    } catch (_) {}
    if (token) headers.Authorization = "Bearer " + token;
    return headers;
  }
  const STATS_EVERY_MS = 2000;
  const DEFAULT_POLL_MS = 5000;
  const SSE_GRACE_MS = 3000; // how long a broken stream may take to reconnect
  const SSE_RETRY_MS = 15000; // how often polling tries SSE again
  const HEARTBEAT_MS = 1000; // fallback election only
  const LEADER_TIMEOUT_MS = 3000;
  const CLAIM_WAIT_MS = 400;
  const HISTORY_POINTS = 60;
  const LOCK_NAME = "herdsman-sse-leader";

  // What the browser tests read. Mutated in place, never replaced.
  const exposed = {
    role: "follower",
    transport: "connecting",
    updates: 0, // active-users and board-events renders
    statsUpdates: 0,
    election: "none",
  };
  window.herdsmanDashboard = exposed;

  const $ = (id) => document.getElementById(id);
  const channel = "BroadcastChannel" in window ? new BroadcastChannel("herdsman") : null;
  const tabId = Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 10);

  // Latest state, in every tab; the leader hands it to new followers.
  const state = {
    streams: { "active-users": null, "board-events": null }, // { version, data }
    stats: null,
    history: {}, // endpoint -> [{ requests, upstream }] per stats refresh
    totals: {}, // endpoint -> last seen counters, to turn totals into deltas
  };

  function post(message) {
    if (channel) channel.postMessage(message);
  }

  // ---------------------------------------------------------------- status

  function setRole(role) {
    exposed.role = role;
    const el = $("role");
    el.textContent = role;
    el.dataset.state = role;
  }

  function setTransport(transport) {
    exposed.transport = transport;
    const el = $("transport");
    el.textContent = transport;
    el.dataset.state = transport;
    if (exposed.role === "leader") post({ type: "transport", transport });
  }

  // ------------------------------------------------------------- rendering

  function applyStream(stream, version, data) {
    const current = state.streams[stream];
    // Versions only ever differ for new data; a restarted server may count
    // from 1 again, so any difference is news.
    if (current && current.version === version) return false;
    state.streams[stream] = { version, data };
    if (stream === "active-users") renderActiveUsers(data);
    else renderBoardEvents(data);
    exposed.updates += 1;
    return true;
  }

  function renderActiveUsers(data) {
    const users = Array.isArray(data && data.users) ? data.users : [];
    const count = data && Number.isFinite(data.count) ? data.count : users.length;
    $("active-users-count").textContent = String(count);
    $("active-users-list").replaceChildren(
      ...users.map((name) => el("li", "chip", String(name)))
    );
  }

  function renderBoardEvents(events) {
    const list = Array.isArray(events) ? events.slice() : [];
    list.sort((a, b) => (b.id || 0) - (a.id || 0));
    $("board-events").replaceChildren(
      ...list.slice(0, 50).map((event) => {
        const li = el("li");
        li.append(
          el("span", "card", String(event.card)),
          el("span", "action action-" + String(event.action), String(event.action)),
          timeElement(event.at)
        );
        return li;
      })
    );
  }

  function timeElement(at) {
    const time = el("time");
    const date = new Date(at);
    if (at && !Number.isNaN(date.getTime())) {
      time.dateTime = date.toISOString();
      time.textContent = date.toLocaleTimeString();
    } else {
      time.textContent = at == null ? "" : String(at);
    }
    return time;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Turns cumulative counters into per-refresh points for the sparkline.
  function recordHistory(stats) {
    for (const [name, e] of Object.entries(stats.endpoints || {})) {
      const previous = state.totals[name];
      state.totals[name] = { requests: e.requests || 0, upstream: e.upstream_calls || 0 };
      if (!previous) continue;
      const points = state.history[name] || (state.history[name] = []);
      points.push({
        // A restarted server counts from zero again: never plot negatives.
        requests: Math.max(0, (e.requests || 0) - previous.requests),
        upstream: Math.max(0, (e.upstream_calls || 0) - previous.upstream),
      });
      if (points.length > HISTORY_POINTS) points.splice(0, points.length - HISTORY_POINTS);
    }
  }

  function applyStats(stats, fresh) {
    if (!stats || typeof stats !== "object") return;
    if (fresh) recordHistory(stats);
    state.stats = stats;
    exposed.statsUpdates += 1;
    $("environment").textContent = String(stats.environment || "unknown");
    renderEndpoints(stats.endpoints || {});
    renderAlerts(Array.isArray(stats.alerts) ? stats.alerts : []);
    renderSwitches(Array.isArray(stats.switches) ? stats.switches : []);
  }

  function percent(ratio) {
    return ratio === null ? "–" : (ratio * 100).toFixed(1) + "\u00a0%";
  }

  function renderEndpoints(endpoints) {
    const root = $("stats");
    root.removeAttribute("aria-busy");
    const names = Object.keys(endpoints).sort();
    if (names.length === 0) {
      root.replaceChildren(el("p", "empty", "No endpoints reported yet."));
      return;
    }
    root.replaceChildren(...names.map((name) => endpointCard(name, endpoints[name])));
  }

  function endpointCard(name, e) {
    const requests = e.requests || 0;
    const upstream = e.upstream_calls || 0;
    // Client requests that made no upstream call of their own, by what
    // answered them; with forwarded (and in flight) they add up to requests.
    const parts = e.saved || {};
    const savedBy = {
      cache: parts.cache_hits || 0,
      coalesced: parts.coalesced || 0,
      loop: parts.poll_loop || 0,
    };
    const savedTotal = savedBy.cache + savedBy.coalesced + savedBy.loop;
    const saving = requests > 0 ? savedTotal / requests : null;
    const lookups = (e.cache_hits || 0) + (e.cache_misses || 0);
    const hitRatio = lookups > 0 ? (e.cache_hits || 0) / lookups : null;
    const breaker = String(e.breaker || "closed");
    const p99 = e.latency_ms && Number.isFinite(e.latency_ms.p99) ? e.latency_ms.p99 : null;

    const card = el("article", "endpoint");
    card.dataset.endpoint = name;
    const head = el("header");
    head.append(el("h3", null, name), field("span", "breaker", breaker.replace("_", "-"), "breaker breaker-" + breaker));
    const saved = el("div", "saving");
    saved.append(
      field("span", "saving", percent(saving), "saving-value"),
      el("span", "saving-label", "saved"),
      sparkline(name, state.history[name] || [])
    );
    const facts = el("dl", "facts");
    addFact(facts, "requests", "Client requests", String(requests));
    addFact(facts, "upstream-calls", "Upstream calls", String(upstream));
    addFact(facts, "hit-ratio", "Cache hit ratio", percent(hitRatio));
    addFact(facts, "p99", "Latency p99", p99 === null ? "–" : p99.toFixed(1) + " ms");
    addFact(facts, "subscribers", "Subscribers", String(e.subscribers || 0));
    addFact(facts, "saved-cache-hits", "Saved: cache", String(savedBy.cache));
    addFact(facts, "saved-coalesced", "Saved: coalesced", String(savedBy.coalesced));
    addFact(facts, "saved-poll-loop", "Saved: poll loop", String(savedBy.loop));
    addFact(facts, "forwarded", "Forwarded", String(e.forwarded || 0));
    addFact(facts, "errors", "Errors / rejected", (e.errors || 0) + " / " + (e.rejected || 0));
    card.append(head, saved, facts);
    return card;
  }

  function field(tag, name, text, className) {
    const node = el(tag, className, text);
    node.dataset.field = name;
    return node;
  }

  function addFact(dl, name, label, value) {
    const row = el("div");
    row.append(el("dt", null, label), field("dd", name, value));
    dl.append(row);
  }

  const SVG = "http://www.w3.org/2000/svg";

  function sparkline(name, points) {
    const width = 120;
    const height = 32;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("class", "sparkline");
    svg.setAttribute("role", "img");
    const last = points[points.length - 1];
    const title = document.createElementNS(SVG, "title");
    title.textContent = last
      ? name + ": " + last.requests + " client requests, " + last.upstream + " upstream calls in the last refresh"
      : name + ": no history yet";
    const baseline = document.createElementNS(SVG, "line");
    baseline.setAttribute("class", "baseline");
    baseline.setAttribute("x1", "0");
    baseline.setAttribute("x2", String(width));
    baseline.setAttribute("y1", String(height - 0.5));
    baseline.setAttribute("y2", String(height - 0.5));
    svg.append(title, baseline);
    const max = Math.max(1, ...points.map((p) => p.requests), ...points.map((p) => p.upstream));
    const step = width / (HISTORY_POINTS - 1);
    const offset = HISTORY_POINTS - points.length; // newest point at the right edge
    for (const series of ["requests", "upstream"]) {
      if (points.length === 0) break;
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("class", series);
      line.setAttribute(
        "points",
        points
          .map((p, i) => ((offset + i) * step).toFixed(1) + "," + (height - 1 - (p[series] / max) * (height - 2)).toFixed(1))
          .join(" ")
      );
      svg.append(line);
    }
    return svg;
  }

  function renderAlerts(alerts) {
    const list = $("alerts");
    if (alerts.length === 0) {
      list.replaceChildren(el("li", "empty", "No active alerts."));
      return;
    }
    list.replaceChildren(
      ...alerts.map((a) => {
        const li = el("li", "alert");
        li.dataset.rule = String(a.rule);
        const head = el("p", "alert-head");
        head.append(el("strong", null, String(a.rule)), el("span", "alert-endpoint", String(a.endpoint || "")), timeElement(a.since));
        li.append(head, el("p", "alert-message", String(a.message || "")));
        return li;
      })
    );
  }

  // Toggles are kept across renders so focus and pending state survive.
  function renderSwitches(switches) {
    const list = $("switches");
    const seen = new Set();
    for (const s of switches) {
      const name = String(s.name);
      seen.add(name);
      let input = list.querySelector('input[data-switch="' + CSS.escape(name) + '"]');
      if (!input) {
        const li = el("li");
        const label = el("label", "switch");
        input = el("input");
        input.type = "checkbox";
        input.setAttribute("role", "switch");
        input.dataset.switch = name;
        input.addEventListener("change", () => flipSwitch(input));
        label.append(input, el("span", "switch-name", name));
        li.append(label);
        list.append(li);
      }
      if (!input.dataset.pending) input.checked = Boolean(s.enabled);
    }
    for (const input of list.querySelectorAll("input[data-switch]")) {
      if (!seen.has(input.dataset.switch)) input.closest("li").remove();
    }
  }

  async function flipSwitch(input) {
    const name = input.dataset.switch;
    const enabled = input.checked;
    const message = $("switch-message");
    input.dataset.pending = "1";
    input.disabled = true;
    message.className = "message";
    try {
      const response = await fetch("/_herdsman/switches/" + encodeURIComponent(name), {
        method: "POST",
        headers: adminHeaders({ "Content-Type": "application/json" }),
        body: JSON.stringify({ enabled }),
      });
      if (response.ok) {
        message.textContent = name + " switched " + (enabled ? "on" : "off") + ".";
      } else {
        input.checked = !enabled;
        message.className = "message error";
        message.textContent =
          response.status === 403
            ? "Could not switch " + name + ": admin token required (open the page as /#token=<token>)."
            : "Could not switch " + name + ": the server answered " + response.status + ".";
      }
    } catch (_) {
      input.checked = !enabled;
      message.className = "message error";
      message.textContent = "Could not switch " + name + ": the server is unreachable.";
    } finally {
      delete input.dataset.pending;
      input.disabled = false;
      requestRefresh();
    }
  }

  // Any tab may write; the leader is asked to refresh so every tab sees it.
  function requestRefresh() {
    if (exposed.role === "leader") leader.refresh();
    else post({ type: "refresh" });
  }

  $("card-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("card-name");
    const message = $("card-message");
    const card = input.value.trim();
    if (!card) return;
    message.className = "message";
    try {
      const response = await fetch("/api/boards/" + BOARD + "/cards", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ card, action: "added" }),
      });
      if (!response.ok) throw new Error("the server answered " + response.status);
      input.value = "";
      message.textContent = "Added “" + card + "”.";
    } catch (error) {
      message.className = "message error";
      message.textContent = "Could not add the card: " + (error.message || "the server is unreachable") + ".";
    }
    requestRefresh();
  });

  // ----------------------------------------------------------- the leader

  // Everything the leader does to the network, started and stopped as a unit
  // so that a tab which loses a (heartbeat) election goes quiet at once.
  const leader = (function () {
    let running = false;
    let sources = {}; // stream -> EventSource
    let opened = {}; // stream -> bool
    let graceTimer = 0;
    let retryTimer = 0;
    let statsTimer = 0;
    let pollTimers = {};
    const etags = {};
    let pollMs = DEFAULT_POLL_MS;

    function publishStream(stream, version, data) {
      if (applyStream(stream, version, data)) post({ type: "update", stream, version, data });
    }

    // -- SSE

    function openSse() {
      closeSse();
      for (const [stream, urls] of Object.entries(STREAMS)) {
        const source = new EventSource(urls.sse);
        sources[stream] = source;
        opened[stream] = false;
        source.onopen = () => {
          opened[stream] = true;
          if (Object.values(opened).every(Boolean)) sseUp();
        };
        source.onmessage = (event) => {
          let data;
          try {
            data = JSON.parse(event.data);
          } catch (_) {
            return;
          }
          publishStream(stream, event.lastEventId, data);
        };
        source.onerror = () => {
          opened[stream] = false;
          // CLOSED means the browser gave up (a 503, a wrong content type):
          // no point waiting. CONNECTING gets a few seconds to come back.
          if (source.readyState === EventSource.CLOSED) sseDown();
          else if (!graceTimer) graceTimer = setTimeout(sseDown, SSE_GRACE_MS);
        };
      }
    }

    function closeSse() {
      for (const source of Object.values(sources)) source.close();
      sources = {};
      opened = {};
      clearTimeout(graceTimer);
      graceTimer = 0;
    }

    function sseUp() {
      clearTimeout(graceTimer);
      graceTimer = 0;
      clearTimeout(retryTimer);
      retryTimer = 0;
      stopPolling();
      setTransport("sse");
    }

    function sseDown() {
      if (!running) return;
      closeSse();
      if (exposed.transport !== "polling") {
        setTransport("polling");
        startPolling();
      }
      clearTimeout(retryTimer);
      retryTimer = setTimeout(openSse, SSE_RETRY_MS);
    }

    // -- polling

    function startPolling() {
      for (const stream of Object.keys(STREAMS)) poll(stream);
    }

    function stopPolling() {
      for (const timer of Object.values(pollTimers)) clearTimeout(timer);
      pollTimers = {};
    }

    async function poll(stream) {
      clearTimeout(pollTimers[stream]);
      pollTimers[stream] = 0;
      let wait = pollMs;
      try {
        const headers = etags[stream] ? { "If-None-Match": etags[stream] } : {};
        // no-store keeps the HTTP cache out of the way, so a 304 reaches us.
        const response = await fetch(STREAMS[stream].poll, { headers, cache: "no-store" });
        // Back on SSE meanwhile: this answer may be older than what SSE sent.
        if (exposed.transport !== "polling") return;
        // EventSource does not expose the `retry:` field to scripts, so the
        // server's interval can only reach a polling page as a header.
        const interval = Number(response.headers.get("X-Poll-Interval"));
        if (interval > 0) wait = pollMs = interval;
        if (response.status === 200) {
          const etag = response.headers.get("ETag");
          const data = await response.json();
          if (etag) etags[stream] = etag;
          publishStream(stream, versionOf(etag), data);
        } else if (response.status !== 304) {
          const after = Number(response.headers.get("Retry-After"));
          if (after > 0) wait = Math.max(wait, after * 1000);
        }
      } catch (_) {
        // Unreachable server: try again on the next tick.
      }
      // A stream switched back to SSE meanwhile must not start polling again.
      if (running && exposed.transport === "polling" && pollTimers[stream] === 0) {
        pollTimers[stream] = setTimeout(() => poll(stream), wait);
      }
    }

    function versionOf(etag) {
      return etag ? etag.replace(/^W\//, "").replace(/"/g, "") : String(Date.now());
    }

    // -- stats

    async function pollStats() {
      clearTimeout(statsTimer);
      try {
        const response = await fetch(STATS_URL, { cache: "no-store", headers: adminHeaders() });
        if (!response.ok) throw new Error(String(response.status));
        const stats = await response.json();
        applyStats(stats, true);
        post({ type: "stats", stats, history: state.history });
      } catch (_) {
        // The next tick tries again; the panel keeps the last good numbers.
      }
      if (running) statsTimer = setTimeout(pollStats, STATS_EVERY_MS);
    }

    return {
      start() {
        if (running) return;
        running = true;
        setRole("leader");
        setTransport("connecting");
        openSse();
        pollStats();
      },
      stop() {
        running = false;
        closeSse();
        stopPolling();
        clearTimeout(retryTimer);
        clearTimeout(statsTimer);
        setRole("follower");
      },
      refresh() {
        if (!running) return;
        pollStats();
        if (exposed.transport === "polling") startPolling();
      },
    };
  })();

  // ------------------------------------------------------------- messages

  function snapshot() {
    return { type: "state", streams: state.streams, stats: state.stats, history: state.history, transport: exposed.transport };
  }

  function onMessage(message) {
    switch (message.type) {
      case "hello":
        if (exposed.role === "leader") post(snapshot());
        break;
      case "state":
        if (exposed.role === "leader") break;
        for (const [stream, value] of Object.entries(message.streams || {})) {
          if (value) applyStream(stream, value.version, value.data);
        }
        if (message.history) state.history = message.history;
        if (message.stats) applyStats(message.stats, false);
        if (message.transport) setTransport(message.transport);
        break;
      case "update":
        if (exposed.role !== "leader") applyStream(message.stream, message.version, message.data);
        break;
      case "stats":
        if (exposed.role === "leader") break;
        state.history = message.history || state.history;
        applyStats(message.stats, false);
        break;
      case "transport":
        if (exposed.role !== "leader") setTransport(message.transport);
        break;
      case "refresh":
        if (exposed.role === "leader") leader.refresh();
        break;
      case "bye":
        if (exposed.role !== "leader") setTransport("connecting");
        break;
    }
  }

  // ------------------------------------------------------------- election

  // Web Locks: the lock is held for the life of the tab; when the leader tab
  // closes the browser hands it to the next waiting tab straight away.
  function electWithLocks() {
    exposed.election = "locks";
    navigator.locks.request(LOCK_NAME, () => {
      leader.start();
      return new Promise(() => {}); // never released while the tab lives
    });
  }

  // Fallback: the leader sends a heartbeat every second and answers every
  // claim at once; a follower that hears no leader for three seconds claims
  // the role and takes it unless a leader answers or a lower id claims too.
  // Two leaders (a healed split) keep the lower id.
  function electWithHeartbeat() {
    exposed.election = "heartbeat";
    let lastHeard = Date.now();
    let claimTimer = 0;

    function backOff() {
      lastHeard = Date.now();
      clearTimeout(claimTimer);
      claimTimer = 0;
    }

    channel.addEventListener("message", ({ data }) => {
      const leading = exposed.role === "leader";
      if (data.type === "heartbeat") {
        if (!leading) backOff();
        else if (data.id < tabId) {
          leader.stop();
          backOff();
        }
      } else if (data.type === "claim") {
        if (leading) post({ type: "heartbeat", id: tabId });
        else if (data.id < tabId) backOff();
      } else if (data.type === "bye") {
        lastHeard = 0;
      }
    });

    setInterval(() => {
      if (exposed.role === "leader") {
        post({ type: "heartbeat", id: tabId });
      } else if (!claimTimer && Date.now() - lastHeard > LEADER_TIMEOUT_MS) {
        post({ type: "claim", id: tabId });
        claimTimer = setTimeout(() => {
          claimTimer = 0;
          leader.start();
          post({ type: "heartbeat", id: tabId });
        }, CLAIM_WAIT_MS);
      }
    }, HEARTBEAT_MS);
  }

  setRole("follower");
  renderAlerts([]);
  if (channel) {
    channel.addEventListener("message", ({ data }) => onMessage(data));
    window.addEventListener("pagehide", () => {
      if (exposed.role === "leader") post({ type: "bye", id: tabId });
    });
    post({ type: "hello" });
  }

  // ?election=heartbeat forces the fallback, to test it in a browser that
  // has Web Locks.
  const forced = new URLSearchParams(location.search).get("election");
  if (!channel) {
    exposed.election = "alone"; // no way to share: every tab is its own leader
    leader.start();
  } else if (navigator.locks && forced !== "heartbeat") {
    electWithLocks();
  } else {
    electWithHeartbeat();
  }
})();
