/* The netmgr status page (issue 13): a snapshot from /api/status, then the live event stream
 * from /api/events (Server-Sent Events), applied to the tables with no reload.
 *
 * Plain JavaScript, no library, no build step: the Manager serves this file as it is.
 *
 * Two rules hold everywhere below:
 *  - data from the Manager (names, attribute signatures, error texts) is only ever set with
 *    textContent or an attribute, never parsed as HTML: a Service named "<img onerror=…>" is
 *    shown as text;
 *  - the state is rebuilt from /api/status on every (re)connection of the stream. Events that
 *    arrive while the snapshot is on its way are kept and applied on top of it, in order. Each
 *    event sets a state (registered/gone, linked/unlinked, acquired/released) rather than
 *    counting one, so applying an event the snapshot already contains changes nothing.
 */
(function () {
  "use strict";

  const STATUS_URL = "api/status";
  const HEALTH_URL = "healthz";
  const EVENTS_URL = "api/events";
  const TYPES = ["peer", "service", "link", "lock", "request_failed", "auth", "admin", "heartbeat", "health", "cluster"];
  const LOG_ROWS = 500;          // the event log keeps this many rows, newest first
  const CHART_SECONDS = 300;     // the rate charts show the last 5 minutes at most,
  const CHART_MIN_SECONDS = 60;  // and at least a minute (a page just opened has little history)
  const RETRY_MS = 5000;         // when the browser gives up on the stream (a non-200 answer)

  const $ = (id) => document.getElementById(id);

  const state = {
    manager: null,
    services: new Map(),   // Service name -> service object (see newService)
    clients: new Map(),    // Client network name -> client object (see newClient)
    rates: new Map(),      // Service name -> [{t, v}] of heartbeat rates (survives a resync)
    total: [],             // [{t, v}]: requests/s of every Service, per heartbeat
    lastBeat: 0,           // the Manager's time of the newest heartbeat charted
    uptime: null,          // {seconds, at: performance.now()} from the newest totals
    stream: null,
    syncing: false,
    generation: 0,
    buffer: [],
    connectedOnce: false,
  };

  // ------------------------------------------------------------------ formatting
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function fmtRate(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    if (v === 0) return "0";
    if (v < 10) return v.toFixed(1);
    return String(Math.round(v));
  }

  function fmtSeconds(s) {
    if (s === null || s === undefined || !isFinite(s)) return "–";
    if (s < 0.001) return (s * 1000).toFixed(2) + " ms";
    if (s < 0.1) return (s * 1000).toFixed(1) + " ms";
    if (s < 1) return Math.round(s * 1000) + " ms";
    return s.toFixed(2) + " s";
  }

  function fmtUptime(total) {
    total = Math.max(0, Math.floor(total));
    const d = Math.floor(total / 86400), h = Math.floor(total / 3600) % 24;
    const m = Math.floor(total / 60) % 60, s = total % 60;
    const two = (n) => String(n).padStart(2, "0");
    if (d) return `${d}d ${h}h ${two(m)}m`;
    if (h) return `${h}h ${two(m)}m`;
    if (m) return `${m}m ${two(s)}s`;
    return `${s}s`;
  }

  function fmtClock(unix) {
    const d = new Date(unix * 1000);
    return d.toLocaleTimeString("en-GB", { hour12: false });
  }

  function fmtValue(value) {
    if (typeof value === "string") return value;
    try { return JSON.stringify(value); } catch (e) { return String(value); }
  }

  function numberOr(value, fallback) {
    return typeof value === "number" && isFinite(value) ? value : fallback;
  }

  // ------------------------------------------------------------------ Services
  function newService(name) {
    const row = el("tr");
    row.dataset.service = name;
    const nameCell = el("th", "name");
    nameCell.scope = "row";
    const cells = {
      title: el("span", "title", name),
      meta: el("span", "meta"),
      address: el("td", "address mono"),
      attributes: el("td", "attributes"),
      clients: el("td", "clients"),
      lock: el("td", "lock"),
      requests: el("td", "requests num", "0"),
      rate: el("td", "rate num", "0"),
      p50: el("td", "p50 num", "–"),
      p99: el("td", "p99 num", "–"),
      errors: el("td", "errors num", "0"),
      inFlight: el("td", "in-flight num", "0"),
      trend: el("td", "trend"),
    };
    nameCell.append(cells.title, cells.meta);
    cells.spark = el("canvas", "spark");
    cells.spark.setAttribute("role", "img");
    cells.spark.setAttribute("aria-label", `requests/s of ${name}, last 5 minutes`);
    cells.trend.append(cells.spark);
    // the columns of index.html: how it does first, then who uses it, what it is last (on a
    // phone the name stays in view beside the figures, and the rest scrolls sideways)
    row.append(nameCell, cells.requests, cells.rate, cells.p50, cells.p99, cells.errors, cells.inFlight,
               cells.trend, cells.clients, cells.lock, cells.attributes, cells.address);
    row.classList.add("fresh");
    row.addEventListener("animationend", () => row.classList.remove("fresh"), { once: true });
    return {
      name, row, cells, networkName: null, address: "", attributes: {}, maxClients: -1,
      language: "", os: "", links: new Set(), locks: new Map(),
      stats: { requests: 0, errors: 0, rate: 0, p50: null, p99: null, in_flight: 0 },
    };
  }

  function upsertService(name, info) {
    let svc = state.services.get(name);
    if (!svc) {
      svc = newService(name);
      state.services.set(name, svc);
      insertSorted($("services-body"), svc.row, "service", name);
    }
    if (info.network_name !== undefined) svc.networkName = info.network_name;
    if (info.address !== undefined) svc.address = info.address;
    if (info.attributes !== undefined) svc.attributes = info.attributes || {};
    if (info.max_clients !== undefined) svc.maxClients = info.max_clients;
    if (info.language !== undefined) svc.language = info.language || "";
    if (info.os !== undefined) svc.os = info.os || "";
    if (info.links !== undefined) svc.links = new Set(info.links);
    if (info.locks !== undefined) svc.locks = new Map(info.locks.map((c) => [c, null]));
    if (info.stats !== undefined) Object.assign(svc.stats, info.stats);
    renderService(svc, true);
    updateCounts();
    return svc;
  }

  function removeService(name, address) {
    const svc = state.services.get(name);
    if (!svc) return;
    // a "gone" of an earlier Service of this name (replayed history) leaves the current one
    if (address && svc.address && address !== svc.address) return;
    svc.row.remove();
    state.services.delete(name);
    for (const client of state.clients.values()) {
      if (client.links.delete(name)) renderClient(client);
    }
    updateCounts();
  }

  function renderService(svc, full) {
    const c = svc.cells;
    if (full) {
      c.address.textContent = svc.address || "–";
      // short here ("Python 3.11.7 · Linux"), in full in the tooltip
      const meta = [svc.language, (svc.os || "").split(" ")[0]].filter(Boolean);
      if (svc.maxClients >= 0) meta.push(`max ${svc.maxClients} client${svc.maxClients === 1 ? "" : "s"}`);
      c.meta.textContent = meta.join(" · ");
      c.meta.title = [svc.networkName, svc.language, svc.os,
                      svc.maxClients < 0 ? "any number of clients" : `at most ${svc.maxClients} clients`]
        .filter(Boolean).join("\n");
      renderAttributes(c.attributes, svc.attributes);
    }
    renderNames(c.clients, [...svc.links].sort(), "none");
    renderNames(c.lock, [...svc.locks.keys()].sort(), "–",
                (client) => (svc.locks.get(client) ? " (shared)" : ""));
    c.lock.classList.toggle("held", svc.locks.size > 0);
    const s = svc.stats;
    c.requests.textContent = String(numberOr(s.requests, 0));
    c.rate.textContent = fmtRate(numberOr(s.rate, 0));
    c.p50.textContent = fmtSeconds(s.p50);
    c.p99.textContent = fmtSeconds(s.p99);
    c.errors.textContent = String(numberOr(s.errors, 0));
    c.errors.classList.toggle("bad", numberOr(s.errors, 0) > 0);
    c.inFlight.textContent = String(numberOr(s.in_flight, 0));
  }

  function renderAttributes(cell, attributes) {
    const names = Object.keys(attributes).sort();
    const wasOpen = Boolean(cell.querySelector("details[open]"));  // a resync keeps it open
    cell.replaceChildren();
    if (!names.length) {
      cell.append(el("span", "muted", "none"));
      return;
    }
    const details = el("details");
    details.open = wasOpen;
    const summary = el("summary");
    summary.append(el("span", "attr-count", String(names.length)),
                   el("span", "attr-first", names.join(", ")));
    summary.title = names.join(", ");
    details.append(summary);
    const list = el("ul", "attr-list");
    for (const name of names) {
      const item = el("li");
      item.append(el("span", "attr-name", name), el("span", "attr-sig", fmtValue(attributes[name])));
      list.append(item);
    }
    details.append(list);
    cell.append(details);
  }

  function renderNames(cell, names, empty, suffix) {
    cell.replaceChildren();
    if (!names.length) {
      cell.append(el("span", "muted", empty));
      return;
    }
    for (const name of names) {
      cell.append(el("span", "chip", name + (suffix ? suffix(name) : "")));
    }
  }

  // ------------------------------------------------------------------ Clients
  function upsertClient(name, info) {
    let client = state.clients.get(name);
    if (!client) {
      const row = el("tr");
      row.dataset.client = name;
      const nameCell = el("th", "name", name);
      nameCell.scope = "row";
      const cells = { address: el("td", "address mono"), links: el("td", "links"),
                      language: el("td", "language"), os: el("td", "os") };
      row.append(nameCell, cells.links, cells.address, cells.language, cells.os);
      row.classList.add("fresh");
      row.addEventListener("animationend", () => row.classList.remove("fresh"), { once: true });
      client = { name, row, cells, address: "", language: "", os: "", links: new Set() };
      state.clients.set(name, client);
      insertSorted($("clients-body"), row, "client", name);
    }
    if (info.address !== undefined) client.address = info.address;
    if (info.language !== undefined) client.language = info.language || "";
    if (info.os !== undefined) client.os = info.os || "";
    if (info.links !== undefined) client.links = new Set(info.links);
    renderClient(client);
    updateCounts();
    return client;
  }

  function removeClient(name) {
    const client = state.clients.get(name);
    if (client) {
      client.row.remove();
      state.clients.delete(name);
    }
    for (const svc of state.services.values()) {
      const linked = svc.links.delete(name);
      const locked = svc.locks.delete(name);
      if (linked || locked) renderService(svc, false);
    }
    updateCounts();
  }

  function renderClient(client) {
    const c = client.cells;
    c.address.textContent = client.address || "–";
    renderNames(c.links, [...client.links].sort(), "none");
    c.language.textContent = client.language || "–";
    c.os.textContent = client.os || "–";
  }

  // ------------------------------------------------------------------ tables
  function insertSorted(body, row, key, name) {
    for (const other of body.querySelectorAll(`tr[data-${key}]`)) {
      if (other.dataset[key].localeCompare(name) > 0) {
        body.insertBefore(row, other);
        return;
      }
    }
    body.append(row);
  }

  function updateCounts() {
    const nServices = state.services.size, nClients = state.clients.size;
    $("services-body").querySelector("tr.empty").hidden = nServices > 0;
    $("clients-body").querySelector("tr.empty").hidden = nClients > 0;
    $("services-count").textContent = nServices ? String(nServices) : "";
    $("clients-count").textContent = nClients ? String(nClients) : "";
    $("total-services").textContent = String(nServices);
    $("total-clients").textContent = String(nClients);
  }

  function applyTotals(totals) {
    if (!totals) return;
    $("total-requests").textContent = String(numberOr(totals.requests, 0));
    $("total-errors").textContent = String(numberOr(totals.errors, 0));
    $("total-errors").classList.toggle("bad", numberOr(totals.errors, 0) > 0);
    $("total-in-flight").textContent = String(numberOr(totals.in_flight, 0));
    if (typeof totals.uptime === "number") {
      state.uptime = { seconds: totals.uptime, at: performance.now() };
      tickUptime();
    }
  }

  function tickUptime() {
    if (!state.uptime) return;
    const seconds = state.uptime.seconds + (performance.now() - state.uptime.at) / 1000;
    $("uptime").textContent = fmtUptime(seconds);
  }

  function setManager(name) {
    if (!name || name === state.manager) return;
    state.manager = name;
    $("manager-name").textContent = name;
    document.title = `${name} · netmgr`;
  }

  function setHealth(status, checks) {
    const badge = $("health");
    const ok = status === "ok";
    badge.dataset.state = ok ? "ok" : "degraded";
    badge.textContent = ok ? "healthy" : "degraded";
    const failing = Object.entries(checks || {}).filter(([, c]) => c && !c.ok);
    badge.title = failing.length
      ? failing.map(([name, c]) => `${name}: ${c.detail}`).join("\n")
      : Object.entries(checks || {}).map(([name, c]) => `${name}: ${c.detail}`).join("\n");
  }

  function setStream(kind, text) {
    const badge = $("stream-state");
    badge.dataset.state = kind;
    badge.textContent = text;
    document.body.dataset.stream = kind;  // the tables dim while they may be stale
  }

  // ------------------------------------------------------------------ the snapshot
  function applyStatus(status) {
    setManager(status.manager);
    const services = status.services || {};
    for (const name of [...state.services.keys()]) {
      if (!(name in services)) removeService(name);
    }
    for (const [name, info] of Object.entries(services)) {
      upsertService(name, info);
    }
    const info = status.client_info || {};
    const names = new Set(status.clients || Object.keys(info));
    for (const name of [...state.clients.keys()]) {
      if (!names.has(name)) removeClient(name);
    }
    for (const name of names) {
      upsertClient(name, info[name] || {});
    }
    applyTotals(status.totals);
  }

  // ------------------------------------------------------------------ events
  function applyEvent(ev, replayed) {
    switch (ev.type) {
      case "peer":
        if (ev.kind !== "client") break;
        if (ev.event === "connected") {
          // language and os: not in the event today (docs/protocol.md); used if they come
          const client = upsertClient(ev.name, { address: ev.address, language: ev.language, os: ev.os });
          if (!client.language && !replayed) fetchClientDetails();
        } else if (ev.event === "disconnected") {
          removeClient(ev.name);
        }
        break;
      case "service":
        if (ev.event === "registered") {
          const old = state.services.get(ev.name);
          const fresh = !old || (old.networkName && old.networkName !== ev.network_name);
          upsertService(ev.name, {
            network_name: ev.network_name, address: ev.address, attributes: ev.attributes,
            max_clients: ev.max_clients, language: ev.language, os: ev.os,
            ...(fresh ? { links: [], locks: [] } : {}),
          });
        } else if (ev.event === "gone") {
          removeService(ev.name, ev.address);
        }
        break;
      case "link": {
        const svc = state.services.get(ev.service), client = state.clients.get(ev.client);
        const linked = ev.event === "linked";
        if (svc) {
          if (linked) svc.links.add(ev.client);
          else { svc.links.delete(ev.client); svc.locks.delete(ev.client); }
          renderService(svc, false);
        }
        if (client) {
          if (linked) client.links.add(ev.service); else client.links.delete(ev.service);
          renderClient(client);
        }
        break;
      }
      case "lock": {
        const svc = state.services.get(ev.service);
        if (!svc) break;
        if (ev.event === "acquired") svc.locks.set(ev.client, Boolean(ev.shared));
        else if (ev.event === "released") svc.locks.delete(ev.client);
        renderService(svc, false);
        break;
      }
      case "heartbeat":
        chartBeat(ev);
        // a heartbeat that came with the snapshot is older than it, or as old
        if (!replayed) applyHeartbeat(ev);
        break;
      case "health":
        setHealth(ev.status, ev.checks);
        break;
      default:
        break;
    }
  }

  function applyHeartbeat(ev) {
    const services = ev.services || {};
    for (const [name, stats] of Object.entries(services)) {
      const svc = state.services.get(name);
      if (!svc) continue;
      Object.assign(svc.stats, stats);
      renderService(svc, false);
    }
    applyTotals(ev.totals);
    if (typeof ev.loop_lag === "number") $("loop-lag").textContent = fmtSeconds(ev.loop_lag);
  }

  function onEvent(message) {
    let ev;
    try {
      ev = JSON.parse(message.data);
    } catch (e) {
      return;
    }
    logEvent(ev);
    if (state.syncing) state.buffer.push(ev);
    else applyEvent(ev, false);
  }

  // ------------------------------------------------------------------ the event log
  function describe(ev) {
    // a list of [text, emphasised?] pieces, shown as text nodes
    const b = (text) => [String(text), true];
    const t = (text) => [String(text), false];
    switch (ev.type) {
      case "peer":
        return ev.event === "connected"
          ? [b(ev.name), t(` connected (${ev.kind}) from ${ev.address}`)]
          : [b(ev.name), t(` (${ev.kind}) disconnected`), t(ev.reason ? `: ${ev.reason}` : "")];
      case "service":
        if (ev.event === "registered") {
          const n = Object.keys(ev.attributes || {}).length;
          return [t("Service "), b(ev.name),
                  t(` registered at ${ev.address}, ${n} attribute${n === 1 ? "" : "s"}`)];
        }
        return [t("Service "), b(ev.name), t(" gone"), t(ev.reason ? `: ${ev.reason}` : "")];
      case "link":
        return ev.event === "linked"
          ? [b(ev.client), t(" linked to "), b(ev.service)]
          : [b(ev.client), t(" unlinked from "), b(ev.service), t(ev.reason ? ` (${ev.reason})` : "")];
      case "lock":
        return ev.event === "acquired"
          ? [b(ev.client), t(ev.shared ? " shares the lock of " : " locked "), b(ev.service)]
          : [b(ev.client), t(" released the lock of "), b(ev.service), t(ev.reason ? ` (${ev.reason})` : "")];
      case "request_failed":
        return [t(`request ${ev.uid} of `), b(ev.requester), t(" to "), b(ev.service),
                t(` failed (${String(ev.event).replace("_", " ")}): ${ev.message || ""}`)];
      case "auth":
        return [t(`${ev.mode} authentication ${ev.event} from ${ev.address}`),
                t(ev.user ? ` as ${ev.user}` : ""), t(ev.reason ? `: ${ev.reason}` : "")];
      case "admin":
        return [b(ev.by), t(` ${ev.ok ? "ran" : "failed"} ${ev.attribute}`),
                t(ev.target !== undefined ? ` (${ev.target})` : "")];
      case "heartbeat": {
        const totals = ev.totals || {};
        return [t(`${totals.peers} peers, ${totals.requests} requests, ${totals.in_flight} in flight, ` +
                  `loop lag ${fmtSeconds(ev.loop_lag)}`)];
      }
      case "health": {
        const failing = Object.entries(ev.checks || {}).filter(([, c]) => c && !c.ok);
        return [t("health "), b(ev.status),
                t(failing.length ? ": " + failing.map(([n, c]) => `${n} (${c.detail})`).join(", ") : "")];
      }
      case "cluster":
        return [t("node "), b(ev.node), t(ev.event === "node_left" ? ` left the cluster (${ev.reason || ""})`
                                                               : " joined the cluster")];
      default:
        return [t(`${ev.type} ${ev.event}`)];
    }
  }

  function logEvent(ev) {
    if (ev.type === "heartbeat" && !$("show-heartbeats").checked) return;
    const log = $("events");
    const row = el("li");
    row.dataset.type = ev.type;
    row.dataset.event = ev.event;
    row.dataset.seq = String(ev.seq);
    const time = el("time", "when", fmtClock(ev.time));
    time.dateTime = new Date(ev.time * 1000).toISOString();
    const tag = el("span", "tag", ev.type === "request_failed" ? "failed" : ev.type);
    const what = el("span", "what");
    for (const [text, strong] of describe(ev)) {
      if (!text) continue;
      what.append(strong ? el("b", null, text) : document.createTextNode(text));
    }
    row.append(time, tag, what);
    log.prepend(row);
    while (log.childElementCount > LOG_ROWS) log.lastElementChild.remove();
  }

  // ------------------------------------------------------------------ rate charts
  function chartBeat(ev) {
    const t = ev.time;
    if (!(t > state.lastBeat)) return;  // a heartbeat already charted (history after a reconnect)
    state.lastBeat = t;
    let sum = 0;
    for (const [name, stats] of Object.entries(ev.services || {})) {
      const v = numberOr(stats.rate, 0);
      sum += v;
      if (!state.rates.has(name)) state.rates.set(name, []);
      state.rates.get(name).push({ t, v });
    }
    state.total.push({ t, v: sum });
    const oldest = t - CHART_SECONDS;
    trim(state.total, oldest);
    for (const [name, points] of state.rates) {
      trim(points, oldest);
      if (!points.length && !state.services.has(name)) state.rates.delete(name);
    }
    scheduleDraw();
  }

  function trim(points, oldest) {
    let n = 0;
    while (n < points.length && points[n].t < oldest) n++;
    if (n) points.splice(0, n);
  }

  let drawPending = false;
  function scheduleDraw() {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(() => {
      drawPending = false;
      drawAll();
    });
  }

  function drawAll() {
    const colours = palette();
    const now = state.lastBeat;
    const total = state.total;
    const span = total.length
      ? Math.min(CHART_SECONDS, Math.max(CHART_MIN_SECONDS, now - total[0].t)) : CHART_SECONDS;
    const chart = $("rate-chart");
    const max = drawChart(chart, total, now, span, colours, true);
    chart.dataset.points = String(total.length);  // a hook for tests: heartbeats charted
    $("chart-span").textContent =
      span >= 120 ? `${Math.round(span / 60)} min ago` : `${Math.round(span)} s ago`;
    $("rate-now").textContent = total.length ? fmtRate(total[total.length - 1].v) : "–";
    $("rate-max").textContent = total.length ? fmtRate(max) : "–";
    for (const svc of state.services.values()) {
      drawChart(svc.cells.spark, state.rates.get(svc.name) || [], now, span, colours, false);
    }
  }

  function palette() {
    const style = getComputedStyle(document.documentElement);
    const read = (name) => style.getPropertyValue(name).trim();
    return { line: read("--accent"), fill: read("--accent-soft"), grid: read("--grid") };
  }

  /* A line with a filled area under it, x = the Manager's time (the last `span` seconds up to
   * the newest heartbeat: the page's clock may differ from the Manager's), y = requests/s from 0
   * to the window's maximum. Returns the maximum. */
  function drawChart(canvas, points, now, span, colours, grid) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    if (!width || !height) return 0;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    let max = 0;
    for (const p of points) if (p.t >= now - span) max = Math.max(max, p.v);
    const top = grid ? 6 : 3, bottom = height - (grid ? 1 : 2);
    const scale = max > 0 ? max * 1.1 : 1;
    const x = (t) => width * (1 - (now - t) / span);
    const y = (v) => bottom - (v / scale) * (bottom - top);
    if (grid) {
      g.strokeStyle = colours.grid;
      g.lineWidth = 1;
      g.beginPath();
      for (let i = 0; i <= 4; i++) {
        const gy = Math.round(top + (i * (bottom - top)) / 4) + 0.5;
        g.moveTo(0, gy);
        g.lineTo(width, gy);
      }
      for (let m = 1; m < 5; m++) {
        const gx = Math.round(width * (m / 5)) + 0.5;
        g.moveTo(gx, top);
        g.lineTo(gx, bottom);
      }
      g.stroke();
    }
    if (!points.length) return 0;
    g.beginPath();
    g.moveTo(x(points[0].t), y(points[0].v));
    for (const p of points) g.lineTo(x(p.t), y(p.v));
    g.lineWidth = grid ? 2 : 1.5;
    g.lineJoin = "round";
    g.strokeStyle = colours.line;
    g.stroke();
    g.lineTo(x(points[points.length - 1].t), bottom);
    g.lineTo(x(points[0].t), bottom);
    g.closePath();
    g.fillStyle = colours.fill;
    g.fill();
    return max;
  }

  /* A peer event names a Client and its address only: its language and OS come from
   * /api/status, fetched at most once a second however many Clients connect. */
  let detailsPending = false;
  function fetchClientDetails() {
    if (detailsPending) return;
    detailsPending = true;
    setTimeout(async () => {
      try {
        const info = (await fetchJSON(STATUS_URL)).client_info || {};
        for (const client of state.clients.values()) {
          const more = info[client.name];
          if (more && !client.language) {
            client.language = more.language || "";
            client.os = more.os || "";
            renderClient(client);
          }
        }
      } catch (e) {
        // the next Client that connects, or the next resync, tries again
      } finally {
        detailsPending = false;
      }
    }, 1000);
  }

  // ------------------------------------------------------------------ the stream
  async function fetchJSON(url) {
    const response = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return response.json();
  }

  /* On each (re)connection: the snapshot, then the events that came meanwhile, in order. */
  async function resync() {
    const generation = ++state.generation;
    state.syncing = true;
    state.buffer = [];
    for (;;) {
      try {
        const [status, health] = await Promise.all([
          fetchJSON(STATUS_URL), fetchJSON(HEALTH_URL).catch(() => null)]);
        if (generation !== state.generation) return;
        applyStatus(status);
        if (health) setHealth(health.status, health.checks);
        break;
      } catch (e) {
        if (generation !== state.generation) return;
        setStream("reconnecting", "resyncing…");
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS / 2));
        if (generation !== state.generation) return;
      }
    }
    const buffered = state.buffer;
    state.buffer = [];
    state.syncing = false;
    for (const ev of buffered) applyEvent(ev, true);
    if (state.stream && state.stream.readyState === EventSource.OPEN) setStream("live", "live");
    scheduleDraw();
  }

  function connect(after) {
    // ?after=0 on the first connection: the Manager's recent events fill the log and the
    // charts; later the browser itself sends Last-Event-ID when it reconnects.
    const stream = new EventSource(`${EVENTS_URL}?after=${after}`);
    state.stream = stream;
    let lastSeq = after;
    const handler = (message) => {
      if (message.lastEventId) lastSeq = Number(message.lastEventId) || lastSeq;
      onEvent(message);
    };
    for (const type of TYPES) stream.addEventListener(type, handler);
    stream.onopen = () => {
      setStream("syncing", state.connectedOnce ? "resyncing…" : "connecting…");
      state.connectedOnce = true;
      resync();
    };
    stream.onerror = () => {
      if (stream.readyState === EventSource.CLOSED) {
        // the browser gives up (an answer other than 200): start a new stream later
        setStream("offline", "offline, retrying…");
        stream.close();
        setTimeout(() => { if (state.stream === stream) connect(lastSeq); }, RETRY_MS);
      } else {
        setStream("reconnecting", "reconnecting…");
      }
    };
  }

  function start() {
    updateCounts();
    $("show-heartbeats").addEventListener("change", () => {
      if (!$("show-heartbeats").checked) {
        for (const row of $("events").querySelectorAll('li[data-type="heartbeat"]')) row.remove();
      }
    });
    window.addEventListener("resize", scheduleDraw);
    const scheme = window.matchMedia("(prefers-color-scheme: dark)");
    if (scheme.addEventListener) scheme.addEventListener("change", scheduleDraw);
    setInterval(tickUptime, 1000);
    connect(0);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
