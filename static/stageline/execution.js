/* The execution page: what htmx does not do by itself. No eval, no inline handlers (CSP).
 *
 * The open log (#log-panel):
 * - The server sends the log as raw chunks (escaped text in <span>s) inside <pre id="log-lines">:
 *   the whole log with the panel, then only the chunks after the cursor, polled by htmx while
 *   the step runs. Each batch is turned here into numbered lines; ANSI colour codes (SGR) become
 *   spans with classes (ansi-fg-1, ansi-bold …); text is only ever set with textContent, so
 *   output is never read as HTML. Other escape sequences are dropped.
 * - Line numbers are links (?step=N#L12): following one highlights the line and scrolls to it.
 * - Search (#log-search) shows only the loaded lines that contain the text, marked.
 * - New output scrolls the log to the end while the reader is at the bottom; scrolling up
 *   pauses that (#log-resume says so and resumes), scrolling back to the bottom resumes it.
 * - The log follows the run: while nobody picked a step, when the step whose log is open is no
 *   longer running, the log of the step the server names (#live-poller[data-follow-step]:
 *   the running one, else the failed one) is opened. Picking a step (a link in the graph, a line
 *   number, or ?step= in the address) keeps the log on it; #log-follow goes back to following.
 * - The attempts of the open step (#step-attempts, SPEC §9): a link per attempt opens its log
 *   like a step's link does (a[data-log-url]); a waiting retry's "next attempt in 25 s"
 *   (time[data-countdown]: the seconds left when the server wrote it) counts down every second,
 *   from the browser's own clock of when it arrived (so a skewed clock changes nothing), in
 *   stageline.timefmt.format_countdown's words.
 * The stage graph: the step whose log is open stays highlighted, also after the live poll
 * redraws the cards that changed. A step's link (a[data-log-url]) opens its log here; the graph is an
 * hx-disable region (it shows names written by users), so this is done here rather than with
 * hx-get; without JavaScript the link opens the page at that step.
 */
