// Operator dashboard: speaks the gateway's WebSocket API directly (no extra backend).
// Simulator buttons use the REST simulator controls; the event feed starts from the
// journal (REST). No build step, no external assets. The wire keeps the spec's keys and
// labels; every word on the page comes from a catalogue (static/i18n/<lang>.json).

import { Failover } from "./failover.js";

// The status byte (docs/plc-protocol.md): bit, key, blocking value (null: never), fault?
const FLAGS = [
  [0, "READY", 0, false],
  [1, "RUN", 1, false],
  [2, "MODO_OPERACION", 0, false],
  [3, "ALARMA", 1, true],
  [4, "PARADA_EMERGENCIA", 0, true],
  [5, "VFD", 1, true],
  [6, "ERROR_POSICIONAMIENTO", 1, true],
  [7, "SENTIDO_GIRO", null, false],
];
const MOVE = 1;  // the MOVE command byte
const LANGS = ["es", "en"];
const LANG_KEY = "carousel-lang";
const FEED_LIMIT = 200;
const JOURNAL_LIMIT = 20;

const params = new URLSearchParams(location.search);
const state = {
  ws: null, machines: new Map(), cards: new Map(), role: "operator", attempts: 0,
  token: params.get("token") || sessionStorage.getItem("carousel-token") || "",
  config: null, pending: new Map(), outcomes: new Map(), moves: new Map(), nextId: 1,
  link: "connecting", welcomed: false, feed: new Map(),
  failover: null,  // two gateways per cell ([ha]): see failover.js
};
const catalogues = {};
let lang = "en";

const $ = (sel, root = document) => root.querySelector(sel);

// ---- Messages ----------------------------------------------------------------------------

/** The catalogue text of ``key`` with ``{name}`` placeholders filled; a missing key shows
 * as ⟦key⟧ (the browser tests look for that marker). */
function t(key, values = {}) {
  const text = (catalogues[lang] || {})[key];
  if (typeof text !== "string") {
    console.warn(`no catalogue entry "${key}" for ${lang}`);
    return `⟦${key}⟧`;
  }
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

const has = (key) => typeof (catalogues[lang] || {})[key] === "string";
/** The entry ``prefix.name`` if the catalogue has it, else ``fallback``. */
const tOr = (prefix, name, fallback, values = {}) =>
  t(has(`${prefix}.${name}`) ? `${prefix}.${name}` : fallback, values);

// A move failed or was refused for these: fault keys, interlocks, timeout, connection_lost...
const reasonText = (reason) => tOr("reason", reason, "reason.other");
/** The reasons worth reading: "not ready" goes without saying next to a fault that causes it. */
const essential = (reasons) => {
  const all = reasons || [];
  return all.length > 1 ? all.filter((reason) => reason !== "READY") : all;
};
const reasonsText = (reasons) => essential(reasons).map(reasonText).join("; ");
const adviceText = (reasons) => [...new Set(essential(reasons).map(
  (reason) => tOr("advice", reason, "advice.other")))].join(" ");
const number = (value, digits = 1) =>
  Number(value).toLocaleString(lang, { maximumFractionDigits: digits });

async function loadCatalogues() {
  await Promise.all(LANGS.map(async (code) => {
    const reply = await fetch(`static/i18n/${code}.json`);
    catalogues[code] = await reply.json();
  }));
}

function initialLang() {
  const saved = localStorage.getItem(LANG_KEY);
  if (LANGS.includes(saved)) return saved;
  const wanted = (navigator.languages && navigator.languages[0]) || navigator.language || "";
  return wanted.toLowerCase().startsWith("es") ? "es" : "en";
}

/** Fill every element under ``root`` that names a catalogue entry. */
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
  document.title = t("page.title");
  for (const button of document.querySelectorAll("#lang button")) {
    button.setAttribute("aria-pressed", String(button.dataset.lang === code));
  }
  translate();
  renderLink();
  renderMqtt();
  if (state.failover) state.failover.render();
  for (const id of state.cards.keys()) render(id);
  renderFeed();
}

// ---- The link to the gateway -------------------------------------------------------------

