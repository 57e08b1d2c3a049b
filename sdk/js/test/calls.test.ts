import { describe, expect, it, vi } from 'vitest';
import type { IncomingCall } from '../src/calls.js';
import { deferred, settle } from './fakes.js';
import { p2pJoin, setup } from './helpers.js';

describe('outgoing 1:1 call', () => {
  it('rings with rtc.call and joins the call room when accepted', async () => {
    const { sig, client } = setup();
    sig.on('rtc.call', { call: 'C1', room: 'call-C1' });
    sig.on('rtc.join', (req: any) => p2pJoin([], 'me') && { ...p2pJoin(['bob']), room: req.room });
    const call = await client.call('bob', { topic: 'hi' });
    expect(sig.callsOf('rtc.call')).toEqual([{ user: 'bob', data: { topic: 'hi' } }]);
    expect(call).toMatchObject({ id: 'C1', room: 'call-C1', user: 'bob', state: 'ringing' });

    const answered = call.answered();
    const accepted = vi.fn();
    call.on('accepted', accepted);
    sig.push({ type: 'rtc.accepted', call: 'C1', room: 'call-C1' });
    const room = await answered;
    expect(sig.callsOf('rtc.join')).toEqual([{ room: 'call-C1' }]);
    expect(accepted).toHaveBeenCalledWith(room);
    expect(room!.name).toBe('call-C1');
    expect(room!.state).toBe('joined');
    expect(call.state).toBe('accepted');
  });

  it('does not join when asked not to', async () => {
    const { sig, client } = setup();
    sig.on('rtc.call', { call: 'C1', room: 'call-C1' });
    const call = await client.call('bob', undefined, { join: false });
    expect(sig.callsOf('rtc.call')).toEqual([{ user: 'bob' }]);
    const accepted = vi.fn();
    call.on('accepted', accepted);
    sig.push({ type: 'rtc.accepted', call: 'C1', room: 'call-C1' });
    await settle();
    expect(accepted).toHaveBeenCalledWith(null);
    expect(sig.callsOf('rtc.join')).toEqual([]);
  });

  it('reports decline and timeout, and only for its own call', async () => {
    const { sig, client } = setup();
    let n = 0;
    sig.on('rtc.call', () => ({ call: `C${++n}`, room: `r${n}` }));
    const first = await client.call('bob');
    const second = await client.call('carol');
    const seen: string[] = [];
    first.on('declined', () => seen.push('first declined'));
    first.on('ended', (r) => seen.push(`first ended ${r}`));
    second.on('declined', () => seen.push('second declined'));
    second.on('ended', (r) => seen.push(`second ended ${r}`));
    sig.push({ type: 'rtc.declined', call: 'C1' });
    sig.push({ type: 'rtc.call_ended', call: 'C2', reason: 'timeout' });
    sig.push({ type: 'rtc.call_ended', call: 'C1', reason: 'timeout' }); // already over
    expect(seen).toEqual(['first declined', 'second ended timeout']);
    await expect(first.answered()).rejects.toThrow('declined');
    expect(sig.callsOf('rtc.join')).toEqual([]);
  });

  it('cancels with rtc.cancel', async () => {
    const { sig, client } = setup();
    sig.on('rtc.call', { call: 'C1', room: 'r' });
    const call = await client.call('bob');
    await call.cancel();
    await call.cancel();
    expect(sig.callsOf('rtc.cancel')).toEqual([{ call: 'C1' }]);
    expect(call.state).toBe('cancelled');
  });

  it('keeps an answer that arrives before rtc.call returns', async () => {
    const { sig, client } = setup();
    const reply = deferred<object>();
    sig.on('rtc.call', () => reply.promise);
    sig.on('rtc.join', { ...p2pJoin(['bob']), room: 'r' });
    const pending = client.call('bob');
    await settle();
    sig.push({ type: 'rtc.accepted', call: 'C1', room: 'r' });
    reply.resolve({ call: 'C1', room: 'r' });
    const call = await pending;
    const room = await call.answered();
    expect(room!.name).toBe('r');
  });
});

describe('incoming 1:1 call', () => {
  it('rings, accepts with rtc.accept and returns the joined room', async () => {
    const { sig, client } = setup();
    const rings: IncomingCall[] = [];
    client.on('ring', (c) => rings.push(c));
    sig.on('rtc.accept', { call: 'C1', room: 'call-C1' });
    sig.on('rtc.join', { ...p2pJoin(['alice']), room: 'call-C1' });
    sig.push({ type: 'rtc.ring', call: 'C1', room: 'call-C1', from: { user: 'alice', participant: 'p-alice' }, data: { topic: 'hi' } });
    expect(rings).toHaveLength(1);
    const call = rings[0]!;
    expect(call).toMatchObject({ id: 'C1', room: 'call-C1', from: { user: 'alice', participant: 'p-alice' }, data: { topic: 'hi' } });

    const room = await call.accept();
    expect(sig.methods().slice(0, 2)).toEqual(['rtc.accept', 'rtc.join']);
    expect(sig.callsOf('rtc.accept')).toEqual([{ call: 'C1' }]);
    expect(sig.callsOf('rtc.join')).toEqual([{ room: 'call-C1' }]);
    expect(room.name).toBe('call-C1');
    expect(room.mode).toBe('p2p');
    await expect(call.accept()).rejects.toThrow();
  });

  it('declines with rtc.decline', async () => {
    const { sig, client } = setup();
    let call: IncomingCall | null = null;
    client.on('ring', (c) => (call = c));
    sig.push({ type: 'rtc.ring', call: 'C1', room: 'r', from: { user: 'alice' } });
    await call!.decline();
    expect(sig.callsOf('rtc.decline')).toEqual([{ call: 'C1' }]);
    expect(sig.callsOf('rtc.join')).toEqual([]);
  });

  it('stops ringing when answered elsewhere, cancelled or timed out', async () => {
    const { sig, client } = setup();
    const ended: string[] = [];
    client.on('ringEnded', (c, reason) => ended.push(`${c.id} ${reason}`));
    const calls: IncomingCall[] = [];
    client.on('ring', (c) => calls.push(c));
    sig.push({ type: 'rtc.ring', call: 'C1', room: 'r1', from: { user: 'alice' } });
    sig.push({ type: 'rtc.ring', call: 'C2', room: 'r2', from: { user: 'bob' } });
    const own = vi.fn();
    calls[0]!.on('ended', own);
    sig.push({ type: 'rtc.ring_ended', call: 'C1', reason: 'answered_elsewhere' });
    sig.push({ type: 'rtc.ring_ended', call: 'C2', reason: 'cancelled' });
    sig.push({ type: 'rtc.ring_ended', call: 'C9', reason: 'timeout' }); // never rang here
    expect(ended).toEqual(['C1 answered_elsewhere', 'C2 cancelled']);
    expect(own).toHaveBeenCalledWith('answered_elsewhere');
    expect(calls[0]!.state).toBe('ended');
    await expect(calls[0]!.accept()).rejects.toThrow(/ended/);
    expect(sig.callsOf('rtc.accept')).toEqual([]);
  });
});
