// The charts of a rollout's report (`rollout report` and the dashboard draw them with this one file):
// drawReport(report) (re)draws every chart into its element; window.reportCharts lists each chart
// and its point count, and body[data-charts] how many were drawn.
window.drawReport = function (report) {
  const t = (iso) => Date.parse(iso) / 1000;
  const width = Math.min(1000, document.body.clientWidth || 1000);
  window.reportCharts = [];
  function chart(id, title, labels, xs, columns, extra) {
    const el = document.getElementById(id);
    if (!el || xs.length === 0) return;
    el.textContent = "";
    const series = [{}].concat(labels.map((label, i) => Object.assign(
      {label: label, stroke: ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"][i % 5], width: 2},
      (extra || {})[label] || {})));
    const plot = new uPlot({title: title, width: width, height: 260, series: series,
      scales: {x: {time: true}}}, [xs].concat(columns), el);
    window.reportCharts.push({id: id, title: title, points: xs.length, series: labels});
    return plot;
  }
  const phases = report.phases;
  if (phases.length) {
    const xs = [], cand = [];
    const variant = report.rollout.candidate_variant;
    phases.forEach((p) => {
      xs.push(t(p.started_at)); cand.push(p.weights[variant] ?? 0);
      xs.push(p.ended_at ? t(p.ended_at) : Date.now() / 1000); cand.push(p.weights[variant] ?? 0);
    });
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
      chart("stat-" + i, m.metric + ": confidence sequence on the improvement, against -margin",
        ["lower bound", "upper bound", "estimate", "-margin"], xs,
        [low, high, pts.map((p) => p.improvement_estimate ?? null), margin], {"-margin": {dash: [6, 4]}});
      chart("samples-" + i, m.metric + ": samples per arm", ["baseline", "candidate"], xs,
        [pts.map((p) => p.baseline_n ?? 0), pts.map((p) => p.candidate_n ?? 0)]);
    }
  });
  document.body.setAttribute("data-charts", String(window.reportCharts.length));
};
