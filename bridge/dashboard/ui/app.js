// monbridge's web dashboard: lists the components of /api/v1/components, lays them out, refreshes
// them and sends their events. Every URL is relative to the page, so the page works under any
// route prefix or proxy path. Credentials (bearer token or basic) are asked for when the API
// answers 401 and kept for the browser tab only. Text from the API is only ever set as text.
"use strict";
(function () {
  const API = new URL("../api/v1/", window.location.href);
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf"];
  const timers = new Map();

  function authHeader() {
    return sessionStorage.getItem("monbridge.auth") || "";
  }

  async function api(path, options) {
    const headers = Object.assign({ Accept: "application/json" }, (options && options.headers) || {});
    const auth = authHeader();
    if (auth) headers.Authorization = auth;
    const resp = await fetch(new URL(path, API), Object.assign({}, options || {}, { headers, credentials: "same-origin" }));
    if (resp.status === 401) {
      askForCredentials(resp.headers.get("WWW-Authenticate") || "");
      throw new Error("sign in to see this (401)");
    }
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (!resp.ok || !body || body.status !== "success") {
      throw new Error((body && body.error) || ("HTTP " + resp.status));
    }
    return body.data;
  }

  function askForCredentials(challenge) {
    const form = document.getElementById("signin");
    const basic = challenge.toLowerCase().startsWith("basic");
    document.getElementById("token").hidden = basic;
    document.getElementById("user").hidden = !basic;
    document.getElementById("password").hidden = !basic;
    form.hidden = false;
  }

  document.getElementById("signin").addEventListener("submit", function (ev) {
    ev.preventDefault();
    const token = document.getElementById("token");
    let value;
    if (!token.hidden) {
      value = "Bearer " + token.value.trim();
    } else {
      const user = document.getElementById("user").value, pw = document.getElementById("password").value;
      value = "Basic " + btoa(unescape(encodeURIComponent(user + ":" + pw)));
    }
    sessionStorage.setItem("monbridge.auth", value);
    document.getElementById("signin").hidden = true;
    start();
  });

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function fmtTime(t) {
    return new Date(t * 1000).toLocaleTimeString();
  }

  function fmtNum(v) {
    if (v === null || v === undefined) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
    return (Math.round(v * 1000) / 1000).toString();
  }

  function labelText(labels) {
    return Object.entries(labels || {}).map(([k, v]) => k + "=" + v).join(", ");
  }

  // ---------------------------------------------------------------- renderers, by component type

  function chartControls(card, state) {
    const metric = el("input", { type: "text", value: state.metric || "", "aria-label": "metric" });
    const rate = el("input", { type: "checkbox", "aria-label": "rate" }); rate.checked = !!state.rate;
    const stacked = el("input", { type: "checkbox", "aria-label": "stacked" }); stacked.checked = !!state.stacked;
    const agg = el("select", { "aria-label": "aggregate" },
      ...["none", "sum", "avg", "min", "max", "count"].map(a => el("option", { value: a }, a)));
    agg.value = state.aggregate || "none";
    const by = el("input", { type: "text", value: state.by || "", placeholder: "by labels", style: "width:8em" });
    const apply = () => {
      Object.assign(state, { metric: metric.value, rate: rate.checked, stacked: stacked.checked, aggregate: agg.value, by: by.value });
      refresh(card);
    };
    const form = el("form", { class: "controls", onsubmit: (e) => { e.preventDefault(); apply(); } },
      metric, el("label", {}, rate, " rate"), agg, by, el("label", {}, stacked, " stacked"), el("button", { type: "submit" }, "Show"));
    rate.addEventListener("change", apply); stacked.addEventListener("change", apply); agg.addEventListener("change", apply);
    return form;
  }

  // Values of an encoding=f64 answer: base64 of little-endian doubles, NaN for none.
  function decodeF64(text) {
    const bin = atob(text), bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const view = new DataView(bytes.buffer), out = new Array(bin.length / 8);
    for (let i = 0; i < out.length; i++) {
      const v = view.getFloat64(i * 8, true);
      out[i] = Number.isFinite(v) ? v : null;
    }
    return out;
  }

  function renderTimeseries(card, data) {
    if (data.encoding === "f64") for (const s of data.series) s.values = decodeF64(s.values);
    const W = 640, H = 220, L = 52, B = 20, T = 6, R = 8;
    const ts = data.timestamps || [];
    let series = (data.series || []).slice(0, 50);
    const plotted = series.map(s => s.values.slice());
    if (data.stacked) {
      for (let i = 1; i < plotted.length; i++)
        for (let j = 0; j < ts.length; j++)
          if (plotted[i][j] !== null) plotted[i][j] += plotted[i - 1][j] || 0;
    }
    let lo = Infinity, hi = -Infinity;
    for (const vs of plotted) for (const v of vs) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (lo === Infinity) { lo = 0; hi = 1; }
    if (data.stacked) lo = Math.min(lo, 0);
    if (hi === lo) { hi += 1; lo -= lo === 0 ? 0 : 1; }
    const t0 = ts.length ? ts[0] : 0, t1 = ts.length > 1 ? ts[ts.length - 1] : t0 + 1;
    const x = t => L + (W - L - R) * (t - t0) / (t1 - t0 || 1);
    const y = v => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
    const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "chart of " + (data.metric || "") });
    s.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
    s.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
    for (let k = 0; k <= 4; k++) {
      const v = lo + (hi - lo) * k / 4;
      s.append(svg("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" }, fmtNum(v)));
      s.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: y(v), y2: y(v), "stroke-dasharray": "2,4" }));
    }
    if (ts.length) {
      s.append(svg("text", { x: L, y: H - 5 }, fmtTime(t0)));
      s.append(svg("text", { x: W - R, y: H - 5, "text-anchor": "end" }, fmtTime(t1)));
    }
    const legend = el("div", { class: "legend" });
    plotted.forEach((vs, i) => {
      const color = COLORS[i % COLORS.length];
      let d = "", pen = false;
      vs.forEach((v, j) => {
        if (v === null) { pen = false; return; }
        d += (pen ? "L" : "M") + x(ts[j]).toFixed(1) + "," + y(v).toFixed(1);
        pen = true;
      });
      if (d) s.append(svg("path", { d, fill: "none", stroke: color, "stroke-width": 1.5, "data-series": i }));
      const last = series[i].values.filter(v => v !== null).pop();
      legend.append(el("span", {}, el("i", { style: "background:" + color }),
        (labelText(series[i].labels) || series[i].name) + " " + fmtNum(last)));
    });
    const note = data.series.length ? null : el("p", { class: "desc" }, "no series match " + (data.metric || "") + " yet");
    return [s, legend, note];
  }

  function renderStatus(card, data) {
    const out = [];
    const groups = {};
    for (const item of data.items || []) (groups[item.group] = groups[item.group] || []).push(item);
    for (const [group, items] of Object.entries(groups)) {
      out.push(el("h3", {}, group));
      out.push(el("div", { class: "badges" }, ...items.map(i =>
        el("span", { class: "badge level-" + i.level, title: (i.state || "") + " " + (i.detail || fmtNum(i.value)), "data-level": i.level },
          i.name))));
    }
    if (!out.length) out.push(el("p", { class: "desc" }, "nothing to show"));
    return out;
  }

  function renderTopology(card, data) {
    const columns = { source: 0, metric_collector: 1, integration: 1, alert_processor: 1, dashboard_component: 1, pipeline: 2, destination: 3 };
    const cols = [[], [], [], []];
    for (const n of data.nodes || []) cols[columns[n.kind] !== undefined ? columns[n.kind] : 1].push(n);
    const rowH = 34, W = 960, colW = W / 4, boxW = colW - 30;
    const H = Math.max(80, Math.max(...cols.map(c => c.length)) * rowH + 20);
    const pos = {};
    cols.forEach((c, ci) => c.forEach((n, ri) => {
      const top = (H - c.length * rowH) / 2;
      pos[n.id] = { x: ci * colW + 15, y: top + ri * rowH + 4 };
    }));
    const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "data flow" });
    for (const e of data.edges || []) {
      const a = pos[e.from], b = pos[e.to];
      if (!a || !b) continue;
      const x1 = a.x + boxW, y1 = a.y + 12, x2 = b.x, y2 = b.y + 12;
      const bad = e.errors > 0;
      s.append(svg("path", { d: `M${x1},${y1} C${(x1 + x2) / 2},${y1} ${(x1 + x2) / 2},${y2} ${x2},${y2}`, fill: "none",
        stroke: bad ? "#c62828" : "#889", "stroke-width": 1.5, class: "edge" }));
      const label = (e.rate === null ? "" : fmtNum(e.rate) + " " + e.unit) + (bad ? " ⚠ " + fmtNum(e.errors) + " err" : "");
      s.append(svg("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 3, "text-anchor": "middle" }, label));
    }
    for (const n of data.nodes || []) {
      const p = pos[n.id];
      const ok = ["ok", "running", "unknown"].includes(n.state);
      const g = svg("g", { class: "node", "data-node": n.id });
      g.append(svg("rect", { x: p.x, y: p.y, width: boxW, height: 24, rx: 4, fill: ok ? "#e8f0fe" : "#fdecea",
        stroke: ok ? "#5c7cfa" : "#c62828" }));
      const text = n.label.length > 38 ? n.label.slice(0, 36) + "…" : n.label;
      g.append(svg("text", { x: p.x + 6, y: p.y + 16 }, text));
      g.append(svg("title", {}, n.kind + ": " + n.label + " (" + n.state + ")"));
      s.append(g);
    }
    return [s];
  }

  function renderCorrelation(card, data) {
    const incidents = data.incidents || [];
    const out = [];
    if (!incidents.length) out.push(el("p", { class: "desc" }, "no incidents in this window" +
      (data.uncorrelated ? " (" + data.uncorrelated + " alerts without one)" : "")));
    const W = 640, rowH = 18, L = 150, now = Date.now() / 1000;
    const t0 = data.from, t1 = data.to;
    const x = t => L + (W - L - 6) * Math.min(Math.max((t - t0) / (t1 - t0 || 1), 0), 1);
    const rows = incidents.reduce((n, i) => n + 1 + i.alerts.length, 0);
    if (incidents.length) {
      const s = svg("svg", { viewBox: `0 0 ${W} ${rows * rowH + 20}`, role: "img", "aria-label": "incidents" });
      let r = 0;
      for (const inc of incidents) {
        const end = inc.end === null ? now : inc.end;
        s.append(svg("text", { x: 2, y: r * rowH + 13, "font-weight": "bold" }, inc.id));
        s.append(svg("rect", { x: x(inc.start), y: r * rowH + 3, width: Math.max(x(end) - x(inc.start), 2), height: rowH - 6,
          fill: inc.active ? "#c62828" : "#2e7d32", opacity: 0.8, class: "incident" }));
        r++;
        for (const a of inc.alerts) {
          const aend = a.ends_at === null ? now : a.ends_at;
          s.append(svg("text", { x: 12, y: r * rowH + 13 }, a.name.slice(0, 22)));
          s.append(svg("rect", { x: x(a.starts_at), y: r * rowH + 5, width: Math.max(x(aend) - x(a.starts_at), 2),
            height: rowH - 10, fill: a.state === "resolved" ? "#81c784" : a.state === "acknowledged" ? "#ffb74d" : "#e57373" }));
          r++;
        }
      }
      s.append(svg("text", { x: L, y: rows * rowH + 14 }, fmtTime(t0)));
      s.append(svg("text", { x: W - 6, y: rows * rowH + 14, "text-anchor": "end" }, fmtTime(t1)));
      out.push(s);
      if (data.uncorrelated) out.push(el("p", { class: "desc" }, data.uncorrelated + " alerts without an incident"));
    }
    return out;
  }

  function renderAlerts(card, data) {
    const id = card.dataset.componentId;
    const send = async (type, alert, extra) => {
      try {
        await api("components/" + encodeURIComponent(id) + "/events", { method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ type, payload: Object.assign({ alert_id: alert }, extra || {}) }) });
        delete card.dataset.eventError;
        refresh(card);
      } catch (e) {
        card.dataset.eventError = type + ": " + e.message;
        card.querySelector(".event-problem").textContent = type + " failed: " + e.message;
      }
    };
    const rows = (data.alerts || []).map(a => {
      const actions = el("td", {});
      if (a.state === "firing") actions.append(el("button", { "data-action": "ack", onclick: () => send("ack", a.id) }, "Ack"));
      if (a.state !== "resolved") {
        actions.append(el("button", { "data-action": "resolve", onclick: () => send("resolve", a.id) }, "Resolve"));
        if (!a.muted_by) actions.append(el("button", { "data-action": "silence", onclick: () => send("silence", a.id, { duration: 3600 }) }, "Silence 1h"));
      }
      return el("tr", { "data-alert": a.id },
        el("td", { class: "state-" + a.state, "data-state": a.state }, a.state + (a.muted_by ? " (muted)" : "")),
        el("td", {}, a.name), el("td", {}, a.severity), el("td", {}, labelText(a.labels)),
        el("td", {}, fmtTime(a.starts_at)), actions);
    });
    const table = el("table", {}, el("thead", {}, el("tr", {}, ...["state", "alert", "severity", "labels", "since", ""].map(h => el("th", {}, h)))),
      el("tbody", {}, ...rows));
    const out = [rows.length ? table : el("p", { class: "desc" }, "no alerts")];
    if ((data.silences || []).length) {
      out.push(el("h3", {}, "silences"));
      out.push(el("ul", {}, ...data.silences.map(s => el("li", {},
        s.matchers.map(m => m.name + (m.isRegex ? "=~" : "=") + JSON.stringify(m.value)).join(", ") + " until " + s.endsAt +
        " (" + s.status.state + ")"))));
    }
    return out;
  }

  function renderGeneric(card, data) {
    return [el("pre", { class: "json" }, JSON.stringify(data, null, 2))];
  }

  const RENDERERS = { timeseries: renderTimeseries, status: renderStatus, topology: renderTopology,
    correlation: renderCorrelation, alerts: renderAlerts };

  // ---------------------------------------------------------------- layout and refresh

  function showProblem(card, err) {
    const body = card.querySelector(".body");
    card.dataset.error = err.message;
    card.lastData = undefined;
    body.replaceChildren(el("p", { class: "problem" }, err.message));
  }

  // Answers can come back in another order than asked (a refresh after an event overtaking a
  // periodic one asked before it): only an answer to a later request than the one shown is shown.
  async function refresh(card) {
    const c = card.component, state = card.state;
    const asked = ++card.asked;
    const params = new URLSearchParams();
    if (c.type === "timeseries") params.set("encoding", "f64");
    if (c.type === "timeseries" && state.metric !== undefined) {  // the first time: the component's defaults
      if (state.metric) params.set("metric", state.metric);
      params.set("rate", state.rate ? "true" : "false");
      params.set("aggregate", state.aggregate || "none");
      if (state.by) params.set("by", state.by);
      params.set("stacked", state.stacked ? "true" : "false");
    }
    try {
      const data = await api("components/" + encodeURIComponent(c.id) + "/data?" + params.toString());
      if (asked < card.shown) return;
      card.shown = asked;
      if (c.type === "timeseries" && state.metric === undefined) {
        Object.assign(state, { metric: data.metric, rate: data.rate, stacked: data.stacked, aggregate: data.aggregate,
          by: (data.by || []).join(",") });
        card.querySelector(".controls-slot").replaceChildren(chartControls(card, state));
      }
      // Unchanged data keeps its elements (a click under way is not lost to a new copy of its button).
      const text = JSON.stringify(data);
      if (text !== card.lastData) {
        card.lastData = text;
        const render = RENDERERS[c.type] || renderGeneric;
        card.querySelector(".body").replaceChildren(...render(card, data).filter(x => x));
      }
      delete card.dataset.error;
      card.dataset.loaded = "true";
      document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (e) {
      if (asked < card.shown) return;
      card.shown = asked;
      showProblem(card, e);
    }
  }

  async function start() {
    for (const t of timers.values()) clearInterval(t);
    timers.clear();
    const main = document.getElementById("components");
    const problem = document.getElementById("error");
    let components;
    try {
      components = await api("components");
      problem.hidden = true;
    } catch (e) {
      problem.textContent = "cannot list the components: " + e.message;
      problem.hidden = false;
      return;
    }
    main.replaceChildren();
    for (const c of components) {
      const card = el("section", { class: "component", "data-component-id": c.id, "data-type": c.type },
        el("h2", {}, c.title || c.id), el("p", { class: "desc" }, c.description || ""),
        el("div", { class: "controls-slot" }), el("p", { class: "problem event-problem", role: "status" }),
        el("div", { class: "body" }, "loading…"));
      card.component = c;
      card.state = {};
      card.asked = card.shown = 0;
      main.append(card);
      refresh(card);
      const every = Math.max(Number(c.refresh_seconds) || 15, 1) * 1000;
      timers.set(c.id, setInterval(() => refresh(card), every));
    }
  }

  start();
})();