async function loadConfig() {
  try {
    const reply = await fetch("v1/dashboard/config");
    if (reply.ok) return (await reply.json()).data;
  } catch (_) { /* offline: fall back below */ }
  return { ws_port: 8765, ws_path: "/", auth_enabled: false, journal_enabled: false };
}

function wsUrl() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const base = params.get("ws") || `${scheme}://${location.hostname}:${state.config.ws_port}${state.config.ws_path || "/"}`;
  return state.token ? `${base}${base.includes("?") ? "&" : "?"}token=${encodeURIComponent(state.token)}` : base;
}

function connect() {
  const ws = new WebSocket(wsUrl());
  state.ws = ws;
  ws.onopen = () => {
    state.attempts = 0;
    setLink("online");
    send({ type: "subscribe", subscription_type: "all_events" });
  };
  ws.onmessage = (event) => handle(JSON.parse(event.data));
  ws.onclose = () => {
    if (state.ws !== ws) return;
    setLink("offline");
    if (state.failover) state.failover.check();  // gone, or no longer the active one?
    const delay = Math.min(5000, 250 * 2 ** state.attempts++) * (0.5 + Math.random() / 2);
    setTimeout(connect, delay);
  };
}

function send(message) {
  if (isOnline()) {
    state.ws.send(JSON.stringify({ ...message, timestamp: new Date().toISOString() }));
    return true;
  }
  return false;
}

const isOnline = () => Boolean(state.ws && state.ws.readyState === WebSocket.OPEN);

function setLink(link) {
  state.link = link;
  renderLink();
  for (const id of state.cards.keys()) render(id);
}

function renderLink() {
  const link = $("#link");
  link.textContent = t(`link.${state.link}`);
  link.dataset.state = state.link;
  link.className = `link ${state.link === "online" ? "online" : "offline"}`;
  // While a takeover is followed, "Switching gateway…" says it better (failover.js).
  $("#offline-banner").hidden = state.link !== "offline"
    || Boolean(state.failover && state.failover.searching);
  // Everything the page shows is stale while the link is down: greyed, controls disabled.
  document.body.classList.toggle("offline", state.link !== "online");
}

// ---- The gateway's MQTT link (when [mqtt] is on) ----------------------------------------

const MQTT_POLL_MS = 5000;
const MQTT_STATES = ["mqtt.online", "mqtt.connecting", "mqtt.waiting_for_host", "mqtt.disconnected", "mqtt.standby"];

async function pollMqtt() {
  try {
    const reply = await fetch("v1/health");
    const mqtt = reply.ok ? (await reply.json()).data.mqtt : null;
    state.mqtt = mqtt ? mqtt.state : "disconnected";
  } catch (_) {
    state.mqtt = "disconnected"; // the gateway itself is out of reach
  }
  renderMqtt();
  setTimeout(pollMqtt, MQTT_POLL_MS);
}

function renderMqtt() {
  const badge = $("#mqtt");
  if (!state.config || !state.config.mqtt_enabled) return;
  const key = `mqtt.${state.mqtt || "connecting"}`;
  badge.hidden = false;
  badge.textContent = MQTT_STATES.includes(key) ? t(key) : state.mqtt;
  badge.dataset.state = state.mqtt || "connecting";
  // A standby ([ha]) has no MQTT connection on purpose: not a fault, no red badge.
  const look = state.mqtt === "online" ? "online" : state.mqtt === "standby" ? "standby" : "offline";
  badge.className = `link ${look}`;
}

// ---- Messages from the gateway -----------------------------------------------------------

