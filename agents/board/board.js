// The RevPulse board: headline numbers per segment with their trend from /api/history, the MRR movements as a
// stacked chart, the latest values from /api/metrics. Plain JavaScript and inline SVG: nothing from the internet.
"use strict";
(() => {
  const HEADLINES = [
    { metric: "mrr", label: "MRR", format: "money", windowed: false },
    { metric: "arr", label: "ARR", format: "money", windowed: false },
    { metric: "nrr", label: "NRR", format: "ratio", windowed: true },
    { metric: "grr", label: "GRR", format: "ratio", windowed: true },
    { metric: "customer_churn_rate", label: "Customer churn rate", format: "ratio", windowed: true },
    { metric: "net_new_mrr", label: "Net new MRR", format: "money", windowed: true },
    { metric: "pipeline_velocity", label: "Pipeline velocity", format: "money", unit: "/day", windowed: true },
    { metric: "win_rate", label: "Win rate", format: "ratio", windowed: true },
    { metric: "cac", label: "CAC", format: "money", windowed: true },
  ];
  const KINDS = [
    { kind: "new", label: "New", sign: 1 },
    { kind: "expansion", label: "Expansion", sign: 1 },
    { kind: "reactivation", label: "Reactivation", sign: 1 },
    { kind: "contraction", label: "Contraction", sign: -1 },
    { kind: "churn", label: "Churn", sign: -1 },
  ];
  const WINDOWS = ["1d", "7d", "30d", "90d"];
  const LIVE_EVERY_MS = 3000; // /api/metrics: one cheap request
  const HISTORY_EVERY_MS = 10000; // /api/history: one request per chart, and the points change once a day
  const DAY_MS = 86400000;
  const SVG = "http://www.w3.org/2000/svg";
  const TOKEN_KEY = "revpulse.read_token";

  // The read credentials. Basic auth: the browser sends what it was given for this origin by itself. A bearer
  // token: given once as ?token=, kept for this tab in sessionStorage, sent on every request of the page.
  const given = new URLSearchParams(location.search).get("token");
  if (given) sessionStorage.setItem(TOKEN_KEY, given);
  const token = given || sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: `Bearer ${token}` } : {};

  class HttpError extends Error {
    constructor(path, status, detail) {
      super(`${path}: HTTP ${status}${detail ? ` (${detail})` : ""}`);
      this.status = status;
    }
  }

  async function fetchText(path) {
    const response = await fetch(path, { headers, credentials: "same-origin", cache: "no-store" });
    const text = await response.text();
    if (!response.ok) {
      let detail = "";
      try {
        detail = JSON.parse(text).error || "";
      } catch (_) {
        detail = "";
      }
      throw new HttpError(path, response.status, detail);
    }
    return text;
  }

  const fetchJSON = async (path) => JSON.parse(await fetchText(path));

  // ---- state

  const state = {
    segment: "all",
    window: "30d",
    records: new Map(), // series key -> {metric, labels, value, as_of}
    segments: new Set(["all"]),
    asOf: null,
    currency: "",
    history: new Map(), // history query -> {points} | {missing: message}
    historyFor: null, // the selection the history holds
    generation: 0, // bumped by each change of selection: late answers of an older one are dropped
    hover: new Map(), // chart id -> hovered index
  };

  function seriesKey(metric, labels) {
    const inner = Object.keys(labels)
      .sort()
      .map((name) => `${name}=${labels[name]}`)
      .join(",");
    return `${metric}{${inner}}`;
  }

  function labelsOf(windowed, extra) {
    const labels = { segment: state.segment, ...extra };
    if (windowed) labels.window = state.window;
    return labels;
  }

  function historyQuery(metric, labels) {
    const params = new URLSearchParams({ metric, ...labels });
    return `/api/history?${params}`;
  }

  const selection = () => `${state.segment}|${state.window}`;

  // ---- formatting

  const whole = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const cents = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });

  function isNumber(value) {
    return typeof value === "number" && Number.isFinite(value);
  }

  function format(value, kind) {
    if (!isNumber(value)) return "—";
    if (kind === "ratio") return `${(value * 100).toFixed(1)}%`;
    return (Math.abs(value) < 100 ? cents : whole).format(value);
  }

  const compacts = [2, 3, 4, 5].map(
    (digits) => new Intl.NumberFormat("en-US", { notation: "compact", maximumSignificantDigits: digits }),
  );

  // The labels of a value axis from `low` to `high`: precise enough for the span between them, never alike.
  function axisLabels(low, high, kind) {
    // A rate: the decimals of its span in percent, plus one (a 4 pp span: 95.3%); money: 3 significant digits.
    const first = kind === "ratio" ? Math.max(0, Math.ceil(-Math.log10(Math.abs(high - low) * 100 || 1)) + 1) : 1;
    let labels = [];
    for (let step = Math.min(first, 3); step <= 3; step++) {
      labels = kind === "ratio"
        ? [low, high].map((v) => `${(v * 100).toFixed(step)}%`)
        : [low, high].map((v) => compacts[step].format(v));
      if (labels[0] !== labels[1]) break;
    }
    return labels;
  }

  const day = (at) => at.slice(0, 10);
  const asOfText = (at) => `${at.slice(0, 10)} ${at.slice(11, 16)} UTC`;

  // ---- SVG helpers

  function svgNode(name, attributes, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const r1 = (x) => Math.round(x * 10) / 10;

  function range(values) {
    let low = Math.min(...values);
    let high = Math.max(...values);
    if (!Number.isFinite(low)) return [0, 1];
    if (low === high) {
      const pad = Math.abs(low) * 0.05 || 1;
      low -= pad;
      high += pad;
    }
    // Some room above and below the line, but no negative axis under values that are never negative.
    const pad = (high - low) * 0.08;
    return [low >= 0 ? Math.max(0, low - pad) : low - pad, high <= 0 ? Math.min(0, high + pad) : high + pad];
  }

  // A vertical hover line and a readout, kept across redraws (the charts are redrawn every few seconds).
  function hoverable(id, svg, xs, top, bottom, describe, readout) {
    const marker = svgNode("line", { class: "hover", y1: top, y2: bottom, x1: -10, x2: -10, visibility: "hidden" });
    svg.appendChild(marker);
    const show = (index) => {
      if (index === null || index >= xs.length) {
        marker.setAttribute("visibility", "hidden");
        readout.textContent = "";
        return;
      }
      marker.setAttribute("x1", xs[index]);
      marker.setAttribute("x2", xs[index]);
      marker.setAttribute("visibility", "visible");
      readout.textContent = describe(index);
    };
    svg.addEventListener("mousemove", (event) => {
      const box = svg.getBoundingClientRect();
      const width = svg.viewBox.baseVal.width;
      const x = ((event.clientX - box.left) / box.width) * width;
      let best = 0;
      for (let i = 1; i < xs.length; i++) if (Math.abs(xs[i] - x) < Math.abs(xs[best] - x)) best = i;
      state.hover.set(id, best);
      show(best);
    });
    svg.addEventListener("mouseleave", () => {
      state.hover.delete(id);
      show(null);
    });
    show(state.hover.has(id) ? state.hover.get(id) : null);
  }

  // ---- a headline's trend: the history's points as a line, the latest value as a dot after them

  function lineChart(id, points, live, kind, readout) {
    const width = 320;
    const height = 100;
    const top = 6;
    const bottom = height - 16;
    const left = 40; // the value axis' labels
    const svg = svgNode("svg", { viewBox: `0 0 ${width} ${height}`, class: "trend", role: "img" });
    svg.dataset.points = String(points.length);
    const times = points.map((p) => Date.parse(p.at));
    const liveTime = live && isNumber(live.value) ? Date.parse(live.at) : null;
    const t0 = times.length ? times[0] : liveTime;
    const t1 = Math.max(times.length ? times[times.length - 1] : -Infinity, liveTime ?? -Infinity);
    const defined = points.filter((p) => isNumber(p.value)).map((p) => p.value);
    svg.dataset.defined = String(defined.length);
    const [low, high] = range(liveTime !== null ? [...defined, live.value] : defined);
    const x = (t) => (t1 > t0 ? r1(left + 2 + ((t - t0) / (t1 - t0)) * (width - left - 8)) : (left + width) / 2);
    const y = (v) => r1(bottom - ((v - low) / (high - low)) * (bottom - top));
    const [lowLabel, highLabel] = axisLabels(low, high, kind);
    for (const [v, text] of [[high, highLabel], [low, lowLabel]]) {
      svg.appendChild(svgNode("line", { class: "grid", x1: left, x2: width, y1: y(v), y2: y(v) }));
      svg.appendChild(svgNode("text", { class: "axis", x: left - 4, y: y(v) + 3, "text-anchor": "end" }, text));
    }
    if (low < 0 && high > 0) svg.appendChild(svgNode("line", { class: "zero", x1: left, x2: width, y1: y(0), y2: y(0) }));
    // One run per stretch of defined values: an undefined point is a gap, not a zero.
    let line = "";
    let area = "";
    let run = [];
    const flush = () => {
      if (!run.length) return;
      line += run.map(([px, py], i) => `${i ? "L" : "M"}${px} ${py}`).join("");
      const base = y(Math.max(low, Math.min(high, 0)));
      area += `M${run[0][0]} ${base}${run.map(([px, py]) => `L${px} ${py}`).join("")}L${run[run.length - 1][0]} ${base}Z`;
      run = [];
    };
    points.forEach((p, i) => (isNumber(p.value) ? run.push([x(times[i]), y(p.value)]) : flush()));
    flush();
    if (area) svg.appendChild(svgNode("path", { class: "area", d: area }));
    svg.appendChild(svgNode("path", { class: "line", d: line }));
    const last = [...points].reverse().find((p) => isNumber(p.value));
    if (liveTime !== null) {
      if (last) {
        const lx = x(Date.parse(last.at));
        svg.appendChild(svgNode("path", { class: "to-now", d: `M${lx} ${y(last.value)}L${x(liveTime)} ${y(live.value)}` }));
      }
      svg.appendChild(svgNode("circle", { class: "now", cx: x(liveTime), cy: y(live.value), r: 3.2 }));
    }
    if (points.length) {
      svg.appendChild(svgNode("text", { class: "axis", x: left, y: height - 2 }, day(points[0].at)));
    }
    if (live) svg.appendChild(svgNode("text", { class: "axis", x: width, y: height - 2, "text-anchor": "end" }, day(live.at)));
    const xs = points.map((_, i) => x(times[i]));
    const describe = (i) => `${day(points[i].at)}: ${format(points[i].value, kind)}`;
    hoverable(id, svg, xs, top, bottom, describe, readout);
    return svg;
  }

  // ---- the MRR movements: stacked bars per midnight, gains up and losses down, and the net as a line

  function movementsChart(histories) {
    const width = 1000;
    const height = 230;
    const top = 8;
    const bottom = height - 18;
    const left = 44;
    const svg = svgNode("svg", { viewBox: `0 0 ${width} ${height}`, class: "stacked", role: "img" });
    const days = [...new Set(KINDS.flatMap(({ kind }) => (histories[kind] || []).map((p) => p.at)))].sort();
    svg.dataset.points = String(days.length);
    const byKind = {};
    for (const { kind } of KINDS) {
      const points = histories[kind] || [];
      svg.dataset[`points${kind[0].toUpperCase()}${kind.slice(1)}`] = String(points.length);
      byKind[kind] = new Map(points.map((p) => [p.at, p.value]));
    }
    const amount = (kind, at) => (isNumber(byKind[kind].get(at)) ? byKind[kind].get(at) : 0);
    const up = days.map((at) => KINDS.filter((k) => k.sign > 0).reduce((s, k) => s + amount(k.kind, at), 0));
    const down = days.map((at) => KINDS.filter((k) => k.sign < 0).reduce((s, k) => s + amount(k.kind, at), 0));
    const net = days.map((_, i) => up[i] - down[i]);
    const high = Math.max(0, ...up) || 1;
    const low = -Math.max(0, ...down) || -1;
    const y = (v) => r1(bottom - ((v - low) / (high - low)) * (bottom - top));
    const step = days.length ? (width - left) / days.length : 0;
    const barWidth = Math.max(0.5, step * 0.8);
    for (const v of [high, low]) svg.appendChild(svgNode("line", { class: "grid", x1: left, x2: width, y1: y(v), y2: y(v) }));
    // The top, zero and bottom of the value axis; a label too close to another one is left out.
    const [lowLabel, highLabel] = axisLabels(low, high, "money");
    const ticks = [[high, highLabel], [0, "0"], [low, lowLabel]];
    ticks.forEach(([v, text], i) => {
      if (i !== 1 && Math.abs(y(v) - y(0)) < 12) return;
      svg.appendChild(svgNode("text", { class: "axis", x: left - 4, y: y(v) + 4, "text-anchor": "end" }, text));
    });
    days.forEach((at, i) => {
      const bx = r1(left + i * step + (step - barWidth) / 2);
      let above = 0;
      let below = 0;
      for (const { kind, sign } of KINDS) {
        const value = amount(kind, at);
        if (value <= 0) continue;
        const from = sign > 0 ? above : -below;
        const to = sign > 0 ? above + value : -(below + value);
        if (sign > 0) above += value;
        else below += value;
        const y1 = Math.min(y(from), y(to));
        const rect = { class: `bar-${kind}`, x: bx, y: y1, width: r1(barWidth), height: r1(Math.abs(y(to) - y(from))) };
        svg.appendChild(svgNode("rect", rect));
      }
    });
    svg.appendChild(svgNode("line", { class: "zero", x1: left, x2: width, y1: y(0), y2: y(0) }));
    const xs = days.map((_, i) => r1(left + (i + 0.5) * step));
    if (days.length) {
      svg.appendChild(svgNode("path", { class: "net", d: net.map((v, i) => `${i ? "L" : "M"}${xs[i]} ${y(v)}`).join("") }));
      const labels = [[0, "start"], [Math.floor((days.length - 1) / 2), "middle"], [days.length - 1, "end"]];
      for (const [i, anchor] of days.length > 2 ? labels : labels.slice(0, 1)) {
        const x = anchor === "start" ? left : anchor === "end" ? width : xs[i];
        svg.appendChild(svgNode("text", { class: "axis", x, y: height - 4, "text-anchor": anchor }, day(days[i])));
      }
    }
    const describe = (i) =>
      `${day(days[i])}: ` +
      KINDS.map(({ kind }) => `${kind} ${format(byKind[kind].get(days[i]), "money")}`).join(" · ") +
      ` · net ${format(net[i], "money")}`;
    hoverable("movements", svg, xs, top, bottom, describe, document.getElementById("movements-readout"));
    return svg;
  }

  // ---- the page

  const cards = new Map();

  function buildCards() {
    const box = document.getElementById("cards");
    for (const headline of HEADLINES) {
      const card = document.createElement("article");
      card.className = "card";
      card.dataset.metric = headline.metric;
      card.innerHTML =
        '<header><h2></h2><span class="tag"></span><span class="readout"></span></header>' +
        '<div class="value"></div><div class="change"></div><div class="chart-box"></div>';
      card.querySelector("h2").textContent = headline.label;
      box.appendChild(card);
      cards.set(headline.metric, card);
    }
    const legend = document.getElementById("movements-legend");
    for (const { kind, label } of [...KINDS, { kind: "net", label: "Net new MRR" }]) {
      const item = document.createElement("li");
      item.dataset.kind = kind;
      item.innerHTML = '<span class="swatch"></span><span class="name"></span><span class="amount"></span>';
      item.querySelector(".swatch").classList.add(kind);
      item.querySelector(".name").textContent = label;
      legend.appendChild(item);
    }
  }

  function current(metric, windowed, extra) {
    return state.records.get(seriesKey(metric, labelsOf(windowed, extra)));
  }

  // The change against the selected window's length ago (the previous period for a windowed metric).
  function change(points, value, kind) {
    if (!isNumber(value) || !state.asOf || !points) return ["", ""];
    const days = parseInt(state.window, 10);
    const then = new Date(Math.floor(Date.parse(state.asOf) / DAY_MS) * DAY_MS - days * DAY_MS).toISOString();
    const past = points.find((p) => day(p.at) === day(then));
    if (!past || !isNumber(past.value)) return ["", ""];
    const delta = value - past.value;
    const ago = `vs ${state.window} ago`;
    if (past.value === 0 && kind !== "ratio") {
      if (delta === 0) return [`±0 ${ago}`, ""];
      return [`${delta > 0 ? "+" : "−"}${format(Math.abs(delta), kind)} ${ago}`, delta > 0 ? "up" : "down"];
    }
    // Percentage points for a rate, percent of the earlier value for money.
    const shown = kind === "ratio" ? delta * 100 : (delta / Math.abs(past.value)) * 100;
    const digits = Math.abs(shown).toFixed(1);
    const unit = kind === "ratio" ? " pp" : "%";
    if (digits === "0.0") return [`±0.0${unit} ${ago}`, ""];
    return [`${shown > 0 ? "+" : "−"}${digits}${unit} ${ago}`, shown > 0 ? "up" : "down"];
  }

  function render() {
    const haveHistory = state.historyFor === selection();
    for (const headline of HEADLINES) {
      const card = cards.get(headline.metric);
      const record = current(headline.metric, headline.windowed);
      const value = record ? record.value : null;
      const valueBox = card.querySelector(".value");
      valueBox.textContent = format(value, headline.format);
      valueBox.dataset.value = JSON.stringify(isNumber(value) ? value : null);
      valueBox.classList.toggle("undefined", !isNumber(value));
      if (isNumber(value) && headline.format === "money") {
        const unit = document.createElement("span");
        unit.className = "unit";
        unit.textContent = `${state.currency}${headline.unit || ""}`;
        valueBox.appendChild(unit);
      }
      valueBox.title = record ? "" : "no such series yet";
      card.querySelector(".tag").textContent = headline.windowed ? state.window : "";
      const chartBox = card.querySelector(".chart-box");
      const readout = card.querySelector(".readout");
      const query = historyQuery(headline.metric, labelsOf(headline.windowed));
      const history = haveHistory ? state.history.get(query) : undefined;
      const changeBox = card.querySelector(".change");
      const [text, direction] = change(history && history.points, value, headline.format);
      changeBox.textContent = text;
      changeBox.className = `change ${direction}`;
      const live = record && state.asOf ? { at: state.asOf, value } : null;
      chartBox.replaceChildren(
        history && history.points
          ? lineChart(headline.metric, history.points, live, headline.format, readout)
          : placeholder(history ? history.missing : "loading history…"),
      );
    }
    document.getElementById("movements-window").textContent = state.window;
    for (const item of document.querySelectorAll("#movements-legend li")) {
      const kind = item.dataset.kind;
      const record = kind === "net" ? current("net_new_mrr", true) : current("mrr_movement", true, { kind });
      item.querySelector(".amount").textContent = format(record ? record.value : null, "money");
    }
    const histories = {};
    let missing = haveHistory ? "" : "loading history…";
    for (const { kind } of KINDS) {
      const history = haveHistory ? state.history.get(historyQuery("mrr_movement", labelsOf(true, { kind }))) : null;
      if (history && history.points) histories[kind] = history.points;
      else if (history) missing = history.missing;
    }
    document.getElementById("movements-chart").replaceChildren(missing ? placeholder(missing) : movementsChart(histories));
    document.body.dataset.asOf = state.asOf || "";
    document.body.dataset.rendered = haveHistory ? selection() : "";
  }

  function placeholder(text) {
    const node = document.createElement("div");
    node.className = "empty";
    node.textContent = text;
    return node;
  }

  function setStatus(text, kind) {
    const status = document.getElementById("status");
    status.textContent = text;
    status.className = `status ${kind}`;
  }

  function explain(error) {
    if (error instanceof HttpError && error.status === 401) {
      return "not authorised: open the board as /?token=<read token>, or with the read user's password";
    }
    return `${error.message}: retrying`;
  }

  function syncSegments() {
    const select = document.getElementById("segment");
    const wanted = ["all", ...[...state.segments].filter((s) => s !== "all").sort()];
    const have = [...select.options].map((o) => o.value);
    if (wanted.join("|") === have.join("|")) return;
    select.replaceChildren(
      ...wanted.map((segment) => {
        const option = document.createElement("option");
        option.value = segment;
        option.textContent = segment;
        return option;
      }),
    );
    select.value = state.segment;
  }

  async function refreshLive() {
    const records = await fetchJSON("/api/metrics");
    state.records = new Map(records.map((r) => [seriesKey(r.metric, r.labels), r]));
    for (const r of records) if (r.labels.segment) state.segments.add(r.labels.segment);
    const asOf = records.length ? records[0].as_of : null;
    const newDay = asOf && state.asOf && day(asOf) !== day(state.asOf);
    state.asOf = asOf;
    syncSegments();
    return newDay;
  }

  async function refreshHistory() {
    const generation = state.generation;
    const wanted = selection();
    const queries = [
      ...HEADLINES.map((h) => historyQuery(h.metric, labelsOf(h.windowed))),
      ...KINDS.map(({ kind }) => historyQuery("mrr_movement", labelsOf(true, { kind }))),
    ];
    const answers = await Promise.all(
      queries.map(async (query) => {
        try {
          return [query, { points: (await fetchJSON(query)).points }];
        } catch (error) {
          // A series the history does not hold yet (400) is a gap on the board, not a failure of it.
          if (error instanceof HttpError && error.status === 400) return [query, { missing: "no history yet" }];
          throw error;
        }
      }),
    );
    if (generation !== state.generation) return; // the selection changed meanwhile
    state.history = new Map(answers);
    state.historyFor = wanted;
  }

  async function loadCurrency() {
    try {
      const match = /^revpulse_info\{[^}]*currency="([A-Z]{3})"/m.exec(await fetchText("/metrics"));
      if (match) state.currency = ` ${match[1]}`;
    } catch (_) {
      state.currency = "";
    }
  }

  // ---- the loops: values every few seconds, the history less often and at once on a change of selection

  let historyDue = 0;
  let busy = false;
  let again = false; // a tick was asked for while one ran: run it after

  async function tick() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    again = false;
    try {
      const newDay = await refreshLive();
      if (newDay || Date.now() >= historyDue || state.historyFor !== selection()) {
        historyDue = Date.now() + HISTORY_EVERY_MS;
        await refreshHistory();
      }
      render();
      setStatus(state.asOf ? `as of ${asOfText(state.asOf)}` : "waiting for the first event", "live");
    } catch (error) {
      setStatus(explain(error), "error");
    } finally {
      busy = false;
      if (again) tick();
    }
  }

  function readSelection() {
    const wanted = new URLSearchParams(location.hash.slice(1));
    if (wanted.get("segment")) {
      state.segment = wanted.get("segment");
      state.segments.add(state.segment);
    }
    if (WINDOWS.includes(wanted.get("window"))) state.window = wanted.get("window");
  }

  function select() {
    state.segment = document.getElementById("segment").value;
    state.window = document.getElementById("window").value;
    state.generation += 1;
    state.hover.clear();
    const hash = new URLSearchParams({ segment: state.segment, window: state.window });
    history.replaceState(null, "", `${location.pathname}${location.search}#${hash}`);
    render();
    historyDue = 0;
    tick();
  }

  buildCards();
  readSelection();
  syncSegments();
  document.getElementById("segment").value = state.segment;
  document.getElementById("window").value = state.window;
  document.getElementById("segment").addEventListener("change", select);
  document.getElementById("window").addEventListener("change", select);
  loadCurrency().finally(() => {
    tick();
    setInterval(tick, LIVE_EVERY_MS);
  });
})();
