/* Stageline: the little behaviour htmx does not give us. No eval, no inline handlers (CSP).
 *
 * The dialog shell (contract relied upon by every dialog fragment):
 *   <dialog id="modal" aria-labelledby="modal-title"><div id="modal-body"></div></dialog>
 *   - content swapped into #modal-body opens the dialog (showModal); the fragment should
 *     carry an element with id="modal-title";
 *   - any [data-close-dialog] element or Escape closes it; closing empties #modal-body and gives the focus
 *     back to the element that opened it.
 * Also:
 *   - htmx errors that are not swapped (403, 404, 500, network) show their reason in #flash;
 *   - forms with [data-drop-empty] leave empty fields out of their GET query string, so the
 *     pushed URL only names the filters in use;
 *   - <time data-relative> (the |when filter) shows its exact time in the viewer's own time
 *     zone, naming it, on hover, and keeps its "3 min ago" text current (localizeTimes).
 */
(function () {
  "use strict";

  var opener = null;

  function dialog() {
    return document.getElementById("modal");
  }

  function openModal() {
    var modal = dialog();
    if (!modal) return;
    if (!modal.open) {
      var active = document.activeElement;
      opener = active && active !== document.body && !modal.contains(active) ? active : null;
      modal.showModal();
    }
    // Focus the first thing to fill in (or the first field in error), not the close button.
    var body = document.getElementById("modal-body");
    if (!body) return;
    var first = body.querySelector("[autofocus], [aria-invalid=true]") ||
      body.querySelector("input:not([type=hidden]):not([disabled]), select:not([disabled]), textarea:not([disabled])") ||
      body.querySelector(".dialog-foot button:not([disabled]), button:not([disabled])");
    // A radio group is entered at its chosen option (as Tab does), not at its first one.
    if (first && first.type === "radio" && !first.checked && first.form) {
      var chosen = first.form.querySelector('input[type=radio][name="' + first.name + '"]:checked');
      if (chosen) first = chosen;
    }
    if (first) first.focus();
  }

  function closeModal() {
    var modal = dialog();
    if (modal && modal.open) modal.close();
  }

  function showFlash(text, kind) {
    var flash = document.getElementById("flash");
    if (!flash) return;
    flash.textContent = "";
    var item = document.createElement("p");
    item.className = "msg msg-" + (kind || "error");
    item.textContent = text;
    var close = document.createElement("button");
    close.type = "button";
    close.className = "link flash-close";
    close.setAttribute("aria-label", "Dismiss message");
    close.textContent = "×";
    item.appendChild(close);
    flash.appendChild(item);
  }

  function reasonOf(xhr) {
    if (!xhr) return "";
    var type = xhr.getResponseHeader("Content-Type") || "";
    var text = xhr.responseText || "";
    if (type.indexOf("html") !== -1) {
      var doc = new DOMParser().parseFromString(text, "text/html");
      var marked = doc.querySelector("[data-reason]");
      text = (marked || doc.body).textContent || "";
    }
    text = text.replace(/\s+/g, " ").trim();
    return text.length > 300 ? text.slice(0, 300) + "…" : text;
  }

  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail && event.detail.target;
    if (target && target.id === "modal-body" && target.children.length) openModal();
  });

  // A swap inside the open dialog (the plan re-rendered as inputs change) must not drop the
  // focus to the page: the element that had it is found again in the new content by its id,
  // or its name (and value, for a radio), and focused, so Tab goes on from where it was.
  var focusKey = null;
  document.addEventListener("htmx:beforeSwap", function () {
    var modal = dialog();
    var active = document.activeElement;
    focusKey = null;
    if (!(modal && modal.open && active && modal.contains(active))) return;
    focusKey = { id: active.id, name: active.name, value: active.type === "radio" ? active.value : null };
  });
  document.addEventListener("htmx:afterSettle", function () {
    var modal = dialog();
    var key = focusKey;
    focusKey = null;
    if (!key || !(modal && modal.open)) return;
    var active = document.activeElement;
    if (active && active !== document.body && modal.contains(active)) return;
    var again = (key.id && document.getElementById(key.id)) || null;
    if (!again && key.name) {
      var selector = '[name="' + key.name.replace(/"/g, '\\"') + '"]' + (key.value !== null ? '[value="' + String(key.value).replace(/"/g, '\\"') + '"]' : "");
      again = modal.querySelector(selector);
    }
    if (again && modal.contains(again)) again.focus();
    else openModal();
  });

  document.addEventListener("click", function (event) {
    var closer = event.target.closest("[data-close-dialog]");
    if (closer) {
      event.preventDefault();
      closeModal();
      return;
    }
    var dismiss = event.target.closest(".flash-close");
    if (dismiss) {
      var flash = document.getElementById("flash");
      if (flash) flash.textContent = "";
    }
  });

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      var modal = dialog();
      if (modal && modal.open) {
        event.preventDefault();
        closeModal();
      }
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    var modal = dialog();
    if (!modal) return;
    modal.addEventListener("close", function () {
      var body = document.getElementById("modal-body");
      if (body) body.textContent = "";
      if (opener && document.contains(opener)) opener.focus();
      opener = null;
    });
  });

  // An error of a request made from inside the open dialog is said inside it (the backdrop
  // hides #flash), in plain words, and the dialog stays usable: its buttons are enabled again.
  function showError(text, source) {
    var modal = dialog();
    var body = document.getElementById("modal-body");
    if (!(modal && modal.open && body && source && body.contains(source))) {
      showFlash(text);
      return;
    }
    var box = body.querySelector(".dialog-error");
    if (!box) {
      box = document.createElement("p");
      box.className = "msg msg-error dialog-error";
      box.setAttribute("role", "alert");
      var head = body.querySelector(".dialog-head");
      if (head && head.nextSibling) head.parentNode.insertBefore(box, head.nextSibling);
      else body.insertBefore(box, body.firstChild);
    }
    box.textContent = text;
    body.querySelectorAll("button[disabled].htmx-request, .htmx-request button[disabled]").forEach(function (button) {
      button.disabled = false;
    });
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    var body = document.getElementById("modal-body");
    var box = body && body.querySelector(".dialog-error");
    if (box && event.target && body.contains(event.target)) box.remove();
  });

  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail && event.detail.xhr;
    var status = xhr ? xhr.status : 0;
    var reason = reasonOf(xhr);
    if (status === 403 && xhr.getResponseHeader("X-Stageline-Csrf")) {
      showError(reason, event.detail.elt);  // already in plain words
      return;
    }
    var lead = status === 403 ? "Not allowed" : status === 404 ? "Not found" : status >= 500 ? "The server failed" : "Refused";
    if (status >= 500) reason = "the error was recorded; try again in a moment.";
    showError(reason ? lead + ": " + reason : lead + " (HTTP " + status + ").", event.detail.elt);
  });

  document.addEventListener("htmx:sendError", function (event) {
    showError("The server did not answer. Check your connection and try again.", event.detail && event.detail.elt);
  });

  // --- times: the viewer's time zone, named; relative text kept current ----------------------
  var exactFormat = null;
  try {
    exactFormat = new Intl.DateTimeFormat(undefined, {
      year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
      second: "2-digit", hour12: false, timeZoneName: "short"
    });
  } catch (e) { exactFormat = null; }

  // The same words as stageline/timefmt.py's format_relative.
  function relative(moment, now) {
    var seconds = (now - moment) / 1000;
    var ahead = seconds < 0;
    seconds = Math.abs(seconds);
    var amount;
    if (seconds < 45) return ahead ? "in a few seconds" : "just now";
    if (seconds < 3600) amount = Math.max(1, Math.round(seconds / 60)) + " min";
    else if (seconds < 86400) amount = Math.round(seconds / 3600) + " h";
    else if (seconds < 30 * 86400) amount = Math.round(seconds / 86400) + " d";
    else return null;  // keep the server's date
    return ahead ? "in " + amount : amount + " ago";
  }

  function localizeTimes(root) {
    var now = Date.now();
    (root || document).querySelectorAll("time[data-relative]").forEach(function (el) {
      var moment = Date.parse(el.getAttribute("datetime"));
      if (isNaN(moment)) return;
      if (exactFormat && !el.hasAttribute("data-localized")) {
        el.setAttribute("title", exactFormat.format(new Date(moment)));
        el.setAttribute("data-localized", "");
      }
      var text = relative(moment, now);
      if (text && el.textContent !== text) el.textContent = text;
    });
  }

  document.addEventListener("DOMContentLoaded", function () { localizeTimes(document); });
  document.addEventListener("htmx:afterSettle", function (event) { localizeTimes(event.target); });
  setInterval(function () { localizeTimes(document); }, 30000);

  document.addEventListener("htmx:configRequest", function (event) {
    var elt = event.detail && event.detail.elt;
    var form = elt && elt.closest && elt.closest("form[data-drop-empty]");
    if (!form || event.detail.verb !== "get") return;
    var params = event.detail.parameters;
    var names = [];
    if (params instanceof FormData) {
      params.forEach(function (value, name) { names.push(name); });
    } else {
      names = Object.keys(params);
    }
    names.forEach(function (name) {
      var value = params instanceof FormData ? params.get(name) : params[name];
      if (value === "" || value === null) {
        if (params instanceof FormData) params.delete(name);
        else delete params[name];
      }
    });
  });
})();