function handle(message) {
  switch (message.type) {
    case "welcome":
      state.role = message.auth ? message.auth.role : "operator";
      for (const info of message.machines) {
        const known = state.machines.get(info.id) || {};
        state.machines.set(info.id, { ...known, info });
        if (!state.cards.has(info.id)) createCard(info);
      }
      // After a reconnect, what happened meanwhile is in the journal.
      if (state.welcomed) loadJournal();
      state.welcomed = true;
      renderFeed();
      break;
    case "status_broadcast":
      for (const [id, live] of Object.entries(message.status)) {
        const machine = state.machines.get(id);
        if (machine) { machine.live = live; render(id); }
      }
      break;
    case "command_result": {
      const { command_sent: command, argument, skipped } = message.data;
      if (command === MOVE) {
        if (skipped) state.moves.delete(message.machine_id);
        else state.moves.set(message.machine_id, { target: argument });
      }
      if (message.request_id && state.pending.has(message.request_id)) {
        const id = state.pending.get(message.request_id).id;
        state.outcomes.set(id, skipped
          ? { kind: "arrived", key: "outcome.skipped", values: { position: argument } }
          : { kind: "moving", key: "outcome.sent", values: { target: argument } });
        if (skipped) state.pending.delete(message.request_id);
      }
      addFeed(message.machine_id, "command", message.timestamp, { command, argument, skipped });
      render(message.machine_id);
      break;
    }
    case "move_completed":
      finish(message, { kind: "arrived", key: "outcome.arrived", values: { position: message.position } });
      addFeed(message.machine_id, "move_completed", message.timestamp,
              { position: message.position, duration: message.duration_s });
      break;
    case "move_failed":
      finish(message, { kind: "failed", key: "outcome.failed", values: { target: message.target },
                        reasons: message.reasons });
      addFeed(message.machine_id, "move_failed", message.timestamp,
              { target: message.target, reasons: message.reasons });
      break;
    case "machine_event": {
      const kind = message.event === "telemetry_source" ? "telemetry_source_changed" : message.event;
      addFeed(message.machine_id, kind, message.timestamp, {
        keys: message.keys, reason: message.reason, source: message.source,
        position: message.position, target: message.target,
      });
      break;
    }
    case "error": {
      const request = message.request_id && state.pending.get(message.request_id);
      const reasons = message.reasons && message.reasons.length ? message.reasons : null;
      if (request) {
        state.pending.delete(message.request_id);
        state.outcomes.set(request.id, { kind: "failed", key: "outcome.refused",
          values: { target: request.target }, reasons: reasons || [], code: message.code });
        addFeed(request.id, "command_refused", message.timestamp,
                { argument: request.target, code: message.code, reasons });
        render(request.id);
      } else {
        addFeed(message.machine_id || "", "gateway_error", message.timestamp, { code: message.code });
      }
      break;
    }
  }
}

function finish(message, outcome) {
  state.outcomes.set(message.machine_id, outcome);
  state.moves.delete(message.machine_id);
  if (message.request_id) state.pending.delete(message.request_id);
  render(message.machine_id);
}

// ---- The event feed ----------------------------------------------------------------------

const FAULTY = new Set(["move_failed", "fault_raised", "disconnected", "error", "command_refused",
                        "gateway_error", "position_desync", "simulator_refused"]);
const GOOD = new Set(["move_completed", "connected", "fault_cleared", "position_desync_cleared"]);

/** One feed entry; the same event from the journal and from the WebSocket is kept once. */
function addFeed(machine, kind, timestamp, values, rerender = true) {
  const at = timestamp ? Date.parse(timestamp) : Date.now();
  const key = `${machine}|${kind}|${timestamp || at}`;
  state.feed.set(key, { machine, kind, at, values });
  if (state.feed.size > FEED_LIMIT) {
    const oldest = [...state.feed.entries()].sort((a, b) => a[1].at - b[1].at)[0][0];
    state.feed.delete(oldest);
  }
  if (rerender) renderFeed();
}

function eventText(kind, v) {
  switch (kind) {
    case "command":
      if (v.command !== MOVE) return t("event.command", { command: v.command });
      return t(v.skipped ? "event.move_skipped" : "event.move_sent", { target: v.argument });
    case "command_refused":
      return t("event.command_refused", { target: v.argument ?? "–",
        why: v.reasons && v.reasons.length ? reasonsText(v.reasons) : tOr("error", v.code, "error.other") });
    case "move_completed":
      return t("event.move_completed", { position: v.position, duration: number(v.duration || 0) });
    case "move_failed":
      return t("event.move_failed", { target: v.target, why: reasonsText(v.reasons) });
    case "fault_raised":
      return essential(v.keys).map((key) => tOr("fault", key, "fault.other")).join("; ") || t("fault.other");
    case "fault_cleared":
      return essential(v.keys).map((key) => tOr("cleared", key, "cleared.other")).join("; ") || t("cleared.other");
    case "telemetry_source_changed":
      return tOr("event.telemetry", v.source, "event.telemetry.other");
    case "position_desync":
      return t("event.position_desync", { position: v.position ?? "–", target: v.target ?? "–" });
    case "gateway_error":
      return tOr("error", v.code, "error.other");
    case "simulator_refused":
      return t("event.simulator_refused", { status: v.status });
    case "simulator_failed":
      return t("event.simulator_failed");
    default:
      return tOr("event", kind, "event.other");
  }
}