(function () {
  "use strict";

  var pinned = new URLSearchParams(window.location.search).has("step");
  var switching = false; // a log panel is being loaded
  var view = null; // the open log's state (LogView)

  // --- ANSI (SGR) -------------------------------------------------------------------------------

  // CSI sequences (ESC [ … final), OSC sequences (ESC ] … BEL or ESC \), other two-byte escapes.
  var ESCAPES = /\x1b\[([0-9;?]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;
  var INCOMPLETE = /\x1b(\[[0-9;?]*|\][^\x07\x1b]*)?$/;

  function Style() {
    this.fg = null;
    this.bg = null;
    this.bold = false;
    this.dim = false;
    this.italic = false;
    this.underline = false;
  }

  Style.prototype.apply = function (params) {
    var codes = params === "" ? [0] : params.split(";").map(function (p) { return p === "" ? 0 : parseInt(p, 10); });
    for (var i = 0; i < codes.length; i++) {
      var c = codes[i];
      if (c === 0) { Style.call(this); }
      else if (c === 1) this.bold = true;
      else if (c === 2) this.dim = true;
      else if (c === 3) this.italic = true;
      else if (c === 4) this.underline = true;
      else if (c === 22) { this.bold = false; this.dim = false; }
      else if (c === 23) this.italic = false;
      else if (c === 24) this.underline = false;
      else if (c >= 30 && c <= 37) this.fg = c - 30;
      else if (c === 39) this.fg = null;
      else if (c >= 40 && c <= 47) this.bg = c - 40;
      else if (c === 49) this.bg = null;
      else if (c >= 90 && c <= 97) this.fg = c - 90 + 8;
      else if (c >= 100 && c <= 107) this.bg = c - 100 + 8;
      else if ((c === 38 || c === 48) && codes[i + 1] === 5) {
        // 256 colours: the first 16 have a class; the others keep the default colour.
        var n = codes[i + 2];
        if (c === 38) this.fg = n < 16 ? n : null; else this.bg = n < 16 ? n : null;
        i += 2;
      } else if ((c === 38 || c === 48) && codes[i + 1] === 2) {
        i += 4; // 24-bit colour: no class for it (CSP allows no inline style), default colour
      }
    }
  };

  Style.prototype.className = function () {
    var names = [];
    if (this.fg !== null) names.push("ansi-fg-" + this.fg);
    if (this.bg !== null) names.push("ansi-bg-" + this.bg);
    if (this.bold) names.push("ansi-bold");
    if (this.dim) names.push("ansi-dim");
    if (this.italic) names.push("ansi-italic");
    if (this.underline) names.push("ansi-underline");
    return names.join(" ");
  };

  // --- the open log -------------------------------------------------------------------------------

  function LogView(panel, pre) {
    this.panel = panel;
    this.pre = pre;
    this.lineUrl = panel.getAttribute("data-line-url") || "";
    this.lines = []; // each: {segments: [[text, className]], el: element}
    this.open = null; // the last line, while no newline has ended it
    this.style = new Style();
    this.carry = ""; // an escape sequence cut by a chunk boundary
    this.query = "";
    this.follow = true;
  }

  LogView.prototype.absorb = function () {
    // Raw chunks are the children that are not rendered lines yet.
    var text = "";
    var raw = [];
    for (var node = this.pre.firstChild; node; node = node.nextSibling) {
      if (node.nodeType === 1 && node.classList.contains("log-line")) continue;
      text += node.textContent;
      raw.push(node);
    }
    raw.forEach(function (node) { node.parentNode.removeChild(node); });
    if (text) this.feed(text);
  };

  LogView.prototype.feed = function (text) {
    text = this.carry + text;
    var cut = text.match(INCOMPLETE);
    this.carry = cut ? cut[0] : "";
    if (cut) text = text.slice(0, text.length - cut[0].length);
    text = text.replace(/\r\n/g, "\n");
    var fragment = document.createDocumentFragment();
    var touched = [];
    var self = this;
    var last = 0;
    var match;

    function addText(piece) {
      var parts = piece.split("\n");
      for (var p = 0; p < parts.length; p++) {
        var part = parts[p];
        if (p > 0) {
          self.open = null; // a newline ended the line
          if (part === "" && p === parts.length - 1) continue; // the next line has no text yet
        }
        var line = self.open;
        if (!line) {
          line = { segments: [], el: null, number: self.lines.length + 1 };
          self.lines.push(line);
          self.open = line;
        }
        var overwrite = part.lastIndexOf("\r");
        if (overwrite !== -1) { // a carriage return: what follows overwrites the line
          line.segments = [];
          part = part.slice(overwrite + 1);
        }
        if (part) line.segments.push([part, self.style.className()]);
        if (touched.indexOf(line) === -1) touched.push(line);
      }
    }

    ESCAPES.lastIndex = 0;
    while ((match = ESCAPES.exec(text)) !== null) {
      if (match.index > last) addText(text.slice(last, match.index));
      if (match[2] === "m") this.style.apply(match[1] || "");
      last = ESCAPES.lastIndex;
    }
    if (last < text.length) addText(text.slice(last));

    touched.forEach(function (line) {
      var fresh = !line.el;
      self.render(line);
      if (fresh) fragment.appendChild(line.el);
    });
    this.pre.appendChild(fragment);
    if (this.query) this.countMatches();
  };

  LogView.prototype.render = function (line) {
    if (!line.el) {
      line.el = document.createElement("span");
      line.el.className = "log-line";
      line.el.id = "L" + line.number;
      var number = document.createElement("a");
      number.className = "log-ln";
      number.href = this.lineUrl + "#L" + line.number;
      number.setAttribute("data-line", String(line.number));
      number.setAttribute("aria-label", "Line " + line.number);
      line.el.appendChild(number);
      line.body = document.createElement("span");
      line.body.className = "log-text";
      line.el.appendChild(line.body);
    }
    var body = line.body;
    body.textContent = "";
    var query = this.query;
    var full = line.segments.map(function (s) { return s[0]; }).join("");
    var hits = [];
    if (query) {
      var lower = full.toLowerCase();
      for (var at = lower.indexOf(query); at !== -1; at = lower.indexOf(query, at + query.length)) {
        hits.push([at, at + query.length]);
      }
    }
    line.el.classList.toggle("log-hidden", Boolean(query) && hits.length === 0);
    var offset = 0;
    line.segments.forEach(function (segment) {
      var text = segment[0];
      var span = document.createElement("span");
      if (segment[1]) span.className = segment[1];
      var start = offset;
      var end = offset + text.length;
      var done = start;
      hits.forEach(function (hit) {
        var from = Math.max(hit[0], start);
        var to = Math.min(hit[1], end);
        if (from >= to) return;
        if (from > done) span.appendChild(document.createTextNode(text.slice(done - start, from - start)));
        var mark = document.createElement("mark");
        mark.textContent = text.slice(from - start, to - start);
        span.appendChild(mark);
        done = to;
      });
      if (done < end) span.appendChild(document.createTextNode(text.slice(done - start)));
      body.appendChild(span);
      offset = end;
    });
    if (!line.segments.length) body.appendChild(document.createTextNode(""));
  };

  LogView.prototype.search = function (query) {
    this.query = query.toLowerCase();
    var self = this;
    this.lines.forEach(function (line) { self.render(line); });
    this.countMatches();
  };

  LogView.prototype.countMatches = function () {
    var count = document.getElementById("log-search-count");
    if (!count) return;
    if (!this.query) { count.textContent = ""; return; }
    var shown = this.pre.querySelectorAll(".log-line:not(.log-hidden)").length;
    count.textContent = shown + " of " + this.lines.length + (this.lines.length === 1 ? " line" : " lines");
  };

  LogView.prototype.atBottom = function () {
    var el = this.pre;
    return el.scrollHeight - el.scrollTop - el.clientHeight < 24;
  };

  LogView.prototype.toEnd = function () {
    this.pre.scrollTop = this.pre.scrollHeight;
  };

  LogView.prototype.setFollow = function (follow) {
    this.follow = follow;
    var resume = document.getElementById("log-resume");
    if (resume) resume.hidden = follow || !document.querySelector("#log-poller[hx-get]");
  };

  LogView.prototype.target = function (number, scroll) {
    var previous = this.pre.querySelectorAll(".log-target");
    for (var i = 0; i < previous.length; i++) previous[i].classList.remove("log-target");
    var line = document.getElementById("L" + number);
    if (!line || !this.pre.contains(line)) return false;
    line.classList.add("log-target");
    this.setFollow(false);
    if (scroll) {
      this.pre.scrollTop = line.offsetTop - this.pre.clientHeight / 3; // .log is positioned
      this.panel.scrollIntoView({ block: "nearest" });
    }
    return true;
  };

  function startLog() {
    var panel = document.getElementById("log-panel");
    var pre = document.getElementById("log-lines");
    view = panel && pre ? new LogView(panel, pre) : null;
    if (!view) return;
    view.absorb();
    var box = document.getElementById("log-search-box");
    if (box) box.hidden = false;
    pre.addEventListener("scroll", function () {
      if (view && view.pre === pre) view.setFollow(view.atBottom());
    });
    var hash = /^#L(\d+)$/.exec(window.location.hash);
    var step = new URLSearchParams(window.location.search).get("step");
    if (hash && (!step || step === panel.getAttribute("data-step")) && view.target(hash[1], true)) return;
    view.toEnd();
    view.setFollow(true);
  }

  // --- a waiting retry's countdown ---------------------------------------------------------------

  function pad(n) { return n < 10 ? "0" + n : String(n); }

  function formatCountdown(seconds) { // as stageline.timefmt.format_countdown
    if (seconds < 60) return seconds + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min " + pad(seconds % 60) + " s";
    return Math.floor(seconds / 3600) + " h " + pad(Math.floor((seconds % 3600) / 60)) + " min";
  }

  function tickCountdowns() {
    var now = Date.now();
    var clocks = document.querySelectorAll("time[data-countdown]");
    for (var i = 0; i < clocks.length; i++) {
      var el = clocks[i];
      if (!el.hasAttribute("data-counted-from")) el.setAttribute("data-counted-from", String(now));
      var gone = Math.floor((now - parseInt(el.getAttribute("data-counted-from"), 10)) / 1000);
      var left = Math.max(0, parseInt(el.getAttribute("data-countdown"), 10) - gone);
      var text = formatCountdown(isNaN(left) ? 0 : left);
      if (el.textContent !== text) el.textContent = text;
    }
  }

  setInterval(tickCountdowns, 250); // a quarter second: a second's change is never late

  // --- following the run ---------------------------------------------------------------------------

  function stepStatus(stepId) {
    var icon = document.querySelector('#stage-graph .step[data-step="' + stepId + '"] .step-icon');
    return icon ? icon.getAttribute("data-status") : "";
  }

  function updateFollowButton() {
    var button = document.getElementById("log-follow");
    var live = document.querySelector("#live-poller[data-live]");
    if (button) button.hidden = !(pinned && live);
  }

  function openLog(url) {
    if (!window.htmx || !document.getElementById("log-panel")) return false;
    switching = true;
    window.htmx.ajax("GET", url, { target: "#log-panel", swap: "outerHTML" });
    return true;
  }

  function followRun() {
    updateFollowButton();
    if (pinned || switching) return;
    var live = document.getElementById("live-poller");
    var panel = document.getElementById("log-panel");
    if (!live || !panel) return;
    var next = live.getAttribute("data-follow-step");
    var current = panel.getAttribute("data-step");
    if (!next || next === current) return;
    if (current && stepStatus(current) === "RUNNING") return; // a parallel step still runs
    openLog(live.getAttribute("data-follow-url"));
  }

  function markSelectedStep() {
    var panel = document.getElementById("log-panel");
    var selected = panel ? panel.getAttribute("data-step") : null;
    var steps = document.querySelectorAll("#stage-graph .step");
    for (var i = 0; i < steps.length; i++) {
      steps[i].classList.toggle("selected", steps[i].getAttribute("data-step") === selected);
    }
  }

  function setAddress(url) {
    try {
      window.history.replaceState(window.history.state, "", url);
    } catch (e) { /* a URL of another origin: never the case here */ }
  }

  // --- events -------------------------------------------------------------------------------------

  document.addEventListener("htmx:beforeSwap", function (event) {
    var detail = event.detail || {};
    // A log poll answered after its panel was replaced (another step opened) is dropped, so
    // that one step's lines never land in another step's log.
    if (detail.elt && !document.body.contains(detail.elt)) detail.shouldSwap = false;
    var target = detail.target;
    var panel = document.getElementById("log-panel");
    var path = detail.requestConfig && detail.requestConfig.path;
    if (target && target.id === "log-lines" && panel && path &&
        path.indexOf("/steps/" + panel.getAttribute("data-step") + "/") === -1) {
      detail.shouldSwap = false;
    }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var target = event.detail && event.detail.target;
    if (target && target.id === "log-panel" && !event.detail.successful) switching = false;
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail && event.detail.target;
    if (!target) return;
    if (target.id === "log-lines" && view && view.pre === target) {
      view.absorb();
      if (view.follow) view.toEnd();
      view.setFollow(view.follow);
    }
  });

  document.addEventListener("htmx:afterSettle", function () {
    tickCountdowns(); // a countdown that just arrived counts from now
    var panel = document.getElementById("log-panel");
    if (panel && (!view || view.panel !== panel)) {
      switching = false;
      startLog();
      var input = document.getElementById("log-search");
      if (input && view && input.value) view.search(input.value);
    }
    markSelectedStep();
    followRun();
  });

  document.addEventListener("input", function (event) {
    if (event.target && event.target.id === "log-search" && view) view.search(event.target.value);
  });

  document.addEventListener("click", function (event) {
    if (!event.target.closest || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    var number = event.target.closest("#log-lines a.log-ln");
    if (number && view) {
      event.preventDefault();
      pinned = true;
      setAddress(number.getAttribute("href"));
      view.target(number.getAttribute("data-line"), false);
      updateFollowButton();
      return;
    }
    if (event.target.closest("#log-resume") && view) {
      view.toEnd();
      view.setFollow(true);
      return;
    }
    if (event.target.closest("#log-follow")) {
      pinned = false;
      setAddress(window.location.pathname);
      followRun();
      return;
    }
    var link = event.target.closest("a[data-log-url]");
    if (!link) return;
    if (openLog(link.getAttribute("data-log-url"))) {
      event.preventDefault();
      pinned = true;
      setAddress(link.getAttribute("href").split("#")[0]);
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    tickCountdowns();
    startLog();
    markSelectedStep();
    followRun();
  });
})();
