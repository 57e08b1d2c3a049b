import type { Centrifuge } from 'centrifuge';
import { describe, expect, it } from 'vitest';
import { Switchboard } from '../src/client.js';
import { centrifugeSignaling, decodeData } from '../src/signaling.js';
import { mediaSections } from '../src/sdp.js';
import { FakeEnvironment } from './fakes.js';

/** What centrifugeSignaling uses of a Centrifuge client: rpc() and the 'message' event. */
class FakeCentrifuge {
  #listeners = new Map<string, Array<(ctx: unknown) => void>>();
  on(ev: string, f: (ctx: unknown) => void) {
    this.#listeners.set(ev, [...(this.#listeners.get(ev) ?? []), f]);
    return this;
  }
  removeListener(ev: string, f: (ctx: unknown) => void) {
    this.#listeners.set(ev, (this.#listeners.get(ev) ?? []).filter((x) => x !== f));
    return this;
  }
  emit(ev: string, ctx: unknown) {
    for (const f of this.#listeners.get(ev) ?? []) f(ctx);
  }
  listenerCount(ev: string) {
    return this.#listeners.get(ev)?.length ?? 0;
  }
  rpcs: Array<[string, unknown]> = [];
  reply: unknown = {};
  async rpc(method: string, data: unknown) {
    this.rpcs.push([method, data]);
    return { data: this.reply };
  }
}

describe('centrifuge signaling', () => {
  it('calls rpc and returns its data, JSON or protobuf bytes', async () => {
    const c = new FakeCentrifuge();
    const sig = centrifugeSignaling(c as unknown as Centrifuge);
    c.reply = { sdp: 'x' };
    expect(await sig.rpc('rtc.publish', { room: 'r' })).toEqual({ sdp: 'x' });
    c.reply = new TextEncoder().encode('{"call":"C1"}');
    expect(await sig.rpc('rtc.call', { user: 'u' })).toEqual({ call: 'C1' });
    expect(c.rpcs).toEqual([
      ['rtc.publish', { room: 'r' }],
      ['rtc.call', { user: 'u' }],
    ]);
  });

  it('delivers message pushes until the listener is removed', () => {
    const c = new FakeCentrifuge();
    const sig = centrifugeSignaling(c as unknown as Centrifuge);
    const got: unknown[] = [];
    const off = sig.onPush((d) => got.push(d));
    c.emit('message', { data: { type: 'rtc.connected', room: 'r' } });
    c.emit('message', { data: new TextEncoder().encode('{"type":"rtc.ring"}') });
    c.emit('message', { data: new Uint8Array([0xff]) }); // not JSON: dropped
    off();
    c.emit('message', { data: { type: 'late' } });
    expect(got).toEqual([{ type: 'rtc.connected', room: 'r' }, { type: 'rtc.ring' }]);
    expect(c.listenerCount('message')).toBe(0);
  });

  it('reports connects with the client id and final disconnects', () => {
    const c = new FakeCentrifuge();
    const sig = centrifugeSignaling(c as unknown as Centrifuge);
    const got: unknown[] = [];
    const off = sig.onConnection!((ev) => got.push(ev));
    c.emit('connected', { client: 'c1', transport: 'websocket' });
    c.emit('disconnected', { code: 0, reason: 'disconnect called' });
    off();
    c.emit('connected', { client: 'c2' });
    expect(got).toEqual([
      { type: 'connected', client: 'c1' },
      { type: 'disconnected', reason: 'disconnect called' },
    ]);
    expect(c.listenerCount('connected') + c.listenerCount('disconnected')).toBe(0);
  });

  it('decodeData leaves parsed values alone', () => {
    expect(decodeData({ a: 1 })).toEqual({ a: 1 });
    expect(decodeData(new Uint8Array())).toEqual({});
  });

  it('a Switchboard built on a Centrifuge client exposes it and rings through it', () => {
    const c = new FakeCentrifuge();
    const sb = new Switchboard(c as unknown as Centrifuge, { environment: new FakeEnvironment() });
    expect(sb.centrifuge).toBe(c);
    const rings: string[] = [];
    sb.on('ring', (call) => rings.push(call.id));
    c.emit('message', { data: { type: 'rtc.ring', call: 'C7', room: 'r', from: { user: 'a' } } });
    expect(rings).toEqual(['C7']);
  });

  it('a Switchboard built from an endpoint creates a Centrifuge client', () => {
    const sb = new Switchboard('ws://127.0.0.1:1/connection/websocket', { environment: new FakeEnvironment() }, { debug: false });
    expect(sb.centrifuge).not.toBeNull();
    expect(typeof sb.centrifuge!.newSubscription).toBe('function');
    expect(sb.centrifuge!.state).toBe('disconnected');
  });
});

describe('SDP reading', () => {
  it('finds mid, direction and msid of each media section', () => {
    const sdp = [
      'v=0',
      'm=audio 9 UDP/TLS/RTP/SAVPF 111',
      'a=mid:0',
      'a=sendonly',
      'a=msid:alice TR-1-0',
      'm=video 9 UDP/TLS/RTP/SAVPF 96',
      'a=mid:1',
      'a=inactive',
      'm=application 9 UDP/DTLS/SCTP webrtc-datachannel',
      'a=mid:2',
      '',
    ].join('\r\n');
    expect(mediaSections(sdp)).toEqual([
      { mid: '0', kind: 'audio', direction: 'sendonly', msid: { stream: 'alice', track: 'TR-1-0' } },
      { mid: '1', kind: 'video', direction: 'inactive', msid: null },
      { mid: '2', kind: 'application', direction: 'sendrecv', msid: null },
    ]);
  });
});
