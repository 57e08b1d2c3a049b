/**
 * A room: the signaling state machine of one participant.
 *
 * SFU mode: one subscriber RTCPeerConnection (the server offers, we answer
 * with `rtc.answer`, initial offer from `rtc.join` and later `rtc.offer`
 * pushes, one at a time) and one publisher RTCPeerConnection (we offer with
 * `rtc.publish`, naming each m-line's source and size, the server answers).
 *
 * P2P mode: one RTCPeerConnection per other participant, signaled through
 * `rtc.signal` (see `PeerLink`). On an `rtc.mode` push the room switches to
 * the SFU: it answers the offer in the push, republishes its local tracks,
 * waits for the SFU connection and then closes the P2P connections. The app
 * keeps the same `Room` and events throughout.
 *
 * Everything browser-specific comes through `MediaEnvironment` and all
 * messages through `Signaling`, so the whole machine runs under test with
 * fakes.
 */
import { Emitter } from './emitter.js';
import type { MediaEnvironment } from './environment.js';
import { PeerLink } from './p2p.js';
import { gradeQuality, lossBetween, type PeerSample, pickSpeakers, readStats } from './p2pstats.js';
import type {
  JoinResult,
  Layer,
  P2PTrackMeta,
  Push,
  Quality,
  RoomMode,
  RoomPermissions,
  SignalData,
  Speaker,
  TrackInfo,
  TrackSource,
} from './protocol.js';
import { mediaSections } from './sdp.js';
import type { ConnectionEvent, Signaling } from './signaling.js';
import { LocalTrack, type PublishOptions, RemoteParticipant, RemoteTrack, trackKey } from './tracks.js';

/** Options of `joinRoom`. */
export interface RoomOptions {
  /** `relay` forces TURN (all media through the TURN server). Default `all`. */
  iceTransportPolicy?: RTCIceTransportPolicy;
  /** Extra ICE servers, added to the ones the server hands out at join. */
  iceServers?: RTCIceServer[];
  /** After a switch to the SFU, how long to wait for the SFU connection before closing P2P anyway (ms). Default 10000. */
  switchTimeout?: number;
  /** How long `mute` waits for the SFU to announce a fresh publication (ms). Default 10000. */
  publishTimeout?: number;
  /** In P2P mode, how often quality and active speakers are read from getStats (ms). Default 2000; 0 turns it off. */
  p2pStatsInterval?: number;
}

/** Why a room closed for this participant. */
export type CloseReason =
  | 'left'
  | 'removed'
  | 'ended'
  | 'ice_timeout'
  | 'vanished'
  | 'disconnected'
  | 'reconnect_failed'
  | (string & {});

/** Room events. */
export type RoomEvents = {
  /** `rtc.join` succeeded (initial participants and tracks have been announced). */
  joined: () => void;
  /** Media connected: to the SFU (no argument) or to a P2P peer (its id). */
  connected: (peer?: string) => void;
  participantJoined: (participant: RemoteParticipant) => void;
  participantLeft: (participant: RemoteParticipant, reason: string) => void;
  /** A remote track exists (its media may not have arrived yet: see `trackSubscribed`). */
  trackPublished: (track: RemoteTrack) => void;
  /** A remote track's MediaStreamTrack arrived (`track.mediaTrack`); render it now. */
  trackSubscribed: (track: RemoteTrack) => void;
  trackUnpublished: (track: RemoteTrack) => void;
  /** A remote or local track was muted or unmuted. */
  trackMuted: (track: RemoteTrack | LocalTrack, muted: boolean) => void;
  localTrackPublished: (track: LocalTrack) => void;
  localTrackUnpublished: (track: LocalTrack) => void;
  activeSpeakers: (speakers: Speaker[]) => void;
  quality: (participant: string, quality: Quality) => void;
  modeChanged: (mode: RoomMode) => void;
  /** An admin removed this participant (`room_remove_participant`). */
  removed: () => void;
  /** The room ended (`room_delete`). */
  ended: () => void;
  /** The room is closed for this participant, for any reason; everything is torn down. */
  closed: (reason: CloseReason) => void;
  /**
   * The messaging connection came back, or the room moved to another media
   * node (`rtc.reconnect`): rejoining, then republishing local tracks.
   */
  reconnecting: () => void;
  /** Rejoined after a reconnect; remote participants and tracks were announced again. */
  reconnected: () => void;
  /** A signaling step failed in the background. */
  error: (error: unknown) => void;
};

/** What `setSubscription` asks of the SFU for one remote track. */
export interface SubscriptionOptions {
  /** The size the app renders the video at; the SFU picks the layer that fits. */
  maxSize?: [number, number];
  maxLayer?: Layer;
  /** Stop forwarding (e.g. the video is off screen). */
  paused?: boolean;
}

