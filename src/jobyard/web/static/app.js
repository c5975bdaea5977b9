// jobyard dashboard: keeps the server-rendered pages live over SSE and the JSON API. No framework, no build step.
"use strict";
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const initialNode = $("#initial");
  const initial = initialNode ? JSON.parse(initialNode.textContent || "null") : null;
  const FINAL = new Set(["succeeded", "failed", "cancelled"]);
  const liveBox = $("#live");

  function setLive(state, text) {
    if (!liveBox) return;
    liveBox.dataset.state = state;
    liveBox.querySelector(".live-text").textContent = text;
  }

  // Build DOM nodes from data (text is always set as text, never parsed as HTML).
  function h(tag, attrs, ...children) {
    const node = document.createElementNS(
      attrs && attrs.svg ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml", tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "svg" || value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const s = (tag, attrs, ...children) => h(tag, { ...attrs, svg: true }, ...children);

  // Signed-in pages carry the session's CSRF token; unsafe requests echo it (the server checks).
  const csrf = document.querySelector('meta[name="csrf-token"]');
  async function api(method, url, body) {
    const headers = body === undefined ? {} : { "content-type": "application/json" };
    if (csrf && method !== "GET") headers["X-CSRF-Token"] = csrf.content;
    const response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
    if (!response.ok) {
      const detail = data && data.detail !== undefined ? data.detail : text;
      const message = Array.isArray(detail)
        ? detail.map((d) => `${(d.loc || []).slice(1).join(".") || "request"}: ${d.msg}`).join("\n")
        : String(detail);
      throw new Error(message || `HTTP ${response.status}`);
    }
    return data;
  }

  function throttle(fn, ms) {
    let timer = null, again = false;
    return () => {
      if (timer) { again = true; return; }
      fn();
      timer = setTimeout(function tick() {
        if (again) { again = false; fn(); timer = setTimeout(tick, ms); } else timer = null;
      }, ms);
    };
  }

  // One EventSource; the browser reconnects by itself and sends Last-Event-ID, so the server resumes.
  function stream(url, handlers) {
    const source = new EventSource(url);
    source.onopen = () => setLive("live", "live");
    source.onerror = () => setLive("reconnecting", "reconnecting…");
    for (const [name, fn] of Object.entries(handlers)) {
      source.addEventListener(name, (e) => fn(JSON.parse(e.data), e));
    }
    return source;
  }

  const ms = (iso) => (iso ? Date.parse(iso) : null);
  function fmtSeconds(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
    if (seconds < 10) return `${seconds.toFixed(2)} s`;
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  }
  const badge = (status) => h("span", { class: `badge s-${status}`, text: status });
  function progressBar(percent, status, label) {
    const p = Math.max(0, Math.min(100, percent));
    return h("div", { class: "progress-cell" },
      h("div", { class: `bar s-${status}`, role: "progressbar", "aria-label": label,
        "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": Math.round(p) },
      h("i", { style: `width: ${p}%` })),
      h("span", { class: "pct", text: `${Math.round(p)}%` }));
  }

  // --- jobs list ----------------------------------------------------------------------------------------
  function jobsPage() {
    const rows = $("#job-rows");
    const refresh = throttle(async () => {
      try {
        const [html, counts] = await Promise.all([
          fetch(`/_fragments/job-rows${location.search}`).then((r) => r.text()),
          api("GET", "/api/job-counts"),
        ]);
        rows.innerHTML = html; // rendered (and escaped) by the server's template
        let all = 0;
        for (const [name, n] of Object.entries(counts)) {
          all += n;
          const cell = $(`[data-count="${name}"]`);
          if (cell) cell.textContent = n;
        }
        $('[data-count="all"]').textContent = all;
      } catch (_) { /* the next event or the periodic refresh tries again */ }
    }, 500);
    stream("/api/events", {
      "action.status": refresh, "action.progress": refresh, "job.cancelled": refresh, resync: refresh,
      hello: refresh,
    });
    setInterval(refresh, 15000); // new jobs have no event until a worker claims them
  }

  // --- job detail -----------------------------------------------------------------------------------------
  function jobPage() {
    const job = initial;
    const byId = new Map(job.actions.map((a) => [a.id, a]));
    let source = null;
    let scheduled = false;
    const render = () => {
      if (scheduled) return;
      scheduled = true;
      requestAnimationFrame(() => { scheduled = false; renderAll(); });
    };

    function merge(view) {
      if (view.job) Object.assign(job, view.job);
      if (view.status && !view.job) job.status = view.status;
      for (const a of view.actions || []) {
        const known = byId.get(a.id);
        if (known) Object.assign(known, a); else { job.actions.push(a); byId.set(a.id, a); }
      }
    }

    const refetch = throttle(async () => {
      try {
        const { actions, ...fresh } = await api("GET", `/api/jobs/${job.id}`);
        merge({ job: fresh, actions });
        render();
      } catch (_) { /* keep the streamed state */ }
    }, 400);

    function onStatus(e) {
      const a = byId.get(e.action_id);
      if (!a) { refetch(); return; }
      const at = new Date(e.ts * 1000).toISOString();
      a.status = e.status;
      if (e.attempt !== undefined) a.attempts = e.attempt;
      if (e.status === "running") { a.started_at = at; a.finished_at = null; a.progress = 0; a.error = null; }
      if (FINAL.has(e.status)) { a.finished_at = at; if (e.status === "succeeded") a.progress = 1; }
      if (e.error) a.error = e.error;
      if (e.job_status) job.status = e.job_status;
      if (job.status === "pending") job.status = "running";
      render();
      if (FINAL.has(e.status) || e.status === "retrying") refetch(); // results and exact times from the store
    }

    function follow() {
      if (source) source.close();
      source = stream(`/api/jobs/${job.id}/events`, {
        snapshot: (data) => { merge(data); render(); },
        "action.status": onStatus,
        "action.progress": (e) => {
          const a = byId.get(e.action_id);
          if (a) { a.progress = e.progress; a.progress_message = e.message; render(); }
        },
        "job.cancelled": () => { job.status = "cancelled"; render(); refetch(); },
        "job.final": (data) => {
          merge(data);
          source.close(); source = null;
          setLive("idle", `finished: ${job.status}`);
          render();
        },
      });
    }

    async function control(button, method, url, after) {
      button.disabled = true;
      const box = $("#job-message");
      box.textContent = "";
      box.className = "";
      try {
        await api(method, url);
        after();
      } catch (err) {
        box.className = "error-box";
        box.textContent = err.message;
      } finally { button.disabled = false; }
    }

    $("#cancel-job").addEventListener("click", (e) =>
      control(e.currentTarget, "POST", `/api/jobs/${job.id}/cancel`, () => { job.status = "cancelled"; refetch(); }));

    function renderHeader() {
      const total = job.actions.length || 1;
      let done = 0, succeeded = 0, failed = 0;
      for (const a of job.actions) {
        if (FINAL.has(a.status)) done += 1; else if (a.status === "running") done += Math.min(1, a.progress || 0);
        if (a.status === "succeeded") succeeded += 1;
        if (a.status === "failed") failed += 1;
      }
      const percent = job.actions.length ? (100 * done) / total : 100;
      const statusBadge = $("#job-status");
      statusBadge.className = `badge s-${job.status}`;
      statusBadge.textContent = job.status;
      const bar = $("#job-bar");
      bar.className = `bar big s-${job.status}`;
      bar.setAttribute("aria-valuenow", Math.round(percent));
      bar.firstElementChild.style.width = `${percent}%`;
      $("#job-pct").textContent = `${Math.round(percent)}%`;
      $("#fact-succeeded").textContent = succeeded;
      $("#fact-failed").textContent = failed;
      const started = ms(job.started_at) || Math.min(...job.actions.map((a) => ms(a.started_at) || Infinity));
      const ended = FINAL.has(job.status) && job.actions.every((a) => FINAL.has(a.status))
        ? Math.max(...job.actions.map((a) => ms(a.finished_at) || 0), ms(job.finished_at) || 0) : Date.now();
      $("#fact-duration").textContent = Number.isFinite(started) ? fmtSeconds((ended - started) / 1000) : "—";
      $("#cancel-job").hidden = FINAL.has(job.status);
    }

    function renderTimeline() {
      const box = $("#timeline");
      const width = Math.max(320, box.clientWidth || 800);
      const n = job.actions.length;
      const compact = n > 40;
      const lane = compact ? Math.max(4, Math.min(10, Math.floor(480 / n))) : 26;
      const labelWidth = compact ? 0 : Math.min(190, Math.floor(width * 0.3));
      const top = 6, axis = 24;
      const t0 = ms(job.created_at);
      const now = Date.now();
      const ends = job.actions.map((a) => (a.finished_at ? ms(a.finished_at) : a.started_at ? now : t0));
      const tMax = Math.max(t0 + 1000, ...ends);
      const span = tMax - t0;
      const plot = width - labelWidth - 70;
      const x = (t) => labelWidth + ((t - t0) / span) * plot;
      const svg = s("svg", { viewBox: `0 0 ${width} ${top + n * lane + axis}`, height: top + n * lane + axis });
      job.actions.forEach((a, i) => {
        const y = top + i * lane;
        const barH = compact ? Math.max(2, lane - 2) : 14;
        const title = `#${i + 1} ${a.type}: ${a.status}`;
        if (!compact) {
          svg.append(s("text", { x: 0, y: y + 15, class: "lane-label", text: `${i + 1}. ${a.type}`.slice(0, 28) }));
        }
        svg.append(s("rect", { x: labelWidth, y, width: plot, height: barH, rx: 3, class: "track" }));
        if (!a.started_at) {
          svg.append(s("rect", { x: labelWidth, y, width: Math.max(2, x(now) - labelWidth), height: barH, rx: 3,
            class: `s-${a.status}` }, s("title", { text: `${title} (waiting)` })));
          return;
        }
        const start = ms(a.started_at);
        const end = a.finished_at ? ms(a.finished_at) : now;
        const w = Math.max(3, x(end) - x(start));
        svg.append(s("rect", { x: x(start), y, width: w, height: barH, rx: 3, class: `s-${a.status}` },
          s("title", { text: `${title}, ${fmtSeconds((end - start) / 1000)}` })));
        if (!compact) {
          const label = a.finished_at ? fmtSeconds((end - start) / 1000) : `${Math.round((a.progress || 0) * 100)}%`;
          svg.append(s("text", { x: x(start) + w + 6, y: y + 12, class: "bar-text", text: label }));
        }
      });
      const yAxis = top + n * lane + 4;
      svg.append(s("line", { x1: labelWidth, x2: labelWidth + plot, y1: yAxis, y2: yAxis, class: "axis" }));
      const seconds = span / 1000;
      const step = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600].find((st) => seconds / st <= 8) || 7200;
      for (let t = 0; t <= seconds + 1e-9; t += step) {
        const xt = labelWidth + (t / seconds) * plot;
        svg.append(s("line", { x1: xt, x2: xt, y1: yAxis, y2: yAxis + 4, class: "axis" }));
        svg.append(s("text", { x: xt, y: yAxis + 16, class: "tick", "text-anchor": "middle",
          text: step < 1 ? `${t.toFixed(1)}s` : `${Math.round(t)}s` }));
      }
      box.replaceChildren(svg);
      const running = job.actions.filter((a) => a.status === "running").length;
      box.setAttribute("aria-label",
        `timeline of ${n} actions over ${fmtSeconds(seconds)}; ${running} running`);
    }

    function resultCell(a) {
      if (a.error) return h("div", { class: "err", text: a.error.split("\n").slice(-3).join("\n").slice(0, 600) });
      if (a.result === null || a.result === undefined) {
        return a.progress_message ? h("span", { class: "muted", text: a.progress_message }) : "";
      }
      const text = JSON.stringify(a.result, null, 2);
      return h("details", { class: "result" }, h("summary", { text: "result" }), h("pre", { class: "json", text }));
    }

    function renderRows() {
      const body = $("#action-rows");
      const shown = job.actions.slice(0, 500);
      body.replaceChildren(...shown.map((a, i) => {
        const seconds = a.started_at ? ((a.finished_at ? ms(a.finished_at) : Date.now()) - ms(a.started_at)) / 1000 : null;
        const pct = FINAL.has(a.status) && a.status !== "succeeded" ? (a.progress || 0) * 100
          : a.status === "succeeded" ? 100 : (a.progress || 0) * 100;
        const retry = a.status === "failed" && job.status !== "cancelled"
          ? h("button", { class: "btn small", type: "button", "aria-label": `Retry action ${i + 1} (${a.type})`,
            onclick: (e) => control(e.currentTarget, "POST", `/api/actions/${a.id}/retry`, () => {
              a.status = "queued"; a.error = null; job.status = "running"; render(); if (!source) follow(); refetch();
            }) }, "Retry") : "";
        return h("tr", { "data-action": a.id },
          h("td", { class: "num", text: i + 1 }),
          h("td", { class: "name" }, h("strong", { text: a.type }), h("span", { class: "id", text: a.queue || "" })),
          h("td", {}, badge(a.status)),
          h("td", {}, progressBar(pct, a.status, `progress of action ${i + 1}`)),
          h("td", { class: "num", text: a.max_attempts ? `${a.attempts} / ${a.max_attempts}` : a.attempts }),
          h("td", { class: "num", text: fmtSeconds(seconds) }),
          h("td", {}, resultCell(a)),
          h("td", {}, retry));
      }));
      if (job.actions.length > shown.length) {
        body.append(h("tr", {}, h("td", { colspan: 8, class: "empty",
          text: `${job.actions.length - shown.length} more actions are not listed; the timeline shows them all.` })));
      }
    }

    function renderAll() { renderHeader(); renderTimeline(); renderRows(); }

    renderAll();
    const finished = FINAL.has(job.status) && job.actions.every((a) => FINAL.has(a.status));
    if (finished) setLive("idle", `finished: ${job.status}`); else follow();
    // Running bars grow with the clock between events.
    setInterval(() => { if (job.actions.some((a) => a.status === "running")) render(); }, 250);
    window.addEventListener("resize", render);
  }

  // --- queues ---------------------------------------------------------------------------------------------
  function chart(name, history) {
    const width = 360, height = 120, pad = 4;
    const depth = history.map((sample) => sample.depth[name] ?? 0);
    const done = history.map((sample) => sample.done[name] ?? 0);
    const max = Math.max(1, ...depth, ...done);
    const x = (i) => pad + (i / Math.max(1, history.length - 1)) * (width - 2 * pad);
    const y = (v) => height - pad - (v / max) * (height - 2 * pad);
    const line = (values) => values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", "aria-hidden": "true" },
      s("line", { x1: 0, x2: width, y1: y(max / 2), y2: y(max / 2), class: "grid" }),
      depth.length > 1 ? s("polygon", { class: "depth-fill",
        points: `${x(0)},${height - pad} ${line(depth)} ${x(depth.length - 1)},${height - pad}` }) : null,
      s("polyline", { class: "depth", points: line(depth) }),
      s("polyline", { class: "done", points: line(done) }));
    const minutes = Math.round((history.length * 2) / 60);
    return h("figure", { class: "chart" },
      h("h3", { text: name }),
      svg,
      h("figcaption", { class: "hint",
        text: `now ${depth.at(-1) ?? 0} waiting; peak ${Math.max(0, ...depth)}; ${done.reduce((a, b) => a + b, 0)} finished in the last ${minutes || "<1"} min` }));
  }

  function queuesPage() {
    async function refresh() {
      try {
        const data = await api("GET", "/api/queues?history=150");
        setLive("live", "sampling every 2 s");
        const rows = data.queues.map((q) => h("tr", {},
          h("th", { scope: "row", text: q.name }),
          h("td", { class: "num", text: q.depth === null ? "unknown" : q.depth }),
          h("td", { class: "num", text: q.consumers }),
          h("td", { class: "num", text: q.concurrency }),
          h("td", { class: "num", text: q.running }),
          h("td", { class: "num", text: q.rate_per_s.toFixed(2) })));
        $("#queue-rows").replaceChildren(...(rows.length ? rows
          : [h("tr", {}, h("td", { colspan: 6, class: "empty", text: "No queues yet." }))]));
        $("#charts").replaceChildren(...data.queues.map((q) => chart(q.name, data.history)));
      } catch (_) { setLive("reconnecting", "API unreachable"); }
    }
    refresh();
    setInterval(refresh, 2000);
  }

  // --- workers --------------------------------------------------------------------------------------------
  function workersPage() {
    async function refresh() {
      try {
        const { workers } = await api("GET", "/api/workers");
        setLive("live", "refreshing every 2 s");
        const rows = workers.map((w) => h("tr", {},
          h("td", { class: "name" }, h("strong", { text: w.id }), h("span", { class: "id", text: `${w.host} · pid ${w.pid}` })),
          h("td", { text: (w.queues || []).join(", ") }),
          h("td", { class: "num" }, progressBar(100 * w.running_count / Math.max(1, w.concurrency), "running",
            `busy slots of ${w.id}`), h("span", { class: "hint", text: `${w.running_count} of ${w.concurrency}` })),
          h("td", { class: "num", text: w.processed }),
          h("td", { class: "num", text: `${(Date.now() / 1000 - w.ts).toFixed(1)} s ago` }),
          h("td", {}, h("ul", { style: "margin:0;padding-left:1rem" }, ...(w.running || []).slice(0, 8).map((a) =>
            h("li", {}, h("a", { href: `/jobs/${a.job_id}`, text: a.type }),
              ` · ${Math.round((a.progress || 0) * 100)}%`))))));
        $("#worker-rows").replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 6, class: "empty",
          text: "No worker has reported in the last few seconds. Start one with `jobyard worker`." }))]));
      } catch (_) { setLive("reconnecting", "API unreachable"); }
    }
    refresh();
    setInterval(refresh, 2000);
  }

  // --- dead letters ---------------------------------------------------------------------------------------
  function deadLettersPage() {
    setLive("idle", "on demand");
    for (const button of $$("[data-replay]")) {
      button.addEventListener("click", async () => {
        const id = button.dataset.replay;
        const box = $("#dl-message");
        button.disabled = true;
        try {
          const result = await api("POST", `/api/dead-letters/${id}/replay`);
          const row = button.closest("tr");
          row.replaceChildren(h("td", { colspan: 6 }, h("span", { class: "badge s-queued", text: "queued" }),
            " replayed — ", h("a", { href: `/jobs/${result.job_id}`, text: "follow its job" })));
          box.className = "ok-box";
          box.textContent = `Action ${id} queued again (up to attempt ${result.max_attempts}).`;
        } catch (err) {
          box.className = "error-box";
          box.textContent = err.message;
          button.disabled = false;
        }
      });
    }
  }

  // --- submit ---------------------------------------------------------------------------------------------
  function submitPage() {
    const list = $("#action-list");
    const template = $("#action-template");
    let counter = 0;
    function addRow(type, payload, count) {
      const row = template.content.firstElementChild.cloneNode(true);
      counter += 1;
      for (const field of $$("select, textarea, input", row)) {
        const id = `${field.name}-${counter}`;
        field.id = id;
        field.previousElementSibling.setAttribute("for", id);
      }
      const select = $("select", row);
      const describe = () => {
        const option = select.selectedOptions[0];
        $('[data-role="description"]', row).textContent = option
          ? `queue ${option.dataset.queue}${option.dataset.description ? ` — ${option.dataset.description}` : ""}` : "";
      };
      if (type) select.value = type;
      select.addEventListener("change", describe);
      describe();
      if (payload !== undefined) $("textarea", row).value = JSON.stringify(payload, null, 2);
      if (count) $('input[name="count"]', row).value = count;
      $('[data-role="remove"]', row).addEventListener("click", () => {
        if ($$(".action-row", list).length > 1) row.remove();
      });
      list.append(row);
      return row;
    }
    addRow();
    $("#add-action").addEventListener("click", () => $("select", addRow()).focus());
    const preset = $("#preset-olt");
    if (preset) {
      preset.addEventListener("click", () => {
        list.replaceChildren();
        $("#job-name").value = "diagnostics olt-001";
        addRow("olt.ping", { device: "olt-001", count: 4 });
        addRow("olt.optical_power", { device: "olt-001", ports: 8 });
        addRow("olt.firmware_check", { device: "olt-001" });
      });
    }
    $("#submit-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const box = $("#submit-message");
      box.className = "";
      box.textContent = "";
      const actions = [];
      for (const [i, row] of $$(".action-row", list).entries()) {
        const text = $("textarea", row).value.trim();
        let payload = null;
        try { payload = text ? JSON.parse(text) : null; } catch (err) {
          box.className = "error-box";
          box.textContent = `Action ${i + 1}: the payload is not valid JSON (${err.message}).`;
          $("textarea", row).focus();
          return;
        }
        const count = Math.max(1, Math.min(1000, parseInt($('input[name="count"]', row).value, 10) || 1));
        for (let c = 0; c < count; c += 1) actions.push({ type: $("select", row).value, payload });
      }
      const name = $("#job-name").value.trim();
      const button = $("#submit-job");
      button.disabled = true;
      try {
        const accepted = await api("POST", "/api/jobs", name ? { name, actions } : { actions });
        location.assign(`/jobs/${accepted.id}`);
      } catch (err) {
        box.className = "error-box";
        box.textContent = err.message;
        button.disabled = false;
      }
    });
    setLive("idle", "ready");
  }

  // --- schedules: pause, resume and delete through the JSON API, then show the server's new rendering -------
  function schedulesPage() {
    setLive("idle", "on demand");
    for (const button of $$("[data-schedule-do]")) {
      button.addEventListener("click", async () => {
        const verb = button.dataset.scheduleDo;
        const id = button.dataset.id;
        const box = $("#schedule-message");
        if (verb === "delete" && !window.confirm("Delete this schedule? Jobs it already submitted stay.")) return;
        button.disabled = true;
        try {
          await api(verb === "delete" ? "DELETE" : "POST",
            verb === "delete" ? `/api/schedules/${id}` : `/api/schedules/${id}/${verb}`);
          window.location.reload();
        } catch (err) {
          box.className = "error-box";
          box.textContent = err.message;
          button.disabled = false;
        }
      });
    }
  }

  const pages = { jobs: jobsPage, job: jobPage, queues: queuesPage, workers: workersPage, dead: deadLettersPage,
    submit: submitPage, schedules: schedulesPage, webhooks: () => setLive("idle", "on demand") };
  const start = pages[document.body.dataset.page];
  if (start) start();
})();
