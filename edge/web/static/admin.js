/* The operator's section (an admin token, kept in this tab only): replay now, the payments
   waiting for the centre (paged by cursor), the rejected payments and their resolution, and
   reconcile now. Errors are shown by code (common.js). */
(function () {
  "use strict";
  var E = window.EDGE, $ = E.$, t = E.t, ADMIN_MS = 5000, PENDING_PAGE = 20;
  var state = { rejected: null, pending: null, error: null, resolving: null,
    cursors: [null], page: 0 };  // cursors[i]: the `after` of page i (null: the newest)

  function forget(errorKey) {
    E.keep("sessionStorage", E.TOKEN_KEY, null);
    state.rejected = state.pending = null;
    state.cursors = [null];
    state.page = 0;
    state.error = errorKey;
  }
  // 401/403 forget the token; anything else is said by code where it happened.
  function refused(err, where, kind) {
    if (err.status === 401 || err.status === 403) { forget("token_bad"); render(); return; }
    var p = E.problemOf(err);
    E.showError($(where), kind || "problem", p.code, p.detail);
  }

  function table(id, cols) {
    var tbl = E.make("table", { id: id }), head = E.make("tr", {}), k;
    for (k = 0; k < cols.length; k++) { head.appendChild(E.make("th", {}, t("col_" + cols[k]))); }
    tbl.appendChild(head);
    return tbl;
  }
  function cell(row, content, attrs) {
    row.appendChild(E.make("td", attrs || {}, content === null || content === undefined ? "—" : String(content)));
  }

  function renderRejected() {
    var list = $("admin-list"), msg = $("admin-message"), data = state.rejected, i;
    list.innerHTML = "";
    if (state.error) { msg.textContent = t(state.error); return; }
    if (!E.token() || !data) { msg.textContent = t("admin_hint"); return; }
    if (!data.entries.length) { msg.textContent = t("none_rejected"); return; }
    msg.textContent = E.fill(t("shown_of"), { n: data.entries.length, total: data.total });
    var tbl = table("rejected-table", ["receipt", "bill", "account", "amount", "method", "cashier",
      "channel", "accepted", "rejected", "reason", "code", "action"]);
    for (i = 0; i < data.entries.length; i++) {
      var e = data.entries[i], row = E.make("tr", { "data-payment": e.payment_id }), code = e.reason || e.verdict;
      cell(row, e.receipt, { dir: "ltr" });
      cell(row, e.bill_id, { dir: "ltr" });
      cell(row, e.account, { dir: "ltr" });
      cell(row, e.amount === null ? null : E.money(e.amount), { "class": "num" });
      cell(row, e.method);
      cell(row, e.cashier);
      cell(row, e.channel, { dir: "ltr" });
      cell(row, E.clock(e.accepted_at));
      cell(row, E.clock(e.rejected_at));
      cell(row, E.codeText("centre", code) || code, { "class": "reason" });
      cell(row, code, { "class": "code", dir: "ltr" });
      row.appendChild(actionCell(e));
      tbl.appendChild(row);
    }
    list.appendChild(tbl);
  }

  // A rejected payment's resolution: its state once resolved, else buttons that open the one
  // resolve form below the table.
  function actionCell(e) {
    var td = E.make("td", { "class": "action" }), actions = ["refund", "retarget"], k;
    if (e.resolution) {
      td.textContent = E.fill(t("resolved_" + e.resolution.action), { by: e.resolution.by });
      td.setAttribute("data-resolved", e.resolution.action);
      return td;
    }
    if (e.amount === null) { return td; } // not a payment (a refused void or refund)
    for (k = 0; k < actions.length; k++) {
      var button = E.make("button", { type: "button", "data-action": actions[k] }, t(actions[k]));
      button.onclick = openResolve(e, actions[k]);
      td.appendChild(button);
    }
    return td;
  }
  function openResolve(e, action) {
    return function () {
      state.resolving = { payment_id: e.payment_id, action: action, receipt: e.receipt };
      renderResolve();
      $("resolve-reason").focus();
    };
  }
  function renderResolve() {
    var r = state.resolving;
    $("resolve-form").hidden = !r;
    if (!r) { return; }
    E.text("resolve-title", t(r.action) + ": " + (r.receipt || r.payment_id));
    $("resolve-bill").hidden = $("resolve-bill-label").hidden = r.action !== "retarget";
  }
  function submitResolve() {
    var r = state.resolving, token = E.token();
    if (!r || !token) { return; }
    var payload = { action: r.action, reason: $("resolve-reason").value };
    if (r.action === "retarget") { payload.bill_id = $("resolve-bill").value.replace(/^\s+|\s+$/g, ""); }
    // One key per payment and action: a double click or a retry is answered, not redone.
    E.post("/v1/admin/rejected/" + encodeURIComponent(r.payment_id) + "/resolve", token,
      "dashboard-" + r.action + "-" + r.payment_id, payload, function (err) {
        if (err) { refused(err, "resolve-message"); return; }
        state.resolving = null;
        E.text("resolve-message", "");
        $("resolve-reason").value = $("resolve-bill").value = "";
        renderResolve();
        loadRejected();
      });
  }

  // The payments the centre has not acknowledged yet, newest first, PENDING_PAGE a page.
  function renderPending() {
    var box = $("pending-list"), data = state.pending, i;
    box.innerHTML = "";
    $("pending-nav").hidden = !data;
    if (!data) { return; }
    $("pending-newer").disabled = state.page === 0;
    $("pending-older").disabled = !data.next;
    E.text("pending-page", E.fill(t("page_n"), { n: state.page + 1 }));
    if (!data.items.length) { box.appendChild(E.make("p", { "class": "muted" }, t("none_pending"))); return; }
    var tbl = table("pending-table", ["receipt", "bill", "amount", "cashier", "channel", "accepted",
      "attempts", "last_error"]);
    for (i = 0; i < data.items.length; i++) {
      var p = data.items[i], row = E.make("tr", { "data-seq": String(p.seq) });
      cell(row, p.receipt, { dir: "ltr" });
      cell(row, p.bill_id, { dir: "ltr" });
      cell(row, E.money(p.amount), { "class": "num" });
      cell(row, p.cashier);
      cell(row, p.channel, { dir: "ltr" });
      cell(row, E.clock(p.accepted_at));
      cell(row, p.attempts, { "class": "num" });
      cell(row, p.last_error, { dir: "ltr", "class": "detail", title: p.last_error || "" });
      tbl.appendChild(row);
    }
    box.appendChild(tbl);
  }
  function loadPending() {
    var token = E.token(), after = state.cursors[state.page];
    if (!token) { state.pending = null; renderPending(); return; }
    E.get("/v1/admin/pending?limit=" + PENDING_PAGE + (after ? "&after=" + encodeURIComponent(after) : ""),
      token, function (err, body) {
        if (err) { refused(err, "replay-message"); return; }
        state.pending = body;
        if (body.next) { state.cursors[state.page + 1] = body.next; }
        renderPending();
      });
  }
  function turn(step) {
    return function () {
      var next = state.page + step;
      if (next < 0 || (step > 0 && !state.cursors[next])) { return; }
      state.page = next;
      loadPending();
    };
  }

  function replayNow() {
    var token = E.token();
    if (!token) { return; }
    E.text("replay-message", "");
    E.post("/v1/admin/replay", token, "dashboard-replay-" + Date.now(), null, function (err, body) {
      if (err) { refused(err, "replay-message"); return; }
      E.text("replay-message", E.fill(t("replay_started"), { n: E.count(body.pending) }));
      window.setTimeout(loadPending, 1000);
    });
  }
  function reconcileNow() {
    var token = E.token();
    if (!token) { return; }
    E.text("reconcile-message", "");
    E.post("/v1/admin/reconcile", token, "dashboard-reconcile-" + Date.now(), null, function (err) {
      if (err) { refused(err, "reconcile-message"); }
    });
  }

  function loadRejected() {
    var token = E.token();
    if (!token) { state.rejected = null; render(); return; }
    E.get("/v1/admin/rejected", token, function (err, body) {
      if (err && (err.status === 401 || err.status === 403)) { forget("token_bad"); }
      else if (err) { state.error = "admin_error"; }
      else { state.rejected = body; state.error = null; }
      render();
    });
  }
  function load() { loadRejected(); loadPending(); }

  function render() {
    var token = E.token(), i, ids = ["admin-forget", "reconcile-now", "replay-now", "admin-tools"];
    for (i = 0; i < ids.length; i++) { $(ids[i]).hidden = !token; }
    renderRejected();
    renderPending();
    renderResolve();
  }

  function start() {
    $("admin-form").onsubmit = function (ev) {
      if (ev && ev.preventDefault) { ev.preventDefault(); }
      var token = $("admin-token").value.replace(/^\s+|\s+$/g, "");
      $("admin-token").value = "";
      E.keep("sessionStorage", E.TOKEN_KEY, token || null);
      state.error = null;
      load();
      return false;
    };
    $("admin-forget").onclick = function () { forget(null); render(); };
    $("resolve-form").onsubmit = function (ev) {
      if (ev && ev.preventDefault) { ev.preventDefault(); }
      submitResolve();
      return false;
    };
    $("resolve-cancel").onclick = function () { state.resolving = null; E.text("resolve-message", ""); renderResolve(); };
    $("reconcile-now").onclick = reconcileNow;
    $("replay-now").onclick = replayNow;
    $("pending-newer").onclick = turn(-1);
    $("pending-older").onclick = turn(1);
    load();
    window.setInterval(load, ADMIN_MS);
  }

  E.admin = { start: start, render: render, reload: loadRejected };
}());
