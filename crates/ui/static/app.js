// gabbro UI: the little JavaScript the pages use. Everything works without
// it except live logs; text from the server is inserted with textContent,
// never as HTML.
(function () {
  "use strict";
  var LEVELS = { debug: 0, info: 1, warn: 2, error: 3, always: 3 };

  function applyLevel() {
    var sel = document.getElementById("log-level");
    if (!sel) return;
    var min = LEVELS[sel.value] || 0;
    document.querySelectorAll("#logs .log").forEach(function (el) {
      var lvl = LEVELS[el.getAttribute("data-level")];
      el.hidden = (lvl === undefined ? 1 : lvl) < min;
    });
  }

  function pad(n, w) { n = String(n); while (n.length < w) n = "0" + n; return n; }
  function fmt(us) {
    var d = new Date(Math.floor(us / 1000));
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1, 2) + "-" + pad(d.getUTCDate(), 2) + " " +
      pad(d.getUTCHours(), 2) + ":" + pad(d.getUTCMinutes(), 2) + ":" + pad(d.getUTCSeconds(), 2);
  }

  function span(cls, text) {
    var s = document.createElement("span");
    s.className = cls;
    s.textContent = text;
    return s;
  }

  function streamLogs() {
    var box = document.getElementById("logs");
    if (!box || !window.EventSource) return;
    if (box.getAttribute("data-final") === "true" && !box.hasAttribute("data-force")) {
      // Final runs have every line in the page already, unless it was capped.
    }
    var url = box.getAttribute("data-stream");
    var ts = box.getAttribute("data-after-ts"), id = box.getAttribute("data-after-id");
    if (ts && id) url += "?after_ts=" + encodeURIComponent(ts) + "&after_id=" + encodeURIComponent(id);
    var wasFinal = box.getAttribute("data-final") === "true";
    var es = new EventSource(url);
    es.addEventListener("log", function (ev) {
      var l;
      try { l = JSON.parse(ev.data); } catch (e) { return; }
      var row = document.createElement("div");
      row.className = "log";
      row.setAttribute("data-level", l.level);
      row.appendChild(span("ts", fmt(l.timestamp)));
      row.appendChild(document.createTextNode(" "));
      row.appendChild(span("src", l.source));
      row.appendChild(document.createTextNode(" "));
      row.appendChild(span("lvl", l.level));
      row.appendChild(document.createTextNode(" "));
      row.appendChild(span("msg", l.message));
      box.appendChild(row);
      box.setAttribute("data-after-ts", l.timestamp);
      box.setAttribute("data-after-id", l.id);
      applyLevel();
      box.scrollTop = box.scrollHeight;
    });
    es.addEventListener("state", function (ev) {
      var badge = document.getElementById("run-state");
      if (badge && badge.textContent !== ev.data) {
        badge.textContent = ev.data;
        badge.className = "badge " + ev.data;
      }
    });
    es.addEventListener("end", function () {
      es.close();
      // Steps, outputs and the retry buttons are rendered by the server:
      // reload once when a run we watched live has finished.
      if (!wasFinal) window.location.reload();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var sel = document.getElementById("log-level");
    if (sel) { sel.addEventListener("change", applyLevel); applyLevel(); }
    streamLogs();
    var all = document.getElementById("select-all");
    if (all) all.addEventListener("change", function () {
      document.querySelectorAll(".wo-select").forEach(function (c) { c.checked = all.checked; });
    });
    document.querySelectorAll("form[data-confirm]").forEach(function (f) {
      f.addEventListener("submit", function (ev) {
        if (!window.confirm(f.getAttribute("data-confirm"))) ev.preventDefault();
      });
    });
  });
})();
