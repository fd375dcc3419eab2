// An independent Sparkplug B consumer for the MQTT tests: the `mqtt` npm client and Eclipse
// Tahu's payload library (`sparkplug-payload`), nothing of the gateway's.
//
//   node consumer.js <broker url> [topic filter ...]
//
// It subscribes (default `spBv1.0/#`), decodes every Sparkplug message with Tahu and checks
// the contract as a host application would: NBIRTH seq 0 and bdSeq, then seq +1 mod 256 per
// edge node; every birth metric named, aliased and with a value; every DDATA alias known
// from that device's DBIRTH; only Int32, Int64, Boolean, String, DateTime. Each message is
// one JSON line on stdout ({"topic", "kind", "edge", "device", "payload", "problems",
// "received_at"}).
// Commands come as JSON lines on stdin:
//   {"op": "publish", "topic": ..., "metrics": [{"name"|"alias", "type", "value"}]}
//       (a Sparkplug payload encoded by Tahu: a DCMD or an NCMD)
//   {"op": "raw", "topic": ..., "text": ..., "retain": bool, "qos": n}
//       (a plain message, e.g. a host's STATE)
// and are acknowledged with {"op": "sent", "id": ...}. Its first line is {"op": "ready"}.
"use strict";

const mqtt = require("mqtt");
const readline = require("readline");
const sparkplug = require("sparkplug-payload").get("spBv1.0");

const TYPES = new Set(["Int32", "Int64", "Boolean", "String", "DateTime"]);
const [url, ...filters] = process.argv.slice(2);
const topics = filters.length ? filters : ["spBv1.0/#"];

const nodes = new Map(); // "group/edge" -> {bdSeq, seq, aliases: Map(device -> Map(alias -> name))}

function plain(value) {
  // Tahu gives Int64/DateTime as a `long` object (or a number): JSON wants a number.
  if (value !== null && typeof value === "object" && typeof value.toNumber === "function") {
    return value.toNumber();
  }
  if (value instanceof Uint8Array) return Buffer.from(value).toString("base64");
  return value;
}

function check(kind, group, edge, device, payload) {
  const problems = [];
  const key = `${group}/${edge}`;
  const metrics = payload.metrics || [];
  const seq = payload.seq === undefined ? undefined : plain(payload.seq);
  for (const metric of metrics) {
    if (!TYPES.has(metric.type)) problems.push(`metric ${metric.name || metric.alias}: type ${metric.type}`);
  }
  if (kind === "NDEATH") {
    const bd = metrics.find((m) => m.name === "bdSeq");
    if (!bd) problems.push("NDEATH without bdSeq");
    if (seq !== undefined) problems.push("NDEATH with a seq");
    return problems;
  }
  if (kind === "NCMD" || kind === "DCMD" || kind === "STATE") return problems;
  if (seq === undefined) problems.push(`${kind} without seq`);
  let node = nodes.get(key);
  if (kind === "NBIRTH") {
    const bd = metrics.find((m) => m.name === "bdSeq");
    if (!bd) problems.push("NBIRTH without bdSeq");
    if (seq !== 0) problems.push(`NBIRTH seq ${seq}`);
    node = { bdSeq: bd ? plain(bd.value) : null, seq: 0, aliases: new Map() };
    nodes.set(key, node);
  } else {
    if (!node) {
      problems.push(`${kind} before any NBIRTH of ${key}`);
      return problems;
    }
    if (seq !== (node.seq + 1) % 256) problems.push(`${kind} seq ${seq} after ${node.seq}`);
    node.seq = seq;
  }
  if (kind === "NBIRTH" || kind === "DBIRTH") {
    const aliases = new Map();
    for (const metric of metrics) {
      if (!metric.name) problems.push(`${kind} metric without a name`);
      if (metric.value === undefined || metric.value === null) {
        problems.push(`${kind} metric ${metric.name} without a value`);
      }
      if (metric.alias !== undefined) {
        const alias = plain(metric.alias);
        if (aliases.has(alias)) problems.push(`alias ${alias} used twice`);
        aliases.set(alias, metric.name);
      } else if (metric.name !== "bdSeq") {
        problems.push(`${kind} metric ${metric.name} without an alias`);
      }
    }
    if (kind === "DBIRTH") node.aliases.set(device, aliases);
  }
  if (kind === "DDATA") {
    const aliases = node.aliases.get(device);
    if (!aliases) problems.push(`DDATA for ${device} before its DBIRTH`);
    for (const metric of metrics) {
      const alias = plain(metric.alias);
      if (aliases && !aliases.has(alias)) problems.push(`DDATA alias ${alias} unknown`);
      if (metric.value === undefined) problems.push(`DDATA alias ${alias} without a value`);
      metric.name = aliases ? aliases.get(alias) : undefined;
    }
  }
  if (kind === "DDEATH" && node.aliases.has(device)) node.aliases.delete(device);
  return problems;
}

function describe(topic, message) {
  const parts = topic.split("/");
  if (parts[0] !== "spBv1.0") return { topic, kind: "other", text: message.toString() };
  if (parts[1] === "STATE") {
    return { topic, kind: "STATE", host: parts[2], text: message.toString() };
  }
  const [, group, kind, edge, device] = parts;
  let payload;
  try {
    payload = sparkplug.decodePayload(message);
  } catch (error) {
    return { topic, kind, group, edge, device, problems: [`undecodable: ${error.message}`] };
  }
  const problems = check(kind, group, edge, device, payload);
  return {
    topic,
    kind,
    group,
    edge,
    device: device === undefined ? null : device,
    payload: {
      timestamp: plain(payload.timestamp),
      seq: payload.seq === undefined ? null : plain(payload.seq),
      metrics: (payload.metrics || []).map((m) => ({
        name: m.name === undefined ? null : m.name,
        alias: m.alias === undefined ? null : plain(m.alias),
        type: m.type,
        value: plain(m.value),
      })),
    },
    problems,
  };
}

function emit(line) {
  process.stdout.write(JSON.stringify(line) + "\n");
}

const client = mqtt.connect(url, { protocolVersion: 5, clean: true, reconnectPeriod: 200 });
client.on("message", (topic, message) => {
  // CLOCK_MONOTONIC (libuv's hrtime), the clock of Python's time.monotonic on Linux:
  // benchmarks/mqtt.py compares it with when a PLC stub wrote a change.
  const receivedAt = Number(process.hrtime.bigint()) / 1e9;
  emit({ ...describe(topic, message), received_at: receivedAt });
});
client.on("error", (error) => emit({ op: "error", text: error.message }));
client.on("connect", () => {
  client.subscribe(topics, { qos: 1 }, (error) => {
    if (error) {
      emit({ op: "error", text: error.message });
      process.exit(2);
    }
    emit({ op: "ready" });
  });
});

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line);
  const done = (error) => emit({ op: "sent", id: command.id, error: error ? error.message : null });
  if (command.op === "publish") {
    const payload = sparkplug.encodePayload({
      timestamp: Date.now(),
      metrics: command.metrics,
    });
    client.publish(command.topic, Buffer.from(payload), { qos: 0 }, done);
  } else if (command.op === "raw") {
    client.publish(
      command.topic,
      command.text,
      { qos: command.qos || 0, retain: Boolean(command.retain) },
      done,
    );
  } else if (command.op === "quit") {
    client.end(false, {}, () => process.exit(0));
  }
});
process.stdin.on("end", () => client.end(false, {}, () => process.exit(0)));
