// mvgraph's status page: draws /api/state and asks for it again every few seconds.
// Plain JavaScript, no library; every text goes in with textContent (names are data).
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const POLL_MS = Number(document.body.dataset.pollMs) || 1000;
  const NODE_W = 150, NODE_H = 32, COL_W = 185, ROW_H = 42, PAD = 16;

  let zoom = null;        // the graph's scale (null: fit the width, between 0.7 and 1)
  let last = null;        // the last state without error
  let graphKey = null;    // the graph drawn (its catalog fingerprint)
  let open = null;        // the relation or job shown in the detail panel
  let openMark = null;    // what the open view looked like when its detail was read
  const expanded = new Set();  // jobs whose steps are unfolded

  // ---- small helpers ----------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function s(tag, attrs) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    return el;
  }

  function dur(sec) {
    if (sec === null || sec === undefined) return "–";
    if (sec < 1) return Math.round(sec * 1000) + "ms";
    if (sec < 60) return sec.toFixed(1) + "s";
    const m = Math.floor(sec / 60), r = Math.round(sec % 60);
    if (m < 60) return m + "m " + String(r).padStart(2, "0") + "s";
    return Math.floor(m / 60) + "h " + String(m % 60).padStart(2, "0") + "m";
  }

  function clock(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString(undefined, {
      month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit"});
  }

  function table(headers, rows, empty) {
    if (!rows.length) return h("p", {class: "muted", text: empty});
    return h("table", {}, h("thead", {}, h("tr", {}, headers.map((x) => h("th", {text: x})))),
      h("tbody", {}, rows));
  }

  function replace(id, ...children) {
    const el = document.getElementById(id);
    el.replaceChildren(...children);
    return el;
  }

  function clip(text, n) {
    text = text || "";
    return text.length > n ? text.slice(0, n - 1) + "…" : text;
  }

  // ---- the graph --------------------------------------------------------------------------
  function drawGraph(graph) {
    const width = PAD * 2 + Math.max(1, graph.layers) * COL_W - (COL_W - NODE_W);
    const height = PAD * 2 + Math.max(1, graph.rows) * ROW_H;
    const svg = s("svg", {id: "graph-svg", width, height, viewBox: `0 0 ${width} ${height}`,
      role: "img", "aria-label": "dependency graph"});
    const at = {};
    for (const n of graph.nodes) at[n.name] = {x: PAD + n.layer * COL_W, y: PAD + n.row * ROW_H};
    const edges = s("g", {class: "edges"});
    for (const [src, dst] of graph.edges) {
      const a = at[src], b = at[dst];
      if (!a || !b) continue;
      const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
      const mid = (x1 + x2) / 2;
      const path = s("path", {d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`,
        class: "edge", "data-from": src, "data-to": dst});
      edges.append(path);
    }
    svg.append(edges);
    const nodes = s("g", {class: "nodes"});
    for (const n of graph.nodes) {
      const g = s("g", {class: `node kind-${n.kind}`, "data-name": n.name, "data-kind": n.kind,
        transform: `translate(${at[n.name].x},${at[n.name].y})`, tabindex: 0});
      const title = s("title", {});
      title.textContent = n.name;
      g.append(title);
      g.append(s("rect", {width: NODE_W, height: NODE_H, rx: 5, class: "box"}));
      const schema = s("text", {x: 7, y: 12, class: "schema"});
      schema.textContent = clip(n.schema, 18);
      const label = s("text", {x: 7, y: 26, class: "label"});
      label.textContent = clip(n.label, 22);
      const badge = s("text", {x: NODE_W - 6, y: 12, class: "badge", "text-anchor": "end"});
      g.append(schema, label, badge);
      g.addEventListener("click", () => showView(n.name));
      g.addEventListener("keydown", (e) => { if (e.key === "Enter") showView(n.name); });
      nodes.append(g);
    }
    svg.append(nodes);
    svg.dataset.width = width;
    svg.dataset.height = height;
    replace("graph", svg);
    scaleGraph();
  }

  function scaleGraph() {
    const svg = document.getElementById("graph-svg");
    if (!svg) return;
    const width = Number(svg.dataset.width), height = Number(svg.dataset.height);
    const room = document.getElementById("graph").clientWidth - 2;
    const k = zoom !== null ? zoom : Math.min(1, Math.max(0.7, room / width));
    svg.setAttribute("width", Math.round(width * k));
    svg.setAttribute("height", Math.round(height * k));
    document.getElementById("zoom-level").textContent = `${Math.round(k * 100)}%`;
  }

  function setZoom(change) {
    const svg = document.getElementById("graph-svg");
    if (!svg) return;
    const now = Number(svg.getAttribute("width")) / Number(svg.dataset.width);
    zoom = change === null ? null : Math.min(2, Math.max(0.2, now * change));
    scaleGraph();
  }

  function paintGraph(state) {
    const counts = {fresh: 0, stale: 0, refreshing: 0, failed: 0, late: 0};
    for (const g of document.querySelectorAll("#graph-svg g.node")) {
      const name = g.dataset.name;
      const v = state.views[name];
      const kind = g.dataset.kind;
      let cls = `node kind-${kind}`;
      let tip = name;
      const badge = g.querySelector(".badge");
      badge.textContent = "";
      if (v) {
        counts[v.state] += 1;
        cls += ` state-${v.state}`;
        g.dataset.state = v.state;
        tip += `\n${v.state}${v.reason ? ": " + v.reason : ""}`;
        if (v.late) {
          counts.late += 1;
          cls += " late";
          g.dataset.late = "true";
        } else {
          delete g.dataset.late;
        }
        if (v.target_lag_s !== null && v.lag_s !== null) {
          badge.textContent = `${dur(v.lag_s)}/${dur(v.target_lag_s)}`;
          tip += `\nlag ${dur(v.lag_s)} (target ${dur(v.target_lag_s)})`;
        } else if (v.state === "refreshing") {
          badge.textContent = "⟳";
        } else if (v.state === "failed") {
          badge.textContent = "!";
        }
        if (v.step && v.step.error) tip += `\nlast run failed: ${v.step.error}`;
      } else {
        delete g.dataset.state;
      }
      if (open && open.kind === "view" && open.name === name) cls += " selected";
      g.setAttribute("class", cls);
      g.querySelector("title").textContent = tip;
    }
    return counts;
  }

  // ---- jobs ------------------------------------------------------------------------------
  function progress(job) {
    const pct = job.total_steps ? job.percent : (job.status === "done" ? 100 : 0);
    const fill = h("div", {class: "fill", "data-percent": pct});
    fill.style.width = pct + "%";
    const bar = h("div", {class: "bar", role: "progressbar", "aria-valuemin": 0,
      "aria-valuemax": 100, "aria-valuenow": pct}, fill);
    const words = [`${job.done_steps}/${job.total_steps}`, `${pct}%`,
      `elapsed ${dur(job.elapsed_s)}`,
      job.eta_s === null ? "time left unknown" : `${dur(job.eta_s)} left`];
    return h("div", {class: "progress"}, bar, h("span", {class: "words", text: words.join(" · ")}));
  }

  function stepsTable(steps) {
    return table(["#", "step", "status", "m/n", "took", "reason / error"], steps.map((st) =>
      h("tr", {class: `step step-${st.status}`},
        h("td", {text: st.seq}), h("td", {class: "name", text: st.step}),
        h("td", {}, h("span", {class: `pill ${st.status}`, text: st.status})),
        h("td", {text: st.progress}), h("td", {text: dur(st.duration_s)}),
        h("td", {class: st.error ? "error" : "muted", text: st.message || ""}))), "no steps");
  }

  function jobCard(job) {
    const head = h("div", {class: "job-head"},
      h("span", {class: "job-id", text: `#${job.id}`}),
      h("span", {class: `pill ${job.status}`, text: job.status + (job.request ? ` (${job.request} asked)` : "")}),
      h("span", {class: "kind", text: job.kind}),
      h("code", {class: "statement", title: job.statement, text: clip(job.statement, 90)}),
      h("span", {class: "muted", text: `${job.owner}${job.worker ? " · " + job.worker : ""}`}));
    const card = h("div", {class: "job", "data-job": job.id, "data-status": job.status}, head,
      progress(job));
    if (job.error) card.append(h("div", {class: "error", text: job.error}));
    if (job.steps && expanded.has(job.id)) card.append(stepsTable(job.steps));
    head.addEventListener("click", () => {
      if (expanded.has(job.id)) expanded.delete(job.id); else expanded.add(job.id);
      if (last) renderJobs(last);
    });
    return card;
  }

  function renderJobs(state) {
    replace("jobs", state.jobs.length ? h("div", {}, state.jobs.map(jobCard))
      : h("p", {class: "muted", text: "no job queued or running"}));
    replace("history", table(["job", "status", "kind", "statement", "owner", "finished", "took", "steps", "error"],
      state.history.map((j) => h("tr", {class: "clickable", "data-job": j.id, onclick: () => showJob(j.id)},
        h("td", {text: `#${j.id}`}), h("td", {}, h("span", {class: `pill ${j.status}`, text: j.status})),
        h("td", {text: j.kind}), h("td", {}, h("code", {title: j.statement, text: clip(j.statement, 60)})),
        h("td", {text: j.owner}), h("td", {text: clock(j.finished_at)}), h("td", {text: dur(j.elapsed_s)}),
        h("td", {text: `${j.done_steps}/${j.total_steps}`}),
        h("td", {class: "error", text: clip(j.error, 80)}))), "none"));
  }

  // ---- schedules, daemons, workers -----------------------------------------------------
  function timing(sc) {
    if (sc.kind === "lag" || sc.target_lag_seconds !== null) return `target lag ${dur(sc.target_lag_seconds)}`;
    if (sc.cron) return `cron ${sc.cron}${sc.tz ? " " + sc.tz : ""}`;
    return `every ${sc.every || dur(sc.every_seconds)}`;
  }

  function renderSchedules(state) {
    replace("schedules", table(["view", "when", "state", "next", "last run", "failures", "last error"],
      state.schedules.map((sc) => {
        const st = sc.is_broken ? "broken" : (!sc.enabled ? "paused" : (!sc.view_exists ? "view gone" : "active"));
        return h("tr", {class: `schedule ${st}`, "data-schedule": sc.id},
          h("td", {}, h("a", {href: "#", onclick: (e) => { e.preventDefault(); showView(sc.view); }, text: sc.view})),
          h("td", {text: `${timing(sc)} · ${sc.behavior}`}),
          h("td", {}, h("span", {class: `pill ${st.replace(" ", "-")}`, text: st})),
          h("td", {text: sc.next_run ? `${clock(sc.next_run)} (in ${dur(Math.max(0, sc.next_in_s))})` : "–"}),
          h("td", {text: sc.last_start ? `${clock(sc.last_start)} ${sc.last_status || "running"}` : "never"}),
          h("td", {class: sc.failure_count ? "error" : "", text: sc.failure_count}),
          h("td", {class: "error", text: clip(sc.last_error, 80)}));
      }), "no schedule"));
  }

  function renderRunners(state) {
    replace("daemons", table(["daemon", "version", "started", "heartbeat", "workers", "schedules", "running jobs"],
      state.daemons.map((d) => h("tr", {class: d.silent ? "silent" : "live"},
        h("td", {text: d.name}), h("td", {text: d.version}), h("td", {text: clock(d.started_at)}),
        h("td", {class: d.silent ? "error" : "", text: `${dur(d.heartbeat_age_s)} ago${d.silent ? " (silent)" : ""}`}),
        h("td", {text: d.workers}), h("td", {text: d.schedules}),
        h("td", {text: d.running_jobs.map((j) => "#" + j).join(" ") || "–"}))),
      "no daemon seen in the last hour (`mvgraph daemon` fires schedules)"));
    replace("workers", table(["worker", "host / pid", "started", "heartbeat", "running jobs", "lease"],
      state.workers.map((w) => h("tr", {class: w.silent ? "silent" : "live"},
        h("td", {text: w.name}), h("td", {text: w.host ? `${w.host} / ${w.pid}` : "–"}),
        h("td", {text: clock(w.since)}),
        h("td", {class: w.silent ? "error" : "",
                 text: w.heartbeat_age_s === null || w.heartbeat_age_s === undefined ? "no heartbeat row"
                   : `${dur(w.heartbeat_age_s)} ago${w.silent ? " (silent)" : ""}`}),
        h("td", {text: (w.jobs || []).map((j) => "#" + j).join(" ") || "–"}),
        h("td", {text: w.lease_left_s === null || w.lease_left_s === undefined ? "–"
          : (w.lease_left_s >= 0 ? `renewed, expires in ${dur(w.lease_left_s)}` : `expired ${dur(-w.lease_left_s)} ago`)}))),
      "no worker running (`mvgraph worker` runs background jobs)"));
  }

  // ---- the detail panel ---------------------------------------------------------------------
  function relationLink(r) {
    return h("a", {href: "#", class: `rel kind-${r.kind}`, onclick: (e) => { e.preventDefault(); showView(r.name); },
      text: r.name});
  }

  function statusBlock(v) {
    if (!v) return null;
    const lines = [h("p", {}, h("span", {class: `pill ${v.state}`, text: v.state}), " ", v.reason || "")];
    if (v.refreshed_at) lines.push(h("p", {class: "muted", text: `last refreshed ${clock(v.refreshed_at)}${v.duration_s !== null ? ` in ${dur(v.duration_s)}` : ""}`}));
    if (v.target_lag_s !== null) lines.push(h("p", {class: v.late ? "error" : "", text: `lag ${dur(v.lag_s)} against a target of ${dur(v.target_lag_s)}${v.late ? " (behind)" : ""}`}));
    if (v.step && v.step.error) lines.push(h("p", {class: "error", text: `job #${v.step.job} failed: ${v.step.error}`}));
    return h("div", {id: "detail-status"}, lines);
  }

  function renderView(d) {
    const body = [h("h2", {text: d.name}), h("p", {class: "muted", text: `${d.kind}${d.owner ? " · owner " + d.owner : ""}`})];
    body.push(statusBlock(d.status));
    body.push(h("h3", {text: "Reads"}), d.inputs.length ? h("ul", {}, d.inputs.map((r) => h("li", {}, relationLink(r)))) : h("p", {class: "muted", text: "nothing"}));
    body.push(h("h3", {text: "Read by"}), d.dependents.length ? h("ul", {}, d.dependents.map((r) => h("li", {}, relationLink(r)))) : h("p", {class: "muted", text: "nothing"}));
    if (d.schedules) {
      body.push(h("h3", {text: "Schedule"}), d.schedules.length ? h("ul", {}, d.schedules.map((sc) => h("li", {},
        `${timing(sc)} · ${sc.behavior}${sc.is_broken ? " · broken" : ""}${sc.enabled ? "" : " · paused"}` +
        `${sc.next_run ? " · next " + clock(sc.next_run) : ""}${sc.last_status ? " · last " + sc.last_status : ""}`)))
        : h("p", {class: "muted", text: "none"}));
    }
    if (d.runs) {
      body.push(h("h3", {text: "Last runs"}), table(["job", "step", "started", "took", "reason / error"],
        d.runs.map((r) => h("tr", {class: "clickable", onclick: () => showJob(r.job)},
          h("td", {text: `#${r.job}`}), h("td", {}, h("span", {class: `pill ${r.status}`, text: r.status})),
          h("td", {text: clock(r.started_at)}), h("td", {text: dur(r.duration_s)}),
          h("td", {class: r.error ? "error" : "", text: r.error || r.reason || ""}))), "no run the role may see"));
    }
    body.push(h("h3", {text: "Definition"}));
    body.push(d.definition ? h("pre", {class: "sql", text: d.definition})
      : h("p", {class: "muted", text: d.definition_note || "no definition (a table)"}));
    return body;
  }

  function renderJob(j) {
    return [h("h2", {text: `Job #${j.id}`}),
      h("p", {}, h("span", {class: `pill ${j.status}`, text: j.status}), ` ${j.kind} · ${j.owner}${j.worker ? " · " + j.worker : ""}`),
      h("pre", {class: "sql", text: j.statement}),
      progress(j),
      j.error ? h("p", {class: "error", text: j.error}) : null,
      h("p", {class: "muted", text: `submitted ${clock(j.submitted_at)} · started ${clock(j.started_at)} · finished ${clock(j.finished_at)}`}),
      h("h3", {text: "Steps"}), stepsTable(j.steps)];
  }

  async function fetchDetail(what) {
    const url = what.kind === "view" ? `api/view?name=${encodeURIComponent(what.name)}` : `api/job/${what.id}`;
    const panel = document.getElementById("detail");
    panel.hidden = false;
    try {
      const r = await fetch(url, {cache: "no-store", credentials: "same-origin"});
      const d = await r.json();
      if (open !== what) return;  // another one was asked for meanwhile
      if (d.error) { replace("detail-body", h("p", {class: "banner", text: d.error})); return; }
      replace("detail-body", ...(what.kind === "view" ? renderView(d) : renderJob(d)));
      panel.dataset.showing = what.kind === "view" ? what.name : `job ${what.id}`;
    } catch (e) {
      replace("detail-body", h("p", {class: "banner", text: `cannot reach the page's server: ${e}`}));
    }
  }

  function viewMark(state, name) {
    const v = state && state.views[name];
    return v ? JSON.stringify([v.state, v.reason, v.refreshed_at, v.step]) : "";
  }

  function showView(name) {
    open = {kind: "view", name};
    openMark = viewMark(last, name);
    fetchDetail(open);
    if (last) paintGraph(last);
  }

  function showJob(id) {
    open = {kind: "job", id};
    openMark = null;
    fetchDetail(open);
  }

  // ---- the whole page -------------------------------------------------------------------------
  function apply(state) {
    const banner = document.getElementById("banner");
    if (state.error) {
      banner.hidden = false;
      banner.textContent = state.error + (last ? ` (showing what was read at ${clock(last.time)})` : "");
      return;
    }
    banner.hidden = true;
    last = state;
    document.getElementById("where").textContent = `${state.database} as ${state.role}`;
    document.getElementById("updated").textContent = `updated ${clock(state.time)}`;
    replace("warnings", ...state.warnings.map((w) => h("li", {text: w})));
    if (state.graph_key !== graphKey) {
      drawGraph(state.graph);
      graphKey = state.graph_key;
    }
    const c = paintGraph(state);
    const running = state.jobs.filter((j) => j.status === "running").length;
    document.getElementById("summary").textContent =
      `${Object.keys(state.views).length} materialized views: ${c.fresh} fresh, ${c.stale} stale, ` +
      `${c.refreshing} refreshing, ${c.failed} failed` + (c.late ? `, ${c.late} behind target` : "") +
      ` · ${running} job${running === 1 ? "" : "s"} running, ${state.jobs.length - running} waiting`;
    renderJobs(state);
    renderSchedules(state);
    renderRunners(state);
    if (open && open.kind === "view") {
      const mark = viewMark(state, open.name);
      if (mark !== openMark) { openMark = mark; fetchDetail(open); }
    } else if (open && open.kind === "job") {
      const active = state.jobs.find((j) => j.id === open.id);
      if (active) fetchDetail(open);
    }
  }

  async function poll() {
    try {
      const r = await fetch("api/state", {cache: "no-store", credentials: "same-origin"});
      if (r.status === 401) {
        apply({error: "this page needs its token: open it once with ?token=TOKEN"});
      } else {
        apply(await r.json());
      }
    } catch (e) {
      apply({error: `cannot reach the page's server (${e.message || e}); retrying`});
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  document.getElementById("zoom-out").addEventListener("click", () => setZoom(1 / 1.25));
  document.getElementById("zoom-in").addEventListener("click", () => setZoom(1.25));
  document.getElementById("zoom-fit").addEventListener("click", () => setZoom(null));
  window.addEventListener("resize", () => { if (zoom === null) scaleGraph(); });
  document.getElementById("detail-close").addEventListener("click", () => {
    open = null;
    document.getElementById("detail").hidden = true;
    if (last) paintGraph(last);
  });
  try {
    apply(JSON.parse(document.getElementById("initial-state").textContent));
  } catch (e) {
    apply({error: `the page's data could not be read: ${e}`});
  }
  setTimeout(poll, POLL_MS);
})();
