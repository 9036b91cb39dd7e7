// The demo's page: who is online and the board's card events, live.
//
// herdsman's dashboard engine (/_herdsman/assets/dashboard.js, loaded after
// this file) does the rest: one leader tab holds the SSE streams (polling
// when they fail), marks values stale during an outage, and draws the stats.
// This file says which streams the page shows and how to draw them.
(function () {
  "use strict";

  const BOARD = "demo";
  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // `data` is null until the first value: the count shows a dash, never a
  // "0 online" that nobody measured.
  function renderActiveUsers(data) {
    if (data === null) {
      $("active-users-count").textContent = "–";
      $("active-users-list").replaceChildren();
      return;
    }
    const users = Array.isArray(data && data.users) ? data.users : [];
    const count = data && Number.isFinite(data.count) ? data.count : users.length;
    $("active-users-count").textContent = String(count);
    $("active-users-list").replaceChildren(...users.map((name) => el("li", "chip", String(name))));
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

  window.herdsmanStreams = {
    "active-users": {
      sse: "/sse/active-users",
      poll: "/api/active-users",
      panel: "users-panel",
      render: renderActiveUsers,
    },
    "board-events": {
      sse: "/sse/boards/" + BOARD + "/events",
      poll: "/api/boards/" + BOARD + "/events",
      panel: "board-panel",
      render: renderBoardEvents,
    },
  };

  document.addEventListener("DOMContentLoaded", () => {
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
      // Every tab sees the card: the leader refreshes.
      const dashboard = window.herdsmanDashboard;
      if (dashboard && dashboard.refresh) dashboard.refresh();
    });
  });
})();
