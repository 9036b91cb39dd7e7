// herdsman dashboard: the admin page's script, and the engine of any page
// that shows live values over herdsman's SSE and polling routes.
//
// The admin page (<prefix>/, by default /_herdsman/) shows the stats, the
// alerts (firing, and recently resolved with the value that resolved them)
// and the switches, grouped by class. An application's page adds its own
// streams: a script of its own, run before this one, sets
// `window.herdsmanStreams` (see README.md beside this file).
//
// The page practises what herdsman preaches: however many tabs are open, the
// browser holds one SSE connection per stream and polls the stats once. One
// tab is elected leader (Web Locks, or a BroadcastChannel heartbeat where
// Web Locks is missing); it alone talks to the server and rebroadcasts every
// update on a BroadcastChannel. The other tabs are followers and render what
// the leader sends.
//
// The leader prefers SSE. If a stream errors and does not recover within a
// few seconds (or the server answers 503 because SSE is switched off), it
// polls the GET endpoints with If-None-Match instead, and tries SSE again
// every 15 s, switching back once every stream opens.
//
// Trouble shows: a value whose upstream fails stays on the page, marked
// stale with its age (an `upstream-error` event, an `X-Herdsman-Stale`
// answer, a 503); the transport badge turns amber while polling or stale;
// a 401 or 403 from the stats says that the admin token is missing and
// where to find it.
//
// Server data is only ever rendered through textContent, and there are no
// inline handlers, so the page runs under `Content-Security-Policy:
// default-src 'self'`.
(function () {
  "use strict";

  // Where the admin routes are: this script is served at
  // <prefix>/assets/dashboard.js, whatever the prefix.
  const ADMIN = (function () {
    const src = document.currentScript && document.currentScript.src;
    const path = src ? new URL(src, location.href).pathname : "/_herdsman/assets/dashboard.js";
    return path.replace(/\/assets\/dashboard\.js$/, "");
  })();
  const STATS_URL = ADMIN + "/stats";

  // The streams a page shows, set by the page's own script before this one
  // runs (the admin page has none): name -> { sse, poll, panel, render }.
  // `render(data)` draws a value (null: none yet); `panel` is the id of
  // the element that gets the stale badge.
  const STREAMS = window.herdsmanStreams || {};

  // Admin routes need a bearer token in production and docker. Open the
  // page as /#token=<token> once: the token moves to this browser's local
  // storage (every tab of the app, the leader included, needs it) and out
  // of the address bar.
  const TOKEN_KEY = "herdsman-admin-token";
  function takeTokenFromFragment() {
    const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (!match) return false;
    try {
      localStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    } catch (_) {
      // Storage may be off; the token then lasts for this page only.
      window.__herdsmanToken = decodeURIComponent(match[1]);
    }
    history.replaceState(null, "", location.pathname + location.search);
    return true;
  }
  takeTokenFromFragment();
  // A token URL opened in a tab already on the page changes only the
  // fragment: take it, and ask for the stats again at once.
  window.addEventListener("hashchange", () => {
    if (takeTokenFromFragment()) requestRefresh();
  });
  function hasToken() {
    try {
      if (localStorage.getItem(TOKEN_KEY)) return true;
    } catch (_) {}
    return Boolean(window.__herdsmanToken);
  }
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
  // One election per page (the admin page and an app's page on the same
  // origin each have their own leader).
  const LOCK_NAME = "herdsman-sse-leader:" + location.pathname;

  // What the browser tests read. Mutated in place, never replaced.
  const exposed = {
    role: "follower",
    transport: "connecting",
    updates: 0, // renders of the page's streams
    statsUpdates: 0,
    election: "none",
    stale: {}, // stream -> true while its value is stale
    statsError: null, // "unauthorized", "unreachable", a status, or null
  };
  window.herdsmanDashboard = exposed;

  const $ = (id) => document.getElementById(id);
  const channel = "BroadcastChannel" in window ? new BroadcastChannel("herdsman:" + location.pathname) : null;
  const tabId = Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 10);

  // Latest state, in every tab; the leader hands it to new followers.
  const state = {
    streams: {}, // stream -> { version, data, at (ms, when it arrived), stale }
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
    if (el) {
      el.textContent = transport;
      el.dataset.state = transport;
    }
    if (exposed.role === "leader") post({ type: "transport", transport });
  }

  // The transport badge is amber while polling or while any value is stale.
  function showStaleness() {
    const el = $("transport");
    if (el) el.dataset.stale = String(Object.values(exposed.stale).some(Boolean));
  }

  // ------------------------------------------------------------- rendering

  // A new value of `stream`: drawn, and no longer stale unless `stale`
  // (a polled answer marked X-Herdsman-Stale). Returns whether it was news.
  function applyStream(stream, version, data, stale, at) {
    const config = STREAMS[stream];
    if (!config) return false;
    const current = state.streams[stream];
    const same = current && (current.version === version || JSON.stringify(current.data) === JSON.stringify(data));
    if (same) {
      // The same value again: its age runs on from when it first came.
      setStale(stream, stale ? current.stale || { reason: "the upstream is failing" } : null);
      return false;
    }
    state.streams[stream] = { version, data, at: at || Date.now(), stale: null };
    config.render(data);
    exposed.updates += 1;
    setStale(stream, stale ? { reason: "the upstream is failing" } : null);
    return true;
  }

  // Marks `stream` stale (`stale`: { reason, retryAfter }) or fresh (null).
  // The last good value stays on the page, with a badge and its age; with
  // no value yet the page says what is wrong instead of drawing an empty
  // one.
  function setStale(stream, stale) {
    const config = STREAMS[stream];
    if (!config) return;
    const current = state.streams[stream] || (state.streams[stream] = { version: null, data: null, at: 0, stale: null });
    current.stale = stale;
    exposed.stale[stream] = Boolean(stale);
    showStaleness();
    drawStale(stream);
  }

  function drawStale(stream) {
    const current = state.streams[stream];
    const panel = $(STREAMS[stream].panel);
    if (!panel || !current) return;
    let badge = panel.querySelector('[data-field="stale"]');
    let why = panel.querySelector('[data-field="upstream-error"]');
    if (!current.stale) {
      panel.dataset.stale = "false";
      if (badge) badge.remove();
      if (why) why.remove();
      return;
    }
    panel.dataset.stale = "true";
    if (!badge) {
      badge = el("span", "badge stale-badge");
      badge.dataset.field = "stale";
      (panel.querySelector("h2") || panel).append(" ", badge);
    }
    if (!why) {
      why = el("p", "stream-error");
      why.dataset.field = "upstream-error";
      why.setAttribute("role", "status");
      const heading = panel.querySelector("h2");
      if (heading) heading.after(why);
      else panel.prepend(why);
    }
    const age = current.at ? Math.max(0, Math.round((Date.now() - current.at) / 1000)) : null;
    badge.textContent = age === null ? "no data" : "stale · " + formatAge(age);
    let text = current.at ? "Showing the last good value: " : "No value yet: ";
    text += current.stale.reason;
    if (current.stale.retryAfter > 0) text += "; next try in " + current.stale.retryAfter + " s";
    why.textContent = text + ".";
  }

  function formatAge(seconds) {
    if (seconds < 60) return seconds + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min " + (seconds % 60) + " s";
    return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
  }

  // Ages count on between updates.
  setInterval(() => {
    for (const stream of Object.keys(state.streams)) {
      if (state.streams[stream].stale) drawStale(stream);
    }
  }, 1000);

  // What an `upstream-error` event or a failed poll says.
  function failureReason(status, error) {
    if (status) return "the upstream answered " + status;
    if (error) return "the upstream failed (" + error + ")";
    return "the upstream is failing";
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
    if ($("environment")) $("environment").textContent = String(stats.environment || "unknown");
    if ($("stats")) renderEndpoints(stats.endpoints || {});
    if ($("alerts")) {
      renderAlerts(
        Array.isArray(stats.alerts) ? stats.alerts : [],
        Array.isArray(stats.resolved_alerts) ? stats.resolved_alerts : []
      );
    }
    if ($("switches")) renderSwitches(Array.isArray(stats.switches) ? stats.switches : []);
  }

  // Why the stats did not come: "unauthorized" (401 or 403: the admin
  // token is missing or wrong), "unreachable", another status, or null.
  function setStatsError(error) {
    exposed.statsError = error;
    const box = $("stats-message");
    if (!box) return;
    if (!error) {
      box.hidden = true;
      box.replaceChildren();
      return;
    }
    box.hidden = false;
    box.dataset.error = error;
    if (error === "unauthorized") {
      const fix = el("p", null, "To fix it, open the dashboard URL the server printed on its standard error when it started: ");
      fix.append(el("code", null, location.origin + ADMIN + "/#token=…"), ". With a token configured (HERDSMAN__ADMIN__TOKEN), open ");
      fix.append(el("code", null, ADMIN + "/#token=<token>"), " once; the browser keeps it for every tab.");
      box.replaceChildren(
        el("strong", null, hasToken() ? "The admin token was refused." : "The stats need the admin token."),
        el("p", null, "The server answered " + (state.statsStatus || 403) + " to " + STATS_URL + "."),
        fix
      );
    } else if (error === "unreachable") {
      box.replaceChildren(el("strong", null, "The server is unreachable."), el("p", null, "The numbers below are the last ones received."));
    } else {
      box.replaceChildren(el("strong", null, "The stats answered " + error + "."), el("p", null, "The numbers below are the last ones received."));
    }
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
    addFact(facts, "errors", "Errors / rejected", (e.errors || 0) + " / " + (e.rejected || 0));
    const rest = { forwarded: e.forwarded || 0, inFlight: e.in_flight || 0 };
    card.append(head, saved, breakdown(requests, savedBy, rest), facts);
    return card;
  }

  // The saving's parts as one bar and one sum: cache hits + coalesced
  // calls + shared-poll answers = saved; with forwarded and in flight,
  // the client requests.
  function breakdown(requests, savedBy, rest) {
    const box = el("div", "breakdown");
    const bar = el("div", "breakdown-bar");
    bar.setAttribute("aria-hidden", "true");
    const segments = [
      ["cache", savedBy.cache],
      ["coalesced", savedBy.coalesced],
      ["loop", savedBy.loop],
      ["forwarded", rest.forwarded + rest.inFlight],
    ];
    for (const [kind, n] of segments) {
      if (requests > 0 && n > 0) {
        const segment = el("span", "segment segment-" + kind);
        segment.style.flexGrow = String(n);
        bar.append(segment);
      }
    }
    const sum = el("p", "breakdown-sum");
    const part = (name, kind, label, n) => {
      const span = el("span", "part part-" + kind);
      span.append(field("span", name, String(n), "part-value"), " " + label);
      return span;
    };
    sum.append(
      part("saved-cache-hits", "cache", "cache hits", savedBy.cache), " + ",
      part("saved-coalesced", "coalesced", "coalesced", savedBy.coalesced), " + ",
      part("saved-poll-loop", "loop", "shared poll", savedBy.loop), " + ",
      part("forwarded", "forwarded", "forwarded", rest.forwarded)
    );
    if (rest.inFlight > 0) sum.append(" + ", part("in-flight", "forwarded", "in flight", rest.inFlight));
    sum.append(" = ", field("span", "parts-total", String(savedBy.cache + savedBy.coalesced + savedBy.loop + rest.forwarded + rest.inFlight), "part-value"), " requests");
    box.append(bar, sum);
    return box;
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

  function renderAlerts(alerts, resolved) {
    const list = $("alerts");
    if (alerts.length === 0 && resolved.length === 0) {
      list.replaceChildren(el("li", "empty", "No active alerts."));
      return;
    }
    const item = (a, done) => {
      const li = el("li", done ? "alert resolved" : "alert");
      li.dataset.rule = String(a.rule);
      li.dataset.state = done ? "resolved" : "firing";
      const head = el("p", "alert-head");
      head.append(el("strong", null, String(a.rule)), el("span", "alert-endpoint", String(a.endpoint || "")), timeElement(a.since));
      li.append(head, el("p", "alert-message", String(a.message || "")));
      const value = Number.isFinite(a.value) ? formatValue(a.value) : "–";
      const threshold = Number.isFinite(a.threshold) ? formatValue(a.threshold) : "–";
      const detail = el("p", "alert-value");
      detail.append(
        done ? "Resolved at " : "Value ",
        field("span", "alert-value", value),
        " (threshold " + threshold + ")"
      );
      if (done && a.resolved_at) detail.append(", ", timeElement(a.resolved_at));
      li.append(detail);
      return li;
    };
    const items = alerts.map((a) => item(a, false)).concat(resolved.map((a) => item(a, true)));
    if (alerts.length === 0) items.unshift(el("li", "empty", "No active alerts."));
    list.replaceChildren(...items);
  }

  function formatValue(v) {
    return Number.isInteger(v) ? String(v) : v.toFixed(v < 1 ? 3 : 1);
  }

  // Switches grouped by class in one table: a row per class, a column per
  // layer; the stack and the integration's own toggles (`sse`) on a row of
  // their own. Toggles are kept across renders so focus and pending state
  // survive.
  const LAYERS = ["cache", "dedup", "breaker", "limit", "registry", "stats"];

  function renderSwitches(switches) {
    const root = $("switches");
    let table = root.querySelector("table");
    const classes = new Set();
    const general = [];
    for (const s of switches) {
      const name = String(s.name);
      const dot = name.indexOf(".");
      if (dot > 0 && LAYERS.includes(name.slice(0, dot))) classes.add(name.slice(dot + 1));
      else general.push(name);
    }
    const layout = JSON.stringify([[...classes].sort(), general]);
    if (!table || table.dataset.layout !== layout) {
      table = el("table", "switch-table");
      table.dataset.layout = layout;
      const head = el("tr");
      head.append(el("th", null, "class"), ...LAYERS.map((l) => el("th", null, l)));
      const thead = el("thead");
      thead.append(head);
      const body = el("tbody");
      if (general.length > 0) {
        const row = el("tr", "general");
        const cell = el("td");
        cell.colSpan = LAYERS.length + 1;
        for (const name of general) cell.append(toggle(name, name));
        row.append(cell);
        body.append(row);
      }
      for (const cls of [...classes].sort()) {
        const row = el("tr");
        row.dataset.class = cls;
        row.append(el("th", "class-name", cls));
        for (const layer of LAYERS) {
          const cell = el("td");
          if (switches.some((s) => s.name === layer + "." + cls)) cell.append(toggle(layer + "." + cls, null));
          row.append(cell);
        }
        body.append(row);
      }
      table.append(thead, body);
      root.replaceChildren(table);
    }
    for (const s of switches) {
      const input = root.querySelector('input[data-switch="' + CSS.escape(String(s.name)) + '"]');
      if (input && !input.dataset.pending) input.checked = Boolean(s.enabled);
    }
  }

  function toggle(name, label) {
    const wrap = el("label", "switch");
    const input = el("input");
    input.type = "checkbox";
    input.setAttribute("role", "switch");
    input.setAttribute("aria-label", name);
    input.title = name;
    input.dataset.switch = name;
    input.addEventListener("change", () => flipSwitch(input));
    wrap.append(input);
    if (label) wrap.append(el("span", "switch-name", label));
    return wrap;
  }

  async function flipSwitch(input) {
    const name = input.dataset.switch;
    const enabled = input.checked;
    const message = $("switch-message");
    input.dataset.pending = "1";
    input.disabled = true;
    message.className = "message";
    try {
      const response = await fetch(ADMIN + "/switches/" + encodeURIComponent(name), {
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
          response.status === 401 || response.status === 403
            ? "Could not switch " + name + ": admin token required (open the page as " + ADMIN + "/#token=<token>)."
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

  // A page's own script (a write of its own) asks for a refresh here.
  exposed.refresh = requestRefresh;

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

    function publishStream(stream, version, data, stale) {
      const at = Date.now();
      applyStream(stream, version, data, stale, at);
      post({ type: "update", stream, version, data, stale, at });
    }

    function publishStale(stream, stale) {
      setStale(stream, stale);
      post({ type: "stale", stream, stale });
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
          publishStream(stream, event.lastEventId, data, false);
        };
        // A failed poll: the stream goes on, the value shown is stale.
        source.addEventListener("upstream-error", (event) => {
          let failure = {};
          try {
            failure = JSON.parse(event.data) || {};
          } catch (_) {}
          publishStale(stream, { reason: failureReason(failure.status, failure.error), retryAfter: Number(failure.retry_after) || 0 });
        });
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
          const stale = response.headers.get("X-Herdsman-Stale") === "1";
          const data = await response.json();
          if (etag) etags[stream] = etag;
          publishStream(stream, versionOf(etag), data, stale);
        } else if (response.status === 304) {
          if (state.streams[stream] && state.streams[stream].stale) publishStale(stream, null);
        } else {
          const after = Number(response.headers.get("Retry-After"));
          if (after > 0) wait = Math.max(wait, after * 1000);
          publishStale(stream, { reason: failureReason(response.status), retryAfter: after > 0 ? after : 0 });
        }
      } catch (_) {
        // Unreachable server: try again on the next tick.
        if (exposed.transport === "polling") publishStale(stream, { reason: "the server is unreachable", retryAfter: 0 });
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
      let error = null;
      try {
        const response = await fetch(STATS_URL, { cache: "no-store", headers: adminHeaders() });
        if (response.status === 401 || response.status === 403) {
          state.statsStatus = response.status;
          error = "unauthorized";
        } else if (!response.ok) {
          error = String(response.status);
        } else {
          const stats = await response.json();
          applyStats(stats, true);
          post({ type: "stats", stats, history: state.history });
        }
      } catch (_) {
        // The next tick tries again; the panel keeps the last good numbers.
        error = "unreachable";
      }
      setStatsError(error);
      post({ type: "stats-error", error, status: state.statsStatus });
      if (running) statsTimer = setTimeout(pollStats, STATS_EVERY_MS);
    }

    return {
      start() {
        if (running) return;
        running = true;
        setRole("leader");
        if (Object.keys(STREAMS).length > 0) {
          setTransport("connecting");
          openSse();
        } else {
          setTransport("none");
        }
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
    return {
      type: "state",
      streams: state.streams,
      stats: state.stats,
      history: state.history,
      transport: exposed.transport,
      statsError: exposed.statsError,
      statsStatus: state.statsStatus,
    };
  }

  function onMessage(message) {
    switch (message.type) {
      case "hello":
        if (exposed.role === "leader") post(snapshot());
        break;
      case "state":
        if (exposed.role === "leader") break;
        for (const [stream, value] of Object.entries(message.streams || {})) {
          if (!value) continue;
          if (value.version !== null) applyStream(stream, value.version, value.data, false, value.at);
          setStale(stream, value.stale);
        }
        if (message.history) state.history = message.history;
        if (message.stats) applyStats(message.stats, false);
        state.statsStatus = message.statsStatus;
        setStatsError(message.statsError || null);
        if (message.transport) setTransport(message.transport);
        break;
      case "update":
        if (exposed.role !== "leader") applyStream(message.stream, message.version, message.data, message.stale, message.at);
        break;
      case "stale":
        if (exposed.role !== "leader") setStale(message.stream, message.stale);
        break;
      case "stats-error":
        if (exposed.role === "leader") break;
        state.statsStatus = message.status;
        setStatsError(message.error);
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
  if ($("alerts")) renderAlerts([], []);
  // Nothing yet: each stream's panel says so rather than draw an empty
  // value ("0 online") as if it were news.
  for (const [stream, config] of Object.entries(STREAMS)) {
    config.render(null);
    state.streams[stream] = { version: null, data: null, at: 0, stale: null };
  }
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
