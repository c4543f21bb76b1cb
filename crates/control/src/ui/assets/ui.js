// Keeps a dashboard page live without reloading it: the server-sent events at /ui/live say
// something changed (an instance joined or left, or a few seconds passed for the figures),
// and the page's <main> is fetched again and swapped in place, keeping focus. A page whose
// <main> has data-live="off" (one with a form being filled) keeps its form: only its
// elements marked data-live-region are swapped. No framework.
(function () {
  "use strict";
  var status = document.getElementById("live");
  if (!status || !window.EventSource || !window.fetch) {
    return;
  }
  var busy = false;
  var again = false;

  // A page with a form keeps the form as typed and refreshes only its live regions
  // (elements with an id and data-live-region), such as what the instances applied.
  function swapRegions(current, next) {
    var regions = next.querySelectorAll("[data-live-region][id]");
    for (var i = 0; i < regions.length; i++) {
      var old = document.getElementById(regions[i].id);
      if (old && current.contains(old) && old.innerHTML !== regions[i].innerHTML) {
        old.replaceWith(regions[i].cloneNode(true));
      }
    }
  }

  function swap(html) {
    var current = document.getElementById("main");
    if (!current) {
      return;
    }
    var holder = document.createElement("template");
    holder.innerHTML = html.trim();
    var next = holder.content.firstElementChild;
    if (!next || next.innerHTML === current.innerHTML) {
      return;
    }
    if (current.getAttribute("data-live") === "off") {
      swapRegions(current, next);
      return;
    }
    var focused = document.activeElement && document.activeElement.id;
    current.replaceWith(next);
    if (focused) {
      var again_focused = document.getElementById(focused);
      if (again_focused) {
        again_focused.focus();
      }
    }
  }

  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    fetch(window.location.href, {
      headers: { "x-flotilla-fragment": "main" },
      credentials: "same-origin",
      cache: "no-store"
    })
      .then(function (response) {
        if (response.status === 401) {
          window.location.reload();
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html !== null) {
          swap(html);
          status.textContent = "live · updated " + new Date().toLocaleTimeString();
        }
      })
      .catch(function () {
        status.textContent = "reconnecting…";
      })
      .then(function () {
        busy = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }

  var source = new EventSource("/ui/live");
  source.addEventListener("registry", refresh);
  source.addEventListener("tick", refresh);
  source.onopen = function () {
    status.textContent = "live";
  };
  source.onerror = function () {
    status.textContent = "reconnecting…";
  };
})();
