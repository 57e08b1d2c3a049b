/** Tracks and participants as the app sees them. */
import type { Quality, TrackKind, TrackSource } from './protocol.js';

/** A track another participant publishes. */
export class RemoteTrack {
  /** Server track id (SFU) or the publisher's own id (P2P). */
  readonly id: string;
  readonly participant: string;
  readonly kind: TrackKind;
  readonly source: TrackSource;
  /** Simulcast layers offered by the publisher (SFU mode). */
  readonly rids: string[];
  muted: boolean;
  /** The received media; `null` until the peer connection delivers it. */
  mediaTrack: MediaStreamTrack | null = null;
  /** `sfu` tracks come through the SFU, `p2p` ones straight from the peer. */
  readonly via: 'sfu' | 'p2p';

  constructor(init: {
    id: string;
    participant: string;
    kind: TrackKind;
    source: TrackSource;
    rids?: string[];
    muted?: boolean;
    via: 'sfu' | 'p2p';
  }) {
    this.id = init.id;
    this.participant = init.participant;
    this.kind = init.kind;
    this.source = init.source;
    this.rids = init.rids ?? [];
    this.muted = init.muted ?? false;
    this.via = init.via;
  }

  /** Key unique in a room: `<participant> <track id>` (the msid). */
  get key(): string {
    return trackKey(this.participant, this.id);
  }

  /**
   * Plays the track in a `<video>`/`<audio>` element (sets `srcObject`).
   * Returns the MediaStream, or null while the media has not arrived.
   */
  attach(element: HTMLMediaElement): MediaStream | null {
    if (!this.mediaTrack) return null;
    const stream = new MediaStream([this.mediaTrack]);
    element.srcObject = stream;
    return stream;
  }
}

export function trackKey(participant: string, id: string): string {
  return `${participant} ${id}`;
}

/** Options of a local publication. */
export interface PublishOptions {
  /** Send three simulcast layers (rids q/h/f, scaled down 4/2/1). Video only. */
  simulcast?: boolean;
}

let localCounter = 0;

/** A track this participant publishes. */
export class LocalTrack {
  /** SDK-local id, stable across P2P ↔ SFU switches. */
  readonly localId: string;
  /** The id the SFU assigned (`TR-<n>-<mid>`), once it announced the track. */
  serverId: string | null = null;
  readonly source: TrackSource;
  readonly mediaTrack: MediaStreamTrack;
  readonly options: PublishOptions;
  muted = false;
  /** Transceiver on the SFU publisher connection. */
  transceiver: RTCRtpTransceiver | null = null;
  #idWaiters: Array<(id: string) => void> = [];

  constructor(source: TrackSource, mediaTrack: MediaStreamTrack, options: PublishOptions = {}) {
    this.localId = `local-${++localCounter}`;
    this.source = source;
    this.mediaTrack = mediaTrack;
    this.options = options;
  }

  get kind(): TrackKind {
    return this.mediaTrack.kind === 'audio' ? 'audio' : 'video';
  }

  /** The id other participants know this track by. */
  get id(): string {
    return this.serverId ?? this.localId;
  }

  /** @internal */
  setServerId(id: string): void {
    this.serverId = id;
    const waiters = this.#idWaiters;
    this.#idWaiters = [];
    for (const w of waiters) w(id);
  }

  /** @internal Resolves with the SFU's track id (at once if known). */
  waitServerId(timeoutMs: number): Promise<string> {
    if (this.serverId) return Promise.resolve(this.serverId);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#idWaiters = this.#idWaiters.filter((w) => w !== done);
        reject(new Error('switchboard: the SFU did not announce the track'));
      }, timeoutMs);
      const done = (id: string) => {
        clearTimeout(timer);
        resolve(id);
      };
      this.#idWaiters.push(done);
    });
  }
}

/** Another participant of the room. */
export class RemoteParticipant {
  readonly id: string;
  user: string | null;
  quality: Quality | null = null;
  /** Audio level of the last active-speaker report, 0 when not speaking. */
  level = 0;
  readonly tracks = new Map<string, RemoteTrack>();

  constructor(id: string, user: string | null = null) {
    this.id = id;
    this.user = user;
  }
}
