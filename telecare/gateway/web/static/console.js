// The operator console's little JavaScript: live updates over SSE, the "connection lost"
// banner, row timers, the alarm sound and the keyboard. The server renders everything;
// on a live event this only re-fetches the fragment that changed.
"use strict";
(function () {
  const me = document.currentScript;
  const cfg = {
    lastId: me.dataset.lastEventId || "",
    target: Number(me.dataset.answerTarget || 60),
    scope: me.dataset.scope || "page",
    dispatch: me.dataset.dispatch || "",
    resident: me.dataset.resident || "",
  };
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const PING_S = 5;          // the server pings every 5 s of silence
  const STALE_AFTER_S = 12;  // no event or ping for this long: the screen is not live
  // Kinds that change the queue (device status and NEWS2 lines only go to the log).
  const QUEUE_KINDS = new Set(["alert", "dispatch", "console", "cleared", "restored", "folded", "reset"]);

  // -- live connection ------------------------------------------------------------------
  const banner = document.getElementById("lost-banner");
  const dot = document.getElementById("live-state");
  let source = null;
  let lastSeen = Date.now();
  let lost = false;

  function setLost(isLost, why) {
    lost = isLost;
    if (banner) banner.hidden = !isLost;
    document.body.classList.toggle("live-lost", isLost);
    if (dot) {
      dot.textContent = isLost ? "not live" : "live";
      dot.className = "live-dot " + (isLost ? "off" : "on");
      dot.title = why || "";
    }
  }

  function connect() {
    if (source) source.close();
    // The queue page asks for the queue itself to be pushed after each change.
    const params = [];
    if (cfg.lastId) params.push("last=" + encodeURIComponent(cfg.lastId));
    if (cfg.scope === "queue") params.push("scope=queue");
    const url = "/console/live" + (params.length ? "?" + params.join("&") : "");
    source = new EventSource(url);
    source.onopen = function () { seen(); };
    source.onerror = function () {
      setLost(true, "the live connection failed");
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 1000);
    };
    source.addEventListener("ping", function () { seen(); });
    source.addEventListener("reset", function (e) { seen(e); refresh(true); });
    source.addEventListener("queue", onQueue);
    source.addEventListener("just_in", onJustIn);
    ["alert", "dispatch", "restored", "attended", "folded", "cleared", "status", "news2", "console"]
      .forEach(function (kind) { source.addEventListener(kind, onEvent); });
  }

  function seen(e) {
    lastSeen = Date.now();
    if (e && e.lastEventId) cfg.lastId = e.lastEventId;
    const was = lost;
    if (was || !dot || !dot.classList.contains("on")) setLost(false);
    if (was) refresh(true);  // events may have been missed before the reconnect
  }

  function onEvent(e) {
    seen(e);
    let data = {};
    try { data = JSON.parse(e.data); } catch (err) { return; }
    log(data);
    if (cfg.scope === "queue" && QUEUE_KINDS.has(data.kind)) expectQueue();
    else if (cfg.scope === "board" && (data.kind === "dispatch" || data.kind === "alert")) reloadSoon();
    else if (cfg.scope === "alarm" &&
             (data.dispatch_id === cfg.dispatch ||
              (cfg.resident && data.resident_id === cfg.resident) ||
              (!data.dispatch_id && !data.resident_id && data.kind === "console"))) refresh(false);
  }

  // The queue page: the gateway pushes the rendered queue after each change (one
  // rendering for every operator); if none came 2 s after a change, fetch it instead.
  let lastPush = 0;
  let fallback = null;
  function onQueue(e) {
    seen();
    lastPush = Date.now();
    // Counted on the page (tests wait for the push a new connection gets first).
    document.body.dataset.queuePushes = String(Number(document.body.dataset.queuePushes || 0) + 1);
    if (fallback) { clearTimeout(fallback); fallback = null; }
    const el = document.getElementById("queue");
    if (el) replaceFragment(el, e.data);
    tickTimers();
  }
  // An alarm just announced: its row (pushed from the gateway's memory) goes on the
  // screen at once; the whole queue follows.
  function onJustIn(e) {
    seen();
    const el = document.getElementById("just-in");
    if (!el) return;
    const box = document.createElement("div");
    box.innerHTML = e.data;
    const fresh = box.querySelector("#just-in");
    if (fresh) el.replaceWith(fresh);
    tickTimers();
  }
  function expectQueue() {
    const asked = Date.now();
    if (fallback) return;
    fallback = setTimeout(function () {
      fallback = null;
      if (lastPush < asked) refresh(true);
    }, 2000);
  }

  // Boards re-render whole (they are short): at most one reload every 2 s.
  let reloadTimer = null;
  function reloadSoon() {
    if (!reloadTimer) reloadTimer = setTimeout(function () { location.reload(); }, 2000);
  }

  // Watchdog: a connection that says nothing (not even a ping) is not live.
  setInterval(function () {
    if ((Date.now() - lastSeen) / 1000 > STALE_AFTER_S) {
      setLost(true, "no word from the gateway for " + STALE_AFTER_S + " s");
      connect();
      lastSeen = Date.now() - (STALE_AFTER_S - PING_S) * 1000;  // retry again soon
    }
  }, 1000);

  // -- fragments --------------------------------------------------------------------------
  let pending = null;
  function refresh(now) {
    if (pending) return;
    pending = setTimeout(async function () {
      pending = null;
      const parts = document.querySelectorAll("[data-fragment]");
      for (const el of parts) {
        try {
          const r = await fetch(el.dataset.fragment, { headers: { Accept: "text/html" }, credentials: "same-origin" });
          if (r.status === 401) { location.reload(); return; }
          if (!r.ok) continue;
          replaceFragment(el, await r.text());
        } catch (err) { setLost(true, "could not reach the gateway"); }
      }
      tickTimers();
      if (!parts.length && now) location.reload();  // pages without fragments: whole
    }, now ? 0 : 150);
  }

  function replaceFragment(el, html) {
    const focus = focusKey(el);
    const typed = typedValues(el);
    el.innerHTML = html;
    restoreTyped(el, typed);
    restoreFocus(el, focus);
  }

  // -- keeping the keyboard's place across a re-render -----------------------------------
  // A live event re-renders a fragment; the operator's focus (a queue row's link, a
  // button of the action list) and anything typed must survive it: the same control of
  // the same alarm row, else the control at the same position (the row may have gone).
  const FOCUSABLE = "a[href], button:not([disabled]), input:not([type=hidden]), select, textarea, [tabindex]";
  function focusKey(root) {
    const el = document.activeElement;
    if (!el || el === document.body || !root.contains(el)) return null;
    const all = Array.from(root.querySelectorAll(FOCUSABLE));
    const key = { id: el.id || "", index: all.indexOf(el) };
    const row = el.closest("[data-dispatch]");
    if (row) {
      key.dispatch = row.dataset.dispatch;
      key.inRow = Array.from(row.querySelectorAll(FOCUSABLE)).indexOf(el);
    }
    if (el.form && el.name) {
      key.form = el.form.getAttribute("action") || "";
      key.name = el.name;
      key.value = el.value;
    }
    return key;
  }
  function restoreFocus(root, key) {
    if (!key) return;
    let el = key.id ? document.getElementById(key.id) : null;
    if (!el && key.dispatch) {
      const row = root.querySelector('[data-dispatch="' + CSS.escape(key.dispatch) + '"]');
      if (row) {
        const inRow = row.querySelectorAll(FOCUSABLE);
        el = inRow[Math.max(0, Math.min(key.inRow, inRow.length - 1))] || null;
      }
    }
    if (!el && key.name) {
      el = Array.from(root.querySelectorAll("form")).filter(function (f) {
        return (f.getAttribute("action") || "") === key.form;
      }).map(function (f) {
        return Array.from(f.elements).find(function (c) { return c.name === key.name && c.value === key.value; });
      }).find(Boolean) || null;
    }
    if (!el) {
      const all = root.querySelectorAll(FOCUSABLE);
      if (all.length && key.index >= 0) el = all[Math.min(key.index, all.length - 1)];
    }
    if (el) el.focus({ preventScroll: true });
  }
  // Values typed (or ticked) into a fragment's fields, by id, kept over a re-render.
  function typedValues(root) {
    const kept = [];
    root.querySelectorAll("input[id], select[id], textarea[id]").forEach(function (f) {
      if (f.type === "hidden") return;
      if (f.type === "checkbox" || f.type === "radio") {
        if (f.checked !== f.defaultChecked) kept.push([f.id, "checked", f.checked]);
      } else if (f.tagName === "SELECT") {
        const chosen = f.selectedIndex >= 0 ? f.options[f.selectedIndex] : null;
        if (chosen && !chosen.defaultSelected) kept.push([f.id, "value", f.value]);
      } else if (f.value !== f.defaultValue) {
        kept.push([f.id, "value", f.value]);
      }
    });
    return kept;
  }
  function restoreTyped(root, kept) {
    kept.forEach(function (k) {
      const f = document.getElementById(k[0]);
      if (f && root.contains(f)) f[k[1]] = k[2];
    });
  }

  const logList = document.getElementById("live-log");
  function log(data) {
    if (!logList) return;
    const li = document.createElement("li");
    const t = document.createElement("time");
    const ts = data.ts ? new Date(data.ts) : new Date();
    t.textContent = ts.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    li.appendChild(t);
    // A device closing its connection is not news of a fault (a pendant connects to
    // raise an alarm, then goes): the resident banner judges its health.
    const text = data.kind === "status" && data.device_id
      ? "device " + data.device_id + (data.online ? " connected" : " closed its connection")
      : (data.summary || data.kind);
    li.appendChild(document.createTextNode(text));
    logList.prepend(li);
    while (logList.children.length > 40) logList.lastChild.remove();
  }

  // -- timers -----------------------------------------------------------------------------
  function fmt(s) {
    s = Math.max(0, Math.floor(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(r).padStart(2, "0");
  }
  function tickTimers() {
    const now = Date.now();
    document.querySelectorAll(".timer[data-since]").forEach(function (el) {
      const age = (now - Date.parse(el.dataset.since)) / 1000;
      el.textContent = fmt(age);
      if (el.dataset.answer === "1") {
        el.classList.toggle("t-amber", age >= cfg.target / 2 && age < cfg.target);
        el.classList.toggle("t-red", age >= cfg.target);
        el.classList.toggle("t-ok", age < cfg.target / 2);
      } else if (el.dataset.attend === "1") {
        el.classList.toggle("t-amber", age >= 45 * 60 && age < 60 * 60);
        el.classList.toggle("t-red", age >= 60 * 60);
      }
    });
    document.querySelectorAll(".countdown[data-until]").forEach(function (el) {
      el.textContent = "in " + fmt((Date.parse(el.dataset.until) - now) / 1000);
    });
  }
  setInterval(tickTimers, 1000);

  // -- sound: one pattern per priority, repeating while an alarm waits unanswered ----------
  const soundBtn = document.getElementById("sound-toggle");
  let audio = null;
  let lastPlayed = 0;
  const PATTERNS = {  // priority: [frequency Hz, beeps, repeat every s]
    1: [880, 3, 2], 2: [660, 2, 4], 3: [520, 1, 6], 4: [440, 1, 10], 5: [440, 1, 15],
  };
  if (soundBtn) {
    soundBtn.addEventListener("click", function () {
      if (audio) { audio.close(); audio = null; }
      else { audio = new (window.AudioContext || window.webkitAudioContext)(); }
      sessionStorage.setItem("telecare-sound", audio ? "on" : "off");
      soundBtn.setAttribute("aria-pressed", audio ? "true" : "false");
      soundBtn.textContent = audio ? "Sound on" : "Enable sound";
      if (audio) beep(PATTERNS[3]);
    });
    if (sessionStorage.getItem("telecare-sound") === "on") {
      soundBtn.textContent = "Enable sound (click: browsers need it)";
    }
  }
  function beep(p) {
    if (!audio) return;
    const [freq, count] = p;
    for (let i = 0; i < count; i++) {
      const o = audio.createOscillator(), g = audio.createGain();
      const at = audio.currentTime + i * 0.22;
      o.frequency.value = freq; o.type = "square";
      g.gain.setValueAtTime(0.0001, at);
      g.gain.exponentialRampToValueAtTime(0.25, at + 0.01);
      g.gain.exponentialRampToValueAtTime(0.0001, at + 0.16);
      o.connect(g).connect(audio.destination);
      o.start(at); o.stop(at + 0.18);
    }
  }
  setInterval(function () {
    const rows = document.querySelectorAll('tr[data-unanswered="1"]');
    document.body.dataset.ringing = rows.length ? "1" : "0";
    if (!audio || !rows.length) return;
    let top = 5;
    rows.forEach(function (r) { top = Math.min(top, Number(r.dataset.priority || 5)); });
    const p = PATTERNS[top] || PATTERNS[5];
    if ((Date.now() - lastPlayed) / 1000 >= p[2]) { lastPlayed = Date.now(); beep(p); }
  }, 500);

  // -- revealing key safe / medical notes (audited by the server) -------------------------
  document.addEventListener("submit", async function (e) {
    const f = e.target;
    if (!f.classList || !f.classList.contains("reveal-form")) return;
    e.preventDefault();
    const r = await fetch(f.action, { method: "POST", body: new FormData(f), credentials: "same-origin",
                                      headers: { "X-CSRF-Token": csrf } });
    const box = document.getElementById(f.dataset.target);
    if (box) box.innerHTML = r.ok ? await r.text() : "<p class='error'>Could not load (" + r.status + ")</p>";
  });

  // -- keyboard ---------------------------------------------------------------------------
  function submit(sel) {
    const f = typeof sel === "string" ? document.querySelector(sel) : sel;
    if (!f) return false;
    if (f.tagName === "FORM") f.requestSubmit(); else f.click();
    return true;
  }
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const tag = (e.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select") {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    const help = document.getElementById("help");
    switch (e.key) {
      case "n": location.href = "/console/next"; break;
      case "a": {
        const next = document.querySelector('#do-next[data-action="acknowledge"]');
        if (next) submit(next);
        break;
      }
      case "d": {
        const next = document.getElementById("do-next");
        if (!next) { const o = document.getElementById("outcome"); if (o) o.focus(); break; }
        if (next.dataset.action === "outcome") { const b = next.querySelector("button"); if (b) b.focus(); }
        else if (next.dataset.action === "handover") { document.getElementById("reference").focus(); }
        else submit(next);
        break;
      }
      case "1": case "2": case "3": {
        const f = document.querySelector('#do-next form[data-key="' + e.key + '"]');
        if (f) submit(f);
        break;
      }
      case "r": { const a = document.getElementById("resident-link"); if (a) location.href = a.href; break; }
      case "h": { const h = document.getElementById("hold-minutes"); if (h) { h.focus(); h.select(); } break; }
      case "c": { const o = document.getElementById("outcome"); if (o) o.focus(); break; }
      case "q": location.href = "/console"; break;
      case "?": if (help) help.hidden = !help.hidden; break;
      case "Escape": if (help) help.hidden = true; break;
      default: return;
    }
    e.preventDefault();
  });

  const reloadBtn = document.getElementById("reload-now");
  if (reloadBtn) reloadBtn.addEventListener("click", function () { location.reload(); });

  tickTimers();
  connect();
})();
