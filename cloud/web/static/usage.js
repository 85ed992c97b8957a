// Usage events of the terminal, loaded only while the farmer's consent for service metrics is active
// (cloud/web/usage/routes.py decides; the server keeps nothing without the consent either).
// A page view when the page is shown; clicks on links and buttons (where they lead) and the time the page
// was visible when it is left, sent with navigator.sendBeacon as a form post carrying the CSRF token.
(function () {
  var script = document.getElementById("usage-script");
  if (!script || !navigator.sendBeacon || !window.URLSearchParams) { return; }
  var page = location.pathname, clicks = [], shownMs = 0, since = null, left = false;
  function send(events) {
    var body = new URLSearchParams();
    body.set("csrf_token", script.getAttribute("data-csrf"));
    body.set("events", JSON.stringify(events));
    navigator.sendBeacon(script.getAttribute("data-endpoint"), body);
  }
  function shown() { since = Date.now(); left = false; }
  function leave() {
    if (left) { return; }
    if (since !== null) { shownMs += Date.now() - since; since = null; }
    var batch = clicks.splice(0, clicks.length);
    batch.push({k: "leave", p: page, ms: Math.min(shownMs, 86400000)});
    shownMs = 0;
    left = true;
    send(batch);
  }
  document.addEventListener("click", function (event) {
    var el = event.target.closest ? event.target.closest("a[href], button") : null;
    var to = el && (el.tagName === "A" ? el.href : (el.form ? el.form.action : null));
    if (!to) { return; }
    var url = new URL(to, location.href);
    if (url.origin === location.origin) { clicks.push({k: "click", p: page, t: url.pathname}); }
  }, true);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") { leave(); } else { shown(); }
  });
  window.addEventListener("pagehide", leave);
  window.addEventListener("pageshow", function (event) { if (event.persisted) { shown(); send([{k: "view", p: page}]); } });
  if (document.visibilityState === "visible") { shown(); }
  send([{k: "view", p: page}]);
})();
