// The service's own script (the Content-Security-Policy allows no other): live updates of an open
// ticket page through Server-Sent Events: when the page's version changes, its live region is
// fetched again (the forms outside it keep what is being typed), from the version the page rendered on,
// so nothing that lands meanwhile is missed; and a form with data-confirm asks
// before it is sent (an inline handler would be refused by the same policy).
(function () {
  "use strict";
  function typingIn(region) {
    var active = document.activeElement;
    return active && region.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName) && active.value;
  }
  document.addEventListener("submit", function (event) {
    var question = event.target.dataset && event.target.dataset.confirm;
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });
  // One live region: `wanted` is the newest version the stream announced, `shown` the version the region
  // holds (each rendering names its own). One fetch at a time, fetched again when a newer version was
  // announced meanwhile, so a change that lands while the page loads, or while an older fetch is on its
  // way, is never missed; a failed fetch is tried again.
  function follow(region) {
    var shown = region.dataset.version, wanted = shown, fetching = false, waiting = false, failures = 0;
    function retry() {  // the fetch failed: again, a little later each time (at most every 30 s)
      failures += 1;
      setTimeout(refresh, Math.min(30000, 1000 * failures));
    }
    function refresh() {
      if (fetching || shown === wanted) { return; }
      if (typingIn(region)) { waiting = true; return; }
      fetching = true;
      var asked = wanted;
      fetch(region.dataset.live, {credentials: "same-origin", headers: {"Accept": "text/html"}})
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          fetching = false;
          if (html === null) { retry(); return; }
          failures = 0;
          region.innerHTML = html;
          var marker = region.querySelector("[data-rendered-version]");
          shown = marker ? marker.dataset.renderedVersion : wanted;
          // A version announced while this fetch was on its way may be newer than what it brought: fetch
          // again. Otherwise what came is the newest there is (the stream may not have said it yet).
          if (wanted === asked) { wanted = shown; } else if (shown !== wanted) { refresh(); }
        }, function () { fetching = false; retry(); });
    }
    // The stream starts after the version this page rendered: a change since then is sent at once.
    var source = new EventSource(region.dataset.events + "?after=" + encodeURIComponent(shown));
    source.onmessage = function (event) {
      wanted = event.data;
      if (wanted !== shown) { refresh(); }
    };
    // What someone is typing in the region is not thrown away: the refresh waits until they leave it.
    region.addEventListener("focusout", function () {
      setTimeout(function () { if (waiting && !typingIn(region)) { waiting = false; refresh(); } }, 0);
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-events]").forEach(follow);
  });
})();
