// The web UI's only script: it enhances pages that work without it.
// - Keyboard shortcuts: a key pressed outside a text field clicks the visible element
//   carrying data-key="<key>" (review decisions: L, D, N, K, S; C and B on automatic links).
// - "Go back" buttons (data-back) step back in the history.
// - Forms whose submit button carries data-confirm ask first.
// - An upload in progress (data-progress-url) is polled and its progress bar moved on.
"use strict";
(function () {
  function typing(target) {
    if (!target || !target.tagName) { return false; }
    var tag = target.tagName.toLowerCase();
    return tag === "input" || tag === "textarea" || tag === "select" || target.isContentEditable;
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) { return; }
    var key = (event.key || "").toLowerCase();
    if (key.length !== 1) { return; }
    var target = document.querySelector('[data-key="' + key + '"]');
    if (target && !target.disabled) {
      event.preventDefault();
      target.click();
    }
  });
  document.addEventListener("click", function (event) {
    var back = event.target.closest ? event.target.closest("[data-back]") : null;
    if (back) { event.preventDefault(); window.history.back(); return; }
    var asking = event.target.closest ? event.target.closest("[data-confirm]") : null;
    if (asking && !window.confirm(asking.getAttribute("data-confirm"))) { event.preventDefault(); }
  });
  document.addEventListener("DOMContentLoaded", function () {
    var backs = document.querySelectorAll("[data-back]");
    for (var i = 0; i < backs.length; i++) { backs[i].hidden = false; }
    var watched = document.querySelector("[data-progress-url]");
    if (!watched) { return; }
    var url = watched.getAttribute("data-progress-url");
    var bar = watched.querySelector("progress");
    var text = watched.querySelector("[data-progress-text]");
    function poll() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (response) { return response.json(); })
        .then(function (state) {
          if (bar && state.total) { bar.max = state.total; bar.value = state.done; }
          if (text && state.text) { text.textContent = state.text; }
          if (state.finished) { window.location.reload(); } else { window.setTimeout(poll, 1000); }
        })
        .catch(function () { window.setTimeout(poll, 3000); });
    }
    window.setTimeout(poll, 1000);
  });
})();
