/* What every part of the dashboard shares (window.EDGE): the language, requests, formatting,
   DOM helpers and the texts of codes. ES5 and XMLHttpRequest on purpose, so a cashier's old
   browser runs it; text goes in through textContent only, never as HTML. */
(function () {
  "use strict";
  var TIMEOUT_MS = 5000, T = window.EDGE_TEXT, CODES = window.EDGE_CODES || { problem: {}, centre: {} };
  var E = window.EDGE = { lang: "ar", TOKEN_KEY: "edge.admin_token" };

  E.$ = function (id) { return document.getElementById(id); };
  E.t = function (key) { var v = T[E.lang][key]; return v === undefined ? key : v; };
  E.fill = function (text, values) {
    return text.replace(/\{(\w+)\}/g, function (m, k) { return values[k]; });
  };
  function store(kind) {
    try { return window[kind] || null; } catch (e) { return null; } // private modes throw
  }
  E.stored = function (kind, key) { var s = store(kind); try { return s ? s.getItem(key) : null; } catch (e) { return null; } };
  E.keep = function (kind, key, value) {
    var s = store(kind);
    try { if (s) { if (value === null) { s.removeItem(key); } else { s.setItem(key, value); } } } catch (e) { /* full or denied */ }
  };
  E.token = function () { return E.stored("sessionStorage", E.TOKEN_KEY); };

  function send(method, url, token, key, payload, done) {
    var xhr = new XMLHttpRequest();
    xhr.open(method, url, true);
    xhr.timeout = TIMEOUT_MS;
    xhr.setRequestHeader("Accept", "application/json");
    if (token) { xhr.setRequestHeader("Authorization", "Bearer " + token); }
    if (key) { xhr.setRequestHeader("Idempotency-Key", key); }
    if (method === "POST") { xhr.setRequestHeader("Content-Type", "application/json"); }
    xhr.onreadystatechange = function () {
      if (xhr.readyState !== 4) { return; }
      var body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
      var ok = (xhr.status === 200 || xhr.status === 202) && body;
      if (ok) { done(null, body); } else { done({ status: xhr.status, body: body }, null); }
    };
    xhr.send(method === "POST" ? JSON.stringify(payload) : null);
  }
  E.get = function (url, token, done) { send("GET", url, token, null, null, done); };
  E.post = function (url, token, key, payload, done) { send("POST", url, token, key, payload, done); };

  // --- formatting --------------------------------------------------------------------
  E.num = function (v) { return v === null || v === undefined ? "—" : String(Math.round(v * 10) / 10); };
  E.count = function (v) {
    if (v === null || v === undefined) { return "—"; }
    return String(v).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  };
  E.duration = function (sec) {
    var t = E.t;
    if (sec === null || sec === undefined) { return "—"; }
    var s = Math.max(0, Math.round(sec));
    if (s < 60) { return s + " " + t("s"); }
    if (s < 3600) { return Math.floor(s / 60) + " " + t("min") + (s % 60 ? " " + (s % 60) + " " + t("s") : ""); }
    if (s < 86400) { return Math.floor(s / 3600) + " " + t("h") + " " + Math.floor((s % 3600) / 60) + " " + t("min"); }
    return Math.floor(s / 86400) + " " + t("d") + " " + Math.floor((s % 86400) / 3600) + " " + t("h");
  };
  E.pad = function (n) { return n < 10 ? "0" + n : String(n); };
  E.clock = function (iso) {
    if (!iso) { return "—"; }
    var d = new Date(Date.parse(iso)), now = new Date(), pad = E.pad;
    var hm = pad(d.getHours()) + ":" + pad(d.getMinutes());
    if (d.toDateString() === now.toDateString()) { return hm; }
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + hm;
  };
  E.since = function (iso, nowIso) {
    if (!iso) { return E.t("never"); }
    var age = (Date.parse(nowIso) - Date.parse(iso)) / 1000;
    return E.clock(iso) + " (" + E.fill(E.t("ago"), { d: E.duration(age) }) + ")";
  };
  E.money = function (piastres) {
    var sign = piastres < 0 ? "-" : "", a = Math.abs(piastres);
    return sign + E.count(Math.floor(a / 100)) + "." + E.pad(a % 100);
  };

  // --- DOM helpers -------------------------------------------------------------------
  E.text = function (id, value) { E.$(id).textContent = value; };
  E.value = function (id, raw, shown) {
    var el = E.$(id);
    el.setAttribute("data-value", raw === null || raw === undefined ? "" : String(raw));
    el.textContent = shown;
  };
  E.make = function (tag, attrs, content) {
    var el = document.createElement(tag), k;
    for (k in attrs) { if (attrs.hasOwnProperty(k)) { el.setAttribute(k, attrs[k]); } }
    if (content !== undefined) { el.textContent = content; }
    return el;
  };
  // A left-to-right fragment (an id, a code, an English error) isolated inside Arabic text,
  // so its punctuation and digits do not reorder the sentence around it.
  E.ltr = function (content, cls) {
    return E.make("bdi", cls ? { dir: "ltr", "class": cls } : { dir: "ltr" }, content);
  };

  // --- codes: one catalogue (edge.errors and sync.reasons, served as /static/codes.js) -----
  // `kind`: "problem" (the node's own answers) or "centre" (verdicts, refusals, link failures).
  E.codeText = function (kind, code) {
    var found = CODES[kind][code] || CODES[kind === "problem" ? "centre" : "problem"][code];
    return found ? found[E.lang] : null;
  };
  // An error shown by code: its text in the page's language, then the code and the raw
  // detail as isolated left-to-right fragments (what the journal and support will quote).
  E.showError = function (el, kind, code, detail) {
    el.innerHTML = "";
    var said = code ? E.codeText(kind, code) : null;
    if (said) { el.appendChild(E.make("span", { "class": "error-text" }, said)); }
    if (code) { el.appendChild(document.createTextNode(" ")); el.appendChild(E.ltr(code, "code")); }
    if (detail && detail !== said) {
      el.appendChild(document.createTextNode(" "));
      el.appendChild(E.ltr(detail, "detail"));
    }
    el.setAttribute("data-code", code || "");
  };
  E.problemOf = function (err) {
    var p = err && err.body || {};
    return { code: p.code || null, detail: p.detail || (err ? "HTTP " + err.status : "") };
  };
}());
