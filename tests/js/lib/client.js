// centrifuge-js helpers: build clients exactly as an app would, in JSON or
// protobuf mode, and wait for SDK events with a bound on every wait.
import { Centrifuge as CentrifugeJson } from 'centrifuge';
import { Centrifuge as CentrifugeProtobuf } from 'centrifuge/build/protobuf';
import WebSocket from 'ws';

export const MODES = ['json', 'protobuf'];

const te = new TextEncoder();
const td = new TextDecoder();

// Payload as the SDK of `mode` takes it: JSON values in JSON mode, bytes of
// the JSON text in protobuf mode.
export function enc(mode, value) {
  return mode === 'protobuf' ? te.encode(JSON.stringify(value)) : value;
}

// Payload as the SDK of `mode` hands it to the app, back to a JSON value.
export function dec(mode, data) {
  if (mode !== 'protobuf') return data;
  if (data === undefined || data === null) return data;
  const text = td.decode(data);
  return text === '' ? undefined : JSON.parse(text);
}

// A new (not yet connected) client; it is disconnected when the test ends.
// `options.endpoint` replaces the WebSocket URL (e.g. an array of transport
// endpoints for HTTP-streaming/SSE).
export function newClient(server, mode, options = {}) {
  const Impl = mode === 'protobuf' ? CentrifugeProtobuf : CentrifugeJson;
  const { endpoint = server.wsUrl, ...rest } = options;
  options = rest;
  const client = new Impl(endpoint, {
    websocket: WebSocket,
    minReconnectDelay: 100,
    maxReconnectDelay: 1000,
    timeout: 5000,
    ...options,
  });
  client.errors = [];
  client.disconnects = [];
  client.connectings = [];
  client.on('error', (ctx) => client.errors.push(ctx));
  client.on('disconnected', (ctx) => client.disconnects.push(ctx));
  client.on('connecting', (ctx) => client.connectings.push(ctx));
  server.clients.push(client);
  return client;
}

// Connects a client and resolves with the `connected` context.
export async function connectClient(server, mode, options = {}, ms = 5000) {
  const client = newClient(server, mode, options);
  const connected = nextEvent(client, 'connected', ms);
  client.connect();
  client.connectedCtx = await connected;
  return client;
}

// A subscription with an error recorder (an 'error' event without listener
// would otherwise throw inside the SDK).
export function newSub(client, channel, options = {}) {
  const sub = client.newSubscription(channel, options);
  sub.errors = [];
  sub.on('error', (ctx) => sub.errors.push(ctx));
  return sub;
}

// Subscribes and resolves with the `subscribed` context.
export async function subscribe(client, channel, options = {}, ms = 5000) {
  const sub = newSub(client, channel, options);
  const subscribed = nextEvent(sub, 'subscribed', ms);
  sub.subscribe();
  sub.subscribedCtx = await subscribed;
  return sub;
}

// Resolves with the next `event` of `emitter` that passes `filter`; rejects
// after `ms` milliseconds (or when the subscription ends unsubscribed while
// waiting for `subscribed`, so a refused subscribe is reported at once).
export function nextEvent(emitter, event, ms = 5000, filter = () => true) {
  return handled(new Promise((resolve, reject) => {
    const onEvent = (ctx) => {
      if (!filter(ctx)) return;
      done();
      resolve(ctx);
    };
    const onUnsub = (ctx) => {
      done();
      reject(new Error(`waiting for '${event}' on ${emitter.channel}: got 'unsubscribed' ${JSON.stringify(ctx)}; errors: ${JSON.stringify(emitter.errors || [])}`));
    };
    const onDisc = (ctx) => {
      done();
      reject(new Error(`waiting for '${event}': client got 'disconnected' ${JSON.stringify(ctx)}; errors: ${describeErrors(emitter.errors)}`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`timeout (${ms} ms) waiting for '${event}'${emitter.channel ? ` on ${emitter.channel}` : ''}; state=${emitter.state}; errors: ${describeErrors(emitter.errors)}`));
    }, ms);
    const watchUnsub = event === 'subscribed' && emitter.channel !== undefined;
    const watchDisc = event === 'connected' && emitter.channel === undefined;
    function done() {
      clearTimeout(timer);
      emitter.off(event, onEvent);
      if (watchUnsub) emitter.off('unsubscribed', onUnsub);
      if (watchDisc) emitter.off('disconnected', onDisc);
    }
    emitter.on(event, onEvent);
    if (watchUnsub) emitter.on('unsubscribed', onUnsub);
    if (watchDisc) emitter.on('disconnected', onDisc);
  }));
}

// A wait set up before the action it waits for may be left behind when the
// test fails earlier: mark it handled so it can't surface as an unhandled
// rejection after the test ended (awaiting it still throws).
function handled(p) {
  p.catch(() => {});
  return p;
}

function describeErrors(errors) {
  if (!errors || errors.length === 0) return 'none';
  return JSON.stringify(errors.map((e) => ({ type: e.type, error: e.error })));
}

// Collects `n` events in order; rejects after `ms` with what it got so far.
export function collect(emitter, event, n, ms = 5000) {
  return handled(new Promise((resolve, reject) => {
    const got = [];
    const onEvent = (ctx) => {
      got.push(ctx);
      if (got.length >= n) {
        clearTimeout(timer);
        emitter.off(event, onEvent);
        resolve(got);
      }
    };
    const timer = setTimeout(() => {
      emitter.off(event, onEvent);
      reject(new Error(`timeout (${ms} ms): got ${got.length} of ${n} '${event}' events: ${JSON.stringify(got.map((c) => ({ channel: c.channel, offset: c.offset })))}`));
    }, ms);
    emitter.on(event, onEvent);
  }));
}

// Bounds a promise (e.g. an SDK call) by `ms` milliseconds.
// SDK errors are plain {code, message} objects: they become Errors (keeping
// `code`) so a failing test reports what was called.
export function within(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)).catch((e) => {
      if (e instanceof Error) throw e;
      const err = new Error(`${what}: ${JSON.stringify(e)}`);
      if (e && typeof e === 'object') Object.assign(err, { code: e.code, temporary: e.temporary });
      throw err;
    }),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timeout (${ms} ms): ${what}`)), ms);
    }),
  ]);
}

// Awaits a promise expected to reject with a Centrifugo error; returns it.
export async function rejection(promise, what, ms = 5000) {
  try {
    const v = await within(promise, ms, what);
    throw new Error(`${what}: expected an error, got success ${JSON.stringify(v)}`);
  } catch (e) {
    if (e && e.message && e.message.startsWith(`${what}: expected an error`)) throw e;
    return e;
  }
}

// Unique channel names per test so nothing leaks between tests.
let seq = 0;
export function chan(prefix = 'test') {
  seq += 1;
  return `${prefix}${prefix.endsWith(':') ? '' : '-'}${process.pid}-${seq}-${Math.random().toString(36).slice(2, 8)}`;
}
