// Operator station view (/station/<workstation_id>): the pick to make now, large enough to
// read at arm's length; Confirm (or Enter, or scanning the line's SKU) and Short pick; what
// comes next, the active jobs, the queue, and why a job is paused. Reads and writes go to
// the REST API (docs/picking.md); a WebSocket job_events subscription says when to read
// again. Every word comes from the dashboard's catalogues (static/i18n/<lang>.json).

import { Failover } from "./failover.js";

const LANGS = ["es", "en"];
const LANG_KEY = "carousel-lang";
const TOKEN_KEY = "carousel-token";

const params = new URLSearchParams(location.search);
const STATION = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
const state = {
  token: params.get("token") || sessionStorage.getItem(TOKEN_KEY) || "",
  config: null, ws: null, attempts: 0, link: "connecting",
  workstation: null, jobs: new Map(), names: new Map(),
  problem: null, message: null, busy: false, poll: null,
  failover: null,  // two gateways per cell ([ha]): see failover.js
};
const catalogues = {};
let lang = "en";

const $ = (sel, root = document) => root.querySelector(sel);

// ---- Messages ----------------------------------------------------------------------------

function t(key, values = {}) {
  const text = (catalogues[lang] || {})[key];
  if (typeof text !== "string") {
    console.warn(`no catalogue entry "${key}" for ${lang}`);
    return `⟦${key}⟧`;
  }
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

const has = (key) => typeof (catalogues[lang] || {})[key] === "string";
const errorText = (code) => t(has(`error.${code}`) ? `error.${code}` : "error.other");
/** A pause's reason: a status key (PARADA_EMERGENCIA...) in words, else as the gateway said it. */
const reasonText = (reason) => {
  if (!reason) return t("station.reason_none");
  const known = `station.reason.${reason.replace(/\W+/g, "_")}`;
  if (has(known)) return t(known);
  // A refused or failed move: its status keys or failure reasons ("READY, PARADA_EMERGENCIA").
  const parts = reason.split(/,\s*/);
  if (parts.every((part) => has(`reason.${part}`))) {
    const shown = parts.length > 1 ? parts.filter((part) => part !== "READY") : parts;
    return shown.map((part) => t(`reason.${part}`)).join("; ");
  }
  return reason;
};

async function loadCatalogues() {
  await Promise.all(LANGS.map(async (code) => {
    const reply = await fetch(`/static/i18n/${code}.json`);
    catalogues[code] = await reply.json();
  }));
}

function initialLang() {
  const saved = localStorage.getItem(LANG_KEY);
  if (LANGS.includes(saved)) return saved;
  const wanted = (navigator.languages && navigator.languages[0]) || navigator.language || "";
  return wanted.toLowerCase().startsWith("es") ? "es" : "en";
}

function translate(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const [attribute, data] of [["placeholder", "i18nPlaceholder"], ["title", "i18nTitle"],
                                   ["aria-label", "i18nAriaLabel"]]) {
    const selector = `[data-${data.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}]`;
    for (const el of root.querySelectorAll(selector)) el.setAttribute(attribute, t(el.dataset[data]));
  }
}

function setLang(code, remember = false) {
  lang = code;
  if (remember) localStorage.setItem(LANG_KEY, code);
  document.documentElement.lang = code;
  for (const button of document.querySelectorAll("#lang button")) {
    button.setAttribute("aria-pressed", String(button.dataset.lang === code));
  }
  translate();
  render();
}

// ---- REST --------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(code, text) { super(text); this.code = code; }
}

async function api(path, body) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const options = { headers };
  if (body !== undefined) {
    options.method = "POST";
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let reply;
  try {
    reply = await fetch(path, options);
  } catch (_) {
    throw new ApiError("CONNECTION_ERROR", "");
  }
  const data = await reply.json().catch(() => null);
  if (!reply.ok || !data || !data.success) {
    throw new ApiError((data && data.code) || "other", (data && data.error) || reply.statusText);
  }
  return data.data;
}

const enc = encodeURIComponent;

let loading = null;
let again = false;

/** Read the workstation and its jobs again (calls while a read runs coalesce into one more). */
async function refresh() {
  if (loading) { again = true; return loading; }
  loading = (async () => {
    do {
      again = false;
      try {
        const [workstation, jobs] = await Promise.all([
          api(`/v1/workstations/${enc(STATION)}`),
          api(`/v1/jobs?workstation_id=${enc(STATION)}`),
        ]);
        state.workstation = workstation;
        state.jobs = new Map(jobs.map((job) => [job.job_id, job]));
        state.problem = null;
      } catch (error) {
        state.problem = error;
      }
    } while (again);
  })();
  try { await loading; } finally { loading = null; }
  render();
}

