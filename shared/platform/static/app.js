// The service's own script (the Content-Security-Policy allows no other): live updates of an open
// ticket page through Server-Sent Events: when the page's version changes, its live region is
// fetched again (the forms outside it keep what is being typed); and a form with data-confirm asks
// before it is sent (an inline handler would be refused by the same policy).
(function () {
  "use strict";
  function refresh(region) {
    fetch(region.dataset.live, {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) { region.innerHTML = html; } });
  }
  function typingIn(region) {
    var active = document.activeElement;
    return active && region.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName) && active.value;
  }
  document.addEventListener("submit", function (event) {
    var question = event.target.dataset && event.target.dataset.confirm;
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-events]").forEach(function (region) {
      var version = region.dataset.version, waiting = false;
      var source = new EventSource(region.dataset.events);
      source.onmessage = function (event) {
        if (event.data === version) { return; }
        version = event.data;
        // What someone is typing in the region is not thrown away: the refresh waits until they leave it.
        if (typingIn(region)) { waiting = true; } else { refresh(region); }
      };
      region.addEventListener("focusout", function () {
        setTimeout(function () { if (waiting && !typingIn(region)) { waiting = false; refresh(region); } }, 0);
      });
    });
  });
})();
