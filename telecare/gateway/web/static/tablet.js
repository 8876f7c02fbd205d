/* The care-home NEWS2 page (docs/tablet.md). Vanilla JavaScript, no libraries.
 *
 * - Colours each field as it is entered with the RCP chart's bands (the table comes from
 *   the gateway's own scorer, telecare/rules/news2.py BANDS, in data-bands).
 * - A set is first written to an outbox in localStorage, with a new Idempotency-Key,
 *   then sent. A set the gateway did not answer (no network, 5xx, timeout) stays in the
 *   outbox and is sent again with the SAME key: on the 'online' event and on a backoff
 *   timer, also after the page is reloaded. The gateway stores a key once, so a retry
 *   is never a duplicate. Only an answer (2xx) or a refusal (4xx) empties the outbox.
 * - Teletriage requests go through the same outbox.
 */
(function () {
  "use strict";

  var OUTBOX = "telecare.tablet.outbox.v1";
  var MAX_BACKOFF_MS = 30000;
  var form = document.getElementById("news2-form");
  var banner = document.getElementById("outbox");
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = csrfMeta ? csrfMeta.getAttribute("content") : "";
  var attempts = 0;
  var timer = null;
  var flushing = false;
  var lastSetKey = null;

  function $(id) { return document.getElementById(id); }

  // -- outbox ------------------------------------------------------------------------------
  function load() {
    try { return JSON.parse(localStorage.getItem(OUTBOX) || "[]"); } catch (e) { return []; }
  }
  function save(items) { localStorage.setItem(OUTBOX, JSON.stringify(items)); }
  function remove(key) { save(load().filter(function (e) { return e.key !== key; })); }
  function newKey() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) {
      return (b < 16 ? "0" : "") + b.toString(16);
    }).join("");
  }

  function showOutbox(note, isError) {
    if (!banner) { return; }
    var items = load();
    if (!items.length && !note) { banner.hidden = true; return; }
    var text = note || "";
    if (items.length) {
      var what = items.length === 1 ? "1 set or request is" : items.length + " sets or requests are";
      text = what + " kept on this iPad and not yet delivered: retrying automatically." +
        (note ? " " + note : "");
    }
    banner.textContent = text;
    banner.className = "outbox" + (isError ? " error" : "");
    banner.hidden = false;
  }

  function retryLater(note) {
    attempts += 1;
    var wait = Math.min(MAX_BACKOFF_MS, 1000 * Math.pow(2, attempts));
    clearTimeout(timer);
    timer = setTimeout(flush, wait);
    showOutbox(note || ("Next try in " + Math.round(wait / 1000) + " s."), false);
  }

  function enqueue(entry) {
    var items = load();
    items.push(entry);
    save(items);
    attempts = 0;
    flush();
  }

  async function send(entry) {
    var controller = new AbortController();
    var stop = setTimeout(function () { controller.abort(); }, 20000);
    try {
      return await fetch(entry.url, {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          "Accept": "application/json",
          "X-CSRF-Token": csrf,
          "Idempotency-Key": entry.key
        },
        body: JSON.stringify(entry.body),
        signal: controller.signal
      });
    } finally {
      clearTimeout(stop);
    }
  }

  async function flush() {
    if (flushing) { return; }
    flushing = true;
    clearTimeout(timer);
    try {
      var items = load();
      for (var i = 0; i < items.length; i++) {
        var entry = items[i];
        var response;
        try {
          response = await send(entry);
        } catch (err) {
          pending(entry, "Kept on this iPad: no connection to the gateway. It is sent by itself when the Wi-Fi is back.");
          retryLater();
          return;
        }
        if (response.status === 401) {
          showOutbox("You are logged out: log in again and the kept sets are sent.", true);
          return;
        }
        if (response.status >= 500 || response.status === 429 || response.status === 408) {
          pending(entry, "Kept on this iPad: the gateway is busy. Retrying.");
          retryLater();
          return;
        }
        var data = null;
        try { data = await response.json(); } catch (e) { data = null; }
        remove(entry.key);
        if (response.ok) {
          delivered(entry, data);
        } else {
          refused(entry, response.status, data);
        }
      }
      attempts = 0;
      showOutbox();
    } finally {
      flushing = false;
    }
  }

  // -- the form ----------------------------------------------------------------------------
  var bands = form ? JSON.parse(form.getAttribute("data-bands")) : {};
  var NUMERIC = ["respiration_rate", "spo2", "systolic_bp", "pulse", "temperature"];

  function rounded(name, value) {
    var k = name === "temperature" ? 10 : 1;
    return Math.floor(value * k + 0.5 + 1e-9);
  }
  function lookup(key, index) {
    var table = bands[key];
    for (var i = 0; i < table.length; i++) {
      if (table[i][0] === null || index <= table[i][0]) { return table[i][1]; }
    }
    return null;
  }
  function values() {
    var out = {};
    NUMERIC.forEach(function (name) {
      var input = form.elements[name];
      if (input && input.value !== "" && !isNaN(Number(input.value))) { out[name] = Number(input.value); }
    });
    var o2 = form.querySelector('input[name="on_oxygen"]:checked');
    if (o2) { out.on_oxygen = o2.value === "true"; }
    var acvpu = form.querySelector('input[name="consciousness"]:checked');
    if (acvpu) { out.consciousness = acvpu.value; }
    return out;
  }
  function subScore(name, v) {
    if (v[name] === undefined) { return null; }
    if (name === "on_oxygen") { return v.on_oxygen ? 2 : 0; }
    if (name === "consciousness") { return v.consciousness === "A" ? 0 : 3; }
    var key = name;
    if (name === "spo2") {
      if (form.getAttribute("data-spo2-scale") === "2") {
        if (v.on_oxygen === undefined) { return null; }
        key = v.on_oxygen ? "spo2_scale2_oxygen" : "spo2_scale2_air";
      } else {
        key = "spo2_scale1";
      }
    }
    return lookup(key, rounded(name, v[name]));
  }
  function colour() {
    var v = values();
    var total = 0;
    var complete = true;
    form.querySelectorAll(".obs-row").forEach(function (row) {
      var name = row.getAttribute("data-param");
      var points = subScore(name, v);
      row.classList.remove("score-0", "score-1", "score-2", "score-3");
      var badge = row.querySelector(".points");
      if (points === null) { complete = false; badge.textContent = ""; return; }
      total += points;
      row.classList.add("score-" + points);
      badge.textContent = String(points);
    });
    return complete ? total : null;
  }
  function softSigns() {
    return Array.prototype.map.call(
      form.querySelectorAll('input[name="soft_signs"]:checked'), function (c) { return c.value; });
  }

  // -- showing answers ---------------------------------------------------------------------
  var BAND_TEXT = { "low": "Low risk", "low-medium": "Low-medium risk (a red score)",
    "medium": "Medium risk", "high": "High risk" };

  function pending(entry, note) {
    if (!form || entry.kind !== "set" || entry.resident !== form.getAttribute("data-resident")) {
      return;
    }
    var box = $("result");
    box.hidden = false;
    box.className = "result pending";
    var provisional = entry.provisional;
    $("result-total").textContent = provisional === null || provisional === undefined ? "–" : String(provisional);
    $("result-band").textContent = "Not confirmed yet";
    $("result-status").textContent = note;
    $("result-advice").textContent = "";
    $("result-monitoring").textContent = provisional === null || provisional === undefined ? "" :
      "Provisional score worked out on this iPad; the advice shows when the gateway answers.";
    $("result-missing").hidden = true;
    $("result-dispatch").hidden = true;
    box.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  function delivered(entry, data) {
    if (entry.kind === "teletriage") {
      var note = "Teletriage request sent" +
        (data && data.dispatch_id ? " (dispatch " + data.dispatch_id + ")" : "") +
        ": the clinical team will call back.";
      if ($("teletriage-status")) { $("teletriage-status").textContent = note; }
      showOutbox();
      return;
    }
    if (!form || !data || data.resident_id !== form.getAttribute("data-resident")) { return; }
    lastSetKey = data.set_key;
    var n = data.result.news2;
    var box = $("result");
    box.hidden = false;
    box.className = "result" + (n.risk ? " risk-" + n.risk : "");
    $("result-total").textContent = n.complete ? String(n.total) : "–";
    $("result-band").textContent = n.complete ? (BAND_TEXT[n.risk] || n.risk) : "Not a NEWS2";
    $("result-status").textContent = "Saved and scored by the gateway (set taken at " +
      hhmm(new Date(data.taken_at)) + ").";
    $("result-advice").textContent = data.result.advice || "";
    $("result-monitoring").textContent = n.monitoring ? "Monitoring: " + n.monitoring + "." : "";
    var missing = $("result-missing");
    missing.hidden = !n.missing.length;
    missing.textContent = n.missing.length ?
      "Missing: " + n.missing.join(", ").replace(/_/g, " ") + ". Take them to get a NEWS2." : "";
    var dispatch = $("result-dispatch");
    var opened = data.result.dispatch;
    dispatch.hidden = !opened;
    dispatch.textContent = opened ?
      "The monitoring centre has been alerted (dispatch " + opened.dispatch_id + ")." : "";
    var list = $("sbard-sections");
    list.textContent = "";
    data.sbard.forEach(function (s) {
      var dt = document.createElement("dt");
      dt.textContent = s.letter + " · " + s.heading;
      var dd = document.createElement("dd");
      dd.textContent = s.text;
      list.appendChild(dt);
      list.appendChild(dd);
    });
    $("sbard").hidden = false;
    $("teletriage").disabled = false;
    $("teletriage-status").textContent = "";
    box.scrollIntoView({ behavior: "smooth", block: "start" });
    refreshTrend();
  }

  function hhmm(date) {
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return two(date.getHours()) + ":" + two(date.getMinutes());
  }

  async function refreshTrend() {
    var box = document.querySelector(".trend-box");
    if (!box) { return; }
    try {
      var r = await fetch(form.getAttribute("data-trend-url"), { credentials: "same-origin" });
      if (r.ok) { box.innerHTML = await r.text(); }
    } catch (e) { /* the trend catches up at the next page load */ }
  }

  function refused(entry, status, data) {
    var detail = data && data.detail;
    if (Array.isArray(detail)) {
      detail = detail.map(function (d) { return (d.loc || []).slice(-1)[0] + ": " + d.msg; }).join("; ");
    }
    var text = "The gateway refused this " + (entry.kind === "set" ? "set" : "request") +
      " (" + status + "): " + (detail || "no reason given") + ".";
    var err = $("form-error");
    if (err) { err.hidden = false; err.textContent = text; }
    if (entry.kind === "set" && $("result")) { $("result").hidden = true; }
    showOutbox();
  }

  // -- wiring ------------------------------------------------------------------------------
  function sources() {
    // A pre-filled value keeps its "from oximeter ..." line only while it is unchanged.
    form.querySelectorAll("[data-source-for]").forEach(function (line) {
      var input = form.elements[line.getAttribute("data-source-for")];
      line.hidden = !input || input.value !== input.defaultValue;
    });
  }

  if (form) {
    form.addEventListener("input", sources);
    form.addEventListener("input", colour);
    form.addEventListener("change", colour);
    colour();
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      $("form-error").hidden = true;
      var v = values();
      if (!Object.keys(v).length) {
        $("form-error").hidden = false;
        $("form-error").textContent = "Enter at least one observation.";
        return;
      }
      var entry = {
        kind: "set",
        key: newKey(),
        url: form.getAttribute("data-submit-url"),
        resident: form.getAttribute("data-resident"),
        provisional: colour(),
        body: { observations: v, soft_signs: softSigns(), taken_at: new Date().toISOString() },
        created: Date.now()
      };
      pending(entry, "Sending…");
      enqueue(entry);
    });
    $("new-set").addEventListener("click", function () {
      form.reset();
      colour();
      sources();
      $("result").hidden = true;
      $("sbard").hidden = true;
      $("form-error").hidden = true;
    });
    $("teletriage").addEventListener("click", function () {
      if (!lastSetKey) { return; }
      $("teletriage").disabled = true;
      $("teletriage-status").textContent = "Sending the request…";
      enqueue({
        kind: "teletriage",
        key: "tt-" + lastSetKey,
        url: form.getAttribute("data-teletriage-url"),
        resident: form.getAttribute("data-resident"),
        body: { set_key: lastSetKey },
        created: Date.now()
      });
    });
  }
  window.addEventListener("online", function () { attempts = 0; flush(); });
  showOutbox();
  if (load().length) { flush(); }
})();