async function loadNames() {
  try {
    for (const machine of await api("/v1/machines")) state.names.set(machine.id, machine.name);
  } catch (_) { /* ids are shown instead */ }
}

async function loadConfig() {
  try {
    const reply = await fetch("/v1/dashboard/config");
    if (reply.ok) return (await reply.json()).data;
  } catch (_) { /* offline: fall back below */ }
  return { ws_port: 8765, ws_path: "/", auth_enabled: false };
}

// ---- The job_events subscription: when to read again --------------------------------------

function wsUrl() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const base = params.get("ws") || `${scheme}://${location.hostname}:${state.config.ws_port}${state.config.ws_path || "/"}`;
  return state.token ? `${base}${base.includes("?") ? "&" : "?"}token=${enc(state.token)}` : base;
}

function connect() {
  const ws = new WebSocket(wsUrl());
  state.ws = ws;
  ws.onopen = () => {
    state.attempts = 0;
    ws.send(JSON.stringify({
      type: "subscribe", subscription_type: "job_events", workstation_ids: [STATION],
      request_id: "station",
    }));
  };
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "subscription_confirmed") {
      setLink("online");
      stopPolling();
      refresh();
    } else if (message.type === "job_event" && message.workstation_id === STATION) {
      if (message.job) state.jobs.set(message.job.job_id, message.job);
      refresh();
    } else if (message.type === "error" && message.request_id === "station") {
      state.problem = new ApiError(message.code, message.error);
      render();
    }
  };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    setLink("offline");
    if (state.failover) state.failover.check();  // gone, or no longer the active one?
    startPolling();
    const delay = Math.min(5000, 250 * 2 ** state.attempts++) * (0.5 + Math.random() / 2);
    setTimeout(connect, delay);
  };
}

/** Without the WebSocket (a proxy that blocks it, a restart) the page still follows the job. */
function startPolling() {
  if (state.poll === null) state.poll = setInterval(refresh, 3000);
}

function stopPolling() {
  if (state.poll !== null) { clearInterval(state.poll); state.poll = null; }
}

function setLink(link) {
  state.link = link;
  renderLink();
}

function renderLink() {
  const el = $("#link");
  el.dataset.state = state.link;
  el.dataset.i18n = `link.${state.link}`;
  el.textContent = t(`link.${state.link}`);
  el.className = `link ${state.link === "online" ? "online" : "offline"}`;
  document.body.classList.toggle("offline", state.link !== "online");
}

// ---- What to pick ------------------------------------------------------------------------

const DONE = new Set(["picked", "short", "cancelled"]);

/** The line of a job as last read (a confirmation's reply is newer than the workstation). */
function lineOf(jobId, lineId) {
  const job = state.jobs.get(jobId);
  return job ? job.lines.find((line) => line.line_id === lineId) : undefined;
}

/** The stop to pick from now and its lines still to confirm. */
function currentPick() {
  const stop = state.workstation && state.workstation.current;
  if (!stop) return null;
  const open = stop.lines.filter((line) => {
    const known = lineOf(line.job_id, line.line_id);
    return line.state === "presented" && !(known && DONE.has(known.state));
  });
  return open.length ? { stop, line: open[0], open } : null;
}

const carouselName = (id) => {
  const name = state.names.get(id);
  return name && name !== id ? `${name} (${id})` : id;
};

/** ``title`` says why a control is off (no empty title when it is not). */
function titled(el, why) {
  if (why) el.title = why;
  else el.removeAttribute("title");
}

/** Why the station's commands are off as far as [ha] goes ("": they are not). */
const standbyReason = () => (state.failover ? state.failover.blockReason() : "");

