/**
 * The signaling transport the room and call logic runs on: RPC calls and
 * server pushes. In the browser it is a Centrifuge client
 * (`centrifugeSignaling`); tests pass a fake.
 */
import type { Centrifuge, ConnectedContext, DisconnectedContext, MessageContext } from 'centrifuge';

export interface Signaling {
  /** Calls an RPC method; resolves with the result's data (parsed JSON). */
  rpc<T = unknown>(method: string, data: unknown): Promise<T>;
  /** Registers a handler for async `message` pushes; returns its remover. */
  onPush(handler: (data: unknown) => void): () => void;
  /**
   * Optional: connection changes. `connected` carries the client id (rooms
   * rejoin when it changes: the server forgot the old one); `disconnected`
   * means closed for good (no reconnect coming).
   */
  onConnection?(handler: (event: ConnectionEvent) => void): () => void;
}

export type ConnectionEvent = { type: 'connected'; client: string } | { type: 'disconnected'; reason: string };

const decoder = typeof TextDecoder !== 'undefined' ? new TextDecoder() : null;

/** JSON data, whatever the framing: parsed objects (JSON protocol) or bytes (protobuf). */
export function decodeData(data: unknown): unknown {
  if (data instanceof Uint8Array && decoder) {
    if (data.length === 0) return {};
    return JSON.parse(decoder.decode(data));
  }
  return data;
}

/** Signaling over a Centrifuge client's `rpc` and `message` events. */
export function centrifugeSignaling(centrifuge: Centrifuge): Signaling {
  return {
    async rpc<T>(method: string, data: unknown): Promise<T> {
      const res = await centrifuge.rpc(method, data);
      return decodeData(res.data) as T;
    },
    onPush(handler) {
      const listener = (ctx: MessageContext) => {
        let data: unknown;
        try {
          data = decodeData(ctx.data);
        } catch {
          return; // not JSON: not ours
        }
        handler(data);
      };
      centrifuge.on('message', listener);
      return () => {
        centrifuge.removeListener('message', listener);
      };
    },
    onConnection(handler) {
      const connected = (ctx: ConnectedContext) => handler({ type: 'connected', client: ctx.client });
      const disconnected = (ctx: DisconnectedContext) => handler({ type: 'disconnected', reason: ctx.reason });
      centrifuge.on('connected', connected);
      centrifuge.on('disconnected', disconnected);
      return () => {
        centrifuge.removeListener('connected', connected);
        centrifuge.removeListener('disconnected', disconnected);
      };
    },
  };
}
