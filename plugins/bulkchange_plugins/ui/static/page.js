// The Bulk changes page: draws itself from the plugin's JSON API and refreshes while work is open.
(function () {
  "use strict";
  const body = document.body;
  const PREFIX = body.dataset.prefix;
  const API = PREFIX + "/api";
  const OPEN = new Set(["NEW", "PENDING", "PROCESSING", "WAITING_FOR_CARRIER"]);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  async function api(path, options) {
    const response = await fetch(API + path, Object.assign({credentials: "same-origin",
      headers: {"Content-Type": "application/json"}}, options || {}));
    const data = (response.headers.get("content-type") || "").includes("json") ? await response.json() : null;
    if (!response.ok) throw new Error((data && data.detail) || response.statusText);
    return data;
  }

  function bar(progress) {
    const title = `${progress.processed} processed, ${progress.errors} failed, ${progress.pending} open of ${progress.total}`;
    return el("div", {class: "bar", title: title, role: "progressbar", "aria-valuenow": progress.percent_done,
                      "aria-valuemin": 0, "aria-valuemax": 100},
      el("span", {class: "ok", style: `width:${progress.percent_processed}%`}),
      el("span", {class: "err", style: `width:${progress.percent_errors}%`}),
      el("em", {text: `${progress.percent_done}%`}));
  }

  function badge(status) {
    return el("span", {class: "badge s-" + String(status).toLowerCase(), text: status});
  }

  function when(iso) { return iso ? iso.replace("T", " ").slice(0, 19) : ""; }

  // ---------------------------------------------------------------- the list
  function listPage() {
    const form = document.getElementById("filters");
    const tbody = document.querySelector("#bulk-changes tbody");
    const params = new URLSearchParams(location.search);
    let page = parseInt(params.get("page") || "1", 10);
    for (const name of ["status", "service_provider_id", "created_from", "created_to"]) {
      if (params.get(name)) form.elements[name].value = params.get(name);
    }
    api("/service-providers").then((data) => {
      const select = form.elements.service_provider_id;
      for (const sp of data.items) select.append(el("option", {value: sp.id, text: `${sp.name} (${sp.carrier})`}));
      if (params.get("service_provider_id")) select.value = params.get("service_provider_id");
    });

    function query() {
      const q = new URLSearchParams();
      for (const name of ["status", "service_provider_id", "created_from", "created_to"]) {
        if (form.elements[name].value) q.set(name, form.elements[name].value);
      }
      q.set("page", page);
      return q;
    }

    async function load() {
      const q = query();
      history.replaceState(null, "", "?" + q.toString());
      let data;
      try { data = await api("/bulk-changes?" + q.toString()); } catch (e) {
        tbody.replaceChildren(el("tr", {}, el("td", {colspan: 9, class: "error", text: e.message})));
        return;
      }
      const rows = data.items.map((b) => el("tr", {"data-id": b.id},
        el("td", {}, el("a", {href: `${PREFIX}/bulk-changes/${b.id}`, text: b.id})),
        el("td", {text: b.service_provider}), el("td", {text: b.carrier}), el("td", {text: b.change_type}),
        el("td", {}, badge(b.status)), el("td", {text: b.created_by || ""}), el("td", {text: when(b.created)}),
        el("td", {class: "progress-col"}, bar(b.progress)),
        el("td", {class: "errors", title: b.error_message || ""},
           b.progress.errors ? `${b.progress.errors} failed` : "", b.error_message ? el("div", {class: "muted small", text: b.error_message}) : null)));
      tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", {colspan: 9, class: "muted", text: "no bulk changes match"}))]));
      document.getElementById("page-label").textContent = `page ${data.page}`;
      document.getElementById("prev").disabled = data.page <= 1;
      document.getElementById("next").disabled = !data.has_next;
      clearTimeout(load.timer);
      if (data.items.some((b) => OPEN.has(b.status))) load.timer = setTimeout(load, 5000);
    }
    form.addEventListener("submit", (e) => { e.preventDefault(); page = 1; load(); });
    document.getElementById("clear").addEventListener("click", () => { form.reset(); page = 1; load(); });
    document.getElementById("prev").addEventListener("click", () => { page = Math.max(1, page - 1); load(); });
    document.getElementById("next").addEventListener("click", () => { page += 1; load(); });
    load();
  }

  // ---------------------------------------------------------------- one bulk change
  function detailPage() {
    const id = parseInt(location.pathname.replace(/\/+$/, "").split("/").pop(), 10);
    const result = document.getElementById("action-result");
    const deviceForm = document.getElementById("device-filter");
    const devices = document.querySelector("#devices tbody");
    let after = null;
    let bulk = null;
    document.getElementById("csv").href = `${API}/bulk-changes/${id}/failed.csv`;

    function say(text, cls) {
      result.className = "action-result " + (cls || "");
      result.replaceChildren(...(Array.isArray(text) ? text : [text]));
    }

    async function summary() {
      try { bulk = await api(`/bulk-changes/${id}`); } catch (e) {
        document.getElementById("facts").textContent = e.message;
        return;
      }
      document.title = `Bulk change ${bulk.id}`;
      document.getElementById("title").textContent = `Bulk change ${bulk.id}: ${bulk.change_type} on ${bulk.carrier}`;
      const facts = [["Status", badge(bulk.status)], ["Service provider", `${bulk.service_provider} (${bulk.service_provider_id})`],
        ["Portal", bulk.portal_type], ["Created by", bulk.created_by || ""], ["Created (UTC)", when(bulk.created)],
        ["Finished (UTC)", when(bulk.processed)]];
      document.getElementById("facts").replaceChildren(...facts.map(([k, v]) => el("div", {}, el("b", {text: k}), " ", v)));
      document.getElementById("bar").replaceChildren(bar(bulk.progress));
      const shown = `${bulk.status} ${bulk.progress.processed} ${bulk.progress.errors}`;
      if (summary.shown !== undefined && summary.shown !== shown) reloadDevices();  // statuses moved
      summary.shown = shown;
      const p = bulk.progress;
      document.getElementById("progress-text").textContent =
        `${p.processed + p.errors} of ${p.total} settled: ${p.processed} processed, ${p.errors} failed, ${p.pending} open`;
      document.getElementById("counts").replaceChildren(...Object.entries(bulk.counts).sort().map(([s, n]) =>
        el("button", {type: "button", class: "count", "data-status": s, onclick: () => { deviceForm.elements.status.value = s; reloadDevices(); }},
           badge(s), ` ${n}`)));
      document.getElementById("error-message").textContent = bulk.error_message || "";
      const select = deviceForm.elements.status;
      const have = new Set([...select.options].map((o) => o.value));
      for (const s of Object.keys(bulk.counts).sort()) if (!have.has(s)) select.append(el("option", {value: s, text: s}));
      const retry = document.getElementById("retry");
      retry.disabled = !bulk.can.retry;
      retry.title = bulk.can.trigger ? (bulk.can.retry ? "" : "no failed devices, or its run is not over yet")
                                     : "you may not trigger bulk_change_process";
      document.getElementById("dry-run").disabled = !bulk.can.dry_run;
      document.querySelector("#runs tbody").replaceChildren(...bulk.runs.map((r) => el("tr", {},
        el("td", {}, el("a", {href: r.url, target: "_top", text: r.run_id})), el("td", {text: r.kind}),
        el("td", {}, badge(r.state)), el("td", {text: r.triggered_by || ""}), el("td", {text: when(r.start)}))));
      document.querySelector("#dry-runs tbody").replaceChildren(...bulk.dry_runs.map((d) => el("tr", {},
        el("td", {}, el("a", {href: "#", onclick: (e) => { e.preventDefault(); showReport(d.id); }, text: `#${d.id}`})),
        el("td", {text: when(d.created)}), el("td", {text: d.would_process}), el("td", {text: d.rejected}),
        el("td", {text: Object.entries(d.carrier_calls || {}).map(([k, v]) => `${k}: ${v}`).join(", ") || "none"}),
        el("td", {text: d.estimated_seconds != null ? `${d.estimated_seconds} s` : ""}),
        el("td", {class: d.irreversible.length ? "danger-text" : "", text: d.irreversible.map((i) => `${i.action} (${i.devices})`).join(", ") || "none"}))));
      const approval = document.getElementById("approval");
      approval.hidden = !bulk.approvals.length;
      if (bulk.approvals.length) {
        const a = bulk.approvals[0];
        document.getElementById("approval-body").replaceChildren(el("p", {}, el("b", {text: a.subject})),
          el("pre", {text: a.body || ""}), el("a", {href: a.url, target: "_top", text: "open in Airflow"}));
        for (const b of ["approve", "reject"]) document.getElementById(b).disabled = !bulk.can.approve;
      }
      clearTimeout(summary.timer);
      const running = bulk.runs.some((r) => r.state === "running" || r.state === "queued");
      if (OPEN.has(bulk.status) || running) summary.timer = setTimeout(() => { summary(); }, 3000);
    }

    async function showReport(reportId) {
      const pre = document.getElementById("dry-run-report");
      const report = await api(`/bulk-changes/${id}/dry-runs/${reportId}`);
      pre.hidden = false;
      pre.textContent = JSON.stringify(report.report, null, 2);
    }

    async function loadDevices(append) {
      const q = new URLSearchParams({page_size: 50});
      if (deviceForm.elements.status.value) q.set("status", deviceForm.elements.status.value);
      if (append && after !== null) q.set("after", after);
      const data = await api(`/bulk-changes/${id}/devices?${q}`);
      const rows = data.items.map((d) => {
        const last = d.last_response;
        const lastText = last ? `${last.status || ""} ${last.error || last.response || ""}`.trim() : "";
        const row = el("tr", {"data-id": d.id},
          el("td", {class: "mono", text: d.iccid || ""}), el("td", {class: "mono", text: d.msisdn || ""}),
          el("td", {}, badge(d.status)), el("td", {class: "reason", text: d.reason || ""}),
          el("td", {class: "response", title: lastText, text: lastText}), el("td", {text: when(d.modified)}),
          el("td", {}, el("button", {type: "button", class: "link", text: "log", onclick: () => toggleLog(row, d.id)})));
        return row;
      });
      if (append) devices.append(...rows); else devices.replaceChildren(...rows);
      after = data.next_after;
      document.getElementById("more").hidden = !data.has_next;
    }

    async function toggleLog(row, dcId) {
      const next = row.nextElementSibling;
      if (next && next.classList.contains("log-row")) { next.remove(); return; }
      const data = await api(`/bulk-changes/${id}/devices/${dcId}/log`);
      const table = el("table", {class: "grid small"},
        el("thead", {}, el("tr", {}, ...["When (UTC)", "Step", "Status", "Request", "Response / error", "By"].map((h) => el("th", {text: h})))),
        el("tbody", {}, ...data.items.map((l) => el("tr", {class: l.has_errors ? "has-errors" : ""},
          el("td", {text: when(l.at)}), el("td", {text: l.description}), el("td", {text: l.status || ""}),
          el("td", {}, el("pre", {text: l.request || ""})), el("td", {}, el("pre", {text: l.error || l.response || ""})),
          el("td", {text: l.by || ""})))));
      row.after(el("tr", {class: "log-row"}, el("td", {colspan: 7}, data.items.length ? table : "no log rows")));
    }

    function reloadDevices() { after = null; loadDevices(false); }

    async function act(button, path, payload, label) {
      button.disabled = true;
      say(`${label}…`);
      try {
        const r = await api(path, {method: "POST", body: JSON.stringify(payload || {})});
        say([`${label}: `, el("a", {href: r.url, target: "_top", text: r.dag_run_id || r.run_id})], "ok");
      } catch (e) {
        say(`${label} refused: ${e.message}`, "error");
      }
      await summary();
    }

    document.getElementById("retry").addEventListener("click", (e) =>
      act(e.currentTarget, `/bulk-changes/${id}/retry`, {}, "Retry of the failed devices started"));
    document.getElementById("dry-run").addEventListener("click", (e) =>
      act(e.currentTarget, `/bulk-changes/${id}/dry-run`, {}, "Dry run started"));
    for (const [button, decision] of [["approve", "Approve"], ["reject", "Reject"]]) {
      document.getElementById(button).addEventListener("click", (e) => act(e.currentTarget,
        `/bulk-changes/${id}/approval`, {decision: decision, reason: document.getElementById("approval-reason").value},
        decision === "Approve" ? "Approved" : "Rejected"));
    }
    deviceForm.addEventListener("submit", (e) => { e.preventDefault(); reloadDevices(); });
    document.getElementById("more").addEventListener("click", () => loadDevices(true));
    summary();
    reloadDevices();
  }

  if (body.dataset.page === "list") listPage(); else detailPage();
})();