function render() {
  if (!Object.keys(catalogues).length) return;
  renderLink();
  if (state.failover) state.failover.render();
  const workstation = state.workstation;
  const name = workstation ? workstation.name : STATION;
  $("#station-name").textContent = workstation ? name : `${t("station.title")} ${STATION}`;
  document.title = `${name} · ${t("station.title")}`;
  const problem = $("#problem");
  problem.hidden = !state.problem;
  problem.textContent = state.problem
    ? `${errorText(state.problem.code)}${state.problem.message ? `: ${state.problem.message}` : ""}`
    : "";
  renderPaused();
  const pick = currentPick();
  const current = $("#current");
  current.hidden = !pick;
  $("#idle").hidden = Boolean(pick);
  if (pick) {
    const { stop, line, open } = pick;
    current.dataset.line = `${line.job_id}/${line.line_id}`;
    $("#pick-carousel").textContent = carouselName(stop.machine_id);
    $("#pick-bucket").textContent = String(stop.position);
    $("#pick-quantity").textContent = String(line.quantity);
    $("#pick-sku").textContent = line.sku || "–";
    $("#pick-description").textContent = line.description || "";
    $("#pick-order").textContent = line.order_id || line.job_id;
    const others = open.slice(1);
    $("#stop-lines").textContent = others.length
      ? t("station.more_here", { count: others.length }) : "";
    const standby = standbyReason();
    for (const button of current.querySelectorAll("button")) {
      button.disabled = state.busy || Boolean(standby);
      titled(button, standby);
    }
  } else {
    delete current.dataset.line;
    $("#short-form").hidden = true;
    $("#idle").textContent = idleText();
  }
  const message = $("#message");
  message.textContent = state.message ? state.message.text : "";
  message.className = `message ${state.message ? state.message.kind : ""}`;
  renderNext();
  renderJobs();
}

function idleText() {
  const workstation = state.workstation;
  if (!workstation) return t("station.loading");
  if (!workstation.active_jobs.length) return t("station.idle_none");
  const paused = workstation.active_jobs.some((id) => (state.jobs.get(id) || {}).state === "paused");
  if (paused || workstation.paused_reason) return t("station.idle_paused");
  for (const [machine, buckets] of Object.entries(workstation.route || {})) {
    if (buckets.length) {
      return t("station.idle_moving", { carousel: carouselName(machine), bucket: buckets[0] });
    }
  }
  return t("station.idle_waiting");
}

function renderPaused() {
  const banner = $("#paused");
  const paused = [...state.jobs.values()].filter((job) => job.state === "paused");
  banner.replaceChildren();
  banner.hidden = !paused.length && !(state.workstation && state.workstation.paused_reason);
  if (!paused.length && state.workstation && state.workstation.paused_reason) {
    banner.textContent = t("station.paused_station", { reason: reasonText(state.workstation.paused_reason) });
  }
  for (const job of paused) {
    const row = document.createElement("div");
    const text = document.createElement("span");
    text.textContent = t("station.paused_job", { job: job.job_id, reason: reasonText(job.paused_reason) });
    const resume = document.createElement("button");
    resume.type = "button";
    resume.dataset.testid = "resume";
    resume.textContent = t("station.resume");
    resume.disabled = state.busy || Boolean(standbyReason());
    titled(resume, standbyReason());
    resume.addEventListener("click", () => control(job.job_id, "resume"));
    row.append(text, " ", resume);
    if (job.paused_reason === "failover_move_lost") row.append(failoverLost());
    banner.append(row);
  }
}

/** A job paused by a takeover: what happened, in words, and what to do before Resume. */
function failoverLost() {
  const what = document.createElement("p");
  what.className = "what";
  what.dataset.testid = "failover-lost";
  const takeover = state.failover ? state.failover.recentTakeover() : null;
  what.textContent = takeover
    ? t("station.failover_lost_at", {
      instance: takeover.instance, time: new Date(takeover.at).toLocaleTimeString(lang) })
    : t("station.failover_lost");
  return what;
}

function renderNext() {
  const list = $("#next");
  list.replaceChildren();
  const workstation = state.workstation;
  if (!workstation) return;
  const pick = currentPick();
  for (const stop of workstation.presented || []) {
    if (pick && stop.machine_id === pick.stop.machine_id && stop.position === pick.stop.position) continue;
    const item = document.createElement("li");
    item.className = "ready";
    item.textContent = t("station.ready_at", { carousel: carouselName(stop.machine_id), bucket: stop.position });
    list.append(item);
  }
  for (const [machine, buckets] of Object.entries(workstation.route || {})) {
    if (!buckets.length) continue;
    const item = document.createElement("li");
    item.textContent = t("station.route", { carousel: carouselName(machine), buckets: buckets.slice(0, 8).join(" → ") });
    list.append(item);
  }
}

