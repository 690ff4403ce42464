/* Live page updates over the dashboard websocket (dashboard/consumers.py).
 * The server sends the page's fragments rendered by the same templates as the first render:
 *   {type: "update", regions: {id: innerHTML}, items: {id: outerHTML}, removed: [id], order: [id]}
 *   {type: "ping"}  (every few seconds when nothing changed: proves the view is live)
 * The socket reconnects with exponential backoff; while it is down, or silent for too long,
 * a banner says since when the view is stale. */
(function () {
  "use strict";
  var url = document.body.dataset.liveUrl;
  var banner = document.getElementById("live-state");
  if (!url || !banner || !window.WebSocket) { return; }
  var STALE_AFTER_MS = 12000, MAX_BACKOFF_MS = 30000;
  var socket = null, backoff = 1000, lastMessage = 0, liveSince = 0, retryTimer = null;
  var state = window.evceLive = { updates: 0, applied: [], connected: false };

  function clock(ms) { return new Date(ms).toLocaleTimeString(); }
  function show(kind, text) { banner.dataset.state = kind; banner.textContent = text; }

  function apply(message) {
    var list = document.querySelector("[data-live-list]");
    Object.keys(message.regions || {}).forEach(function (id) {
      var el = document.getElementById(id);
      if (el) { el.innerHTML = message.regions[id]; }
    });
    Object.keys(message.items || {}).forEach(function (id) {
      var el = document.getElementById(id);
      var holder = document.createElement("div");
      holder.innerHTML = message.items[id].trim();
      var fresh = holder.firstElementChild;
      if (!fresh) { return; }
      if (el) { el.replaceWith(fresh); }
      else if (list) {
        var placeholder = list.querySelector(".empty");
        if (placeholder) { placeholder.remove(); }
        list.appendChild(fresh);
      }
    });
    (message.removed || []).forEach(function (id) {
      var el = document.getElementById(id);
      if (el) { el.remove(); }
    });
    if (message.order && list) {
      message.order.forEach(function (id) {
        var el = document.getElementById(id);
        if (el) { list.appendChild(el); }
      });
    }
    // Pages with more than fragments (the session chart) listen for the raw message.
    document.dispatchEvent(new CustomEvent("evce:update", { detail: message }));
    state.updates += 1;
    state.applied.push({ ids: Object.keys(message.regions || {}).concat(Object.keys(message.items || {})), at: Date.now() });
    if (state.applied.length > 200) { state.applied.shift(); }
  }

  function connect() {
    retryTimer = null;
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = state.socket = new WebSocket(scheme + location.host + url);
    socket.onopen = function () { backoff = 1000; };
    socket.onmessage = function (event) {
      lastMessage = Date.now();
      if (!state.connected) { state.connected = true; liveSince = lastMessage; }
      show("live", "Live · updated " + clock(lastMessage));
      var message = JSON.parse(event.data);
      if (message.type === "update") { apply(message); }
    };
    socket.onclose = function (event) {
      state.connected = false;
      if (event.code === 4403) { show("denied", "Live updates refused: sign in again or ask for a role that may see this page."); return; }
      var since = lastMessage || liveSince;
      show("stale", (since ? "Not live since " + clock(since) : "Not connected") + " · reconnecting in " + Math.round(backoff / 1000) + " s…");
      retryTimer = window.setTimeout(connect, backoff + Math.random() * 500);
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    };
  }

  // Forms inside fragments rendered by the websocket have no CSRF token (no request there):
  // they take the page's own token (base.html) when submitted.
  document.addEventListener("submit", function (event) {
    var form = event.target, meta = document.querySelector("meta[name=csrf-token]");
    if (!meta || form.method.toLowerCase() !== "post" || form.querySelector("[name=csrfmiddlewaretoken]")) { return; }
    var token = document.createElement("input");
    token.type = "hidden"; token.name = "csrfmiddlewaretoken"; token.value = meta.content;
    form.appendChild(token);
  }, true);

  window.setInterval(function () {
    if (state.connected && Date.now() - lastMessage > STALE_AFTER_MS) {
      show("stale", "Not live since " + clock(lastMessage) + " · waiting for the server…");
      if (socket) { socket.close(); }
    }
  }, 2000);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && retryTimer !== null) { window.clearTimeout(retryTimer); backoff = 1000; connect(); }
  });
  connect();
}());