function renderFeed() {
  const list = $("#feed");
  const entries = [...state.feed.values()].sort((a, b) => b.at - a.at);
  list.replaceChildren(...entries.map((entry) => {
    const item = document.createElement("li");
    item.className = FAULTY.has(entry.kind) ? "fault" : GOOD.has(entry.kind) ? "ok" : "";
    item.dataset.kind = entry.kind;
    const time = document.createElement("time");
    time.dateTime = new Date(entry.at).toISOString();
    time.textContent = new Date(entry.at).toLocaleTimeString(lang);
    const machine = state.machines.get(entry.machine);
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = entry.machine ? (machine ? machine.info.name : entry.machine) : t("feed.gateway");
    if (entry.values.reason) item.title = entry.values.reason;  // free text from the gateway
    item.append(time, who, " ", eventText(entry.kind, entry.values));
    return item;
  }));
  $("#feed-empty").hidden = entries.length > 0;
}

/** The journal's recent events (REST), so the feed does not start empty. */
async function loadJournal() {
  const config = state.config;
  if (!config.journal_enabled || (config.auth_enabled && !state.token)) return;
  const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
  try {
    const reply = await fetch(`v1/events?limit=${JOURNAL_LIMIT}`, { headers });
    if (!reply.ok) return;
    const body = await reply.json();
    for (const row of body.data.entries) {
      addFeed(row.machine_id, row.kind, row.timestamp, {
        command: row.command, argument: row.argument, skipped: row.skipped, code: row.code,
        reasons: row.reasons, keys: row.keys, reason: row.reason, source: row.source,
        position: row.position, target: row.target, duration: row.duration_s,
      }, false);
    }
    renderFeed();
  } catch (_) { /* offline: the feed fills from the WebSocket */ }
}

// ---- Machine cards -----------------------------------------------------------------------

function createCard(info) {
  const card = $("#machine-template").content.firstElementChild.cloneNode(true);
  card.dataset.machine = info.id;
  $(".name", card).textContent = info.name;
  const target = $(".target", card);
  target.min = info.position_base;
  target.max = info.positions - 1 + info.position_base;
  drawLoop($(".loop", card), info);
  $(".move", card).addEventListener("submit", (event) => {
    event.preventDefault();
    const requestId = `dash-${state.nextId++}`;
    state.pending.set(requestId, { id: info.id, target: Number(target.value) });
    send({ type: "send_command", machine_id: info.id, request_id: requestId,
           command: { command: MOVE, argument: Number(target.value) } });
    render(info.id);
  });
  const sim = $(".sim", card);
  if (info.type === "Simulator") {
    sim.hidden = false;
    sim.addEventListener("click", (event) => {
      const button = event.target.closest("button");
      if (button && !button.disabled) {
        simulatorFault(info.id, button.dataset.fault, button.dataset.active === "true");
      }
    });
  }
  translate(card);
  $("#machines").append(card);
  state.cards.set(info.id, card);
  render(info.id);
}

async function simulatorFault(id, fault, active) {
  const headers = { "Content-Type": "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  try {
    const reply = await fetch(`v1/simulators/${encodeURIComponent(id)}/faults`, {
      method: "POST", headers, body: JSON.stringify({ fault, active }) });
    if (!reply.ok) addFeed(id, "simulator_refused", null, { status: reply.status });
  } catch (_) {
    addFeed(id, "simulator_failed", null, {});
  }
}