/** Three simulcast layers, low to high (the SFU orders them by these rids). */
export const SIMULCAST_ENCODINGS: RTCRtpEncodingParameters[] = [
  { rid: 'q', scaleResolutionDownBy: 4 },
  { rid: 'h', scaleResolutionDownBy: 2 },
  { rid: 'f', scaleResolutionDownBy: 1 },
];

type RoomState = 'new' | 'joining' | 'joined' | 'closed';

/** How long `leave()` waits for the server's answer to `rtc.leave` before closing anyway (ms). */
const LEAVE_WAIT_MS = 1000;

export class Room extends Emitter<RoomEvents> {
  readonly name: string;
  /** This participant's id (the connection's client id), once joined. */
  participant: string | null = null;
  mode: RoomMode = 'sfu';
  permissions: RoomPermissions | null = null;
  /** ICE servers used by every peer connection (server's, then the app's). */
  iceServers: RTCIceServer[] = [];
  readonly participants = new Map<string, RemoteParticipant>();
  readonly localTracks: LocalTrack[] = [];
  activeSpeakers: Speaker[] = [];
  #state: RoomState = 'new';
  #leaving = false;

  #sig: Signaling;
  #env: MediaEnvironment;
  #opts: RoomOptions;
  #offPush: (() => void) | null = null;
  #offConnection: (() => void) | null = null;
  #rejoining = false;
  #buffered: Push[] | null = null;
  #index = new Map<string, RemoteTrack>();
  #pendingMedia = new Map<string, MediaStreamTrack>();
  #timers = new Set<ReturnType<typeof setTimeout>>();

  // SFU
  #sub: RTCPeerConnection | null = null;
  #subMids = new Map<string, { participant: string; id: string }>();
  #subQueue: Promise<unknown> = Promise.resolve();
  #pub: RTCPeerConnection | null = null;
  #pubQueue: Promise<unknown> = Promise.resolve();
  #sfuUp = false;
  #sfuUpWaiters: Array<() => void> = [];

  // P2P
  #peers = new Map<string, PeerLink>();
  #peerTracks = new Map<string, Map<string, P2PTrackMeta>>();
  #peerMedia = new Map<string, Map<string, MediaStreamTrack>>();
  #statsTimer: ReturnType<typeof setInterval> | null = null;
  #statsBusy = false;
  #samples = new Map<string, PeerSample>();

  constructor(name: string, signaling: Signaling, env: MediaEnvironment, options: RoomOptions = {}) {
    super();
    this.name = name;
    this.#sig = signaling;
    this.#env = env;
    this.#opts = options;
  }

  get state(): RoomState {
    return this.#state;
  }

