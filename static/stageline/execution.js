/* The execution page: what htmx does not do by itself. No eval, no inline handlers (CSP).
 *
 * - The open log follows new output: when chunks are appended to #log-lines and the reader
 *   was at the bottom, it stays at the bottom (scrolling up stops the following).
 * - The step whose log is open stays highlighted in the stage graph, also after the graph is
 *   re-rendered by the live poll or another step's log is opened.
 * - A step's link in the graph (a[data-log-url]) opens its log in #log-panel. The graph is an
 *   hx-disable region (it shows names and messages written by users), so this is done here
 *   rather than with hx-get; without JavaScript the link opens the page at that step.
 */
(function () {
  "use strict";

  var wasAtBottom = true;

  function atBottom(el) {
    return el.scrollHeight - el.scrollTop - el.clientHeight < 24;
  }

  function scrollToEnd() {
    var lines = document.getElementById("log-lines");
    if (lines) lines.scrollTop = lines.scrollHeight;
  }

  function markSelectedStep() {
    var panel = document.getElementById("log-panel");
    var selected = panel ? panel.getAttribute("data-step") : null;
    var steps = document.querySelectorAll("#stage-graph .step");
    for (var i = 0; i < steps.length; i++) {
      steps[i].classList.toggle("selected", steps[i].getAttribute("data-step") === selected);
    }
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail && event.detail.target;
    if (target && target.id === "log-lines") wasAtBottom = atBottom(target);
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail && event.detail.target;
    if (!target) return;
    if (target.id === "log-lines" && wasAtBottom) scrollToEnd();
    if (target.id === "log-panel") {
      scrollToEnd();
      wasAtBottom = true;
    }
  });

  document.addEventListener("htmx:afterSettle", markSelectedStep);

  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-log-url]");
    if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    if (!window.htmx || !document.getElementById("log-panel")) return;
    event.preventDefault();
    window.htmx.ajax("GET", link.getAttribute("data-log-url"), { target: "#log-panel", swap: "outerHTML" });
  });

  document.addEventListener("DOMContentLoaded", function () {
    scrollToEnd();
    markSelectedStep();
  });
})();
