// The charts of a rollout's report (`rollout report` and the dashboard draw them with this one file):
// drawReport(report) (re)draws every chart into its element; window.reportCharts lists each chart
// with its point count, its y range and whether it is framed; body[data-charts] says how many were
// drawn. A confidence sequence's first looks are the widest by far: its chart frames the range the
// later looks (and the margin) span, with the full range one click away.
// The y axis as wide as its longest label ("-0.025" whole, its minus sign too).
function ySize(u, values, axisIdx, cycleNum) {
  const axis = u.axes[axisIdx];
  if (cycleNum > 1) return axis._size;
  let size = axis.ticks.size + axis.gap;
  const longest = (values || []).reduce((a, v) => (String(v).length > a.length ? String(v) : a), "");
  if (longest !== "") {
    u.ctx.font = axis.font[0];
    size += u.ctx.measureText(longest).width / (window.devicePixelRatio || 1);
  }
  return Math.ceil(size) + 4;
}
// How a drawn chart's axes came out, for tests and the curious: the y axis's width against its longest
// label, and the least room between two x labels (negative would be an overlap).
function axesOf(plot) {
  const y = plot.axes[1], x = plot.axes[0];
  const dpr = window.devicePixelRatio || 1;
  const measure = (axis, v) => { plot.ctx.font = axis.font[0]; return plot.ctx.measureText(String(v)).width / dpr; };
  const longest = (y._values || []).reduce((a, v) => (String(v).length > a.length ? String(v) : a), "");
  const at = (x._splits || []).map((v) => plot.valToPos(v, "x"));
  const widths = (x._values || []).map((v) => measure(x, v));
  let clearance = Infinity;
  for (let i = 1; i < at.length; i++) clearance = Math.min(clearance, at[i] - at[i - 1] - (widths[i] + widths[i - 1]) / 2);
  return {yAxis: y._size, yLabel: longest ? measure(y, longest) : 0, yLongest: longest,
    xClearance: isFinite(clearance) ? clearance : 1e6};
}
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];
window.drawReport = function (report) {
  const t = (iso) => Date.parse(iso) / 1000;
  const width = Math.min(1000, (document.body.clientWidth || 1000) - 40);
  const finals = {promoted: 100, rolled_back: 0, aborted: 0};
  window.reportCharts = [];
  function chart(id, title, labels, xs, columns, extra, focus) {
    const el = document.getElementById(id);
    if (!el || xs.length === 0) return;
    el.textContent = "";
    const series = [{}].concat(labels.map((label, i) => Object.assign(
      {label: label, stroke: PALETTE[i % 5], width: 2},
      (extra || {})[label] || {})));
    const state = {framed: Boolean(focus)};
    // a share of traffic is drawn from 0 to 100 whatever it reached, so the final 100% is in view
    const yScale = id === "weights" ? {range: () => [0, 100]}
      : focus ? {range: (u, lo, hi) => (state.framed ? focus : [lo, hi])} : {};
    const info = {id: id, title: title, points: xs.length, series: labels, framed: state.framed,
      last: columns.map((c) => c[c.length - 1])};
    const plot = new uPlot({title: title, width: width, height: 260, series: series,
      scales: {x: {time: true}, y: yScale},
      hooks: {draw: [(u) => Object.assign(info, axesOf(u))]},  // the axes as drawn, each time
      // x labels at least 120 px apart: "4:40am4:41am" never again
      axes: [{space: 120}, {size: ySize}]}, [xs].concat(columns), el);
    const range = () => {
      info.yRange = [plot.scales.y.min, plot.scales.y.max];
      info.framed = state.framed;
    };
    range();
    if (focus) {
      const button = document.createElement("button");
      button.className = "frame";
      const say = () => { button.textContent = state.framed ? "show the full range" : "frame the decisive range"; };
      say();
      button.addEventListener("click", () => { state.framed = !state.framed; plot.setData(plot.data); say(); range(); });
      el.appendChild(button);
    }
    window.reportCharts.push(info);
    return plot;
  }
  // The range the looks after the first quarter span, with -margin and 0, padded: where it is decided.
  function decisive(columns) {
    const n = columns[0].length;
    const from = Math.floor(n / 4);
    const all = [], late = [0];
    columns.forEach((c) => c.forEach((v, i) => {
      if (v == null || !isFinite(v)) return;
      all.push(v);
      if (i >= from) late.push(v);
    }));
    if (all.length < 2 || late.length < 2) return null;
    let lo = Math.min(...late), hi = Math.max(...late);
    const fullLo = Math.min(...all), fullHi = Math.max(...all);
    const pad = (hi - lo) * 0.1 || Math.abs(hi) * 0.1 || 0.01;
    lo -= pad; hi += pad;
    return (hi - lo) < 0.8 * (fullHi - fullLo) ? [lo, hi] : null;
  }
  const phases = report.phases;
  if (phases.length) {
    const xs = [], cand = [];
    const variant = report.rollout.candidate_variant;
    phases.forEach((p) => {
      xs.push(t(p.started_at)); cand.push(p.weights[variant] ?? 0);
      xs.push(p.ended_at ? t(p.ended_at) : Date.now() / 1000); cand.push(p.weights[variant] ?? 0);
    });
    const end = finals[report.rollout.state];
    if (end !== undefined && report.rollout.finished_at) {  // where it ended: all traffic, or none
      const at = Math.max(t(report.rollout.finished_at), xs[xs.length - 1]);
      xs.push(at); cand.push(end);
    }
    chart("weights", "candidate weight (%)", ["candidate %"], xs, [cand]);
  }
  report.metrics.forEach((m, i) => {
    const pts = m.points;
    if (!pts.length) return;
    const xs = pts.map((p) => t(p.at));
    if (m.kind === "errors") {
      chart("stat-" + i, m.metric + ": error e-value against its threshold", ["e-value", "threshold"], xs,
        [pts.map((p) => p.e_value), pts.map((p) => p.threshold)], {threshold: {dash: [6, 4]}});
      chart("samples-" + i, m.metric + ": requests per arm", ["baseline", "candidate"], xs,
        [pts.map((p) => p.baseline_requests), pts.map((p) => p.candidate_requests)]);
    } else {
      const low = pts.map((p) => p.improvement_low ?? null);
      const high = pts.map((p) => p.improvement_high ?? null);
      const margin = pts.map((p) => (p.margin == null ? null : -p.margin));
      const estimate = pts.map((p) => p.improvement_estimate ?? null);
      const columns = [low, high, estimate, margin];
      chart("stat-" + i, m.metric + ": confidence sequence on the improvement, against -margin",
        ["lower bound", "upper bound", "estimate", "-margin"], xs, columns, {"-margin": {dash: [6, 4]}},
        decisive(columns));
      chart("samples-" + i, m.metric + ": samples per arm", ["baseline", "candidate"], xs,
        [pts.map((p) => p.baseline_n ?? 0), pts.map((p) => p.candidate_n ?? 0)]);
    }
  });
  document.body.setAttribute("data-charts", String(window.reportCharts.length));
};
// An endpoint's page: per-variant invocations, errors and model latency over the chosen window, from
// the page's #endpoint-data; window.endpointCharts lists each chart with its series and point count.
window.drawEndpoint = function () {
  const data = document.getElementById("endpoint-data");
  if (!data) return;
  const series = JSON.parse(data.textContent);
  window.endpointCharts = [];
  const width = Math.min(1000, (document.body.clientWidth || 1000) - 40);
  Object.keys(series.metrics || {}).forEach((metric) => {
    const el = document.getElementById("ep-" + metric);
    if (!el) return;
    el.textContent = "";
    const byVariant = series.metrics[metric];
    const variants = Object.keys(byVariant);
    if (!series.times.length) {
      el.innerHTML = "<p class='none'>No " + series.labels[metric] + " to draw in this window.</p>";
      return;
    }
    const lines = [{}].concat(variants.map((v, i) => ({label: v, stroke: PALETTE[i % 5], width: 2, spanGaps: false})));
    const info = {id: el.id, series: variants, points: series.times.length};
    new uPlot({title: series.labels[metric] + " per variant", width: width, height: 220, series: lines,
      scales: {x: {time: true}}, axes: [{space: 120}, {size: ySize}],
      hooks: {draw: [(u) => Object.assign(info, axesOf(u))]}},
      [series.times].concat(variants.map((v) => byVariant[v])), el);
    window.endpointCharts.push(info);
  });
  document.body.setAttribute("data-endpoint-charts", String(window.endpointCharts.length));
};
if (document.getElementById("endpoint-data")) window.drawEndpoint();