// The loop: buckets spaced along a stadium-shaped chain. The chain turns, so the current
// bucket is always drawn at the picking window (left side, middle), as the operator sees it.
function loopGeometry(n) {
  const r = 62, cx = 130, top = 92, bottom = 228;
  const straight = bottom - top, length = 2 * straight + 2 * Math.PI * r;
  const point = (s) => {  // s in [0, length): from the window going up the left side
    let d = (((s + straight / 2) % length) + length) % length;
    if (d < straight) return [cx - r, bottom - d];
    d -= straight;
    if (d < Math.PI * r) { const a = Math.PI + d / r; return [cx + r * Math.cos(a), top + r * Math.sin(a)]; }
    d -= Math.PI * r;
    if (d < straight) return [cx + r, top + d];
    d -= straight;
    const a = d / r; return [cx + r * Math.cos(a), bottom + r * Math.sin(a)];
  };
  return { r, cx, top, bottom, length, point, size: Math.max(6, Math.min(16, (length / n) * 0.6)) };
}

function drawLoop(svg, info) {
  const ns = "http://www.w3.org/2000/svg";
  const g = loopGeometry(info.positions);
  const chain = document.createElementNS(ns, "path");
  chain.setAttribute("class", "chain");
  chain.setAttribute("d", `M ${g.cx - g.r} ${g.bottom} V ${g.top} A ${g.r} ${g.r} 0 0 1 ${g.cx + g.r} ${g.top} V ${g.bottom} A ${g.r} ${g.r} 0 0 1 ${g.cx - g.r} ${g.bottom} Z`);
  svg.append(chain);
  // With many buckets, label every fifth one (and always the current one) so they stay legible.
  const every = info.positions > 40 ? 5 : 1;
  for (let i = 0; i < info.positions; i++) {
    const bucket = document.createElementNS(ns, "g");
    bucket.setAttribute("class", "slot");
    bucket.dataset.index = i;
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", -g.size / 2); rect.setAttribute("y", -g.size / 2);
    rect.setAttribute("width", g.size); rect.setAttribute("height", g.size);
    rect.setAttribute("rx", 2);
    rect.setAttribute("class", "bucket");
    rect.dataset.position = i + info.position_base;
    const label = document.createElementNS(ns, "text");
    label.textContent = i + info.position_base;
    if ((i + info.position_base) % every !== 0) label.classList.add("minor");
    bucket.append(rect, label);
    svg.append(bucket);
  }
  const [wx, wy] = g.point(0);
  const frame = document.createElementNS(ns, "rect");
  frame.setAttribute("class", "window");
  frame.setAttribute("x", wx - g.size); frame.setAttribute("y", wy - g.size);
  frame.setAttribute("width", g.size * 2); frame.setAttribute("height", g.size * 2);
  svg.append(frame);
  const caption = document.createElementNS(ns, "text");
  caption.setAttribute("x", wx + g.size + 4); caption.setAttribute("y", wy);
  caption.setAttribute("class", "window-label");
  caption.dataset.i18n = "loop.window";
  svg.append(caption);
  const arrow = document.createElementNS(ns, "text");
  arrow.setAttribute("class", "arrow");
  arrow.setAttribute("x", g.cx); arrow.setAttribute("y", (g.top + g.bottom) / 2);
  svg.append(arrow);
  placeBuckets(svg, info, info.position_base);
}

// Turn the chain so that ``position`` stands at the window.
function placeBuckets(svg, info, position) {
  const g = loopGeometry(info.positions);
  const current = position - info.position_base;
  for (const slot of svg.querySelectorAll(".slot")) {
    const offset = (Number(slot.dataset.index) - current + info.positions) % info.positions;
    const [x, y] = g.point((offset * g.length) / info.positions);
    slot.setAttribute("transform", `translate(${x.toFixed(1)} ${y.toFixed(1)})`);
    // Labels stand outside the chain, away from the centre of the nearest straight or bend,
    // so neighbours on the bends do not overlap.
    const [ox, oy] = [x - g.cx, y - Math.min(g.bottom, Math.max(g.top, y))];
    const norm = Math.hypot(ox, oy) || 1;
    const label = slot.querySelector("text");
    label.setAttribute("x", ((ox / norm) * (g.size / 2 + 13)).toFixed(1));
    label.setAttribute("y", ((oy / norm) * (g.size / 2 + 11)).toFixed(1));
  }
}

