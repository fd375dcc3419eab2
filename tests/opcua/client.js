// An independent OPC UA client (node-opcua) that pytest drives line by line.
//
// Each line on stdin is one JSON command; each answer is one JSON line on stdout
// ({"id": ..., "ok": true, ...} or {"id": ..., "ok": false, "error": "..."}); data changes of
// monitored items arrive as {"notification": {...}} lines whenever they come.
//
// Commands: connect {url, policy, mode, user, password, certificateFile, privateKeyFile,
// applicationUri, pkiRoot}, endpoints {url}, browse {nodeId}, read {nodeIds},
// call {objectId, methodId, target}, subscribe {nodeIds, interval, collect}, stats (the
// latencies collected: benchmarks/opcua.py), disconnect, exit.
"use strict";

const readline = require("readline");
const path = require("path");
const {
  OPCUAClient,
  MessageSecurityMode,
  SecurityPolicy,
  AttributeIds,
  UserTokenType,
  ClientSubscription,
  ClientMonitoredItem,
  TimestampsToReturn,
  DataType,
  BrowseDirection,
} = require("node-opcua-client");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");

let client = null;
let session = null;
let subscription = null;
const latencies = []; // ms from SourceTimestamp to arrival, when subscribed with collect

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function status(code) {
  return code ? code.name : null;
}

function plain(value) {
  if (value === null || value === undefined) return null;
  if (typeof value === "bigint") return Number(value);
  if (Array.isArray(value)) return value.map(plain);
  if (value.name !== undefined && value.value !== undefined && value.description !== undefined) {
    return value.name; // a StatusCode
  }
  if (typeof value === "object" && value.text !== undefined) return value.text; // LocalizedText
  return value;
}

function dataValue(dv) {
  return {
    value: dv.value ? plain(dv.value.value) : null,
    dataType: dv.value ? DataType[dv.value.dataType] : null,
    status: status(dv.statusCode),
    sourceTimestamp: dv.sourceTimestamp ? dv.sourceTimestamp.getTime() : null,
    serverTimestamp: dv.serverTimestamp ? dv.serverTimestamp.getTime() : null,
  };
}

async function connect(cmd) {
  const options = {
    applicationName: "carousel-gateway tests",
    applicationUri: cmd.applicationUri || "urn:carousel-gateway:tests:client",
    securityMode: MessageSecurityMode[cmd.mode || "SignAndEncrypt"],
    securityPolicy: SecurityPolicy[cmd.policy || "Basic256Sha256"],
    endpointMustExist: cmd.endpointMustExist !== false,
    connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
    requestedSessionTimeout: 60000,
    keepSessionAlive: false,
  };
  if (cmd.certificateFile) {
    options.certificateFile = cmd.certificateFile;
    options.privateKeyFile = cmd.privateKeyFile;
  }
  if (cmd.pkiRoot) {
    const manager = new OPCUACertificateManager({
      rootFolder: cmd.pkiRoot,
      automaticallyAcceptUnknownCertificate: true,
    });
    await manager.initialize();
    options.clientCertificateManager = manager;
  }
  client = OPCUAClient.create(options);
  await client.connect(cmd.url);
  const identity = cmd.user
    ? { type: UserTokenType.UserName, userName: cmd.user, password: cmd.password }
    : { type: UserTokenType.Anonymous };
  try {
    session = await client.createSession(identity);
  } catch (err) {
    await client.disconnect();
    client = null;
    throw err;
  }
  return {};
}

async function endpoints(cmd) {
  const probe = OPCUAClient.create({
    endpointMustExist: false,
    connectionStrategy: { maxRetry: 0 },
  });
  await probe.connect(cmd.url);
  const found = await probe.getEndpoints();
  await probe.disconnect();
  return {
    endpoints: found.map((e) => ({
      url: e.endpointUrl,
      mode: MessageSecurityMode[e.securityMode],
      policy: e.securityPolicyUri,
      tokens: e.userIdentityTokens.map((t) => UserTokenType[t.tokenType]),
    })),
  };
}

async function browse(cmd) {
  const result = await session.browse({
    nodeId: cmd.nodeId,
    browseDirection: BrowseDirection.Forward,
    resultMask: 63,
  });
  return {
    status: status(result.statusCode),
    references: result.references.map((r) => ({
      browseName: r.browseName.name,
      nodeId: r.nodeId.toString(),
      nodeClass: r.nodeClass,
    })),
  };
}

async function read(cmd) {
  const values = await session.read(
    cmd.nodeIds.map((nodeId) => ({ nodeId, attributeId: AttributeIds.Value })),
    0
  );
  return { values: values.map(dataValue) };
}

async function call(cmd) {
  const result = await session.call({
    objectId: cmd.objectId,
    methodId: cmd.methodId,
    inputArguments: [{ dataType: DataType.Int32, value: cmd.target }],
  });
  return {
    status: status(result.statusCode),
    outputs: (result.outputArguments || []).map((v) => plain(v.value)),
    diagnostics: (result.inputArgumentDiagnosticInfos || []).map((d) =>
      d ? d.additionalInfo : null
    ),
  };
}

async function subscribe(cmd) {
  if (!subscription) {
    subscription = ClientSubscription.create(session, {
      requestedPublishingInterval: cmd.interval || 100,
      requestedLifetimeCount: 600,
      requestedMaxKeepAliveCount: 20,
      maxNotificationsPerPublish: 1000,
      publishingEnabled: true,
      priority: 1,
    });
    await new Promise((resolve, reject) => {
      subscription.on("started", resolve);
      subscription.on("internal_error", reject);
    });
  }
  for (const nodeId of cmd.nodeIds) {
    const item = ClientMonitoredItem.create(
      subscription,
      { nodeId, attributeId: AttributeIds.Value },
      { samplingInterval: 0, discardOldest: true, queueSize: 100 },
      TimestampsToReturn.Both
    );
    let initial = true; // the first notification is the item's current value, not a change
    item.on("changed", (dv) => {
      const received = Date.now();
      if (cmd.collect) {
        if (initial) {
          initial = false;
          return;
        }
        if (dv.sourceTimestamp) latencies.push(received - dv.sourceTimestamp.getTime());
        return;
      }
      out({ notification: { nodeId, received, ...dataValue(dv) } });
    });
  }
  return { revisedPublishingInterval: subscription.publishingInterval };
}

async function disconnect() {
  if (subscription) {
    await subscription.terminate().catch(() => {});
    subscription = null;
  }
  if (session) {
    await session.close().catch(() => {});
    session = null;
  }
  if (client) {
    await client.disconnect();
    client = null;
  }
  return {};
}

async function stats() {
  return { latencies: latencies.splice(0) };
}

const handlers = { connect, endpoints, browse, read, call, subscribe, disconnect, stats };

const lines = readline.createInterface({ input: process.stdin });
let chain = Promise.resolve();
lines.on("line", (line) => {
  const cmd = JSON.parse(line);
  chain = chain.then(async () => {
    if (cmd.op === "exit") {
      await disconnect().catch(() => {});
      out({ id: cmd.id, ok: true });
      process.exit(0);
    }
    try {
      const result = await handlers[cmd.op](cmd);
      out({ id: cmd.id, ok: true, ...result });
    } catch (err) {
      out({ id: cmd.id, ok: false, error: String(err && err.message ? err.message : err) });
    }
  });
});
lines.on("close", () => {
  chain.then(() => disconnect().catch(() => {})).then(() => process.exit(0));
});
void path;
