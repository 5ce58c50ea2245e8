// The live rollout page: every few seconds, the server's sections (the same HTML `rollout report`
// writes) and data replace the page's, and the charts are redrawn, without a reload. It stops once
// the rollout has ended. window.dashboardUpdates counts the updates (for tests and curious people).
(function () {
  const live = document.getElementById("live");
  const data = document.getElementById("report-data");
  if (!live || !data) return;
  window.dashboardUpdates = 0;
  window.drawReport(JSON.parse(data.textContent));
  const every = Math.max(0.5, parseFloat(live.dataset.poll || "2")) * 1000;
  const finals = ["promoted", "rolled_back", "aborted", "failed"];
  const status = document.createElement("p");
  status.id = "live-status";
  live.parentNode.insertBefore(status, live);
  async function update() {
    try {
      const answer = await fetch("/rollouts/" + live.dataset.rollout + "/live", {headers: {Accept: "application/json"}});
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      const fresh = await answer.json();
      live.innerHTML = fresh.html;
      window.drawReport(fresh.report);
      window.dashboardUpdates += 1;
      status.textContent = "updated " + new Date().toLocaleTimeString();
      if (finals.includes(fresh.report.rollout.state)) {
        status.textContent += "; the rollout has ended";
        return;
      }
    } catch (err) {
      status.textContent = "could not update (" + err.message + "); trying again";
    }
    setTimeout(update, every);
  }
  setTimeout(update, every);
})();
