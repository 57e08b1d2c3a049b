/**
 * The SDK's entry point: a Centrifuge client for messaging, plus rooms and
 * 1:1 calls on the same connection.
 */
import { Centrifuge, type Options as CentrifugeOptions, type TransportEndpoint } from 'centrifuge';
import { IncomingCall, OutgoingCall, type CallOptions } from './calls.js';
import { Emitter } from './emitter.js';
import { browserEnvironment, type MediaEnvironment } from './environment.js';
import type { Push } from './protocol.js';
import { Room, type RoomOptions } from './room.js';
import { centrifugeSignaling, type Signaling } from './signaling.js';

export type SwitchboardEvents = {
  /** Someone is calling this user. */
  ring: (call: IncomingCall) => void;
  /** A call that rang here stopped ringing (see `IncomingCall` `ended`). */
  ringEnded: (call: IncomingCall, reason: string) => void;
};

export interface SwitchboardOptions {
  /** Browser media APIs; replace for tests or non-browser runtimes. */
  environment?: MediaEnvironment;
  /** Defaults for every room joined (e.g. `iceTransportPolicy: 'relay'`). */
  room?: RoomOptions;
}

/** The WebSocket URL of a Switchboard server for a page it serves: `ws(s)://<host>/connection/websocket`. */
export function defaultEndpoint(): string {
  const loc = globalThis.location;
  if (!loc) throw new Error('switchboard: no location; pass the endpoint');
  const scheme = loc.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${loc.host}/connection/websocket`;
}

/**
 * The transports of a Switchboard server for a page it serves, in the order
 * centrifuge-js tries them: WebSocket, then HTTP-streaming and SSE (the
 * bidirectional emulation, commands posted to `/emulation`) for networks
 * that block WebSocket.
 */
export function defaultTransports(): TransportEndpoint[] {
  const loc = globalThis.location;
  if (!loc) throw new Error('switchboard: no location; pass the endpoints');
  return [
    { transport: 'websocket', endpoint: defaultEndpoint() },
    { transport: 'http_stream', endpoint: `${loc.origin}/connection/http_stream` },
    { transport: 'sse', endpoint: `${loc.origin}/connection/sse` },
  ];
}

/**
 * centrifuge-js posts emulated transports' commands to `emulationEndpoint`,
 * whose default is `http://localhost:8000/emulation`: unless given, use the
 * server of the first HTTP-streaming or SSE endpoint.
 */
export function withEmulationEndpoint(
  transports: TransportEndpoint[],
  options: Partial<CentrifugeOptions>,
): Partial<CentrifugeOptions> {
  if (options.emulationEndpoint) return options;
  const emulated = transports.find((t) => t.transport === 'http_stream' || t.transport === 'sse');
  if (!emulated) return options;
  return { ...options, emulationEndpoint: new URL('/emulation', emulated.endpoint).toString() };
}

function isSignaling(x: unknown): x is Signaling {
  return !!x && typeof (x as Signaling).onPush === 'function' && typeof (x as Signaling).rpc === 'function';
}

export class Switchboard extends Emitter<SwitchboardEvents> {
  /** The messaging client (subscriptions, publish, presence, history, RPC). Null when built on a bare `Signaling`. */
  readonly centrifuge: Centrifuge | null;
  readonly signaling: Signaling;
  readonly environment: MediaEnvironment;
  #roomDefaults: RoomOptions;
  #outgoing = new Map<string, OutgoingCall>();
  #incoming = new Map<string, IncomingCall>();
  /** Call pushes that arrived before `rtc.call` returned the call id. */
  #early = new Map<string, Push>();
  #offPush: () => void;

  /**
   * @param transport a Centrifuge client, an endpoint (or endpoints, for
   *   transport fallback) to build one from, or a `Signaling` (tests).
   * @param centrifugeOptions options for the Centrifuge client built here
   *   (token, getToken, data, …); ignored when a client is passed.
   */
  constructor(
    transport: Centrifuge | Signaling | string | TransportEndpoint[],
    options: SwitchboardOptions = {},
    centrifugeOptions: Partial<CentrifugeOptions> = {},
  ) {
    super();
    if (typeof transport === 'string' || Array.isArray(transport)) {
      const opts = Array.isArray(transport) ? withEmulationEndpoint(transport, centrifugeOptions) : centrifugeOptions;
      this.centrifuge = new Centrifuge(transport, opts);
      this.signaling = centrifugeSignaling(this.centrifuge);
    } else if (isSignaling(transport)) {
      this.centrifuge = null;
      this.signaling = transport;
    } else {
      this.centrifuge = transport;
      this.signaling = centrifugeSignaling(transport);
    }
    this.environment = options.environment ?? browserEnvironment();
    this.#roomDefaults = options.room ?? {};
    this.#offPush = this.signaling.onPush((data) => this.#onPush(data));
  }

  /** Connects the Centrifuge client. */
  connect(): void {
    this.centrifuge?.connect();
  }

  /** Disconnects the Centrifuge client (rooms are left by the server). */
  disconnect(): void {
    this.centrifuge?.disconnect();
  }

  /** Stops listening for calls (the Centrifuge client is left as is). */
  close(): void {
    this.#offPush();
  }

  /** A room object not joined yet: add listeners, then `await room.join()`. */
  room(name: string, options: RoomOptions = {}): Room {
    return new Room(name, this.signaling, this.environment, { ...this.#roomDefaults, ...options });
  }

  /** Joins a room. Initial participants and tracks are in `room.participants` / `room.tracks`. */
  joinRoom(name: string, options: RoomOptions = {}): Promise<Room> {
    return this.room(name, options).join();
  }

  /** Rings a user (`rtc.call`). */
  async call(user: string, data?: unknown, options: CallOptions = {}): Promise<OutgoingCall> {
    const req: Record<string, unknown> = { user };
    if (data !== undefined) req.data = data;
    const res = await this.signaling.rpc<{ call: string; room: string }>('rtc.call', req);
    const { join = true, ...roomOptions } = options;
    const call = new OutgoingCall(res.call, res.room, user, this.signaling, (room) => this.joinRoom(room, roomOptions), join);
    this.#outgoing.set(call.id, call);
    const forget = () => this.#outgoing.delete(call.id);
    call.on('accepted', forget);
    call.on('declined', forget);
    call.on('ended', forget);
    const early = this.#early.get(call.id);
    if (early) {
      this.#early.delete(call.id);
      this.#onPush(early);
    }
    return call;
  }

  #onPush(data: unknown): void {
    if (!data || typeof data !== 'object') return;
    const push = data as Push;
    switch (push.type) {
      case 'rtc.ring': {
        const call = new IncomingCall(push.call, push.room, push.from, push.data, this.signaling, (room, o) =>
          this.joinRoom(room, o ?? {}),
        );
        this.#incoming.set(call.id, call);
        this.emit('ring', call);
        break;
      }
      case 'rtc.ring_ended': {
        const call = this.#incoming.get(push.call);
        if (!call) break;
        this.#incoming.delete(push.call);
        call.handleEnded(push.reason);
        this.emit('ringEnded', call, push.reason);
        break;
      }
      case 'rtc.accepted':
      case 'rtc.declined':
      case 'rtc.call_ended': {
        const call = this.#outgoing.get(push.call);
        if (!call) {
          this.#early.set(push.call, push);
          if (this.#early.size > 64) this.#early.delete(this.#early.keys().next().value as string);
          break;
        }
        if (push.type === 'rtc.accepted') call.handleAccepted().catch(() => undefined);
        else if (push.type === 'rtc.declined') call.handleDeclined();
        else call.handleEnded(push.reason);
        break;
      }
      default:
        break;
    }
  }
}