  /** Every remote track known now. */
  get tracks(): RemoteTrack[] {
    return [...this.#index.values()];
  }

  /** The P2P peer connections, by participant (empty in SFU mode). For diagnostics. */
  get peerConnections(): ReadonlyMap<string, RTCPeerConnection> {
    return new Map([...this.#peers].map(([id, l]) => [id, l.pc]));
  }

  /** The SFU subscriber and publisher connections, when they exist. For diagnostics (getStats). */
  get sfuConnections(): { subscriber: RTCPeerConnection | null; publisher: RTCPeerConnection | null } {
    return { subscriber: this.#sub, publisher: this.#pub };
  }

  /** Joins the room (`rtc.join`); resolves once the initial offer is answered. */
  async join(): Promise<this> {
    if (this.#state !== 'new') throw new Error(`switchboard: room ${this.name} already ${this.#state}`);
    this.#state = 'joining';
    this.#buffered = [];
    this.#offPush = this.#sig.onPush((data) => this.#onPush(data));
    this.#offConnection = this.#sig.onConnection?.((ev) => this.#onConnection(ev)) ?? null;
    let res: JoinResult;
    try {
      res = await this.#sig.rpc<JoinResult>('rtc.join', { room: this.name });
    } catch (err) {
      this.#teardown('join_failed');
      throw err;
    }
    if (this.#closed()) {
      // leave() was called while rtc.join was on its way: the server has us now.
      this.#sig.rpc('rtc.leave', { room: this.name }).catch(() => undefined);
      throw new Error('switchboard: room left while joining');
    }
    this.#state = 'joined';
    const ready = this.#startSession(res);
    this.emit('joined');
    try {
      await ready;
    } catch (err) {
      await this.leave();
      throw err;
    }
    return this;
  }

  /**
   * Applies a join result: participants, tracks, the first SFU answer or the
   * P2P offers, local tracks (again, after a rejoin), then the pushes that
   * arrived meanwhile. Resolves when the SFU offer is answered and the
   * local tracks are published.
   */
  #startSession(res: JoinResult): Promise<void> {
    this.participant = res.participant;
    this.mode = res.mode ?? 'sfu';
    this.permissions = res.permissions ?? null;
    this.iceServers = [
      ...(res.ice_servers ?? []).map((s) => {
        const server: RTCIceServer = { urls: s.urls };
        if (s.username != null) server.username = s.username;
        if (s.credential != null) server.credential = s.credential;
        return server;
      }),
      ...(this.#opts.iceServers ?? []),
    ];
    for (const id of res.participants ?? []) {
      if (id !== this.participant) this.#addParticipant(id, res.users?.[id] || null);
    }
    for (const t of res.tracks ?? []) {
      if (t.participant !== this.participant) this.#addRemoteTrack(t, 'sfu');
    }
    const steps: Promise<void>[] = [];
    if (this.mode === 'sfu') {
      if (res.offer) steps.push(this.#subChain(() => this.#answer(res.offer as string)));
      const locals = [...this.localTracks];
      if (locals.length > 0) {
        steps.push(
          this.#pubChain(async () => {
            for (const local of locals) this.#attachToPublisher(local);
            await this.#negotiatePublisher();
          }),
        );
      }
    } else {
      // The newcomer offers to everyone already there.
      for (const id of this.participants.keys()) {
        const link = this.#connectPeer(id);
        for (const local of this.localTracks) link.addLocal(local);
        link.open();
      }
      this.#startP2PStats();
    }
    const buffered = this.#buffered ?? [];
    this.#buffered = null;
    for (const push of buffered) this.#handlePush(push);
    return Promise.all(steps).then(() => undefined);
  }

  #onConnection(ev: ConnectionEvent): void {
    if (this.#state !== 'joined') return;
    if (ev.type === 'disconnected') {
      // The app closed the connection: the server has removed us already.
      this.#teardown('disconnected');
    } else if (this.participant && ev.client !== this.participant && !this.#rejoining) {
      this.#rejoin().catch((err) => {
        this.emit('error', err);
        this.#teardown('reconnect_failed');
      });
    }
  }

  /**
   * The messaging connection came back as a new client: the server removed
   * the old participant, so join again and republish the same local tracks.
   */
  async #rejoin(): Promise<void> {
    this.#rejoining = true;
    this.emit('reconnecting');
    try {
      this.#stopP2PStats();
      for (const id of [...this.#peers.keys()]) this.#closePeer(id);
      for (const id of [...this.participants.keys()]) this.#removeParticipant(id, 'reconnect');
      for (const pc of [this.#sub, this.#pub]) {
        if (!pc) continue;
        pc.ontrack = null;
        pc.onconnectionstatechange = null;
        pc.close();
      }
      this.#sub = null;
      this.#pub = null;
      this.#subMids.clear();
      this.#pendingMedia.clear();
      this.#sfuUp = false;
      this.#subQueue = Promise.resolve();
      this.#pubQueue = Promise.resolve();
      for (const local of this.localTracks) {
        local.transceiver = null;
        local.serverId = null;
      }
      this.participant = null;
      this.#buffered = [];
      const res = await this.#sig.rpc<JoinResult>('rtc.join', { room: this.name });
      if (this.#closed()) return;
      await this.#startSession(res);
      for (const local of this.localTracks) {
        if (local.muted && this.mode === 'sfu') {
          const id = await local.waitServerId(this.#opts.publishTimeout ?? 10_000);
          await this.#sig.rpc('rtc.mute', { room: this.name, track: id, muted: true });
        }
      }
      this.emit('reconnected');
    } finally {
      this.#rejoining = false;
    }
  }

  // ---- publishing ---------------------------------------------------------

  /** Captures the camera and publishes it (simulcast by default in SFU mode). */
  async publishCamera(
    options: PublishOptions & { constraints?: MediaTrackConstraints } = {},
  ): Promise<LocalTrack> {
    const stream = await this.#env.getUserMedia({ video: options.constraints ?? true });
    const track = stream.getVideoTracks()[0];
    if (!track) throw new Error('switchboard: no camera track');
    return this.#publishOwned(track, 'camera', { simulcast: options.simulcast ?? true });
  }

  /** Captures the microphone and publishes it. */
  async publishMicrophone(options: { constraints?: MediaTrackConstraints } = {}): Promise<LocalTrack> {
    const stream = await this.#env.getUserMedia({ audio: options.constraints ?? true });
    const track = stream.getAudioTracks()[0];
    if (!track) throw new Error('switchboard: no microphone track');
    return this.#publishOwned(track, 'microphone', {});
  }

  /**
   * Asks the user for a screen (getDisplayMedia) and publishes it. When the
   * user stops sharing from the browser's UI, the track is unpublished.
   */
  async publishScreen(options: PublishOptions & { constraints?: MediaTrackConstraints } = {}): Promise<LocalTrack> {
    const stream = await this.#env.getDisplayMedia({ video: options.constraints ?? true, audio: false });
    const track = stream.getVideoTracks()[0];
    for (const other of stream.getTracks()) if (other !== track) other.stop();
    if (!track) throw new Error('switchboard: no screen track');
    const local = await this.#publishOwned(track, 'screen', { simulcast: options.simulcast ?? false });
    if (typeof track.addEventListener === 'function') {
      track.addEventListener('ended', () => {
        if (this.localTracks.includes(local)) this.unpublish(local).catch((e) => this.emit('error', e));
      });
    }
    return local;
  }

  async #publishOwned(track: MediaStreamTrack, source: TrackSource, options: PublishOptions): Promise<LocalTrack> {
    try {
      return await this.publishTrack(track, source, options);
    } catch (err) {
      track.stop();
      throw err;
    }
  }

  /** Publishes a track the app captured itself. `leave`/`unpublish` stop it. */
  async publishTrack(track: MediaStreamTrack, source: TrackSource, options: PublishOptions = {}): Promise<LocalTrack> {
    this.#ensureJoined();
    const local = new LocalTrack(source, track, options);
    this.localTracks.push(local);
    try {
      if (this.mode === 'sfu') {
        await this.#pubChain(async () => {
          this.#attachToPublisher(local);
          await this.#negotiatePublisher();
        });
      } else {
        for (const link of this.#peers.values()) link.addLocal(local);
      }
    } catch (err) {
      this.#forgetLocal(local);
      if (local.transceiver && this.#pub) {
        try {
          this.#pub.removeTrack(local.transceiver.sender);
        } catch {
          /* already gone */
        }
        local.transceiver = null;
      }
      throw err;
    }
    this.emit('localTrackPublished', local);
    return local;
  }

  /** Stops publishing a local track and stops the track. */
  async unpublish(local: LocalTrack): Promise<void> {
    if (!this.#forgetLocal(local)) return;
    for (const link of this.#peers.values()) link.removeLocal(local);
    const transceiver = local.transceiver;
    local.transceiver = null;
    local.mediaTrack.stop();
    if (transceiver && this.#pub && this.#state === 'joined') {
      const pc = this.#pub;
      await this.#pubChain(async () => {
        pc.removeTrack(transceiver.sender);
        await this.#negotiatePublisher();
      });
    }
    this.emit('localTrackUnpublished', local);
  }

  /**
   * Mutes (or unmutes) a local track without renegotiation: the track is
   * disabled (black/silent frames) and the SFU stops forwarding it and tells
   * everyone (`rtc.mute`); in P2P the peers are told directly.
   */
  async mute(local: LocalTrack, muted = true): Promise<void> {
    this.#ensureJoined();
    local.muted = muted;
    local.mediaTrack.enabled = !muted;
    this.emit('trackMuted', local, muted);
    if (this.mode === 'sfu' && local.transceiver) {
      const id = await local.waitServerId(this.#opts.publishTimeout ?? 10_000);
      await this.#sig.rpc('rtc.mute', { room: this.name, track: id, muted });
    } else {
      for (const link of this.#peers.values()) link.announce();
    }
  }

  unmute(local: LocalTrack): Promise<void> {
    return this.mute(local, false);
  }

  /**
   * Tells the SFU what to send of a remote track: the rendered size, a layer
   * cap, or pause. In P2P mode there is nothing to choose and this resolves
   * at once.
   */
  async setSubscription(track: RemoteTrack, options: SubscriptionOptions): Promise<void> {
    this.#ensureJoined();
    if (track.via !== 'sfu' || this.mode !== 'sfu') return;
    const req: Record<string, unknown> = { room: this.name, track: track.id, paused: options.paused ?? false };
    if (options.maxLayer) req.max_layer = options.maxLayer;
    if (options.maxSize) req.max_size = options.maxSize;
    await this.#sig.rpc('rtc.subscribe', req);
  }

  /** Leaves the room: closes every peer connection, stops local tracks, tells the server. */
  async leave(): Promise<void> {
    if (this.#state === 'closed' || this.#state === 'new' || this.#leaving) return;
    if (this.participant !== null) {
      // Tell the server before closing the connections: if the SFU saw them
      // go first it would tell the others this participant vanished, not
      // left. Bounded: the server forgets us on disconnect anyway.
      this.#leaving = true;
      const told = this.#sig.rpc('rtc.leave', { room: this.name }).catch(() => {});
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([told, new Promise((r) => (timer = setTimeout(r, LEAVE_WAIT_MS)))]);
      clearTimeout(timer);
    }
    this.#teardown('left');
  }

  // ---- pushes -------------------------------------------------------------

  #onPush(data: unknown): void {
    if (!data || typeof data !== 'object') return;
    const push = data as Push;
    if (typeof push.type !== 'string' || !push.type.startsWith('rtc.')) return;
    if (!('room' in push) || push.room !== this.name) return;
    if (push.type === 'rtc.ring' || push.type === 'rtc.accepted') return; // calls, not rooms
    if (this.#state === 'closed') return;
    if (this.#buffered) {
      this.#buffered.push(push);
      return;
    }
    this.#handlePush(push);
  }

  #handlePush(push: Push): void {
    switch (push.type) {
      case 'rtc.offer':
        this.#subChain(() => this.#answer(push.sdp)).catch((e) => this.emit('error', e));
        break;
      case 'rtc.connected':
        this.#markSfuUp();
        break;
      case 'rtc.participant_joined':
        if (push.participant !== this.participant) this.#addParticipant(push.participant, push.user ?? null);
        break;
      case 'rtc.participant_left':
        if (push.participant === this.participant) this.#teardown(push.reason ?? 'left');
        else this.#removeParticipant(push.participant, push.reason ?? 'left');
        break;
      case 'rtc.track_published':
        if (push.track.participant === this.participant) this.#ownTrackAnnounced(push.track);
        else this.#addRemoteTrack(push.track, 'sfu');
        break;
      case 'rtc.track_unpublished':
        if (push.participant !== this.participant) this.#removeRemoteTrack(trackKey(push.participant, push.track));
        break;
      case 'rtc.track_muted':
        this.#trackMuted(push.participant, push.track, push.muted);
        break;
      case 'rtc.active_speakers': {
        this.activeSpeakers = push.speakers;
        const levels = new Map(push.speakers.map((s) => [s.participant, s.level]));
        for (const p of this.participants.values()) p.level = levels.get(p.id) ?? 0;
        this.emit('activeSpeakers', push.speakers);
        break;
      }
      case 'rtc.quality': {
        const p = this.participants.get(push.participant);
        if (p) p.quality = push.quality;
        this.emit('quality', push.participant, push.quality);
        break;
      }
      case 'rtc.signal':
        this.#handleSignal(push.from, push.data ?? {});
        break;
      case 'rtc.mode':
        if (push.mode === 'sfu' && this.mode === 'p2p') {
          this.#switchToSfu(push.offer).catch((e) => this.emit('error', e));
        }
        break;
      case 'rtc.reconnect':
        // The room moved to another media node (drain or node loss): the
        // server dropped our participant there, so join again.
        if (!this.#rejoining) {
          this.#rejoin().catch((err) => {
            this.emit('error', err);
            this.#teardown('reconnect_failed');
          });
        }
        break;
      case 'rtc.removed':
        this.emit('removed');
        this.#teardown('removed');
        break;
      case 'rtc.room_ended':
        this.emit('ended');
        this.#teardown('ended');
        break;
      default:
        break;
    }
  }

  // ---- participants and remote tracks -------------------------------------

  #addParticipant(id: string, user: string | null): RemoteParticipant {
    const known = this.participants.get(id);
    if (known) {
      if (user && !known.user) known.user = user;
      return known;
    }
    const p = new RemoteParticipant(id, user);
    this.participants.set(id, p);
    this.emit('participantJoined', p);
    return p;
  }

  #removeParticipant(id: string, reason: string): void {
    const p = this.participants.get(id);
    this.#closePeer(id);
    if (!p) return;
    for (const t of [...p.tracks.values()]) this.#removeRemoteTrack(t.key);
    this.participants.delete(id);
    this.emit('participantLeft', p, reason);
  }

  #addRemoteTrack(info: TrackInfo, via: 'sfu' | 'p2p'): RemoteTrack {
    const key = trackKey(info.participant, info.id);
    const known = this.#index.get(key);
    if (known) return known;
    const p = this.#addParticipant(info.participant, null);
    const track = new RemoteTrack({ ...info, via });
    p.tracks.set(info.id, track);
    this.#index.set(key, track);
    this.emit('trackPublished', track);
    const early = this.#pendingMedia.get(key);
    if (early) {
      this.#pendingMedia.delete(key);
      this.#bindMedia(key, early);
    } else if (via === 'sfu') {
      this.#bindSubscriber();
    }
    return track;
  }

  #removeRemoteTrack(key: string): void {
    this.#pendingMedia.delete(key);
    const track = this.#index.get(key);
    if (!track) return;
    this.#index.delete(key);
    this.participants.get(track.participant)?.tracks.delete(track.id);
    this.emit('trackUnpublished', track);
  }

