// The dashboard's live parts, without reloads; window.dashboardUpdates counts the updates (for tests
// and curious people).
// - A rollout page: every few seconds, the server's sections (the same HTML `rollout report` writes)
//   and data replace the page's, the charts are redrawn, and the action buttons are enabled only in
//   the states they apply to. It stops once the rollout has ended.
// - A list page (endpoints, rollouts, models, an endpoint's page): the page is fetched again and its
//   list swapped in place.
(function () {
  window.dashboardUpdates = 0;
  const finals = ["promoted", "rolled_back", "aborted", "failed"];
  function statusLine(before) {
    const status = document.createElement("p");
    status.id = "live-status";
    before.parentNode.insertBefore(status, before);
    return status;
  }
  function buttons(state) {
    document.querySelectorAll("#actions button[data-states]").forEach((b) => {
      b.disabled = !b.dataset.states.split(" ").includes(state);
    });
  }
  const live = document.getElementById("live");
  const data = document.getElementById("report-data");
  if (live && data) {
    window.drawReport(JSON.parse(data.textContent));
    const every = Math.max(0.5, parseFloat(live.dataset.poll || "2")) * 1000;
    const status = statusLine(live);
    async function update() {
      try {
        const answer = await fetch("/rollouts/" + live.dataset.rollout + "/live", {headers: {Accept: "application/json"}});
        if (!answer.ok) throw new Error("HTTP " + answer.status);
        const fresh = await answer.json();
        live.innerHTML = fresh.html;
        window.drawReport(fresh.report);
        buttons(fresh.report.rollout.state);
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
    return;
  }
  const list = document.getElementById("list");
  if (!list || !list.dataset.live) return;
  const status = statusLine(list);
  const every = Math.max(1, parseFloat(list.dataset.poll || "3")) * 1000;
  async function refresh() {
    try {
      const answer = await fetch(location.pathname + location.search, {headers: {Accept: "text/html"}});
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      const page = new DOMParser().parseFromString(await answer.text(), "text/html");
      const fresh = page.getElementById("list");
      if (!fresh) throw new Error("the page has no list");
      list.innerHTML = fresh.innerHTML;
      window.dashboardUpdates += 1;
      status.textContent = "updated " + new Date().toLocaleTimeString();
      if (window.drawEndpoint) window.drawEndpoint();
    } catch (err) {
      status.textContent = "could not update (" + err.message + "); trying again";
    }
    setTimeout(refresh, every);
  }
  setTimeout(refresh, every);
})();
