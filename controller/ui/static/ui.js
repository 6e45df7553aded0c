// Live state: one EventSource on /ui/events. VM states update every element marked data-vm-state="<uuid>",
// other resources' states and statuses (hosts, primary storage, VIPs, EIPs, port forwarding) data-res-state /
// data-res-status;
// jobs go to the task panel and to job rows (data-job); a migrating VM's progress to data-vm-progress="<uuid>".
// No reload needed.
(function () {
  "use strict";
  function setState(el, state, label) {
    if (el.dataset.state !== state) {
      // the states this element went through on this page (for tests and for a glance in devtools)
      el.dataset.seen = (el.dataset.seen ? el.dataset.seen + " " : "") + state;
    }
    el.dataset.state = state;
    el.textContent = label;
  }
  function start() {
    var url = document.body.dataset.live;
    if (!url || !window.EventSource) { return; }
    var src = new EventSource(url);
    // a page left (or kept in the back-forward cache) gives its connection back: over HTTP/1.1 the browser has
    // only 6 connections to the controller, and open streams of old pages made the next page wait for one
    window.addEventListener("pagehide", function () { src.close(); });
    window.addEventListener("pageshow", function (ev) { if (ev.persisted) { window.location.reload(); } });
    src.addEventListener("vm", function (ev) {
      var d = JSON.parse(ev.data);
      document.querySelectorAll('[data-vm-state="' + d.uuid + '"]').forEach(function (el) {
        setState(el, d.state, d.label);
      });
    });
    src.addEventListener("res", function (ev) {
      var d = JSON.parse(ev.data);
      document.querySelectorAll('[data-res-state="' + d.uuid + '"]').forEach(function (el) {
        setState(el, d.state, d.label);
      });
      if (d.status) {
        document.querySelectorAll('[data-res-status="' + d.uuid + '"]').forEach(function (el) {
          setState(el, d.status, d.statusLabel);
        });
      }
    });
    src.addEventListener("progress", function (ev) {
      var d = JSON.parse(ev.data);
      document.querySelectorAll('[data-vm-progress="' + d.uuid + '"]').forEach(function (el) {
        el.hidden = !!d.done;
        el.textContent = d.label;
        el.dataset.percent = d.percent === null || d.percent === undefined ? "" : String(d.percent);
      });
    });
    src.addEventListener("job", function (ev) {
      var d = JSON.parse(ev.data);
      var list = document.getElementById("live-jobs");
      if (list) {
        var li = list.querySelector('[data-job="' + d.uuid + '"]');
        if (!li) {
          li = document.createElement("li");
          li.dataset.job = d.uuid;
          var name = document.createElement("span");
          name.textContent = d.apiName + " ";
          var st = document.createElement("span");
          st.className = "state";
          li.appendChild(name);
          li.appendChild(st);
          list.insertBefore(li, list.firstChild);
          while (list.children.length > 8) { list.removeChild(list.lastChild); }
        }
        setState(li.querySelector(".state"), d.state, d.label);
      }
      document.querySelectorAll('tr[data-job="' + d.uuid + '"] .state').forEach(function (el) {
        setState(el, d.state, d.label);
      });
    });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
