// Live alerts on every page: the person's inbox as Server-Sent Events from the console itself (/events).
// No framework, no build step, nothing from another host.
(function () {
  "use strict";
  if (!window.EventSource || document.body.dataset.signedIn !== "yes") { return; }
  var list = document.getElementById("live-alerts");
  if (!list) { return; }
  var linkText = document.body.dataset.caseLink || "";
  // Where an alert's case leads depends on the role (the server says: a page this person can open).
  var caseHref = document.body.dataset.caseHref || "";
  var source = new EventSource("/events");
  source.addEventListener("ready", function () { document.body.dataset.live = "ready"; });
  source.addEventListener("alert", function (event) {
    var alert;
    try { alert = JSON.parse(event.data); } catch (e) { return; }
    var item = document.createElement("li");
    item.className = "alert severity-" + String(alert.severity || "info").replace(/[^a-z]/g, "");
    var linked = caseHref && alert.case_id && /^[0-9a-f-]{36}$/.test(alert.case_id);
    var title = document.createElement(linked ? "a" : "span");
    title.textContent = alert.title || "";
    if (linked) {
      title.href = caseHref + alert.case_id;
      title.setAttribute("aria-label", (alert.title || "") + " — " + linkText);
    }
    item.appendChild(title);
    if (alert.body) {
      var body = document.createElement("span");
      body.className = "alert-body";
      body.textContent = " " + alert.body;
      item.appendChild(body);
    }
    list.insertBefore(item, list.firstChild);
    while (list.children.length > 5) { list.removeChild(list.lastChild); }
  });
  window.addEventListener("pagehide", function () { source.close(); });
})();
