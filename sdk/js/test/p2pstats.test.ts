import { describe, expect, it, vi } from 'vitest';
import { gradeQuality, levelFromAudioLevel, lossBetween, pickSpeakers, readStats } from '../src/p2pstats.js';
import { settle, sfuOffer } from './fakes.js';
import { p2pJoin, setup } from './helpers.js';

describe('P2P stats grading', () => {
  it('grades like the SFU', () => {
    expect(gradeQuality(0.05, 0.01, 0)).toBe('excellent');
    expect(gradeQuality(0.2, 0.01, 0)).toBe('good');
    expect(gradeQuality(0.05, 0.01, 0.03)).toBe('good');
    expect(gradeQuality(0.05, 0.05, 0)).toBe('good');
    expect(gradeQuality(0.5, 0.01, 0)).toBe('poor');
    expect(gradeQuality(0.05, 0.01, 0.1)).toBe('poor');
  });

  it('converts linear audio levels to the SFU scale (127 + dBov)', () => {
    expect(levelFromAudioLevel(1)).toBe(127);
    expect(levelFromAudioLevel(0.1)).toBe(107);
    expect(levelFromAudioLevel(0.001)).toBe(67);
    expect(levelFromAudioLevel(0)).toBe(0);
  });

  it('reads the selected pair, inbound counters and levels', () => {
    const s = readStats(
      new Map<string, any>([
        ['T', { id: 'T', type: 'transport', selectedCandidatePairId: 'P2' }],
        ['P1', { id: 'P1', type: 'candidate-pair', currentRoundTripTime: 0.9, nominated: true, state: 'succeeded' }],
        ['P2', { id: 'P2', type: 'candidate-pair', currentRoundTripTime: 0.03 }],
        ['A', { id: 'A', type: 'inbound-rtp', kind: 'audio', packetsLost: 2, packetsReceived: 98, jitter: 0.004, audioLevel: 0.1 }],
        ['V', { id: 'V', type: 'inbound-rtp', kind: 'video', packetsLost: 0, packetsReceived: 100, jitter: 0.01 }],
        ['M', { id: 'M', type: 'media-source', kind: 'audio', audioLevel: 1 }],
      ]),
    );
    expect(s).toEqual({ rtt: 0.03, jitter: 0.01, packetsLost: 2, packetsReceived: 198, remoteLevel: 107, localLevel: 127 });
    expect(lossBetween(undefined, s)).toBeCloseTo(0.01);
    expect(lossBetween(s, { ...s, packetsLost: 12, packetsReceived: 288 })).toBeCloseTo(0.1);
    expect(lossBetween(s, s)).toBe(0);
  });

  it('picks at most three speakers above -50 dBov, loudest first', () => {
    expect(pickSpeakers([['a', 90], ['b', 70], ['c', 120], ['d', 100], ['e', 95]])).toEqual([
      { participant: 'c', level: 120 },
      { participant: 'd', level: 100 },
      { participant: 'e', level: 95 },
    ]);
  });
});

describe('P2P room quality and speakers', () => {
  it('emits quality per peer and active speakers from getStats, as the SFU would', async () => {
    const { sig, env, client } = setup();
    sig.on('rtc.join', p2pJoin(['alice']));
    const room = await client.joinRoom('duo', { p2pStatsInterval: 0 });
    const mic = await room.publishMicrophone();
    await settle();
    sig.push({ type: 'rtc.signal', room: 'duo', from: 'alice', data: { description: { type: 'answer', sdp: sfuOffer([]) } } });
    await settle();
    const pc = env.pc(0);
    const quality = vi.fn();
    const speakers = vi.fn();
    room.on('quality', quality);
    room.on('activeSpeakers', speakers);

    pc.stats = [{ type: 'candidate-pair', id: 'p', nominated: true, state: 'succeeded', currentRoundTripTime: 0.02 }, { type: 'inbound-rtp', kind: 'audio', packetsLost: 0, packetsReceived: 100, jitter: 0.002, audioLevel: 0.3 }, { type: 'media-source', kind: 'audio', audioLevel: 0.0001 }];
    await room.sampleP2P();
    expect(quality).not.toHaveBeenCalled(); // not connected yet: nothing to grade
    pc.setConnectionState('connected');
    await room.sampleP2P();
    expect(quality).toHaveBeenLastCalledWith('alice', 'excellent');
    expect(speakers).toHaveBeenLastCalledWith([{ participant: 'alice', level: levelFromAudioLevel(0.3) }]);
    expect(room.participants.get('alice')!.quality).toBe('excellent');

    // 10 % of the packets since the last reading were lost; we start talking, alice stops
    pc.stats = [{ type: 'candidate-pair', id: 'p', nominated: true, state: 'succeeded', currentRoundTripTime: 0.02 }, { type: 'inbound-rtp', kind: 'audio', packetsLost: 10, packetsReceived: 190, jitter: 0.002, audioLevel: 0 }, { type: 'media-source', kind: 'audio', audioLevel: 0.5 }];
    await room.sampleP2P();
    expect(quality).toHaveBeenLastCalledWith('alice', 'poor');
    expect(speakers).toHaveBeenLastCalledWith([{ participant: 'me', level: levelFromAudioLevel(0.5) }]);

    // muted: we are not a speaker whatever the meter says; unchanged grade: no event
    await room.mute(mic);
    pc.stats[1] = { type: 'inbound-rtp', kind: 'audio', packetsLost: 10, packetsReceived: 290, jitter: 0.002, audioLevel: 0 };
    await room.sampleP2P();
    expect(speakers).toHaveBeenLastCalledWith([]);
    expect(quality).toHaveBeenCalledTimes(3); // excellent, poor, excellent again (no loss this time)
    expect(quality).toHaveBeenLastCalledWith('alice', 'excellent');
  });

  it('samples on a timer and stops when the room switches to the SFU', async () => {
    vi.useFakeTimers();
    try {
      const { sig, env, client } = setup();
      sig.on('rtc.join', p2pJoin(['alice']));
      const room = await client.joinRoom('duo', { p2pStatsInterval: 1000, switchTimeout: 10 });
      const quality = vi.fn();
      room.on('quality', quality);
      const pc = env.pc(0);
      pc.setConnectionState('connected');
      pc.stats = [{ type: 'candidate-pair', id: 'p', nominated: true, state: 'succeeded', currentRoundTripTime: 0.6 }];
      await vi.advanceTimersByTimeAsync(1000);
      expect(quality).toHaveBeenCalledWith('alice', 'poor');
      sig.push({ type: 'rtc.mode', room: 'duo', mode: 'sfu', offer: sfuOffer([]) });
      await vi.advanceTimersByTimeAsync(50);
      pc.stats = [{ type: 'candidate-pair', id: 'p', nominated: true, state: 'succeeded', currentRoundTripTime: 0.01 }];
      await vi.advanceTimersByTimeAsync(5000);
      expect(quality).toHaveBeenCalledTimes(1);
      await room.leave();
    } finally {
      vi.useRealTimers();
    }
  });
});
