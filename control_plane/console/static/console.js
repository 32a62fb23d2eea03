// Progressive enhancement only: every page works without this script.
// - [data-poll="URL"]: refresh the element's content from URL every second (live samples).
// - [data-copy="ID"]: copy the text of element ID to the clipboard.
// - [data-autosubmit]: a change submits the form through its [data-refresh] button, so the
//   page re-renders (the value input that fits a filter operator, for example).
(function () {
  "use strict";
  function poll(el) {
    var url = el.getAttribute("data-poll");
    var busy = false;
    setInterval(function () {
      if (busy || document.hidden) { return; }
      busy = true;
      fetch(url, {credentials: "same-origin", headers: {"Accept": "text/html"}})
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html !== null && html !== el.innerHTML) { el.innerHTML = html; }
        })
        .catch(function () { /* the next tick tries again */ })
        .finally(function () { busy = false; });
    }, 1000);
  }
  function copy(btn) {
    btn.addEventListener("click", function () {
      var target = document.getElementById(btn.getAttribute("data-copy"));
      if (!target || !navigator.clipboard) { return; }
      navigator.clipboard.writeText(target.textContent.trim()).then(function () {
        var label = btn.textContent;
        btn.textContent = "Copied";
        setTimeout(function () { btn.textContent = label; }, 1500);
      });
    });
  }
  function autosubmit(el) {
    el.addEventListener("change", function () {
      var form = el.form;
      var refresh = form && form.querySelector("[data-refresh]");
      if (refresh) { refresh.click(); }
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(poll);
    document.querySelectorAll("[data-copy]").forEach(copy);
    document.querySelectorAll("[data-autosubmit]").forEach(autosubmit);
  });
})();