function decode(raw) {
  const flags = {};
  const blockers = [];
  for (const [bit, key, blocksWhen, fault] of FLAGS) {
    const value = (raw >> bit) & 1;
    flags[key] = value;
    if (blocksWhen !== null && value === blocksWhen) blockers.push({ key, fault });
  }
  return { flags, blockers };
}

function flagClass(key, value) {
  switch (key) {
    case "READY": return value ? "ok" : "warn";
    case "RUN": return value ? "move" : "plain";
    case "MODO_OPERACION": return value ? "ok" : "warn";
    case "ALARMA": case "VFD": case "ERROR_POSICIONAMIENTO": return value ? "fault" : "ok";
    case "PARADA_EMERGENCIA": return value ? "ok" : "fault";
    default: return "plain";
  }
}

/** Buckets between ``position`` and ``target`` the way the chain turns (the shorter way
 * while it has not started). Ascending: bucket numbers rise at the window. */
function bucketsLeft(info, position, target, decoded) {
  const n = info.positions;
  const up = (((target - position) % n) + n) % n;
  const down = (((position - target) % n) + n) % n;
  if (decoded && decoded.flags.RUN) return decoded.flags.SENTIDO_GIRO ? down : up;
  return Math.min(up, down);
}

/** The one line a technician reads from across the room, and its colour. */
function summary(online, live, connection, decoded, safety) {
  if (!online) return ["stale", t("state.offline")];
  if (!live || connection !== "connected") return ["fault", tOr("conn", connection, "conn.unknown")];
  if (!decoded) return ["warn", t("state.unknown")];
  const faults = safety.filter((b) => b.fault);
  if (faults.length) return ["fault", faults.map((b) => t(`fault.${b.key}`)).join(" · ")];
  if (decoded.flags.RUN) return ["move", t("state.moving")];
  if (!decoded.flags.MODO_OPERACION) return ["warn", t("state.manual")];
  if (!decoded.flags.READY) return ["warn", t("state.not_ready")];
  return ["ok", t("state.ready")];
}

