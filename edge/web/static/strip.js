/* The status strip at the top (power, link, outbox, rejected, mirror) and the header's mode:
   what needs an operator, first and in colour, before any card. The mapping from status to
   amber and red is DESIGN 5.19's; `assess` is its one definition. */
(function () {
  "use strict";
  var E = window.EDGE, NEAR = 0.8;
  var LIMITS = ["max_count", "max_total", "max_age_h", "mirror_max_age_h"];
  var RANK = { ok: 0, warn: 1, bad: 2 };

  function worse(a, b) { return RANK[b] > RANK[a] ? b : a; }

  // {level: ok|warn|bad, reasons: [{key, level, values}]} of one status document.
  function assess(s) {
    var reasons = [], o = s.outbox, mi = s.mirror, lim = s.offline_limits || {}, i;
    var add = function (key, level, values) { reasons.push({ key: key, level: level, values: values || {} }); };
    if (s.mode === "read_only" || s.mode === "shutting_down") { add("why_" + s.mode, "bad"); }
    var tasks = s.tasks || {}, name;
    for (name in tasks) {
      if (tasks.hasOwnProperty(name) && tasks[name].state === "failed") { add("why_task", "bad", { name: name }); }
    }
    for (i = 0; i < LIMITS.length; i++) {
      var l = lim[LIMITS[i]];
      if (!l || !l.value) { continue; }
      if (l.tripped) { add("why_limit_hit", "bad", { limit: E.t("limit_" + LIMITS[i]) }); }
      else if (l.used !== null && l.used >= NEAR * l.value) { add("why_limit_near", "warn", { limit: E.t("limit_" + LIMITS[i]) }); }
    }
    if (s.power.state === "low") { add("why_power_low", "bad"); }
    else if (s.power.state === "battery") { add("why_power_battery", "warn"); }
    if (s.link.state === "down" || s.link.state === "degraded") { add("why_link_" + s.link.state, "warn"); }
    if (o.unresolved) { add("why_rejected", "warn", { n: E.count(o.unresolved) }); }
    if (mi.bootstrap) { add("why_bootstrap", "warn"); }
    else if (mi.stale) { add("why_mirror_stale", "warn"); }
    var level = "ok";
    for (i = 0; i < reasons.length; i++) { level = worse(level, reasons[i].level); }
    return { level: level, reasons: reasons };
  }

  function item(id, level, shown) {
    var el = E.$(id);
    el.className = "strip-item level-" + level;
    el.setAttribute("data-level", level);
    E.text(id + "-value", shown);
  }

  function ageLevel(age) { return age === null || age < 300 ? "ok" : age < 3600 ? "warn" : "bad"; }

  function renderStrip(s) {
    var p = s.power, l = s.link, o = s.outbox, mi = s.mirror, lim = s.offline_limits || {};
    var powerLevel = p.state === "mains" ? "ok" : p.state === "low" ? "bad" : "warn";
    item("strip-power", powerLevel, E.t("state_" + p.state));
    E.text("strip-charge", p.battery_charge === null || p.battery_charge === undefined ? "" : E.num(p.battery_charge) + "%");
    item("strip-link", l.state === "up" ? "ok" : l.state === "down" ? "bad" : "warn", E.t("link_" + l.state));
    var age = o.oldest_pending_age_s;
    item("strip-pending", ageLevel(age), E.count(o.pending));
    E.$("strip-pending-value").setAttribute("data-value", String(o.pending));
    E.text("strip-oldest", age === null ? "" : E.duration(age));
    E.$("strip-oldest").hidden = age === null;
    item("strip-rejected", o.unresolved ? "warn" : "ok", E.count(o.unresolved || 0));
    E.$("strip-rejected-value").setAttribute("data-value", String(o.unresolved || 0));
    var tooOld = lim.mirror_max_age_h && lim.mirror_max_age_h.tripped;
    var boot = mi.bootstrap, bar = E.$("strip-bootstrap");
    item("strip-mirror", tooOld ? "bad" : mi.stale || boot ? "warn" : "ok",
      boot ? E.t("bootstrapping") : mi.age_s === null || mi.age_s === undefined ? E.t("never") : E.duration(mi.age_s));
    bar.hidden = !boot;
    if (boot) {
      var share = boot.of ? Math.max(0, Math.min(1, boot.bills / boot.of)) : 0;
      E.$("strip-bootstrap-fill").style.width = share * 100 + "%";
      bar.setAttribute("data-bills", String(boot.bills));
      bar.setAttribute("data-of", String(boot.of));
      E.text("strip-bootstrap-text", E.count(boot.bills) + " / " + E.count(boot.of) + " (" + Math.floor(share * 100) + "%)");
    }
  }

  function renderHeader(s) {
    var found = assess(s), mode = E.$("mode"), i;
    // The node's own mode when it is not normal; "needs attention" when it is, yet something
    // on the list below wants an operator (never "Normal" in green beside trouble).
    var state = s.mode === "normal" && found.level !== "ok" ? "attention" : s.mode;
    mode.className = "badge level-" + found.level;
    mode.setAttribute("data-state", state);
    mode.setAttribute("data-level", found.level);
    mode.textContent = E.t("mode_" + state);
    var unresolved = s.outbox.unresolved || 0, alert = E.$("rejected-alert");
    alert.hidden = !unresolved;
    alert.setAttribute("data-value", unresolved);
    alert.textContent = E.fill(E.t("rejected_alert"), { n: E.count(unresolved) });
    var box = E.$("mode-reasons"), keys = [];
    box.innerHTML = "";
    for (i = 0; i < found.reasons.length; i++) {
      var r = found.reasons[i];
      keys.push(r.key);
      if (r.key === "why_rejected") { continue; } // the alert beside the mode says it, with the count
      box.appendChild(E.make("li", { "class": "level-" + r.level, "data-reason": r.key }, E.fill(E.t(r.key), r.values)));
    }
    box.setAttribute("data-reasons", keys.join(" "));
    box.hidden = !box.firstChild;
  }

  E.strip = { assess: assess, render: function (s) { renderHeader(s); renderStrip(s); } };
}());
