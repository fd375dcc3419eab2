// Operator dashboard: speaks the gateway's WebSocket API directly (no extra backend).
// Simulator buttons use the REST simulator controls. No build step, no external assets.

// The status byte (shared/domain.md): bit, key, blocking value (null: never), reason, fault?
const FLAGS = [
  [0, "READY", 0, "machine not ready", false],
  [1, "RUN", 1, "carousel is moving", false],
  [2, "MODO_OPERACION", 0, "manual mode: remote moves disabled", false],
  [3, "ALARMA", 1, "alarm active", true],
  [4, "PARADA_EMERGENCIA", 0, "emergency stop pressed", true],
  [5, "VFD", 1, "drive (VFD) fault", true],
  [6, "ERROR_POSICIONAMIENTO", 1, "positioning error", true],
  [7, "SENTIDO_GIRO", null, "", false],
];

const params = new URLSearchParams(location.search);
const state = {
  ws: null, machines: new Map(), cards: new Map(), role: "operator", attempts: 0,
  token: params.get("token") || sessionStorage.getItem("carousel-token") || "",
  config: null, pending: new Map(), outcomes: new Map(), nextId: 1,
};

const $ = (sel, root = document) => root.querySelector(sel);

async function loadConfig() {
  try {
    const reply = await fetch("v1/dashboard/config");
    if (reply.ok) return (await reply.json()).data;
  } catch (_) { /* offline: fall back below */ }
  return { ws_port: 8765, ws_path: "/" };
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
    setOnline(true);
    send({ type: "subscribe", subscription_type: "all_events" });
  };
  ws.onmessage = (event) => handle(JSON.parse(event.data));
  ws.onclose = () => {
    if (state.ws !== ws) return;
    setOnline(false);
    const delay = Math.min(5000, 250 * 2 ** state.attempts++) * (0.5 + Math.random() / 2);
    setTimeout(connect, delay);
  };
}

function send(message) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify({ ...message, timestamp: new Date().toISOString() }));
    return true;
  }
  return false;
}

function setOnline(online) {
  const link = $("#link");
  link.textContent = online ? "online" : "offline";
  link.className = `link ${online ? "online" : "offline"}`;
  $("#offline-banner").hidden = online;
  for (const id of state.cards.keys()) render(id);
}

function handle(message) {
  switch (message.type) {
    case "welcome":
      state.role = message.auth ? message.auth.role : "operator";
      for (const info of message.machines) {
        const known = state.machines.get(info.id) || {};
        state.machines.set(info.id, { ...known, info });
        if (!state.cards.has(info.id)) createCard(info);
      }
      break;
    case "status_broadcast":
      for (const [id, live] of Object.entries(message.status)) {
        const machine = state.machines.get(id);
        if (machine) { machine.live = live; render(id); }
      }
      break;
    case "command_result":
      if (message.request_id && state.pending.has(message.request_id)) {
        const id = state.pending.get(message.request_id);
        state.outcomes.set(id, message.data.skipped
          ? { kind: "arrived", text: `already at ${message.data.argument}` }
          : { kind: "moving", text: `moving to ${message.data.argument}…` });
        if (message.data.skipped) state.pending.delete(message.request_id);
        render(id);
      }
      feed(`${message.machine_id}: move to ${message.data.argument} ${message.data.skipped ? "skipped (already there)" : "sent"}`);
      break;
    case "move_completed":
      finish(message, { kind: "arrived", text: `arrived at ${message.position}` });
      feed(`${message.machine_id}: arrived at ${message.position} (${message.duration_s.toFixed(1)} s)`, "ok");
      break;
    case "move_failed":
      finish(message, { kind: "failed", text: `failed: ${message.reasons.join(", ")}` });
      feed(`${message.machine_id}: move to ${message.target} failed (${message.reasons.join(", ")})`, "fault");
      break;
    case "machine_event": {
      const detail = (message.keys || []).join(", ") || message.reason || "";
      const bad = ["fault_raised", "disconnected", "error"].includes(message.event);
      feed(`${message.machine_id}: ${message.event.replace("_", " ")} ${detail}`, bad ? "fault" : "ok");
      break;
    }
    case "error":
      if (message.request_id && state.pending.has(message.request_id)) {
        const id = state.pending.get(message.request_id);
        state.pending.delete(message.request_id);
        state.outcomes.set(id, { kind: "failed", text: `refused: ${message.error}` });
        render(id);
      }
      feed(`error ${message.code}: ${message.error}`, "fault");
      break;
  }
}

function finish(message, outcome) {
  state.outcomes.set(message.machine_id, outcome);
  if (message.request_id) state.pending.delete(message.request_id);
  render(message.machine_id);
}

function feed(text, kind = "") {
  const item = document.createElement("li");
  item.className = kind;
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString();
  item.append(time, text);
  const list = $("#feed");
  list.prepend(item);
  while (list.children.length > 200) list.lastChild.remove();
}

