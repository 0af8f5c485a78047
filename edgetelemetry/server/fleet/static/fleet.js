// The fleet page: reads /fleet/api/*, draws tables and inline SVG charts.
// No dependencies, no network beyond this origin. Two views from the same files:
//   /fleet                 devices, a page at a time, with latency plots for the page's first
//   /fleet/device?device=D one device: every metric of its models, versions overlaid,
//                          deployment results, agent metrics
// Query parameters of the page:
//   hours (6)        plotted time range; since, until (epoch seconds): a zoomed range
//   fleet, device    restrict the view
//   page (1), page_size (50), q (part of a name), state: the device table's page
//   limit (25)       how many devices of the page get plots
//   refresh (15)     seconds between reloads; 0 stops
//   offline_after    recency window in seconds (the server's default otherwise)
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
  const deviceView = window.location.pathname === "/fleet/device";
  const opts = {
    hours: num("hours", 6),
    since: num("since", null),
    until: num("until", null),
    page: Math.max(1, Math.floor(num("page", 1))),
    pageSize: Math.min(500, Math.max(1, Math.floor(num("page_size", 50)))),
    q: params.get("q") || "",
    state: params.get("state") || "",
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

  function deviceLink(name) {
    return el("a", { href: "/fleet/device?device=" + encodeURIComponent(name) + rangeQuery() }, name);
  }

  function countCell(value, what) {
    const bad = value !== null && value !== undefined && value > 0;
    return el("td", { class: "num" + (bad ? " bad" : ""), "data-figure": what }, fmt(value));
  }

  function deploymentCell(dep) {
    if (!dep) return el("td", { "data-figure": "deployment" }, "-");
    const status = dep.status || "?";
    return el("td", { "data-figure": "deployment", title: dep.message || "" },
      (dep.name || "?") + " ", el("span", { class: "badge dep-" + status.toLowerCase() }, status));
  }

  function renderTable(status) {
    const body = document.querySelector("#devices tbody");
    const rows = status.devices.map((d) => {
      const tr = el("tr", { "data-device": d.name, "data-state": d.state },
        el("td", { class: "name" }, deviceLink(d.name)),
        el("td", {}, d.fleet),
        el("td", {}, el("span", { class: "badge " + d.state, "data-status": d.state }, d.state)),
        el("td", { class: "num", title: d.last_heartbeat ? new Date(d.last_heartbeat * 1000).toISOString() : "" },
          ago(status.generated_at, d.last_heartbeat)),
        el("td", {}, d.agent_version || "-"),
        el("td", {}, ...(d.models.length ? d.models.map(modelCell) : ["-"])),
        countCell(d.drops, "drops"),
        countCell(d.backlog, "backlog"),
        countCell(d.dead_letters, "dead-letters"),
        deploymentCell(d.deployment),
      );
      return tr;
    });
    body.replaceChildren(...rows);
    const first = status.total ? status.offset + 1 : 0;
    const last = status.offset + status.devices.length;
    document.getElementById("page-info").textContent =
      `${first}\u2013${last} of ${status.total} device${status.total === 1 ? "" : "s"}`;
    const prev = document.getElementById("prev"), next = document.getElementById("next");
    prev.disabled = opts.page <= 1;
    next.disabled = last >= status.total;
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

  // One chart: lines = [{cls, key, label, pts: [[t, v], ...], attrs}], over [t0, t1] (null:
  // the points' own range). A drag across it calls onZoom(since, until) when given.
  function chart(lines, t0, t1, size, onZoom) {
    const w = size.w, h = size.h;
    const all = lines.flatMap((l) => l.pts);
    if (t0 === null || t1 === null) {
      t0 = Math.min(...all.map((pt) => pt[0]));
      t1 = Math.max(...all.map((pt) => pt[0]));
    }
    if (t1 - t0 < 1) { t0 -= 60; t1 += 60; }
    const vmax = Math.max(...all.map((pt) => pt[1]), 0);
    const vmin = Math.min(...all.map((pt) => pt[1]), 0);
    const ystep = niceStep((vmax - vmin) || 1, 4);
    const y0 = Math.floor(vmin / ystep) * ystep, y1 = Math.max(Math.ceil(vmax / ystep) * ystep, y0 + ystep);
    const iw = w - M.left - M.right, ih = h - M.top - M.bottom;
    const x = (t) => M.left + ((t - t0) / (t1 - t0)) * iw;
    const y = (v) => M.top + ih - ((v - y0) / (y1 - y0)) * ih;

    const root = svg("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img" });
    const grid = svg("g", { class: "grid" }), axis = svg("g", { class: "axis" });
    for (let v = y0; v <= y1 + ystep / 2; v += ystep) {
      grid.append(svg("line", { x1: M.left, x2: w - M.right, y1: y(v), y2: y(v) }));
      axis.append(svg("text", { x: M.left - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
    }
    const tstep = timeStep(t1 - t0);
    for (let t = Math.ceil(t0 / tstep) * tstep; t <= t1; t += tstep) {
      axis.append(svg("line", { x1: x(t), x2: x(t), y1: M.top + ih, y2: M.top + ih + 4 }));
      axis.append(svg("text", { x: x(t), y: h - 8, "text-anchor": "middle" }, utc(t, tstep < 60)));
    }
    axis.append(svg("line", { x1: M.left, x2: w - M.right, y1: M.top + ih, y2: M.top + ih }));
    axis.append(svg("line", { x1: M.left, x2: M.left, y1: M.top, y2: M.top + ih }));
    root.append(grid, axis);

    for (const l of lines) {
      const pts = l.pts.filter((pt) => pt[0] >= t0 && pt[0] <= t1);
      // break the line where the device went quiet: a gap over 3x the median interval
      const gaps = pts.slice(1).map((pt, i) => pt[0] - pts[i][0]).sort((a, b) => a - b);
      const limit = gaps.length ? Math.max(3 * gaps[Math.floor(gaps.length / 2)], 1) : Infinity;
      let d = "";
      pts.forEach((pt, i) => {
        const jump = i === 0 || pt[0] - pts[i - 1][0] > limit;
        d += (jump ? "M" : "L") + x(pt[0]).toFixed(1) + " " + y(pt[1]).toFixed(1);
      });
      root.append(svg("path", { class: "line " + l.cls, d, "data-points": pts.length, ...(l.attrs || {}) }));
      if (pts.length <= DOTS_UP_TO) {
        const dots = svg("g", { class: "dots " + l.cls });
        for (const pt of pts) {
          const c = svg("circle", { class: "pt " + l.cls, cx: x(pt[0]).toFixed(1), cy: y(pt[1]).toFixed(1), r: 2.5 });
          c.append(svg("title", {}, `${l.label} ${fmt(pt[1])} at ${utc(pt[0], true)} UTC`));
          dots.append(c);
        }
        root.append(dots);
      }
    }
    if (onZoom) {
      // drag to zoom: a band follows the pointer; releasing over 4 px wide zooms to it
      const band = svg("rect", { class: "zoom-band", x: 0, y: M.top, width: 0, height: ih, visibility: "hidden" });
      root.append(band);
      let from = null;
      const at = (ev) => {
        const box = root.getBoundingClientRect();
        return Math.min(Math.max((ev.clientX - box.left) * (w / box.width), M.left), w - M.right);
      };
      root.addEventListener("pointerdown", (ev) => { from = at(ev); root.setPointerCapture(ev.pointerId); });
      root.addEventListener("pointermove", (ev) => {
        if (from === null) return;
        const to = at(ev);
        band.setAttribute("x", Math.min(from, to));
        band.setAttribute("width", Math.abs(to - from));
        band.setAttribute("visibility", "visible");
      });
      root.addEventListener("pointerup", (ev) => {
        if (from === null) return;
        const to = at(ev), a = Math.min(from, to), b = Math.max(from, to);
        from = null;
        band.setAttribute("visibility", "hidden");
        const t = (px) => t0 + ((px - M.left) / iw) * (t1 - t0);
        if (b - a > 4) onZoom(Math.floor(t(a)), Math.ceil(t(b)));
      });
    }
    return root;
  }

  function legend(lines) {
    return el("div", { class: "legend" }, ...lines.flatMap((l) => [el("span", { class: "key " + l.cls }), l.label]));
  }

  function plot(device, series) {
    const lines = PCTS.filter((p) => series.points[p] && series.points[p].length).map((p) => (
      { cls: p, label: p, pts: series.points[p], attrs: { "data-percentile": p } }));
    const npoints = Math.max(...lines.map((l) => l.pts.length));
    const root = chart(lines, null, null, { w: W, h: H }, null);
    root.setAttribute("aria-label", `${series.model} ${series.metric} percentiles`);
    const unit = series.metric.startsWith("latency-") ? series.metric.slice(8) : "";
    const caption = el("figcaption", {},
      el("strong", {}, series.model), ` \u00b7 ${series.metric} [${series.dimension || "-"}]`,
      series.versions.length ? ` \u00b7 version ${series.versions.join(", ")}` : "",
      ` \u00b7 ${npoints} point${npoints === 1 ? "" : "s"}` + (series.truncated ? " (newest only)" : ""),
      series.hourly_until ? ` \u00b7 hourly means (approximate) before ${utc(series.hourly_until, true)}` : "",
      unit ? ` \u00b7 ${unit}, time UTC` : " \u00b7 time UTC");
    return el("figure", {
      class: "plot", "data-device": device, "data-model": series.model, "data-metric": series.metric,
      "data-dimension": series.dimension, "data-points": npoints,
    }, caption, root, legend(lines));
  }

  async function renderPlots(status) {
    const container = document.getElementById("plots");
    const note = document.getElementById("plots-note");
    const withModels = status.devices.filter((d) => d.models.length);
    const shown = withModels.slice(0, opts.limit);
    note.textContent = rangeText() + ". " + (withModels.length > shown.length
      ? `Plots for ${shown.length} of ${withModels.length} devices with models on this page; narrow with ?fleet=, ?device= or raise ?limit=.`
      : `${shown.length} device(s) with models.`);
    const sections = await Promise.all(shown.map(async (d) => {
      const data = await getJSON("/fleet/api/series" + query({ device: d.name, ...rangeParams() }));
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

  // -- time range, controls, navigation ------------------------------------------------------

  function rangeParams() {
    if (opts.since !== null) return opts.until !== null ? { since: opts.since, until: opts.until } : { since: opts.since };
    return { hours: opts.hours };
  }

  function rangeQuery() {
    return "&" + new URLSearchParams(rangeParams()).toString();
  }

  function rangeText() {
    if (opts.since === null) return `Last ${opts.hours} h`;
    const end = opts.until === null ? "now" : new Date(opts.until * 1000).toISOString().slice(0, 19) + "Z";
    return `From ${new Date(opts.since * 1000).toISOString().slice(0, 19)}Z to ${end}`;
  }

  // the page's state lives in its URL: a change is a new URL (kept in history, shareable)
  function navigate(changes) {
    const next = new URLSearchParams(window.location.search);
    for (const [k, v] of Object.entries(changes)) {
      if (v === null || v === "") next.delete(k); else next.set(k, String(v));
    }
    window.location.search = next.toString();
  }

  function setUpControls() {
    const range = document.getElementById("range");
    if (![...range.options].some((o) => Number(o.value) === opts.hours)) {
      range.append(el("option", { value: String(opts.hours) }, opts.hours + " h"));
    }
    range.value = String(opts.hours);
    range.addEventListener("change", () => navigate({ hours: range.value, since: null, until: null, page: null }));
    if (opts.since !== null) {
      document.getElementById("zoom").hidden = false;
      document.getElementById("zoom-range").textContent = rangeText();
    }
    document.getElementById("zoom-reset").addEventListener("click", () => navigate({ since: null, until: null }));
    const search = document.getElementById("search"), state = document.getElementById("state-filter");
    search.value = opts.q;
    state.value = opts.state;
    document.getElementById("controls").addEventListener("submit", (ev) => {
      ev.preventDefault();
      navigate({ q: search.value, page: null });
    });
    state.addEventListener("change", () => navigate({ state: state.value, page: null }));
    document.getElementById("prev").addEventListener("click", () => navigate({ page: Math.max(1, opts.page - 1) }));
    document.getElementById("next").addEventListener("click", () => navigate({ page: opts.page + 1 }));
    if (deviceView) {
      document.getElementById("fleet-view").hidden = true;
      document.getElementById("device-view").hidden = false;
      for (const n of document.querySelectorAll(".fleet-only")) n.hidden = true;
    }
  }

  // -- alerts --------------------------------------------------------------------------------

  async function renderAlerts() {
    const doc = await getJSON("/fleet/api/alerts");
    const section = document.getElementById("alerts-section");
    let firing = doc.firing;
    if (deviceView) firing = firing.filter((a) => a.labels.device === opts.device);
    section.hidden = !doc.enabled;
    const list = document.getElementById("alerts");
    const items = firing.map((a) => el("li", { class: "alert " + a.severity, "data-rule": a.rule, "data-device": a.labels.device || "" },
      el("span", { class: "badge alert-" + a.severity }, a.severity), " ", el("strong", {}, a.rule), " ",
      a.labels.device ? deviceLink(a.labels.device) : "", " \u00b7 " + a.summary,
      el("span", { class: "note" }, " \u00b7 since " + new Date(a.since * 1000).toISOString().slice(0, 19) + "Z")));
    list.replaceChildren(...(items.length ? items : [el("li", { class: "note", id: "no-alerts" }, "nothing is firing")]));
  }

  // -- one device ----------------------------------------------------------------------------

  const PERCENTILE_STATS = ["p50", "p90", "p95", "p99"];
  const SMALL = { w: 460, h: 190 };

  function renderDeviceFacts(info) {
    const d = info.device;
    document.getElementById("title").replaceChildren(
      el("a", { href: "/fleet?" + new URLSearchParams(rangeParams()).toString() }, "fleet"), " / " + d.name);
    document.title = d.name + " \u00b7 edgetelemetry fleet";
    const fact = (label, value, key, bad) => el("div", { class: "fact" + (bad ? " bad" : ""), "data-fact": key },
      el("span", { class: "label" }, label), el("span", { class: "value" }, value));
    const backlog = info.agent["spool-records"], dead = info.agent["dead-letters"];
    document.getElementById("summary").replaceChildren(
      el("span", { class: "badge " + d.state, "data-status": d.state }, d.state),
      ` fleet ${d.fleet} \u00b7 last heartbeat ${ago(info.generated_at, d.last_heartbeat)} \u00b7 agent ${d.agent_version || "-"}`);
    document.getElementById("device-facts").replaceChildren(
      fact("Models", d.models.map((m) => m.name + " " + m.version).join(", ") || "-", "models"),
      fact("Drops (latest windows)", fmt(d.drops), "drops", d.drops > 0),
      fact("Backlog (spool records)", fmt(backlog), "backlog", backlog > 0),
      fact("Dead letters", fmt(dead), "dead-letters", dead > 0),
      fact("Latest deployment", info.deployments.length ? `${info.deployments[0].name} ${info.deployments[0].status}` : "-",
        "deployment", info.deployments.length && info.deployments[0].status === "FAIL"));
  }

  function zoomTo(since, until) { navigate({ since, until }); }

  function figure(attrs, caption, lines, t0, t1) {
    const root = chart(lines, t0, t1, SMALL, zoomTo);
    root.setAttribute("aria-label", caption);
    return el("figure", { class: "chart", ...attrs }, el("figcaption", {}, caption), root, legend(lines));
  }

  function renderDeviceCharts(data) {
    const t0 = data.since, t1 = data.until === null ? data.generated_at : data.until;
    const byModel = new Map();
    for (const tr of data.tracks) {
      if (!byModel.has(tr.model)) byModel.set(tr.model, new Map());
      const key = tr.base + "\u0000" + tr.dimension;
      const groups = byModel.get(tr.model);
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(tr);
    }
    const sections = [];
    for (const [model, groups] of byModel) {
      const section = el("div", { class: "model-charts", "data-model": model }, el("h3", {}, model));
      const row = el("div", { class: "row" });
      for (const tracks of groups.values()) {
        const { base, dimension } = tracks[0];
        const common = { "data-model": model, "data-metric": base, "data-dimension": dimension };
        const pcts = tracks.filter((t) => PERCENTILE_STATS.includes(t.stat))
          .sort((a, b) => PERCENTILE_STATS.indexOf(a.stat) - PERCENTILE_STATS.indexOf(b.stat));
        if (pcts.length) {
          const lines = pcts.map((t) => ({ cls: t.stat, label: t.stat, pts: t.points, attrs: { "data-stat": t.stat } }));
          row.append(figure({ ...common, "data-kind": "percentiles" }, `${base} [${dimension}] percentiles`, lines, t0, t1));
        }
        const versions = [...new Set(tracks.flatMap((t) => t.versions))].sort();
        if (versions.length > 1) {
          // an upgrade: the same statistic, one line per version, on one time axis
          const pick = ["p99", "p90", "p50", "mean", "count"].map((s) => tracks.find((t) => t.stat === s)).find(Boolean) || tracks[0];
          const lines = versions.map((v, i) => ({ cls: "v" + (i % 4), label: "version " + v,
            pts: pick.points.filter((pt) => pt[2] === v), attrs: { "data-version": v } }));
          row.append(figure({ ...common, "data-kind": "versions", "data-stat": pick.stat, "data-versions": versions.join(",") },
            `${base} ${pick.stat} [${dimension}] by version`, lines, t0, t1));
        }
        for (const t of tracks.filter((t) => !PERCENTILE_STATS.includes(t.stat))) {
          const label = t.stat || "value";
          const lines = [{ cls: "stat" + (t.stat === "dropped" || t.stat === "rejected" ? " bad" : ""), label, pts: t.points, attrs: { "data-stat": label } }];
          row.append(figure({ ...common, "data-kind": "stat", "data-stat": label }, `${t.metric} [${dimension}]`, lines, t0, t1));
        }
      }
      section.append(row);
      sections.push(section);
    }
    const container = document.getElementById("device-charts");
    container.replaceChildren(...(sections.length ? sections : [el("p", { class: "note" }, "no metrics in this time range")]));
  }

  function renderDeployments(deployments) {
    const rows = deployments.map((r) => el("tr", { "data-deployment": r.name || "", "data-status": r.status || "" },
      el("td", { class: "num" }, new Date(r.received_at * 1000).toISOString().slice(0, 19) + "Z"),
      el("td", {}, r.name || "-"),
      el("td", {}, el("span", { class: "badge dep-" + String(r.status || "").toLowerCase() }, r.status || "-")),
      el("td", {}, r.message || ""),
      el("td", {}, r.models.map((m) => `${m.ModelName || "?"} ${m.ModelVersion || ""} ${m.Status || ""}`.trim()).join("; "))));
    document.querySelector("#deployments tbody").replaceChildren(
      ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: "5", class: "note" }, "no deployment results"))]));
  }

  function renderAgent(agent) {
    const rows = Object.keys(agent).sort().map((k) => el("tr", { "data-agent-metric": k },
      el("td", {}, k), el("td", { class: "num" }, fmt(agent[k]))));
    document.querySelector("#agent-metrics tbody").replaceChildren(...rows);
  }

  async function loadDevice() {
    if (!opts.device) throw new Error("no device given: open /fleet/device?device=NAME");
    const info = await getJSON("/fleet/api/device" + query());
    const data = await getJSON("/fleet/api/metrics" + query(rangeParams()));
    renderDeviceFacts(info);
    renderDeviceCharts(data);
    renderDeployments(info.deployments);
    renderAgent(info.agent);
  }

  async function loadFleet() {
    const status = await getJSON("/fleet/api/status" + query({
      offset: (opts.page - 1) * opts.pageSize, limit: opts.pageSize,
      ...(opts.q ? { q: opts.q } : {}), ...(opts.state ? { state: opts.state } : {}),
    }));
    renderSummary(status);
    renderTable(status);
    await renderPlots(status);
  }

  async function load() {
    try {
      await (deviceView ? loadDevice() : loadFleet());
      await renderAlerts();
      document.body.dataset.state = "ready";
    } catch (err) {
      document.body.dataset.state = "error";
      document.getElementById("summary").replaceChildren(el("span", { class: "error" }, String(err.message || err)));
    }
    if (opts.refresh > 0) window.setTimeout(load, opts.refresh * 1000);
  }

  setUpControls();
  load();
})();
