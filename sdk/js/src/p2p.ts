/**
 * One peer-to-peer connection to another participant (room mode `p2p`).
 * Descriptions and ICE candidates travel through `rtc.signal`; offers may
 * cross, so the "perfect negotiation" pattern decides: the polite side rolls
 * back its own offer, the impolite side ignores the other's. Each side
 * announces its tracks (`tracks`: id, kind, source, muted and mid)
 * with every offer it sends and when a mute changes. Answers carry no track
 * list: a side's own transceivers only appear in its own offers, and after a
 * rolled-back offer its list would be missing tracks the peer already knows.
 */
import type { P2PTrackMeta, SignalData } from './protocol.js';
import type { LocalTrack } from './tracks.js';

export interface PeerLinkHooks {
  /** Relays a signal to the other participant (`rtc.signal`). */
  send(data: SignalData): Promise<void>;
  /** The local publications to send on this connection. */
  localTracks(): LocalTrack[];
  /** The other side's track list changed. */
  onRemoteTracks(tracks: P2PTrackMeta[]): void;
  /** Media arrived on the transceiver with this mid. */
  onMedia(mid: string, track: MediaStreamTrack): void;
  /** Connection state changed. */
  onState(state: RTCPeerConnectionState): void;
  /** Something failed; reported, the link stays. */
  onError(err: unknown): void;
}

export class PeerLink {
  readonly remote: string;
  readonly polite: boolean;
  readonly pc: RTCPeerConnection;
  #hooks: PeerLinkHooks;
  #makingOffer = false;
  #ignoreOffer = false;
  #closed = false;
  #queue: Promise<void> = Promise.resolve();
  #senders = new Map<LocalTrack, RTCRtpSender>();

  constructor(remote: string, polite: boolean, pc: RTCPeerConnection, hooks: PeerLinkHooks) {
    this.remote = remote;
    this.polite = polite;
    this.pc = pc;
    this.#hooks = hooks;
    pc.onnegotiationneeded = () => {
      this.#enqueue(() => this.#offer());
    };
    pc.onicecandidate = (ev) => {
      if (ev.candidate) {
        const c = typeof ev.candidate.toJSON === 'function' ? ev.candidate.toJSON() : ev.candidate;
        this.#send({ candidate: c });
      }
    };
    pc.ontrack = (ev) => {
      const mid = ev.transceiver?.mid;
      if (mid != null) hooks.onMedia(mid, ev.track);
    };
    pc.onconnectionstatechange = () => hooks.onState(pc.connectionState);
  }

  /** The newcomer opens the connection: a data channel makes the first offer. */
  open(): void {
    this.pc.createDataChannel('switchboard');
  }

  /** Sends a local track on this connection (renegotiates). */
  addLocal(track: LocalTrack): void {
    if (this.#closed || this.#senders.has(track)) return;
    const transceiver = this.pc.addTransceiver(track.mediaTrack, { direction: 'sendonly' });
    this.#senders.set(track, transceiver.sender);
  }

  /** Stops sending a local track (renegotiates; the peer sees it unpublished). */
  removeLocal(track: LocalTrack): void {
    const sender = this.#senders.get(track);
    if (!sender || this.#closed) return;
    this.#senders.delete(track);
    this.pc.removeTrack(sender);
  }

  /**
   * Tells the peer the current track list (after a mute change). While a
   * track has no negotiated mid (an offer of ours is pending or was rolled
   * back) the list waits: the next offer carries it.
   */
  announce(): void {
    const meta = this.#meta();
    if (meta.length < this.#senders.size) return;
    this.#send({ tracks: meta });
  }

  /** Handles a signal from the peer; returns when it has been applied. */
  handle(data: SignalData): Promise<void> {
    return this.#enqueue(() => this.#handle(data));
  }

  /** Runs `f` after every signaling step queued so far. */
  after(f: () => void | Promise<void>): Promise<void> {
    return this.#enqueue(async () => f());
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.pc.onnegotiationneeded = null;
    this.pc.onicecandidate = null;
    this.pc.ontrack = null;
    this.pc.onconnectionstatechange = null;
    this.pc.close();
  }

  get closed(): boolean {
    return this.#closed;
  }

  #enqueue(step: () => Promise<void>): Promise<void> {
    const run = this.#queue.then(async () => {
      if (this.#closed) return;
      try {
        await step();
      } catch (err) {
        this.#hooks.onError(err);
      }
    });
    this.#queue = run;
    return run;
  }

  #send(data: SignalData): void {
    if (this.#closed) return;
    this.#hooks.send(data).catch((err) => this.#hooks.onError(err));
  }

  #meta(): P2PTrackMeta[] {
    const out: P2PTrackMeta[] = [];
    const transceivers = this.pc.getTransceivers();
    for (const local of this.#hooks.localTracks()) {
      const sender = this.#senders.get(local);
      if (!sender) continue;
      const t = transceivers.find((x) => x.sender === sender);
      if (!t || t.mid == null) continue;
      out.push({ id: local.localId, kind: local.kind, source: local.source, muted: local.muted, mid: t.mid });
    }
    return out;
  }

  async #offer(): Promise<void> {
    if (this.pc.signalingState !== 'stable') return; // it fires again when stable
    try {
      this.#makingOffer = true;
      await this.pc.setLocalDescription();
      const desc = this.pc.localDescription;
      if (desc) this.#send({ description: { type: desc.type, sdp: desc.sdp }, tracks: this.#meta() });
    } finally {
      this.#makingOffer = false;
    }
  }

  async #handle(data: SignalData): Promise<void> {
    if (data.tracks) this.#hooks.onRemoteTracks(data.tracks);
    const description = data.description;
    if (description) {
      const collision =
        description.type === 'offer' && (this.#makingOffer || this.pc.signalingState !== 'stable');
      this.#ignoreOffer = !this.polite && collision;
      if (this.#ignoreOffer) return;
      await this.pc.setRemoteDescription(description);
      if (description.type === 'offer') {
        await this.pc.setLocalDescription();
        const desc = this.pc.localDescription;
        if (desc) this.#send({ description: { type: desc.type, sdp: desc.sdp } });
      }
      this.#bindMedia();
    } else if (data.candidate !== undefined) {
      try {
        await this.pc.addIceCandidate(data.candidate ?? undefined);
      } catch (err) {
        if (!this.#ignoreOffer) throw err;
      }
    }
  }

  /** Reports every receiving transceiver (the room ignores ones it already knows). */
  #bindMedia(): void {
    for (const t of this.pc.getTransceivers()) {
      if (t.mid == null) continue;
      const dir = t.currentDirection;
      if (dir === 'recvonly' || dir === 'sendrecv') this.#hooks.onMedia(t.mid, t.receiver.track);
    }
  }
}
