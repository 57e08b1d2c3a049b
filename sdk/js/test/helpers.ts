import { Switchboard } from '../src/client.js';
import type { JoinResult, TrackInfo } from '../src/protocol.js';
import { FakeEnvironment, FakeSignaling, sfuOffer } from './fakes.js';

export function setup() {
  const sig = new FakeSignaling();
  const env = new FakeEnvironment();
  const client = new Switchboard(sig, { environment: env });
  return { sig, env, client };
}

export function track(id: string, participant: string, kind: 'audio' | 'video' = 'video', source: TrackInfo['source'] = 'camera'): TrackInfo {
  return { id, participant, kind, source, rids: [], muted: false };
}

/** A join result of an SFU room with alice's camera in it. */
export function sfuJoin(extra: Partial<JoinResult> = {}): JoinResult {
  return {
    room: 'standup',
    participant: 'me',
    mode: 'sfu',
    offer: sfuOffer([{ mid: '0', kind: 'video', msid: 'alice TR-1-0' }]),
    tracks: [track('TR-1-0', 'alice')],
    participants: ['alice'],
    ice_servers: [
      { urls: ['stun:stun.example.org:3478'] },
      { urls: ['turn:turn.example.org:3478?transport=udp'], username: '1700000000:me', credential: 'c2VjcmV0' },
    ],
    permissions: { publish_audio: true, publish_video: true, publish_screen: true, subscribe: true },
    ...extra,
  };
}

export function p2pJoin(participants: string[], participant = 'me'): JoinResult {
  return { room: 'duo', participant, mode: 'p2p', participants, tracks: [], ice_servers: [{ urls: 'stun:stun.example.org' }] };
}
