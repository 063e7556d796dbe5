// The ops page: polls the ops data endpoint and draws SVG charts by hand (no library, no CDN).
(function () {
  "use strict";

  const DATA_URL = document.getElementById("ops-script").dataset.url;
  const WINDOW_MINUTES = JSON.parse(document.getElementById("window-minutes").textContent);
  const POLL_MILLISECONDS = 5000;
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = {
    public_fallback: "#9333ea", analytics: "#0d9488", maintenance: "#64748b", heavy: "#a16207",
    pending: "#94a3b8", processing: "#3b82f6", completed: "#16a34a", failed: "#dc2626", cancelled: "#f59e0b",
    placed: "#94a3b8", p50: "#16a34a", p90: "#f59e0b", p99: "#dc2626",
  };
  const FALLBACK_COLORS = ["#0ea5e9", "#a855f7", "#84cc16", "#f43f5e", "#14b8a6"];
  // Point-in-time numbers (queues, dead letters) have no history on the server: keep what this page has seen.
  const history = { queues: {}, deadLetters: [] };

  function color({ name, color }, index) {
    return color || COLORS[name] || FALLBACK_COLORS[index % FALLBACK_COLORS.length];
  }

  function element(name, attributes, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // The top of the y axis: four gridline steps of a round size (1, 2, 3, 4, 5, 6 or 8 times a power of ten).
  function niceMaximum(value) {
    if (value <= 0) return 4;
    const rawStep = value / 4;
    const magnitude = Math.pow(10, Math.floor(Math.log10(rawStep)));
    for (const step of [1, 2, 3, 4, 5, 6, 8, 10]) if (rawStep <= step * magnitude) return 4 * step * magnitude;
    return 40 * magnitude;
  }

  function formatNumber(value) {
    if (value >= 100 || Number.isInteger(value)) return String(Math.round(value));
    return value.toFixed(value >= 10 ? 1 : 2);
  }

  function clock(milliseconds) {
    return new Date(milliseconds).toISOString().slice(11, 16);
  }

  // Draws axes and either lines or stacked bars. `series`: [{name, points: [[milliseconds, value], ...]}].
  function drawChart(svg, legend, { series, start, end, bars = false, unit = "" }) {
    const width = svg.clientWidth || 480;
    const height = svg.clientHeight || 224;
    const margin = { top: 10, right: 12, bottom: 22, left: 44 };
    const plotWidth = width - margin.left - margin.right;
    const plotHeight = height - margin.top - margin.bottom;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.replaceChildren();

    let maximum = 0;
    if (bars) {
      const totals = {};
      for (const { points } of series) for (const [time, value] of points) totals[time] = (totals[time] || 0) + value;
      maximum = Math.max(0, ...Object.values(totals));
    } else {
      for (const { points } of series) for (const [, value] of points) maximum = Math.max(maximum, value);
    }
    maximum = niceMaximum(maximum);
    const x = (time) => margin.left + ((time - start) / Math.max(end - start, 1)) * plotWidth;
    const y = (value) => margin.top + plotHeight - (value / maximum) * plotHeight;

    for (let tick = 0; tick <= 4; tick++) {
      const value = (maximum * tick) / 4;
      svg.append(element("line", { class: "grid", x1: margin.left, x2: width - margin.right, y1: y(value), y2: y(value) }));
      svg.append(element("text", { class: "axis", x: margin.left - 6, y: y(value) + 4, "text-anchor": "end" },
        formatNumber(value) + unit));
    }
    const tickStep = Math.max(1, Math.round((end - start) / 60000 / 6)) * 60000;
    for (let time = Math.ceil(start / tickStep) * tickStep; time <= end; time += tickStep) {
      svg.append(element("text", { class: "axis", x: x(time), y: height - 6, "text-anchor": "middle" }, clock(time)));
    }

    const hasData = series.some(({ points }) => points.length > 0);
    if (!hasData) {
      svg.append(element("text", { class: "empty", x: margin.left + plotWidth / 2, y: margin.top + plotHeight / 2,
        "text-anchor": "middle" }, "no data yet"));
    } else if (bars) {
      const barWidth = Math.max(2, (plotWidth / Math.max((end - start) / 60000, 1)) * 0.8);
      const stacked = {};
      series.forEach((entry, index) => {
        const { name, points } = entry;
        for (const [time, value] of points) {
          const base = stacked[time] || 0;
          stacked[time] = base + value;
          svg.append(element("rect", { x: x(time) - barWidth / 2, y: y(base + value), width: barWidth,
            height: y(base) - y(base + value), fill: color(entry, index) }));
          svg.lastChild.append(element("title", {}, `${clock(time)} ${name}: ${value}`));
        }
      });
    } else {
      series.forEach((entry, index) => {
        const { name, points } = entry;
        if (!points.length) return;
        const line = element("polyline", {
          points: points.map(([time, value]) => `${x(time).toFixed(1)},${y(value).toFixed(1)}`).join(" "),
          stroke: color(entry, index),
        });
        line.append(element("title", {}, name));
        svg.append(line);
      });
    }

    legend.replaceChildren(...series.map((entry, index) => {
      const { name, points } = entry;
      const item = document.createElement("li");
      item.style.setProperty("--swatch", color(entry, index));
      const last = points.length ? points[points.length - 1][1] : null;
      item.textContent = last === null ? name : `${name} ${formatNumber(last)}${unit}`;
      return item;
    }));
  }

  function tile(label, value, alert) {
    const node = document.createElement("div");
    node.className = "tile" + (alert ? " alert" : "");
    node.innerHTML = '<div class="value"></div><div class="label"></div>';
    node.querySelector(".value").textContent = value === null || value === undefined ? "–" : formatNumber(value);
    node.querySelector(".label").textContent = label;
    return node;
  }

  // A region whose queue has work and no live worker is in red: its orders wait (strict) or go public.
  function regionRow({ region, queue, strict, waiting, in_flight: inFlight, workers }) {
    const row = document.createElement("tr");
    if (workers === 0 && (waiting || 0) + (inFlight || 0) > 0) row.className = "alert";
    for (const [value, number] of [[region], [queue], [strict ? "yes" : "no"], [waiting, true], [inFlight, true],
                                   [workers, true]]) {
      const cell = document.createElement("td");
      if (number) cell.className = "number";
      cell.textContent = value === null || value === undefined ? "–" : number ? formatNumber(value) : value;
      row.append(cell);
    }
    return row;
  }

  function render(data) {
    const now = Date.parse(data.time);
    const windowStart = Date.parse(data.since);
    const pageStart = Math.max(windowStart, now - WINDOW_MINUTES * 60000);

    document.getElementById("updated").textContent = new Date(now).toISOString().slice(11, 19) + " UTC";
    document.getElementById("sources").replaceChildren(...Object.entries(data.sources_up).map(([source, up]) => {
      const badge = document.createElement("span");
      badge.className = "badge" + (up ? "" : " down");
      badge.textContent = `${source} ${up ? "up" : "down"}`;
      return badge;
    }));

    const tiles = [];
    for (const [status, count] of Object.entries(data.orders_by_status || {})) tiles.push(tile(`orders ${status}`, count));
    if (data.outbox) {
      tiles.push(tile("outbox unsent tasks", data.outbox.task.unsent, data.outbox.task.oldest_age_seconds > 60));
      tiles.push(tile("oldest unsent task, s", data.outbox.task.oldest_age_seconds, data.outbox.task.oldest_age_seconds > 60));
    }
    if (data.dead_letters) tiles.push(tile("dead letters pending", data.dead_letters.pending, data.dead_letters.pending > 0));
    document.getElementById("tiles").replaceChildren(...tiles);
    document.getElementById("regions").replaceChildren(...(data.regions || []).map(regionRow));

    if (data.queue_lengths) {
      for (const [queue, length] of Object.entries(data.queue_lengths)) {
        (history.queues[queue] = history.queues[queue] || []).push([now, length]);
      }
    }
    if (data.dead_letters) history.deadLetters.push([now, data.dead_letters.pending]);
    for (const points of [...Object.values(history.queues), history.deadLetters]) {
      while (points.length && points[0][0] < pageStart) points.shift();
    }
    const historyStart = Math.min(now - 60000, ...Object.values(history.queues).map((points) => points[0]?.[0] ?? now));

    drawChart(document.getElementById("chart-queues"), document.getElementById("legend-queues"), {
      series: Object.entries(history.queues).map(([name, points]) => ({ name, points })),
      start: historyStart, end: now,
    });

    const perStatus = {};
    for (const { minute, status, count } of data.orders_per_minute) {
      (perStatus[status] = perStatus[status] || []).push([Date.parse(minute), count]);
    }
    drawChart(document.getElementById("chart-orders"), document.getElementById("legend-orders"), {
      // Entering `pending` is being placed.
      series: ["pending", "processing", "completed", "failed", "cancelled"]
        .map((status) => ({ name: status === "pending" ? "placed" : status, points: perStatus[status] || [] })),
      start: windowStart, end: now, bars: true,
    });

    const percentiles = data.latency_percentiles.percentiles;
    drawChart(document.getElementById("chart-latency"), document.getElementById("legend-latency"), {
      series: percentiles.map((percentile, index) => ({
        name: `p${Math.round(percentile * 100)}`,
        points: data.latency_percentiles.minutes.map(({ minute, seconds }) => [Date.parse(minute), seconds[index]]),
      })),
      start: windowStart, end: now, unit: " s",
    });

    drawChart(document.getElementById("chart-dead-letters"), document.getElementById("legend-dead-letters"), {
      series: [{ name: "pending", color: "#dc2626", points: history.deadLetters }],
      start: historyStart, end: now,
    });
  }

  async function poll() {
    try {
      const response = await fetch(DATA_URL, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      render(await response.json());
    } catch (error) {
      document.getElementById("updated").textContent = `failed (${error.message}), retrying`;
    } finally {
      setTimeout(poll, POLL_MILLISECONDS);
    }
  }

  poll();
})();
