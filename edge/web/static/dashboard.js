/* The operator dashboard's cards: power and UPS, the 24-hour chart, link, outbox, mirror,
   limits, reconciliation and transfers; it polls the node's own JSON views and starts the
   strip (strip.js) and the operator's section (admin.js). ES5, textContent only. */
(function () {
  "use strict";
  var POLL_MS = 1000, OVERVIEW_MS = 5000, HISTORY_MS = 30000;
  var LANG_KEY = "edge.lang", SVG = "http://www.w3.org/2000/svg";
  var ALERT_FLAGS = { OB: 1, LB: 1, RB: 1, OVER: 1, FSD: 1, OFF: 1, BYPASS: 1, CAL: 1 };
  var E = window.EDGE, $ = E.$, t = E.t, fill = E.fill, get = E.get, num = E.num, count = E.count;
  var duration = E.duration, pad = E.pad, clock = E.clock, since = E.since, money = E.money;
  var text = E.text, value = E.value, make = E.make, stored = E.stored, keep = E.keep;
  var last = { status: null, overview: null, history: null };

  function badge(id, cls, state, label) {
    var el = $(id);
    el.className = "badge big " + cls + "-" + state;
    el.setAttribute("data-state", state);
    el.textContent = label;
  }
  function bar(id, markId, fraction, markFraction, below) {
    var el = $(id), mark = $(markId), side = E.lang === "ar" ? "right" : "left";
    el.style.width = (fraction === null ? 0 : Math.max(0, Math.min(1, fraction)) * 100) + "%";
    el.className = below ? "fill below" : "fill";
    mark.style.left = mark.style.right = "";
    if (markFraction === null) { mark.style.display = "none"; return; }
    mark.style.display = "block";
    mark.style[side] = Math.max(0, Math.min(1, markFraction)) * 100 + "%";
  }

  // --- rendering ---------------------------------------------------------------------
  function marks() {
    var src = last.history || last.overview && last.overview.power;
    return src && src.marks ? src.marks : { charge_low: null, runtime_low_s: null };
  }

  function renderPower(s) {
    var p = s.power, m = marks(), flags = p.ups_status ? p.ups_status.split(" ") : [];
    var box = $("ups-flags"), i;
    badge("power-badge", "state", p.state, t("state_" + p.state));
    box.innerHTML = "";
    for (i = 0; i < flags.length; i++) {
      var chip = make("span", { "class": ALERT_FLAGS[flags[i]] ? "flag alert" : "flag", "data-flag": flags[i] });
      chip.appendChild(make("b", {}, flags[i]));
      chip.appendChild(document.createTextNode(" " + t(flags[i])));
      box.appendChild(chip);
    }
    if (!p.ups_status) { box.appendChild(make("span", { "class": "flag alert" }, t("ups_unreachable"))); }
    $("power-error").hidden = !p.error;
    text("power-error", p.error || "");
    value("power-charge", p.battery_charge, num(p.battery_charge));
    value("power-charge-low", m.charge_low, num(m.charge_low));
    var low = m.charge_low;
    bar("charge-bar", "charge-mark", p.battery_charge === null ? null : p.battery_charge / 100,
      low === null ? null : low / 100, low !== null && p.battery_charge !== null && p.battery_charge <= low);
    value("power-runtime", p.runtime_s, duration(p.runtime_s));
    value("power-runtime-low", m.runtime_low_s, duration(m.runtime_low_s));
    var floor = m.runtime_low_s, scale = Math.max(3600, (floor || 0) * 3, p.runtime_s || 0);
    bar("runtime-bar", "runtime-mark", p.runtime_s === null ? null : p.runtime_s / scale,
      floor === null ? null : floor / scale, floor !== null && p.runtime_s !== null && p.runtime_s < floor);
    value("power-load", p.load_pct, num(p.load_pct));
    value("power-voltage", p.input_voltage, num(p.input_voltage));
    text("power-age", since(p.updated_at, s.now));
    text("power-source", p.source);
  }

  function renderStatus(s) {
    text("node-id", s.node);
    text("governorate", t(s.governorate) + " (" + s.governorate + ")");
    E.strip.render(s);
    renderPower(s);
    var l = s.link, ov = last.overview;
    badge("link-badge", "link", l.state, t("link_" + l.state));
    // Plain http:// to another machine: said on every page view, not only in the journal.
    $("insecure").hidden = !l.insecure;
    $("plain-http").hidden = !(s.http && s.http.insecure);
    text("link-security", t(l.insecure ? "not_secure" : "secure"));
    $("link-security").className = l.insecure ? "error" : "";
    text("link-since", ov && ov.link.state === l.state && ov.link.since ? since(ov.link.since, s.now) : "—");
    text("link-last-ok", since(l.last_ok_at, s.now));
    renderLinkError(l);
    value("link-skew", l.clock_skew_s, l.clock_skew_s === null ? "—" : (l.clock_skew_s > 0 ? "+" : "") + num(l.clock_skew_s) + " " + t("s"));
    var o = s.outbox, age = o.oldest_pending_age_s, oldest = $("outbox-oldest");
    value("outbox-pending", o.pending, count(o.pending));
    value("outbox-oldest", age, age === null ? "—" : duration(age));
    oldest.className = "age " + (age === null ? "" : age < 300 ? "age-ok" : age < 3600 ? "age-warn" : "age-bad");
    value("outbox-rejected", o.rejected, count(o.rejected));
    value("outbox-delivered", o.delivered, count(o.delivered));
    value("outbox-today", ov ? ov.outbox.delivered_today : null, ov ? count(ov.outbox.delivered_today) : "—");
    var mi = s.mirror, mb = $("mirror-badge");
    mb.className = "badge big " + (mi.stale ? "mirror-stale" : "mirror-fresh");
    mb.setAttribute("data-state", mi.stale ? "stale" : "fresh");
    mb.textContent = t(mi.stale ? "stale" : "fresh");
    value("mirror-bills", mi.bills, count(mi.bills));
    text("mirror-as-of", since(mi.as_of, s.now));
    renderTransfers(s.transfers, s.now);
    renderLimits(s.offline_limits);
    renderReconcile(s.reconcile, s.now);
    var sv = s.services || {};
    value("readings-today", sv.readings_today, count(sv.readings_today));
    value("readings-pending", sv.readings_pending, count(sv.readings_pending));
    value("requests-today", sv.requests_today, count(sv.requests_today));
    value("requests-open", sv.requests_open, count(sv.requests_open));
    text("version", s.version);
    text("updated", clock(s.now));
  }

  // The link's last error by its code (sync/reasons.py), the raw English isolated beside it;
  // the node clears it once the centre answers again.
  function renderLinkError(l) {
    var el = $("link-error");
    if (!l.last_error) { el.textContent = "—"; el.setAttribute("data-code", ""); return; }
    E.showError(el, "centre", l.last_error_code, l.last_error);
    if (l.last_error_at) { el.appendChild(document.createTextNode(" — " + clock(l.last_error_at))); }
  }

  // The last reconciliation with the centre (daily after midnight, or the admin's button).
  function renderReconcile(r, nowIso) {
    var b = $("reconcile-badge"), state = !r ? "none" : r.error ? "error" : r.ok ? "ok" : "bad";
    b.className = "badge big " + (state === "ok" ? "mirror-fresh" : state === "none" ? "" : "mirror-stale");
    b.setAttribute("data-state", state);
    b.textContent = t("reconcile_" + state);
    text("reconcile-day", r ? r.day : "—");
    text("reconcile-at", r ? since(r.at, nowIso) : "—");
    text("reconcile-counts", !r ? "—" : r.error ? "" : fill(t("reconcile_counts"), r.counts));
    if (r && r.error) { $("reconcile-counts").appendChild(E.ltr(r.error, "detail")); } // English, from the link
  }

  // Transfer files (PROTOCOL.md 11): what went by hand, and what the centre has not answered.
  function renderTransfers(x, now) {
    if (!x) { return; }
    var show = function (one) {
      if (!one) { return "—"; }
      var what = t("kind_" + one.kind) + ": " + count(one.entries) + " " + t("entries");
      if (one.kind !== "outbox") { what += ", " + count(one.changed) + " " + t("changed"); }
      return what + " — " + since(one.at, now);
    };
    text("transfer-export", show(x.last_export));
    text("transfer-import", show(x.last_import));
    value("transfer-unacked", x.unacknowledged, count(x.unacknowledged));
  }

  // Offline limits: used against each limit, red once it refuses new payments.
  var LIMITS = ["max_count", "max_total", "max_age_h", "mirror_max_age_h", "max_payment"];
  function renderLimits(all) {
    var box = $("limits-list"), i;
    box.innerHTML = "";
    if (!all) { return; }
    for (i = 0; i < LIMITS.length; i++) {
      var name = LIMITS[i], l = all[name], isMoney = name === "max_total" || name === "max_payment";
      var show = function (v) { return v === null || v === undefined ? "—" : isMoney ? money(v) : name === "max_count" ? count(v) : num(v); };
      var block = make("div", { "class": "meter-block limit", "data-limit": name, "data-tripped": String(l.tripped),
        "data-used": l.used === null ? "" : String(l.used), "data-value": String(l.value) });
      var label = make("div", { "class": "meter-label" }, t("limit_" + name) + " ");
      var shown = !l.value ? t("limit_off") : name === "max_payment" ? show(l.value) :
        (name === "mirror_max_age_h" && l.used === null ? t("limit_never") : show(l.used)) + " / " + show(l.value);
      label.appendChild(make("b", { "class": "num", dir: "ltr" }, shown));
      block.appendChild(label);
      if (l.value && name !== "max_payment") {
        var meter = make("div", { "class": "meter" }), fill = make("div", { "class": l.tripped ? "fill below" : "fill" });
        fill.style.width = Math.max(0, Math.min(1, l.used === null ? 1 : l.used / l.value)) * 100 + "%";
        meter.appendChild(fill);
        block.appendChild(meter);
      }
      if (l.value && name === "max_payment") {
        block.appendChild(make("small", { "class": l.tripped ? "error" : "muted" }, t(l.tripped ? "limit_payment_now" : "limit_payment_idle")));
      } else if (l.tripped) {
        block.appendChild(make("small", { "class": "error" }, t("limit_tripped")));
      }
      box.appendChild(block);
    }
  }

  function svg(tag, attrs, parent) {
    var el = document.createElementNS(SVG, tag), k;
    for (k in attrs) { if (attrs.hasOwnProperty(k)) { el.setAttribute(k, String(attrs[k])); } }
    if (parent) { parent.appendChild(el); }
    return el;
  }

  function drawChart() {
    var h = last.history, box = $("chart");
    if (!h) { return; }
    var W = Math.max(280, box.clientWidth || 600), H = 220, L = 38, R = 10, TOP = 10, B = 36;
    var x0 = Date.parse(h.from), x1 = Date.parse(h.to), plotH = H - TOP - B, i;
    var X = function (ms) { return L + (Math.max(x0, Math.min(x1, ms)) - x0) / (x1 - x0) * (W - L - R); };
    var Y = function (pct) { return TOP + (100 - Math.max(0, Math.min(100, pct))) / 100 * plotH; };
    var root = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": t("chart_title") });
    var shade = { battery: "rgba(232,150,20,0.35)", low: "rgba(200,30,40,0.35)", unknown: "rgba(91,74,139,0.22)" };
    for (i = 0; i < h.periods.length; i++) {
      var p = h.periods[i], a = Date.parse(p.from), b = p.to ? Date.parse(p.to) : x1;
      if (!shade[p.state] || b <= a) { continue; }
      var r = svg("rect", { x: X(a), y: TOP, width: Math.max(1, X(b) - X(a)), height: plotH, fill: shade[p.state], "class": "period-" + p.state }, root);
      svg("title", {}, r).textContent = t("state_" + p.state) + " " + clock(p.from) + " – " + (p.to ? clock(p.to) : "…");
    }
    for (i = 0; i <= 100; i += 25) {
      svg("line", { x1: L, x2: W - R, y1: Y(i), y2: Y(i), stroke: "#dde3e8" }, root);
      svg("text", { x: L - 4, y: Y(i) + 4, "text-anchor": "end" }, root).textContent = i + "%";
    }
    var tick = new Date(x0);
    tick.setMinutes(0, 0, 0);
    // Hour ticks at least 64 px apart, so a phone's narrow chart stays readable.
    var perHour = (W - L - R) / ((x1 - x0) / 3600000), steps = [1, 2, 3, 6, 12, 24], step = 24;
    for (i = steps.length - 1; i >= 0; i--) { if (steps[i] * perHour >= 64) { step = steps[i]; } }
    for (tick = new Date(tick.getTime() + 3600 * 1000); tick.getTime() < x1; tick = new Date(tick.getTime() + 3600 * 1000)) {
      var tx = X(tick.getTime());
      if (tick.getHours() % step !== 0 || tx > W - R - 16) { continue; }
      svg("line", { x1: tx, x2: tx, y1: TOP + plotH, y2: TOP + plotH + 4, stroke: "#8c96a0" }, root);
      svg("text", { x: tx, y: H - 6, "text-anchor": "middle" }, root).textContent = step === 24 ?
        (tick.getMonth() + 1) + "/" + tick.getDate() : pad(tick.getHours()) + ":00";
    }
    var links = last.overview ? last.overview.link.periods : [];
    for (i = 0; i < links.length; i++) {
      var lp = links[i];
      if (lp.state !== "down" && lp.state !== "degraded") { continue; }
      var la = Date.parse(lp.from), lb = lp.to ? Date.parse(lp.to) : x1;
      svg("rect", { x: X(la), y: TOP + plotH + 6, width: Math.max(1, X(lb) - X(la)), height: 5,
        fill: lp.state === "down" ? "#b3141f" : "#b86e00", "class": "link-" + lp.state }, root);
    }
    var m = marks();
    if (m.charge_low !== null) {
      svg("line", { x1: L, x2: W - R, y1: Y(m.charge_low), y2: Y(m.charge_low), stroke: "#b3141f", "stroke-dasharray": "5,4", "class": "low-mark" }, root);
    }
    var pts = [], lines = [], prev = null;
    for (i = 0; i < h.readings.length; i++) {
      var rd = h.readings[i], at = Date.parse(rd.at);
      // A gap of over five minutes (no readings: node or UPS off) breaks the line.
      if (rd.charge === null || (prev !== null && at - prev > 300000)) { if (pts.length) { lines.push(pts); } pts = []; }
      if (rd.charge !== null) { pts.push(X(at).toFixed(1) + "," + Y(rd.charge).toFixed(1)); }
      prev = at;
    }
    if (pts.length) { lines.push(pts); }
    for (i = 0; i < lines.length; i++) {
      if (lines[i].length === 1) { lines[i].push(lines[i][0]); }
      svg("polyline", { points: lines[i].join(" "), fill: "none", stroke: "#1f5fa8", "stroke-width": 2, "class": "charge-line" }, root);
    }
    if (!lines.length) {
      svg("text", { x: W / 2, y: TOP + plotH / 2, "text-anchor": "middle", "class": "empty" }, root).textContent = t("no_readings");
    }
    box.innerHTML = "";
    box.appendChild(root);
  }

  function applyLanguage(next) {
    var lang = E.lang = next === "en" ? "en" : "ar";
    var root = document.documentElement, nodes = document.querySelectorAll("[data-i18n]"), i;
    root.setAttribute("lang", lang);
    root.setAttribute("dir", lang === "ar" ? "rtl" : "ltr");
    for (i = 0; i < nodes.length; i++) { nodes[i].textContent = t(nodes[i].getAttribute("data-i18n")); }
    document.title = t("title");
    var button = $("lang");
    button.textContent = lang === "ar" ? "English" : "العربية";
    button.setAttribute("lang", lang === "ar" ? "en" : "ar");
    keep("localStorage", LANG_KEY, lang);
    if (last.status) { renderStatus(last.status); }
    drawChart();
    E.admin.render();
  }

  // --- polling -----------------------------------------------------------------------
  function pollStatus() {
    get("/v1/status", null, function (err, s) {
      $("offline").hidden = !err;
      if (!err) {
        var prev = last.status;
        last.status = s;
        if (prev && (prev.power.state !== s.power.state || prev.link.state !== s.link.state)) {
          loadHistory();
          loadOverview();
        }
        if (prev && (prev.outbox.rejected !== s.outbox.rejected || prev.outbox.unresolved !== s.outbox.unresolved)) { E.admin.reload(); }
        renderStatus(s);
      }
      window.setTimeout(pollStatus, POLL_MS);
    });
  }
  function loadOverview() {
    get("/v1/overview", null, function (err, body) {
      if (err) { return; }
      last.overview = body;
      if (last.status) { renderStatus(last.status); }
      drawChart();
    });
  }
  function loadHistory() {
    get("/v1/power/history?hours=24", null, function (err, body) {
      if (err) { return; }
      last.history = body;
      if (last.status) { renderPower(last.status); }
      drawChart();
    });
  }
  function every(ms, fn) { fn(); window.setInterval(fn, ms); }

  function start() {
    var query = /[?&]lang=(ar|en)\b/.exec(window.location.search);
    $("lang").onclick = function () { applyLanguage(E.lang === "ar" ? "en" : "ar"); };
    window.onresize = drawChart;
    applyLanguage(query ? query[1] : stored("localStorage", LANG_KEY) || "ar");
    pollStatus();
    every(OVERVIEW_MS, loadOverview);
    every(HISTORY_MS, loadHistory);
    E.admin.start();
  }

  start();
}());