function jobItem(id) {
  const item = document.createElement("li");
  const job = state.jobs.get(id);
  if (!job) { item.textContent = id; return item; }
  const done = job.lines.filter((line) => DONE.has(line.state)).length;
  item.textContent = t("station.job_progress", { job: id, done, total: job.lines.length });
  return item;
}

function renderJobs() {
  const workstation = state.workstation;
  const active = $("#active");
  const queue = $("#queue");
  active.replaceChildren(...(workstation ? workstation.active_jobs.map(jobItem) : []));
  queue.replaceChildren(...(workstation ? workstation.queue.map(jobItem) : []));
  $("#queue-empty").hidden = Boolean(workstation && workstation.queue.length);
}

// ---- Confirming --------------------------------------------------------------------------

function say(kind, text) {
  state.message = { kind, text };
  render();
}

async function confirm(quantity, reason) {
  const pick = currentPick();
  if (!pick || state.busy) return;
  const { line } = pick;
  state.busy = true;
  render();
  try {
    const body = { quantity_picked: quantity ?? line.quantity };
    if (reason) body.reason = reason;
    const job = await api(`/v1/jobs/${enc(line.job_id)}/lines/${enc(line.line_id)}/confirm`, body);
    state.jobs.set(job.job_id, job);
    const short = body.quantity_picked < line.quantity;
    say("ok", t(short ? "station.shorted" : "station.confirmed", {
      quantity: body.quantity_picked, sku: line.sku || line.line_id,
    }));
  } catch (error) {
    say("error", `${errorText(error.code)}${error.message ? `: ${error.message}` : ""}`);
  } finally {
    state.busy = false;
    $("#short-form").hidden = true;
    await refresh();
    $("#scan").focus();
  }
}

async function control(jobId, action) {
  state.busy = true;
  render();
  try {
    const job = await api(`/v1/jobs/${enc(jobId)}/${action}`, {});
    state.jobs.set(job.job_id, job);
    state.message = null;
  } catch (error) {
    say("error", `${errorText(error.code)}${error.message ? `: ${error.message}` : ""}`);
  } finally {
    state.busy = false;
    await refresh();
  }
}

function scanned(value) {
  const pick = currentPick();
  if (!pick) return;
  const code = value.trim();
  const sku = (pick.line.sku || "").trim();
  if (code === "" || (sku && code.toLowerCase() === sku.toLowerCase())) {
    confirm();
  } else {
    say("error", t("station.scan_mismatch", { scanned: code, sku: sku || "–" }));
  }
}

// ---- Start -------------------------------------------------------------------------------

$("#confirm").addEventListener("click", () => confirm());
$("#short").addEventListener("click", () => {
  const pick = currentPick();
  if (!pick) return;
  const form = $("#short-form");
  form.hidden = false;
  const quantity = $("#short-quantity");
  quantity.max = String(pick.line.quantity - 1);
  quantity.value = String(Math.max(0, pick.line.quantity - 1));
  quantity.focus();
});
$("#short-cancel").addEventListener("click", () => { $("#short-form").hidden = true; });
$("#short-form").addEventListener("submit", (event) => {
  event.preventDefault();
  confirm(Number($("#short-quantity").value), $("#short-reason").value.trim());
});
$("#scan-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("#scan");
  const value = input.value;
  input.value = "";
  scanned(value);
});
// Enter confirms the whole line, unless the operator is typing somewhere (the scan field
// and the short-pick form have their own Enter) or a button has the focus (Enter clicks it).
document.addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || event.repeat) return;
  if (event.target.closest("input, textarea, select, button, form")) return;
  event.preventDefault();
  confirm();
});
$("#token").value = state.token;
$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("#token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  if (state.ws) { const old = state.ws; state.ws = null; old.close(); }
  connect();
  loadNames();
  refresh();
});
$("#lang").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-lang]");
  if (button) setLang(button.dataset.lang, true);
});

const [config] = await Promise.all([loadConfig(), loadCatalogues()]);
state.config = config;
setLang(initialLang());
if (config.ha_enabled) {
  state.failover = new Failover({
    t, lang: () => lang, linkDown: () => state.link !== "online", changed: render,
    idle: () => !state.busy && $("#short-form").hidden && !$("#scan").value,
  });
  state.failover.start();
}
await loadNames();
await refresh();
connect();
$("#scan").focus();
