// Follows an order live: polls its API resource until the status is final and updates the page in place.
// The page is complete without this script (it then reloads itself); this only spares the reloads.
(function () {
  "use strict";

  const section = document.querySelector("[data-order]");
  if (!section) {
    return;
  }
  const statusUrl = section.dataset.statusUrl;
  const finalStatuses = new Set(section.dataset.finalStatuses.trim().split(/\s+/));
  const POLL_INTERVAL_MS = 1000;
  // While the API is unreachable, wait longer between tries, up to this.
  const MAX_POLL_INTERVAL_MS = 15000;
  let interval = POLL_INTERVAL_MS;

  function capitalize(text) {
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  function localize(time) {
    time.textContent = new Date(time.dateTime).toLocaleTimeString();
  }

  function statusBadge(status) {
    const badge = document.createElement("span");
    badge.className = "status status-" + status;
    badge.textContent = capitalize(status);
    return badge;
  }

  function renderTimeline(timeline) {
    const list = section.querySelector("[data-timeline]");
    const items = timeline.map(function (change) {
      const item = document.createElement("li");
      const time = document.createElement("time");
      time.dateTime = change.at;
      localize(time);
      item.append(statusBadge(change.status), " ", time);
      if (change.note) {
        const note = document.createElement("span");
        note.className = "note";
        note.textContent = change.note;
        item.append(" ", note);
      }
      return item;
    });
    list.replaceChildren.apply(list, items);
  }

  function render(order) {
    const label = section.querySelector("[data-status-label]");
    if (section.dataset.status !== order.status) {
      label.className = "status status-" + order.status;
      label.textContent = capitalize(order.status);
      section.dataset.status = order.status;
    }
    renderTimeline(order.timeline);
    const failure = section.querySelector("[data-failure]");
    section.querySelector("[data-failure-reason]").textContent = order.failure_reason || "";
    failure.hidden = !order.failure_reason;
    section.querySelector("[data-updating]").hidden = finalStatuses.has(order.status);
  }

  async function poll() {
    try {
      const response = await fetch(statusUrl, { headers: { Accept: "application/json" }, cache: "no-store" });
      if (!response.ok) {
        throw new Error("The order's status answered " + response.status);
      }
      const order = await response.json();
      render(order);
      if (finalStatuses.has(order.status)) {
        return;
      }
      interval = POLL_INTERVAL_MS;
    } catch (error) {
      interval = Math.min(interval * 2, MAX_POLL_INTERVAL_MS);
    }
    window.setTimeout(poll, interval);
  }

  section.querySelectorAll("[data-timeline] time").forEach(localize);
  if (!finalStatuses.has(section.dataset.status)) {
    window.setTimeout(poll, interval);
  }
})();