  #bindMedia(key: string, media: MediaStreamTrack): void {
    const track = this.#index.get(key);
    if (!track) {
      this.#pendingMedia.set(key, media);
      return;
    }
    if (track.mediaTrack === media) return;
    track.mediaTrack = media;
    this.emit('trackSubscribed', track);
  }

  #trackMuted(participant: string, id: string, muted: boolean): void {
    if (participant === this.participant) {
      // The server (e.g. an admin's room_mute_track) muted one of ours.
      const local = this.localTracks.find((l) => l.serverId === id);
      if (!local || local.muted === muted) return;
      local.muted = muted;
      local.mediaTrack.enabled = !muted;
      this.emit('trackMuted', local, muted);
      return;
    }
    const track = this.#index.get(trackKey(participant, id));
    if (!track || track.muted === muted) return;
    track.muted = muted;
    this.emit('trackMuted', track, muted);
  }

  // ---- SFU ----------------------------------------------------------------

  #rtcConfig(): RTCConfiguration {
    const config: RTCConfiguration = { iceServers: this.iceServers, bundlePolicy: 'max-bundle' };
    if (this.#opts.iceTransportPolicy) config.iceTransportPolicy = this.#opts.iceTransportPolicy;
    return config;
  }

  #subChain(step: () => Promise<void>): Promise<void> {
    const run = this.#subQueue.then(step);
    this.#subQueue = run.catch(() => undefined);
    return run;
  }

  #pubChain(step: () => Promise<void>): Promise<void> {
    const run = this.#pubQueue.then(step);
    this.#pubQueue = run.catch(() => undefined);
    return run;
  }

  #ensureSubscriber(): RTCPeerConnection {
    if (this.#sub) return this.#sub;
    const pc = this.#env.createPeerConnection(this.#rtcConfig());
    pc.ontrack = (ev) => {
      const mid = ev.transceiver?.mid;
      const info = mid != null ? this.#subMids.get(mid) : undefined;
      if (info) this.#bindMedia(trackKey(info.participant, info.id), ev.track);
      else if (ev.streams?.[0]) this.#bindMedia(trackKey(ev.streams[0].id, ev.track.id), ev.track);
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'connected') this.#markSfuUp();
    };
    this.#sub = pc;
    return pc;
  }

  async #answer(sdp: string): Promise<void> {
    if (this.#state === 'closed') return;
    const pc = this.#ensureSubscriber();
    for (const section of mediaSections(sdp)) {
      if (!section.mid) continue;
      const sending = section.direction === 'sendonly' || section.direction === 'sendrecv';
      if (section.msid && sending) {
        this.#subMids.set(section.mid, { participant: section.msid.stream, id: section.msid.track });
      } else {
        this.#subMids.delete(section.mid);
      }
    }
    await pc.setRemoteDescription({ type: 'offer', sdp });
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    if (this.#closed()) return;
    await this.#sig.rpc('rtc.answer', { room: this.name, sdp: pc.localDescription?.sdp ?? answer.sdp });
    this.#bindSubscriber();
  }

  /** Binds receivers of the subscriber connection to known tracks (by the offer's msid per mid). */
  #bindSubscriber(): void {
    const pc = this.#sub;
    if (!pc) return;
    for (const t of pc.getTransceivers()) {
      if (t.mid == null) continue;
      const info = this.#subMids.get(t.mid);
      const key = info && trackKey(info.participant, info.id);
      if (key && this.#index.has(key)) this.#bindMedia(key, t.receiver.track);
    }
  }

  #markSfuUp(): void {
    const first = !this.#sfuUp;
    this.#sfuUp = true;
    const waiters = this.#sfuUpWaiters;
    this.#sfuUpWaiters = [];
    for (const w of waiters) w();
    if (first) this.emit('connected');
  }

  #waitSfuUp(timeoutMs: number): Promise<void> {
    if (this.#sfuUp) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      this.#timers.add(timer);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#sfuUpWaiters.push(() => {
        this.#timers.delete(timer);
        done();
      });
    });
  }

  #ensurePublisher(): RTCPeerConnection {
    if (!this.#pub) this.#pub = this.#env.createPeerConnection(this.#rtcConfig());
    return this.#pub;
  }

  #attachToPublisher(local: LocalTrack): void {
    const pc = this.#ensurePublisher();
    const init: RTCRtpTransceiverInit = { direction: 'sendonly' };
    if (local.kind === 'video' && local.options.simulcast) {
      init.sendEncodings = SIMULCAST_ENCODINGS.map((e) => ({ ...e }));
    }
    local.transceiver = pc.addTransceiver(local.mediaTrack, init);
  }

  async #negotiatePublisher(): Promise<void> {
    const pc = this.#pub;
    if (!pc || this.#state === 'closed') return;
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const sources: Record<string, TrackSource> = {};
    const sizes: Record<string, [number, number]> = {};
    for (const local of this.localTracks) {
      const mid = local.transceiver?.mid;
      if (mid == null) continue;
      sources[mid] = local.source;
      if (local.kind === 'video' && typeof local.mediaTrack.getSettings === 'function') {
        const { width, height } = local.mediaTrack.getSettings();
        if (width && height) sizes[mid] = [width, height];
      }
    }
    const res = await this.#sig.rpc<{ sdp: string }>('rtc.publish', {
      room: this.name,
      sdp: pc.localDescription?.sdp ?? offer.sdp,
      sources,
      sizes,
    });
    if (this.#closed()) return;
    await pc.setRemoteDescription({ type: 'answer', sdp: res.sdp });
  }

  /** The SFU announced one of our tracks: learn its id (`TR-<n>-<mid>`). */
  #ownTrackAnnounced(info: TrackInfo): void {
    const m = /^TR-\d+-(.+)$/.exec(info.id);
    let local = m ? this.localTracks.find((l) => l.transceiver?.mid === m[1]) : undefined;
    if (!local) {
      local = this.localTracks.find((l) => !l.serverId && l.transceiver && l.source === info.source);
    }
    if (local && local.serverId !== info.id) local.setServerId(info.id);
  }

  async #switchToSfu(offer: string | undefined): Promise<void> {
    this.mode = 'sfu';
    this.#sfuUp = false;
    this.#stopP2PStats();
    this.emit('modeChanged', 'sfu');
    try {
      if (offer) await this.#subChain(() => this.#answer(offer));
      const locals = [...this.localTracks];
      if (locals.length > 0) {
        await this.#pubChain(async () => {
          for (const local of locals) this.#attachToPublisher(local);
          await this.#negotiatePublisher();
        });
        for (const local of locals) {
          if (!local.muted) continue;
          local
            .waitServerId(this.#opts.publishTimeout ?? 10_000)
            .then((id) => this.#sig.rpc('rtc.mute', { room: this.name, track: id, muted: true }))
            .catch((e) => this.emit('error', e));
        }
      }
      await this.#waitSfuUp(this.#opts.switchTimeout ?? 10_000);
    } finally {
      for (const id of [...this.#peers.keys()]) this.#closePeer(id);
    }
  }

  // ---- P2P ----------------------------------------------------------------

  #connectPeer(remote: string): PeerLink {
    const known = this.#peers.get(remote);
    if (known) return known;
    const me = this.participant ?? '';
    const pc = this.#env.createPeerConnection(this.#rtcConfig());
    const link = new PeerLink(remote, me > remote, pc, {
      send: async (data) => {
        // After a switch the link only winds down: nothing more to tell.
        if (this.mode !== 'p2p') return;
        try {
          await this.#sig.rpc('rtc.signal', { room: this.name, to: remote, data });
        } catch (e) {
          // The server moved the room to the SFU (107, not in p2p mode) and
          // its rtc.mode push is on the way: late candidates are moot.
          if ((e as { code?: number } | null)?.code === 107 && this.mode === 'p2p') return;
          throw e;
        }
      },
      localTracks: () => this.localTracks,
      onRemoteTracks: (tracks) => this.#syncPeerTracks(remote, tracks),
      onMedia: (mid, media) => {
        let byMid = this.#peerMedia.get(remote);
        if (!byMid) this.#peerMedia.set(remote, (byMid = new Map()));
        byMid.set(mid, media);
        const meta = this.#peerTracks.get(remote)?.get(mid);
        if (meta) this.#bindMedia(trackKey(remote, meta.id), media);
      },
      onState: (state) => {
        if (state === 'connected') this.emit('connected', remote);
        else if (state === 'failed' && typeof pc.restartIce === 'function') pc.restartIce();
      },
      onError: (err) => this.emit('error', err),
    });
    this.#peers.set(remote, link);
    return link;
  }

  #handleSignal(from: string, data: SignalData): void {
    let link = this.#peers.get(from);
    if (!link) {
      if (this.mode !== 'p2p' || from === this.participant) return;
      this.#addParticipant(from, null);
      link = this.#connectPeer(from);
      const created = link;
      link.handle(data);
      // Our own tracks go in after the first exchange, as our own offer.
      link.after(() => {
        for (const local of this.localTracks) created.addLocal(local);
      });
      return;
    }
    link.handle(data);
  }

  #syncPeerTracks(remote: string, tracks: P2PTrackMeta[]): void {
    const before = this.#peerTracks.get(remote) ?? new Map<string, P2PTrackMeta>();
    const after = new Map(tracks.map((t) => [t.mid, t]));
    this.#peerTracks.set(remote, after);
    const liveIds = new Set(tracks.map((t) => t.id));
    for (const old of before.values()) {
      if (!liveIds.has(old.id)) this.#removeRemoteTrack(trackKey(remote, old.id));
    }
    for (const meta of tracks) {
      const key = trackKey(remote, meta.id);
      const known = this.#index.get(key);
      if (known) {
        if (known.muted !== meta.muted) this.#trackMuted(remote, meta.id, meta.muted);
        continue;
      }
      this.#addRemoteTrack(
        { id: meta.id, participant: remote, kind: meta.kind, source: meta.source, rids: [], muted: meta.muted },
        'p2p',
      );
      const media = this.#peerMedia.get(remote)?.get(meta.mid);
      if (media) this.#bindMedia(key, media);
    }
  }

  #closePeer(remote: string): void {
    const link = this.#peers.get(remote);
    if (link) {
      this.#peers.delete(remote);
      link.close();
    }
    const metas = this.#peerTracks.get(remote);
    this.#peerTracks.delete(remote);
    this.#peerMedia.delete(remote);
    if (metas) for (const m of metas.values()) this.#removeRemoteTrack(trackKey(remote, m.id));
  }

  #startP2PStats(): void {
    const every = this.#opts.p2pStatsInterval ?? 2000;
    if (every <= 0 || this.#statsTimer) return;
    this.#statsTimer = setInterval(() => {
      this.sampleP2P().catch((err) => this.emit('error', err));
    }, every);
  }

  #stopP2PStats(): void {
    if (this.#statsTimer) clearInterval(this.#statsTimer);
    this.#statsTimer = null;
    this.#samples.clear();
  }

  /**
   * P2P mode: reads each connected peer's stats once, emits `quality` for
   * peers whose grade changed and `activeSpeakers` when the speakers
   * changed. Runs on a timer (`p2pStatsInterval`); public for tests.
   */
  async sampleP2P(): Promise<void> {
    if (this.mode !== 'p2p' || this.#statsBusy || this.#closed()) return;
    this.#statsBusy = true;
    try {
      const levels: Array<[string, number]> = [];
      let localLevel = 0;
      for (const [id, link] of [...this.#peers]) {
        if (link.pc.connectionState !== 'connected' || typeof link.pc.getStats !== 'function') continue;
        const sample = readStats(await link.pc.getStats());
        const loss = lossBetween(this.#samples.get(id), sample);
        this.#samples.set(id, sample);
        const quality = gradeQuality(sample.rtt, sample.jitter, loss);
        const p = this.participants.get(id);
        if (p && p.quality !== quality) {
          p.quality = quality;
          this.emit('quality', id, quality);
        }
        levels.push([id, sample.remoteLevel]);
        localLevel = Math.max(localLevel, sample.localLevel);
      }
      if (this.mode !== 'p2p' || this.#closed()) return;
      const micOn = this.localTracks.some((l) => l.kind === 'audio' && !l.muted);
      if (this.participant && micOn) levels.push([this.participant, localLevel]);
      const speakers = pickSpeakers(levels);
      const same =
        speakers.length === this.activeSpeakers.length &&
        speakers.every((s, i) => s.participant === this.activeSpeakers[i]?.participant);
      if (!same) {
        this.activeSpeakers = speakers;
        const byId = new Map(speakers.map((s) => [s.participant, s.level]));
        for (const p of this.participants.values()) p.level = byId.get(p.id) ?? 0;
        this.emit('activeSpeakers', speakers);
      }
    } finally {
      this.#statsBusy = false;
    }
  }

  // ---- teardown -----------------------------------------------------------

  /** A method, not a field read, so TypeScript does not narrow it across awaits. */
  #closed(): boolean {
    return this.#state === 'closed';
  }

  #ensureJoined(): void {
    if (this.#state !== 'joined') throw new Error(`switchboard: room ${this.name} is ${this.#state}, not joined`);
  }

  #forgetLocal(local: LocalTrack): boolean {
    const i = this.localTracks.indexOf(local);
    if (i < 0) return false;
    this.localTracks.splice(i, 1);
    return true;
  }

  #teardown(reason: CloseReason): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#offPush?.();
    this.#offPush = null;
    this.#offConnection?.();
    this.#offConnection = null;
    this.#buffered = null;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    this.#stopP2PStats();
    for (const w of this.#sfuUpWaiters) w();
    this.#sfuUpWaiters = [];
    for (const id of [...this.#peers.keys()]) {
      this.#peers.get(id)?.close();
      this.#peers.delete(id);
    }
    for (const pc of [this.#sub, this.#pub]) {
      if (!pc) continue;
      pc.ontrack = null;
      pc.onconnectionstatechange = null;
      pc.close();
    }
    this.#sub = null;
    this.#pub = null;
    for (const local of this.localTracks) local.mediaTrack.stop();
    this.emit('closed', reason);
  }
}
