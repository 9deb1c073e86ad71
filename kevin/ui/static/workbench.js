// The workbench's only script: live refresh from the feed, selection helpers.
// Loaded from the workbench itself (no inline script: the Content-Security-Policy).
(function () {
  "use strict";

  // A mark that survives only as long as the page does: tests use it to prove that an
  // update arrived without a reload.
  window.kevinPageId = window.kevinPageId || String(Math.random()).slice(2);

  function liveStatus(text) {
    var el = document.getElementById("live-status");
    if (el) el.textContent = text;
  }

  // Values a person is typing survive a live refresh of the region around them.
  function keptValues(region) {
    var kept = {};
    region.querySelectorAll("textarea[id], input[id]:not([type=hidden])").forEach(function (el) {
      kept[el.id] = el.type === "checkbox" ? el.checked : el.value;
    });
    var selected = [];
    document.querySelectorAll("input[name=selected]:checked").forEach(function (el) {
      selected.push(el.value);
    });
    return {byId: kept, selected: selected};
  }

  function restore(kept) {
    Object.keys(kept.byId).forEach(function (id) {
      var el = document.getElementById(id);
      if (!el) return;
      if (el.type === "checkbox") el.checked = kept.byId[id]; else el.value = kept.byId[id];
    });
    document.querySelectorAll("input[name=selected]").forEach(function (el) {
      if (kept.selected.indexOf(el.value) >= 0) el.checked = true;
    });
  }

  function startFeed() {
    var body = document.body;
    var feedUrl = body.dataset.feed;
    var regionId = body.dataset.liveRegion;
    if (!feedUrl || !regionId || !window.EventSource) return;
    var names = JSON.parse(body.dataset.feedEvents || "[]");
    var onlyTrade = body.dataset.trade || null;  // a trade page: its own updates only
    var pending = null;
    var running = false;
    var again = false;

    var dropped = false;

    function refresh() {
      pending = null;
      if (running) { again = true; return; }
      var region = document.getElementById(regionId);
      if (!region) return;
      running = true;
      dropped = false;
      var kept = keptValues(region);
      htmx.ajax("GET", window.location.href,
                {target: "#" + regionId, swap: "outerHTML", headers: {"X-Kevin-Refresh": "1"}})
        .then(function () {
          if (dropped) return;
          restore(kept);
          document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
        })
        .finally(function () {
          running = false;
          if (again) { again = false; refresh(); }
        });
    }

    // A request's answer goes to the region it was sent for, and a refresh may replace
    // that region while a person's tab or filter request is on its way (or the other way
    // round). A person's answer then goes to the region now on the page; a refresh of a
    // region that has been replaced is stale — dropped, and run again for what is shown.
    // htmx announces the swap on the old region, detached by then: each region gets its
    // own listener as it comes onto the page.
    var watched = new WeakSet();
    function onRegionAnswer(event) {
      var target = event.detail.target;
      if (!target || target.isConnected) return;
      var headers = (event.detail.requestConfig || {}).headers || {};
      if (headers["X-Kevin-Refresh"]) {
        event.detail.shouldSwap = false;
        dropped = true;
        again = true;
      } else {
        event.detail.target = document.getElementById(regionId);
      }
    }
    function watchRegion() {
      var region = document.getElementById(regionId);
      if (!region || watched.has(region)) return;
      watched.add(region);
      region.addEventListener("htmx:beforeSwap", onRegionAnswer);
    }
    watchRegion();
    body.addEventListener("htmx:load", watchRegion);

    function onUpdate(event) {
      if (onlyTrade) {
        var update = JSON.parse(event.data);
        var p = update.proposal;  // a proposal's update concerns both of its trades
        // An overdue notice names its trade's participant apart from whose feed it is on.
        var owner = update.event === "overdue" ? update.trade_participant : update.participant;
        var refs = p ? [p.proposer + "/" + p.trade_id, p.counterparty + "/" + p.counterparty_trade_id]
                     : [owner + "/" + update.trade_id];
        if (refs.indexOf(onlyTrade) < 0) return;
      }
      // Updates come in bursts (a match writes two versions): one refresh per burst.
      if (!pending) pending = window.setTimeout(refresh, 150);
    }

    // A cut-off passing changes the page without any write: the region says in how many
    // seconds the next one among its trades passes, and is refreshed then.
    var cutoffTimer = null;
    function scheduleCutoff() {
      window.clearTimeout(cutoffTimer);
      var region = document.getElementById(regionId);
      var seconds = region ? Number(region.dataset.refreshIn || 0) : 0;
      if (seconds > 0) cutoffTimer = window.setTimeout(refresh, seconds * 1000);
    }
    scheduleCutoff();
    body.addEventListener("htmx:afterSettle", scheduleCutoff);

    var source = new EventSource(feedUrl);
    names.forEach(function (name) { source.addEventListener(name, onUpdate); });
    source.onmessage = onUpdate;  // an update kind this page does not know by name
    source.onopen = function () { liveStatus("Live"); body.dataset.live = "open"; };
    source.onerror = function () {
      liveStatus(source.readyState === EventSource.CLOSED ? "Offline: reload the page" : "Reconnecting…");
      body.dataset.live = "error";
    };
    window.addEventListener("pagehide", function () { source.close(); });
  }

  function keepTabInFilters(event) {
    var live = document.getElementById("live-region");
    var tab = document.querySelector("form.filters input[name=tab]");
    if (live && tab && live.dataset.tab) tab.value = live.dataset.tab;
  }

  document.addEventListener("change", function (event) {
    if (event.target && event.target.id === "select-all") {
      document.querySelectorAll("input[name=selected]").forEach(function (el) {
        el.checked = event.target.checked;
      });
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    startFeed();
    document.body.addEventListener("htmx:afterSettle", keepTabInFilters);
  });
})();