function render(id) {
  const card = state.cards.get(id);
  const machine = state.machines.get(id);
  if (!card || !machine) return;
  const { info, live } = machine;
  const online = isOnline();
  card.classList.toggle("stale", !online);
  $(".kind", card).textContent = `${info.id} · ${tOr("type", info.type === "Simulator" ? "simulator" : "plc", "type.plc")}`;
  const conn = $(".conn", card);
  const linked = live ? live.connection_status : "unknown";
  // A standby ([ha]) keeps its PLC links closed on purpose and shows what the active last
  // read (from the database): not a fault, so no red "PLC disconnected".
  const standby = state.failover ? state.failover.blockReason() : "";
  const mirrored = Boolean(standby) && live && linked !== "connected";
  const connection = mirrored ? "connected" : linked;
  conn.textContent = !online ? t("conn.stale") : mirrored ? t("conn.standby")
    : tOr("conn", connection, "conn.unknown");
  conn.className = `conn ${!online ? "stale" : mirrored ? "standby" : connection}`;
  $(".pos", card).textContent = live && live.position != null ? live.position : "–";

  const decoded = live && live.raw_status != null ? decode(live.raw_status) : null;
  const flagsList = $(".flags", card);
  flagsList.replaceChildren();
  if (decoded) {
    for (const [, key] of FLAGS) {
      const item = document.createElement("li");
      item.dataset.flag = key;
      const value = document.createElement("span");
      value.className = `v ${flagClass(key, decoded.flags[key])}`;
      value.textContent = t(`flag.${key}.${decoded.flags[key]}`);
      item.append(t(`flag.${key}`), value);
      flagsList.append(item);
    }
  }
  const moving = Boolean(decoded && decoded.flags.RUN);
  const descending = Boolean(decoded && decoded.flags.SENTIDO_GIRO);
  $(".direction", card).textContent = moving ? t(descending ? "dir.descending" : "dir.ascending") : "";
  // Ascending: bucket numbers rise at the window, i.e. the chain turns clockwise here.
  $(".arrow", card).textContent = moving ? (descending ? "↺" : "↻") : "";
  if (live && live.position != null) placeBuckets($(".loop", card), info, live.position);
  const move = state.moves.get(id);
  for (const bucket of card.querySelectorAll(".bucket")) {
    const position = Number(bucket.dataset.position);
    const current = live != null && position === live.position;
    bucket.classList.toggle("current", current);
    bucket.classList.toggle("target", Boolean(move) && position === move.target);
    bucket.nextElementSibling.classList.toggle("current", current);
  }
  $(".window-label", card).textContent = t("loop.window");

  const safety = decoded ? decoded.blockers.filter((b) => b.key !== "RUN") : [];
  const [tone, words] = summary(online, live, connection, decoded, safety);
  const badge = $(".state", card);
  badge.textContent = words;
  badge.className = `state ${tone}`;

  // Where a move is going: its target and the buckets left.
  const goal = $(".goal", card);
  if (move && live && live.position != null && live.position !== move.target) {
    const left = bucketsLeft(info, live.position, move.target, decoded);
    goal.textContent = t(left === 1 ? "goal.one" : "goal.many", { target: move.target, left });
    goal.dataset.target = move.target;
    goal.dataset.left = left;
  } else {
    goal.textContent = "";
    delete goal.dataset.target;
    delete goal.dataset.left;
  }

  const interlocks = $(".interlocks", card);
  interlocks.textContent = essential(safety.map((b) => b.key)).map(reasonText).join(" · ");
  interlocks.className = `interlocks ${safety.some((b) => b.fault) ? "fault" : ""}`;
  interlocks.dataset.keys = safety.map((b) => b.key).join(",");

  const waiting = [...state.pending.values()].some((request) => request.id === id);
  let why = "";
  if (!online) why = t("why.offline");
  else if (standby) why = standby;
  else if (state.role !== "operator") why = t("why.viewer");
  else if (!live || connection !== "connected") why = t("why.plc", { link: tOr("conn", connection, "conn.unknown") });
  else if (safety.length) why = reasonsText(safety.map((b) => b.key));
  else if (moving) why = t("why.moving");
  else if (waiting) why = t("why.waiting");
  $(".go", card).disabled = Boolean(why);
  $(".target", card).disabled = Boolean(why);
  $(".why", card).textContent = why;
  const controlsOff = !online || state.role !== "operator" || Boolean(standby);
  for (const button of card.querySelectorAll(".sim button")) button.disabled = controlsOff;

  const outcome = state.outcomes.get(id);
  const box = $(".outcome", card);
  const advice = $(".advice", card);
  if (outcome) {
    let text = t(outcome.key, outcome.values);
    if (outcome.reasons && outcome.reasons.length) text += ` ${reasonsText(outcome.reasons)}`;
    else if (outcome.code) text += ` ${tOr("error", outcome.code, "error.other")}`;
    box.textContent = text;
    box.className = `outcome ${outcome.kind}`;
    advice.textContent = outcome.kind === "failed" && outcome.reasons && outcome.reasons.length
      ? `${t("advice.title")} ${adviceText(outcome.reasons)}` : "";
  } else {
    box.textContent = "";
    box.className = "outcome";
    advice.textContent = "";
  }
}

// ---- Start -------------------------------------------------------------------------------

$("#token").value = state.token;
$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("#token").value.trim();
  sessionStorage.setItem("carousel-token", state.token);
  if (state.ws) { const old = state.ws; state.ws = null; old.close(); }
  connect();
  loadJournal();
});
$("#lang").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-lang]");
  if (button) setLang(button.dataset.lang, true);
});

const [config] = await Promise.all([loadConfig(), loadCatalogues()]);
state.config = config;
setLang(initialLang());
connect();
loadJournal();
if (config.mqtt_enabled) pollMqtt();
if (config.ha_enabled) {
  state.failover = new Failover({
    t, lang: () => lang, linkDown: () => state.link !== "online",
    changed: () => { renderLink(); for (const id of state.cards.keys()) render(id); },
    idle: () => state.pending.size === 0,
  });
  state.failover.start();
}
