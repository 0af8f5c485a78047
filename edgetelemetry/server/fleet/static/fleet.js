// The fleet page: reads /fleet/api/status and /fleet/api/series, draws tables and inline SVG.
// No dependencies, no network beyond this origin. Query parameters of the page:
//   hours (6)      plotted time range
//   fleet, device  restrict the view
//   limit (25)     how many devices get plots (the table lists them all)
//   refresh (15)   seconds between reloads; 0 stops
//   offline_after  recency window in seconds (the server's default otherwise)
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const PCTS = ["p50", "p90", "p99"];
  const W = 560, H = 220, M = { top: 12, right: 16, bottom: 28, left: 52 };
  const DOTS_UP_TO = 150; // points per line drawn as circles; more: the line only

  const params = new URLSearchParams(window.location.search);
  const num = (name, dflt) => {
    const v = parseFloat(params.get(name));
    return Number.isFinite(v) ? v : dflt;
  };
  const opts = {
    hours: num("hours", 6),
    limit: Math.max(0, Math.floor(num("limit", 25))),
    refresh: num("refresh", 15),
    fleet: params.get("fleet") || "",
    device: params.get("device") || "",
    offlineAfter: params.get("offline_after") || "",
  };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function span(seconds) {
    const s = Math.floor(Math.abs(seconds));
    if (s < 120) return s + "s";
    if (s < 7200) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    if (s < 172800) return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
    return Math.floor(s / 86400) + "d" + String(Math.floor((s % 86400) / 3600)).padStart(2, "0") + "h";
  }

  function ago(now, then) {
    if (then === null || then === undefined) return "never";
    return then > now ? "in " + span(then - now) + " (clock ahead)" : span(now - then) + " ago";
  }

  function utc(ts, withSeconds) {
    const iso = new Date(ts * 1000).toISOString();
    return withSeconds ? iso.slice(11, 19) : iso.slice(11, 16);
  }

  function fmt(v) {
    if (v === null || v === undefined) return "-";
    const a = Math.abs(v);
    if (a >= 1000) return v.toFixed(0);
    if (a >= 1 || a === 0) return v.toFixed(2).replace(/\.?0+$/, "");
    return v.toPrecision(3);
  }

  async function getJSON(path) {
    // from the origin: a page opened as http://user:pass@host/fleet resolves relative URLs with
    // the credentials in them, which fetch refuses; the browser's auth cache still applies
    const url = window.location.origin + path;
    const answer = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (!answer.ok) {
      let message = answer.status + " " + answer.statusText;
      try { message += ": " + (await answer.json()).message; } catch (e) { /* not JSON */ }
      throw new Error(path + " -> " + message);
    }
    return answer.json();
  }

  function query(extra) {
    const q = new URLSearchParams();
    if (opts.fleet) q.set("fleet", opts.fleet);
    if (opts.device) q.set("device", opts.device);
    if (opts.offlineAfter) q.set("offline_after", opts.offlineAfter);
    for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
    const s = q.toString();
    return s ? "?" + s : "";
  }

  // -- summary and table -------------------------------------------------------------------

  function renderSummary(status) {
    const s = status.summary;
    const p = document.getElementById("summary");
    p.replaceChildren(
      el("span", { class: "count", id: "count-devices" }, s.devices), " devices: ",
      el("span", { class: "count", id: "count-connected" }, s.connected), " connected, ",
      el("span", { class: "count", id: "count-offline" }, s.offline), " offline, ",
      el("span", { class: "count", id: "count-never" }, s.never), " never seen, ",
      el("span", { class: "count", id: "count-deregistered" }, s.deregistered), " deregistered",
      " \u00b7 connected = a heartbeat within " + status.offline_after + " s \u00b7 as of " +
        new Date(status.generated_at * 1000).toISOString().replace(/\.\d+Z$/, "Z"),
    );
  }

  function modelCell(m) {
    const cell = el("div", { class: "model" }, m.name + (m.version ? " " + m.version : ""));
    cell.append(el("span", { class: "flag" + (m.active ? " on" : ""), "data-flag": "active" },
      m.active ? "active" : "idle"));
    if (m.sampling) cell.append(el("span", { class: "flag on", "data-flag": "sampling" }, "sampling"));
    for (const f of m.latency) {
      cell.append(el("span", { class: "flag" }, f.metric + " p99 " + fmt(f.p99)));
    }
    return cell;
  }

  function renderTable(status) {
    const body = document.querySelector("#devices tbody");
    const rows = status.devices.map((d) => {
      const tr = el("tr", { "data-device": d.name, "data-state": d.state },
        el("td", { class: "name" }, d.name),
        el("td", {}, d.fleet),
        el("td", {}, el("span", { class: "badge " + d.state, "data-status": d.state }, d.state)),
        el("td", { class: "num", title: d.last_heartbeat ? new Date(d.last_heartbeat * 1000).toISOString() : "" },
          ago(status.generated_at, d.last_heartbeat)),
        el("td", {}, d.agent_version || "-"),
        el("td", {}, ...(d.models.length ? d.models.map(modelCell) : ["-"])),
      );
      return tr;
    });
    body.replaceChildren(...rows);
  }

  // -- plots -------------------------------------------------------------------------------

  function niceStep(range, ticks) {
    const raw = range / ticks;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (m * mag >= raw) return m * mag;
    return 10 * mag;
  }

  const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
    21600, 43200, 86400, 172800, 604800];

  function timeStep(range) {
    for (const s of TIME_STEPS) if (range / s <= 6) return s;
    return TIME_STEPS[TIME_STEPS.length - 1];
  }

  function plot(device, series) {
    const lines = PCTS.filter((p) => series.points[p] && series.points[p].length);
    const all = lines.flatMap((p) => series.points[p]);
    let t0 = Math.min(...all.map((pt) => pt[0])), t1 = Math.max(...all.map((pt) => pt[0]));
    if (t1 - t0 < 1) { t0 -= 60; t1 += 60; }
    const vmax = Math.max(...all.map((pt) => pt[1]), 0);
    const vmin = Math.min(...all.map((pt) => pt[1]), 0);
    const ystep = niceStep((vmax - vmin) || 1, 4);
    const y0 = Math.floor(vmin / ystep) * ystep, y1 = Math.max(Math.ceil(vmax / ystep) * ystep, y0 + ystep);
    const iw = W - M.left - M.right, ih = H - M.top - M.bottom;
    const x = (t) => M.left + ((t - t0) / (t1 - t0)) * iw;
    const y = (v) => M.top + ih - ((v - y0) / (y1 - y0)) * ih;

    const npoints = Math.max(...lines.map((p) => series.points[p].length));
    const root = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": `${series.model} ${series.metric} percentiles` });
    const grid = svg("g", { class: "grid" }), axis = svg("g", { class: "axis" });
    for (let v = y0; v <= y1 + ystep / 2; v += ystep) {
      grid.append(svg("line", { x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }));
      axis.append(svg("text", { x: M.left - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
    }
    const tstep = timeStep(t1 - t0);
    for (let t = Math.ceil(t0 / tstep) * tstep; t <= t1; t += tstep) {
      axis.append(svg("line", { x1: x(t), x2: x(t), y1: M.top + ih, y2: M.top + ih + 4 }));
      axis.append(svg("text", { x: x(t), y: H - 8, "text-anchor": "middle" }, utc(t, tstep < 60)));
    }
    axis.append(svg("line", { x1: M.left, x2: W - M.right, y1: M.top + ih, y2: M.top + ih }));
    axis.append(svg("line", { x1: M.left, x2: M.left, y1: M.top, y2: M.top + ih }));
    root.append(grid, axis);

    for (const p of lines) {
      const pts = series.points[p];
      // break the line where the device went quiet: a gap over 3x the median interval
      const gaps = pts.slice(1).map((pt, i) => pt[0] - pts[i][0]).sort((a, b) => a - b);
      const limit = gaps.length ? Math.max(3 * gaps[Math.floor(gaps.length / 2)], 1) : Infinity;
      let d = "";
      pts.forEach((pt, i) => {
        const jump = i === 0 || pt[0] - pts[i - 1][0] > limit;
        d += (jump ? "M" : "L") + x(pt[0]).toFixed(1) + " " + y(pt[1]).toFixed(1);
      });
      root.append(svg("path", { class: "line " + p, d, "data-percentile": p, "data-points": pts.length }));
      if (pts.length <= DOTS_UP_TO) {
        const dots = svg("g", { class: "dots " + p });
        for (const pt of pts) {
          const c = svg("circle", { class: "pt " + p, cx: x(pt[0]).toFixed(1), cy: y(pt[1]).toFixed(1), r: 2.5 });
          c.append(svg("title", {}, `${p} ${fmt(pt[1])} at ${utc(pt[0], true)} UTC`));
          dots.append(c);
        }
        root.append(dots);
      }
    }

    const unit = series.metric.startsWith("latency-") ? series.metric.slice(8) : "";
    const caption = el("figcaption", {},
      el("strong", {}, series.model), ` \u00b7 ${series.metric} [${series.dimension || "-"}]`,
      series.versions.length ? ` \u00b7 version ${series.versions.join(", ")}` : "",
      ` \u00b7 ${npoints} point${npoints === 1 ? "" : "s"}` + (series.truncated ? " (newest only)" : ""),
      series.hourly_until ? ` \u00b7 hourly means (approximate) before ${utc(series.hourly_until, true)}` : "",
      unit ? ` \u00b7 ${unit}, time UTC` : " \u00b7 time UTC");
    const legend = el("div", { class: "legend" },
      ...lines.flatMap((p) => [el("span", { class: "key " + p }), p]));
    return el("figure", {
      class: "plot", "data-device": device, "data-model": series.model, "data-metric": series.metric,
      "data-dimension": series.dimension, "data-points": npoints,
    }, caption, root, legend);
  }

  async function renderPlots(status) {
    const container = document.getElementById("plots");
    const note = document.getElementById("plots-note");
    const withModels = status.devices.filter((d) => d.models.length);
    const shown = withModels.slice(0, opts.limit);
    note.textContent = `Last ${opts.hours} h. ` + (withModels.length > shown.length
      ? `Plots for ${shown.length} of ${withModels.length} devices with models; narrow with ?fleet=, ?device= or raise ?limit=.`
      : `${shown.length} device(s) with models.`);
    const sections = await Promise.all(shown.map(async (d) => {
      const data = await getJSON("/fleet/api/series" + query({ device: d.name, hours: opts.hours }));
      const section = el("div", { class: "device-plots", "data-device": d.name },
        el("h3", {}, d.name + " ", el("span", { class: "badge " + d.state }, d.state)));
      const row = el("div", { class: "row" });
      for (const s of data.series) row.append(plot(d.name, s));
      if (!data.series.length) row.append(el("p", { class: "note" }, "no latency percentiles in range"));
      section.append(row);
      return section;
    }));
    container.replaceChildren(...sections);
  }

  async function load() {
    try {
      const status = await getJSON("/fleet/api/status" + query());
      renderSummary(status);
      renderTable(status);
      await renderPlots(status);
      document.body.dataset.state = "ready";
    } catch (err) {
      document.body.dataset.state = "error";
      document.getElementById("summary").replaceChildren(el("span", { class: "error" }, String(err.message || err)));
    }
    if (opts.refresh > 0) window.setTimeout(load, opts.refresh * 1000);
  }

  load();
})();
