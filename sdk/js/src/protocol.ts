/**
 * Wire types of Switchboard's media signaling (docs/MEDIA.md, "Signaling
 * protocol" and "Rooms, peer-to-peer and 1:1 calls"). These are the JSON
 * shapes of `rtc.*` RPC requests/results and `message` pushes.
 */

/** How a room carries media right now. */
export type RoomMode = 'sfu' | 'p2p';

/** What a published track carries. */
export type TrackSource = 'camera' | 'microphone' | 'screen';

/** Media kind of a track. */
export type TrackKind = 'audio' | 'video';

/** Simulcast layer names accepted by `rtc.subscribe`. */
export type Layer = 'low' | 'medium' | 'high';

/** Connection quality as reported by the SFU. */
export type Quality = 'excellent' | 'good' | 'poor';

/** A track as the server describes it. */
export interface TrackInfo {
  id: string;
  participant: string;
  kind: TrackKind;
  source: TrackSource;
  rids: string[];
  muted: boolean;
}

/** An ICE server handed out at join (TURN credentials are time limited). */
export interface IceServerInfo {
  urls: string | string[];
  username?: string;
  credential?: string;
}

/** What the token's room grants allow this participant. */
export interface RoomPermissions {
  publish_audio: boolean;
  publish_video: boolean;
  publish_screen: boolean;
  subscribe: boolean;
}

/** Result of `rtc.join`. */
export interface JoinResult {
  room: string;
  participant: string;
  /** Absent on servers that predate room modes: they are always `sfu`. */
  mode?: RoomMode;
  /** Subscriber SDP offer (SFU mode only). */
  offer?: string;
  tracks?: TrackInfo[];
  participants?: string[];
  /** The user of each of `participants` (absent on older servers). */
  users?: Record<string, string>;
  ice_servers?: IceServerInfo[];
  permissions?: RoomPermissions;
}

/** One active speaker. */
export interface Speaker {
  participant: string;
  level: number;
}

/** Payload of `rtc.signal`, chosen by this SDK (the server relays it). */
export interface SignalData {
  description?: { type: RTCSdpType; sdp?: string };
  candidate?: RTCIceCandidateInit | null;
  /** The sender's published tracks on this peer connection, by mid. */
  tracks?: P2PTrackMeta[];
}

/** A track announced to a peer in P2P mode. */
export interface P2PTrackMeta {
  id: string;
  kind: TrackKind;
  source: TrackSource;
  muted: boolean;
  mid: string;
}

/** Who is calling. */
export interface CallParty {
  user: string;
  participant?: string;
}

/** Every push this SDK understands. Unknown `type`s are ignored. */
export type Push =
  | { type: 'rtc.offer'; room: string; sdp: string }
  | { type: 'rtc.connected'; room: string }
  | { type: 'rtc.participant_joined'; room: string; participant: string; user?: string }
  | { type: 'rtc.participant_left'; room: string; participant: string; reason?: string }
  | { type: 'rtc.track_published'; room: string; track: TrackInfo }
  | { type: 'rtc.track_unpublished'; room: string; participant: string; track: string }
  | { type: 'rtc.track_muted'; room: string; participant: string; track: string; muted: boolean }
  | { type: 'rtc.active_speakers'; room: string; speakers: Speaker[] }
  | { type: 'rtc.quality'; room: string; participant: string; quality: Quality }
  | { type: 'rtc.signal'; room: string; from: string; data: SignalData }
  | { type: 'rtc.mode'; room: string; mode: RoomMode; offer?: string }
  | { type: 'rtc.removed'; room: string }
  | { type: 'rtc.reconnect'; room: string; reason: 'moved' | 'node_lost' }
  | { type: 'rtc.room_ended'; room: string }
  | { type: 'rtc.ring'; call: string; room: string; from: CallParty; data?: unknown }
  | { type: 'rtc.ring_ended'; call: string; reason: string }
  | { type: 'rtc.accepted'; call: string; room: string }
  | { type: 'rtc.declined'; call: string }
  | { type: 'rtc.call_ended'; call: string; reason: string };
