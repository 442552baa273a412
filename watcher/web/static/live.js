// Live updates: on every server-sent event, fetch the fresh page body and swap it in.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!window.EventSource) { return; }
  var source = new EventSource("events");
  var pending = false;
  function refresh() {
    if (pending) { return; }
    pending = true;
    fetch("fragment", { cache: "no-store" }).then(function (r) { return r.text(); })
      .then(function (html) { document.getElementById("main").innerHTML = html; })
      .finally(function () { pending = false; });
  }
  source.onopen = function () { live.textContent = "live"; };
  source.onerror = function () { live.textContent = "reconnecting…"; };
  source.onmessage = function (message) {
    var event = JSON.parse(message.data);
    live.textContent = "live: " + event.action;
    document.body.setAttribute("data-last-action", event.action);
    refresh();
  };
})();