function createCard(info) {
  const card = $("#machine-template").content.firstElementChild.cloneNode(true);
  card.dataset.machine = info.id;
  $(".name", card).textContent = info.name;
  $(".kind", card).textContent = `${info.id} · ${info.type}`;
  const target = $(".target", card);
  target.min = info.position_base;
  target.max = info.positions - 1 + info.position_base;
  drawLoop($(".loop", card), info);
  $(".move", card).addEventListener("submit", (event) => {
    event.preventDefault();
    const requestId = `dash-${state.nextId++}`;
    state.pending.set(requestId, info.id);
    send({ type: "send_command", machine_id: info.id, request_id: requestId,
           command: { command: 1, argument: Number(target.value) } });
    render(info.id);
  });
  const sim = $(".sim", card);
  if (info.type === "Simulator") {
    sim.hidden = false;
    sim.addEventListener("click", (event) => {
      const button = event.target.closest("button");
      if (button) simulatorFault(info.id, button.dataset.fault, button.dataset.active === "true");
    });
  }
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
    if (!reply.ok) feed(`${id}: simulator control refused (${reply.status})`, "fault");
  } catch (error) {
    feed(`${id}: simulator control failed (${error})`, "fault");
  }
}

// The loop: buckets spaced along a stadium-shaped chain. The chain turns, so the current
// bucket is always drawn at the picking window (left side, middle), as the operator sees it.
function loopGeometry(n) {
  const r = 60, cx = 110, top = 80, bottom = 220;
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
  return { r, cx, top, bottom, length, point, size: Math.max(6, Math.min(16, (length / n) * 0.7)) };
}

function drawLoop(svg, info) {
  const ns = "http://www.w3.org/2000/svg";
  const g = loopGeometry(info.positions);
  const chain = document.createElementNS(ns, "path");
  chain.setAttribute("class", "chain");
  chain.setAttribute("d", `M ${g.cx - g.r} ${g.bottom} V ${g.top} A ${g.r} ${g.r} 0 0 1 ${g.cx + g.r} ${g.top} V ${g.bottom} A ${g.r} ${g.r} 0 0 1 ${g.cx - g.r} ${g.bottom} Z`);
  svg.append(chain);
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
  caption.setAttribute("x", wx - g.size - 4); caption.setAttribute("y", wy - g.size - 6);
  caption.setAttribute("class", "window-label");
  caption.textContent = "window";
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
    const label = slot.querySelector("text");
    label.setAttribute("x", x < g.cx ? -14 : 14);
  }
}

function decode(raw) {
  const flags = {};
  const blockers = [];
  for (const [bit, key, blocksWhen, reason, fault] of FLAGS) {
    const value = (raw >> bit) & 1;
    flags[key] = value;
    if (blocksWhen !== null && value === blocksWhen) blockers.push({ key, reason, fault });
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

function render(id) {
  const card = state.cards.get(id);
  const machine = state.machines.get(id);
  if (!card || !machine) return;
  const live = machine.live;
  const online = state.ws && state.ws.readyState === WebSocket.OPEN;
  const conn = $(".conn", card);
  const connection = live ? live.connection_status : "unknown";
  conn.textContent = online ? connection : "gateway offline";
  conn.className = `conn ${online ? connection : "disconnected"}`;
  $(".pos", card).textContent = live && live.position != null ? live.position : "–";

  const flagsList = $(".flags", card);
  flagsList.replaceChildren();
  let decoded = null;
  if (live && live.raw_status != null && live.status) {
    decoded = decode(live.raw_status);
    for (const [, key] of FLAGS) {
      const item = document.createElement("li");
      item.dataset.flag = key;
      const value = document.createElement("span");
      value.className = `v ${flagClass(key, decoded.flags[key])}`;
      value.textContent = live.status[key];
      item.append(key.replaceAll("_", " ").toLowerCase(), value);
      flagsList.append(item);
    }
  }
  const moving = decoded && decoded.flags.RUN;
  $(".direction", card).textContent = moving ? (decoded.flags.SENTIDO_GIRO ? "▼ descending" : "▲ ascending") : "";
  // Ascending: bucket numbers rise at the window, i.e. the chain turns clockwise here.
  $(".arrow", card).textContent = moving ? (decoded.flags.SENTIDO_GIRO ? "↺" : "↻") : "";
  if (live && live.position != null) placeBuckets($(".loop", card), machine.info, live.position);
  for (const bucket of card.querySelectorAll(".bucket")) {
    bucket.classList.toggle("current", live != null && Number(bucket.dataset.position) === live.position);
  }

  const safety = decoded ? decoded.blockers.filter((b) => b.key !== "RUN") : [];
  const interlocks = $(".interlocks", card);
  interlocks.textContent = safety.map((b) => `${b.key}: ${b.reason}`).join(" · ");
  interlocks.className = `interlocks ${safety.some((b) => b.fault) ? "fault" : ""}`;
  interlocks.dataset.keys = safety.map((b) => b.key).join(",");

  const waiting = [...state.pending.values()].includes(id);
  let why = "";
  if (!online) why = "gateway offline";
  else if (state.role !== "operator") why = "your token may only view";
  else if (!live || connection !== "connected") why = `PLC ${connection}`;
  else if (safety.length) why = safety.map((b) => b.reason).join("; ");
  else if (moving) why = "carousel is moving";
  else if (waiting) why = "waiting for the current move";
  $(".go", card).disabled = Boolean(why);
  $(".target", card).disabled = Boolean(why);
  $(".why", card).textContent = why;

  const outcome = state.outcomes.get(id);
  const box = $(".outcome", card);
  box.textContent = outcome ? outcome.text : "";
  box.className = `outcome ${outcome ? outcome.kind : ""}`;
}

$("#token").value = state.token;
$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("#token").value.trim();
  sessionStorage.setItem("carousel-token", state.token);
  if (state.ws) { const old = state.ws; state.ws = null; old.close(); }
  connect();
});

state.config = await loadConfig();
connect();
