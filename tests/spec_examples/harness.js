'use strict';
// Runs the spec's browser JavaScript examples, unmodified, under Node with the `ws` package
// standing in for the browser's WebSocket. Driven by tests/integration/test_spec_examples.py.
//
//   node harness.js client  URL   the "Cliente JavaScript Completo" class (client.js), with
//                                 `new CarouselWebSocketClient(URL)`; the "Uso" lines at the
//                                 end of client.js are not run: the test calls the methods.
//   node harness.js connect URL   the "Establecer Conexión" snippet (connect.js), with its
//                                 'ws://localhost:8765' literal replaced by URL (nothing else).
//
// The examples run in their own vm context whose globals are a recording `console` and a
// recording `WebSocket` (a subclass of ws's that only observes). Nothing in the examples is
// overridden. Every observation is one JSON line on stdout:
//   {"kind":"console","level":"log|info|warn|error","args":[...]}   what the example printed
//   {"kind":"recv","data":{...}}        a frame the socket received (before the example sees it)
//   {"kind":"sent","data":{...}}        a frame the example sent
//   {"kind":"open"} / {"kind":"close","code":N}   socket life
//   {"kind":"done","call":...}          a command from stdin has run
//   {"kind":"fail","error":"..."}       the harness itself failed
// Commands arrive as JSON lines on stdin:
//   {"call":"connect"} / {"call":"sendCommand","args":["machine_1",1,25]} ...  (client mode:
//        methods of the example's client; "calls":[[name,...args],...] runs several in one tick)
//   {"eval":"ws.close()"}   (connect mode: a statement in the snippet's global scope)
//   {"exit":true}

const fs = require('fs');
const path = require('path');
const readline = require('readline');
const util = require('util');
const vm = require('vm');
const WS = require('ws');

const [mode, url] = process.argv.slice(2);
if (!['client', 'connect'].includes(mode) || !url) {
    process.stderr.write('usage: node harness.js client|connect ws://HOST:PORT\n');
    process.exit(2);
}

function emit(record) {
    process.stdout.write(JSON.stringify(record) + '\n');
}

function plain(value) {
    if (typeof value === 'string') return value;
    if (value && typeof value === 'object' && value.constructor && value.constructor.name === 'ErrorEvent') {
        return { ErrorEvent: String(value.message) };
    }
    try {
        const json = JSON.stringify(value);
        if (json !== undefined) return JSON.parse(json);
    } catch (_) {
        // not JSON-able: fall through
    }
    return util.inspect(value, { depth: 4 });
}

function parse(text) {
    try {
        return JSON.parse(text);
    } catch (_) {
        return { unparsed: String(text) };
    }
}

const recordingConsole = {};
for (const level of ['log', 'info', 'warn', 'error', 'debug']) {
    recordingConsole[level] = (...args) => emit({ kind: 'console', level, args: args.map(plain) });
}

class RecordingWebSocket extends WS {
    constructor(...args) {
        super(...args);
        emit({ kind: 'socket', url: String(args[0]) });
        // Registered before the example sets onopen/onmessage, so these run first.
        this.addEventListener('open', () => emit({ kind: 'open' }));
        this.addEventListener('message', (event) => emit({ kind: 'recv', data: parse(event.data) }));
        this.addEventListener('close', (event) => emit({ kind: 'close', code: event.code }));
    }

    send(data, ...rest) {
        emit({ kind: 'sent', data: parse(data) });
        return super.send(data, ...rest);
    }
}

const context = vm.createContext({
    WebSocket: RecordingWebSocket,
    console: recordingConsole,
    setTimeout,
    clearTimeout,
    setInterval,
    clearInterval,
});

function load(file) {
    return fs.readFileSync(path.join(__dirname, file), 'utf8');
}

let client = null;
if (mode === 'client') {
    const source = load('client.js');
    const marker = '\n// Uso\n';
    const cut = source.indexOf(marker);
    if (cut < 0) {
        emit({ kind: 'fail', error: 'client.js has no "// Uso" section' });
        process.exit(1);
    }
    // The class declaration exactly as the spec has it; the "Uso" lines after it are not run.
    vm.runInContext(source.slice(0, cut + 1), context, { filename: 'client.js' });
    const ClientClass = vm.runInContext('CarouselWebSocketClient', context);
    client = new ClientClass(url);
} else {
    const source = load('connect.js');
    const literal = "'ws://localhost:8765'";
    if (source.split(literal).length !== 2) {
        emit({ kind: 'fail', error: `connect.js must contain ${literal} exactly once` });
        process.exit(1);
    }
    vm.runInContext(source.replace(literal, JSON.stringify(url)), context, {
        filename: 'connect.js',
    });
}
emit({ kind: 'ready', mode });

function run(command) {
    if (command.exit) {
        process.exit(0);
    }
    if (command.eval !== undefined) {
        vm.runInContext(command.eval, context);
        return;
    }
    const calls = command.calls || [[command.call, ...(command.args || [])]];
    for (const [name, ...args] of calls) {
        if (!client || typeof client[name] !== 'function') {
            throw new Error(`no method ${name} on the example client`);
        }
        client[name](...args);
    }
}

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
    if (!line.trim()) return;
    let command;
    try {
        command = JSON.parse(line);
        run(command);
    } catch (error) {
        emit({ kind: 'fail', error: String(error && error.stack ? error.stack : error) });
        return;
    }
    emit({ kind: 'done', command });
});
// The test owns this process: when it goes away, so do we (even with timers pending).
lines.on('close', () => process.exit(0));
