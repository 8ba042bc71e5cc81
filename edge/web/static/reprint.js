/* The dashboard's "reprint a receipt" card: finds a payment by its receipt number with the
   token typed in (a counter's own payments, or a supervisor's or auditor's), fetches the
   receipt's fixed-width text and prints only that, on any printer the browser has. The
   token is used for these two requests and kept nowhere. ES5, textContent only. */
(function () {
  "use strict";
  var TIMEOUT_MS = 5000, T = window.EDGE_TEXT;

  function $(id) { return document.getElementById(id); }
  function t(key) {
    var lang = document.documentElement.getAttribute("lang") === "en" ? "en" : "ar";
    var v = T[lang][key];
    return v === undefined ? key : v;
  }
  function fetchText(url, token, accept, done) {
    var xhr = new XMLHttpRequest();
    xhr.open("GET", url, true);
    xhr.timeout = TIMEOUT_MS;
    xhr.setRequestHeader("Accept", accept);
    xhr.setRequestHeader("Authorization", "Bearer " + token);
    xhr.onreadystatechange = function () {
      if (xhr.readyState === 4) { done(xhr.status, xhr.responseText); }
    };
    xhr.send();
  }
  function say(key) { $("reprint-message").textContent = key ? t(key) : ""; }
  function refused(status) {
    if (status === 401 || status === 403) { return "reprint_token_bad"; }
    if (status === 404) { return "reprint_unknown"; }
    if (status === 400) { return "reprint_bad_number"; }
    return "reprint_failed";
  }

  function show(receiptText) {
    $("reprint-out").textContent = receiptText;
    $("reprint-out").hidden = false;
    $("reprint-print").hidden = false;
  }

  function find(ev) {
    if (ev && ev.preventDefault) { ev.preventDefault(); }
    var number = $("reprint-number").value.replace(/^\s+|\s+$/g, "").toUpperCase();
    var token = $("reprint-token").value.replace(/^\s+|\s+$/g, "");
    var paper = $("reprint-paper").value;
    $("reprint-out").hidden = true;
    $("reprint-print").hidden = true;
    if (!number || !token) { say("reprint_need"); return false; }
    say("reprint_looking");
    fetchText("/v1/payments/by-receipt/" + encodeURIComponent(number), token, "application/json",
      function (status, body) {
        var payment = null;
        try { payment = JSON.parse(body); } catch (e) { payment = null; }
        if (status !== 200 || !payment || !payment.payment_id) { say(refused(status)); return; }
        var url = "/v1/payments/" + encodeURIComponent(payment.payment_id) +
          "/receipt?format=text&paper=" + encodeURIComponent(paper);
        fetchText(url, token, "text/plain", function (st, receiptText) {
          $("reprint-token").value = "";
          if (st !== 200) { say(refused(st)); return; }
          say("");
          show(receiptText);
        });
      });
    return false;
  }

  function print() {
    // The print stylesheet shows only the receipt while this class is on the page.
    document.body.className += " printing-receipt";
    window.onafterprint = function () {
      document.body.className = document.body.className.replace(/ ?printing-receipt/g, "");
    };
    window.print();
  }

  $("reprint-form").onsubmit = find;
  $("reprint-print").onclick = print;
}());
