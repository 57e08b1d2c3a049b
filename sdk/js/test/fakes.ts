/**
 * Test doubles: a scripted signaling transport, and fake RTCPeerConnection /
 * MediaStreamTrack objects that behave like the browser's where the SDK
 * relies on it (mids assigned by offers, transceivers created by remote
 * offers, ontrack during setRemoteDescription, negotiationneeded when stable,
 * implicit rollback on glare). Their SDP is a tiny subset, enough for two
 * fakes to negotiate with each other and for the SDK's msid parsing.
 */
import type { MediaEnvironment } from '../src/environment.js';
import type { ConnectionEvent, Signaling } from '../src/signaling.js';

// ---- signaling ------------------------------------------------------------

export interface RpcCall {
  method: string;
  data: any;
}

type Handler = (data: any) => unknown | Promise<unknown>;

export class FakeSignaling implements Signaling {
  calls: RpcCall[] = [];
  handlers = new Map<string, Handler>();
  #push = new Set<(data: unknown) => void>();
  #conn = new Set<(ev: ConnectionEvent) => void>();

  /** Scripts the result of a method (a value or a function of the request). */
  on(method: string, handler: Handler | object): this {
    this.handlers.set(method, typeof handler === 'function' ? (handler as Handler) : () => handler);
    return this;
  }

  async rpc<T>(method: string, data: unknown): Promise<T> {
    this.calls.push({ method, data: structuredClone(data) });
    const h = this.handlers.get(method);
    return (h ? await h(data) : {}) as T;
  }

  onPush(handler: (data: unknown) => void): () => void {
    this.#push.add(handler);
    return () => this.#push.delete(handler);
  }

  onConnection(handler: (ev: ConnectionEvent) => void): () => void {
    this.#conn.add(handler);
    return () => this.#conn.delete(handler);
  }

  /** The connection (re)connected as `client`, or closed for good. */
  connection(ev: ConnectionEvent): void {
    for (const h of [...this.#conn]) h(ev);
  }

  get connectionListeners(): number {
    return this.#conn.size;
  }

  get listeners(): number {
    return this.#push.size;
  }

  push(data: unknown): void {
    for (const h of [...this.#push]) h(data);
  }

  callsOf(method: string): any[] {
    return this.calls.filter((c) => c.method === method).map((c) => c.data);
  }

  methods(): string[] {
    return this.calls.map((c) => c.method);
  }
}

// ---- media ----------------------------------------------------------------

let trackSeq = 0;

export class FakeTrack {
  readonly id: string;
  readonly kind: 'audio' | 'video';
  enabled = true;
  readyState: 'live' | 'ended' = 'live';
  settings: { width?: number; height?: number };
  #listeners = new Map<string, Array<() => void>>();

  constructor(kind: 'audio' | 'video', settings: { width?: number; height?: number } = {}) {
    this.kind = kind;
    this.id = `${kind}-${++trackSeq}`;
    this.settings = settings;
  }

  stop(): void {
    this.readyState = 'ended';
  }

  getSettings() {
    return this.settings;
  }

  addEventListener(ev: string, f: () => void): void {
    const list = this.#listeners.get(ev) ?? [];
    list.push(f);
    this.#listeners.set(ev, list);
  }

  /** The browser ends a track (e.g. the user stops screen sharing). */
  end(): void {
    this.readyState = 'ended';
    for (const f of this.#listeners.get('ended') ?? []) f();
  }
}

export class FakeStream {
  readonly id = `stream-${++trackSeq}`;
  constructor(readonly tracks: FakeTrack[]) {}
  getTracks() {
    return this.tracks;
  }
  getVideoTracks() {
    return this.tracks.filter((t) => t.kind === 'video');
  }
  getAudioTracks() {
    return this.tracks.filter((t) => t.kind === 'audio');
  }
}

export class FakeSender {
  constructor(public track: FakeTrack | null) {}
}

export class FakeTransceiver {
  mid: string | null = null;
  currentDirection: RTCRtpTransceiverDirection | null = null;
  readonly sender: FakeSender;
  readonly receiver: { track: FakeTrack };
  /** Set while the mid comes only from our own not-yet-answered offer. */
  provisional = false;
  announced = false;

  constructor(
    readonly kind: 'audio' | 'video',
    public direction: RTCRtpTransceiverDirection,
    track: FakeTrack | null,
    readonly sendEncodings: RTCRtpEncodingParameters[] | undefined,
  ) {
    this.sender = new FakeSender(track);
    this.receiver = { track: new FakeTrack(kind) };
  }
}

interface Section {
  kind: string;
  mid: string;
  direction: string;
  msid: string | null;
}

function parse(sdp: string): Section[] {
  const out: Section[] = [];
  for (const line of sdp.split('\r\n')) {
    if (line.startsWith('m=')) out.push({ kind: line.slice(2).split(' ')[0]!, mid: '', direction: 'sendrecv', msid: null });
    const cur = out[out.length - 1];
    if (!cur) continue;
    if (line.startsWith('a=mid:')) cur.mid = line.slice(6);
    if (line.startsWith('a=msid:')) cur.msid = line.slice(7);
    if (/^a=(sendrecv|sendonly|recvonly|inactive)$/.test(line)) cur.direction = line.slice(2);
  }
  return out;
}

const reverse: Record<string, RTCRtpTransceiverDirection> = {
  sendonly: 'recvonly',
  recvonly: 'sendonly',
  sendrecv: 'sendrecv',
  inactive: 'inactive',
};

/** An SFU-style offer: a data channel plus one m-line per track, msid `<participant> <track>`. */
export function sfuOffer(tracks: Array<{ mid: string; kind: 'audio' | 'video'; msid?: string; direction?: string }>): string {
  let sdp = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n';
  for (const t of tracks) {
    sdp += `m=${t.kind} 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:${t.mid}\r\na=${t.direction ?? 'sendonly'}\r\n`;
    if (t.msid) sdp += `a=msid:${t.msid}\r\n`;
  }
  sdp += 'm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:dc\r\n';
  return sdp;
}

let pcSeq = 0;

export class FakePeerConnection {
  readonly n = ++pcSeq;
  readonly config: RTCConfiguration;
  signalingState: RTCSignalingState = 'stable';
  connectionState: RTCPeerConnectionState = 'new';
  localDescription: RTCSessionDescriptionInit | null = null;
  remoteDescription: RTCSessionDescriptionInit | null = null;
  transceivers: FakeTransceiver[] = [];
  dataChannel: string | null = null;
  candidates: Array<RTCIceCandidateInit | undefined> = [];
  /** Every description passed to setRemoteDescription, in order. */
  remoteLog: RTCSessionDescriptionInit[] = [];
  closed = false;
  restarts = 0;
  /** Makes setRemoteDescription wait for this (tests of serialisation). */
  gate: Promise<void> | null = null;

  onnegotiationneeded: (() => void) | null = null;
  onicecandidate: ((ev: { candidate: any }) => void) | null = null;
  ontrack: ((ev: { track: FakeTrack; transceiver: FakeTransceiver; streams: Array<{ id: string }> }) => void) | null = null;
  onconnectionstatechange: (() => void) | null = null;

  #needNegotiation = false;
  #nextMid = 0;

  constructor(config: RTCConfiguration) {
    this.config = config;
  }

  addTransceiver(track: FakeTrack, init: RTCRtpTransceiverInit = {}): FakeTransceiver {
    const t = new FakeTransceiver(track.kind, init.direction ?? 'sendrecv', track, init.sendEncodings);
    this.transceivers.push(t);
    this.#negotiationNeeded();
    return t;
  }

  createDataChannel(label: string): object {
    this.dataChannel = label;
    this.#negotiationNeeded();
    return { label };
  }

  removeTrack(sender: FakeSender): void {
    const t = this.transceivers.find((x) => x.sender === sender);
    if (!t) throw new Error('unknown sender');
    sender.track = null;
    t.direction = t.direction === 'sendrecv' ? 'recvonly' : 'inactive';
    this.#negotiationNeeded();
  }

  getTransceivers(): FakeTransceiver[] {
    return this.transceivers;
  }

  async createOffer(): Promise<RTCSessionDescriptionInit> {
    this.#assertOpen();
    for (const t of this.transceivers) {
      if (t.mid === null) {
        t.mid = this.#freshMid();
        t.provisional = true;
      }
    }
    return { type: 'offer', sdp: this.#sdp((t) => t.direction) };
  }

  async createAnswer(): Promise<RTCSessionDescriptionInit> {
    this.#assertOpen();
    if (this.signalingState !== 'have-remote-offer') throw new Error('InvalidStateError: no remote offer');
    return { type: 'answer', sdp: this.#sdp((t) => t.direction) };
  }

  async setLocalDescription(desc?: RTCSessionDescriptionInit): Promise<void> {
    this.#assertOpen();
    const d = desc ?? (this.signalingState === 'have-remote-offer' ? await this.createAnswer() : await this.createOffer());
    this.localDescription = { type: d.type, sdp: d.sdp };
    if (d.type === 'offer') {
      this.signalingState = 'have-local-offer';
      this.#needNegotiation = false;
    } else {
      this.signalingState = 'stable';
      this.#settle();
    }
  }

  async setRemoteDescription(desc: RTCSessionDescriptionInit): Promise<void> {
    this.#assertOpen();
    if (this.gate) await this.gate;
    this.remoteLog.push(desc);
    const sections = parse(desc.sdp ?? '');
    if (desc.type === 'offer') {
      if (this.signalingState === 'have-local-offer') this.#rollback();
      if (this.signalingState !== 'stable') throw new Error(`InvalidStateError: offer in ${this.signalingState}`);
      for (const s of sections) {
        if (s.kind === 'application' || !s.mid) continue;
        let t = this.transceivers.find((x) => x.mid === s.mid);
        if (!t) {
          // Reuse an unsent transceiver of ours of that kind, as browsers do? No: keep it simple, add one.
          t = new FakeTransceiver(s.kind as 'audio' | 'video', 'recvonly', null, undefined);
          t.mid = s.mid;
          this.transceivers.push(t);
        }
        this.#fireTrack(t, s);
      }
      this.remoteDescription = desc;
      this.signalingState = 'have-remote-offer';
    } else if (desc.type === 'answer') {
      if (this.signalingState !== 'have-local-offer') throw new Error(`InvalidStateError: answer in ${this.signalingState}`);
      this.remoteDescription = desc;
      for (const s of sections) {
        const t = this.transceivers.find((x) => x.mid === s.mid);
        if (t) this.#fireTrack(t, s);
      }
      this.signalingState = 'stable';
      this.#settle();
    }
  }

  async addIceCandidate(c?: RTCIceCandidateInit): Promise<void> {
    if (!this.remoteDescription) throw new Error('InvalidStateError: no remote description');
    this.candidates.push(c);
  }

  /** What getStats() reports (RTCStats-like objects). */
  stats: any[] = [];

  async getStats(): Promise<Map<string, any>> {
    return new Map(this.stats.map((x, i) => [x.id ?? String(i), x]));
  }

  restartIce(): void {
    this.restarts++;
  }

  close(): void {
    this.closed = true;
    this.signalingState = 'closed';
    this.connectionState = 'closed';
  }

  // test controls
  setConnectionState(state: RTCPeerConnectionState): void {
    this.connectionState = state;
    this.onconnectionstatechange?.();
  }

  emitCandidate(candidate: RTCIceCandidateInit): void {
    this.onicecandidate?.({ candidate: { ...candidate, toJSON: () => candidate } });
  }

  #assertOpen(): void {
    if (this.closed) throw new Error('InvalidStateError: closed');
  }

  #freshMid(): string {
    const used = new Set(this.transceivers.map((t) => t.mid));
    while (used.has(String(this.#nextMid))) this.#nextMid++;
    return String(this.#nextMid++);
  }

  #sdp(dir: (t: FakeTransceiver) => RTCRtpTransceiverDirection): string {
    let sdp = `v=0\r\no=- ${this.n} 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n`;
    for (const t of this.transceivers) {
      if (t.mid === null) continue;
      sdp += `m=${t.kind} 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:${t.mid}\r\na=${dir(t)}\r\n`;
      if (t.sender.track) sdp += `a=msid:pc${this.n} ${t.sender.track.id}\r\n`;
      for (const e of t.sendEncodings ?? []) sdp += `a=rid:${e.rid} send\r\n`;
    }
    if (this.dataChannel || this.remoteDescription?.sdp?.includes('m=application')) {
      sdp += 'm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:dc\r\n';
    }
    return sdp;
  }

  #fireTrack(t: FakeTransceiver, s: Section): void {
    const remoteSends = s.direction === 'sendonly' || s.direction === 'sendrecv';
    t.currentDirection = remoteSends ? (t.sender.track ? 'sendrecv' : 'recvonly') : t.sender.track ? 'sendonly' : 'inactive';
    t.provisional = false;
    if (remoteSends && !t.announced) {
      t.announced = true;
      const stream = s.msid?.split(' ')[0] ?? '-';
      this.ontrack?.({ track: t.receiver.track, transceiver: t, streams: [{ id: stream }] });
    }
  }

  #rollback(): void {
    for (const t of this.transceivers) {
      if (t.provisional) {
        t.mid = null;
        t.provisional = false;
        this.#needNegotiation = true;
      }
    }
    this.localDescription = null;
    this.signalingState = 'stable';
  }

  #negotiationNeeded(): void {
    this.#needNegotiation = true;
    this.#settle();
  }

  #settle(): void {
    if (!this.#needNegotiation) return;
    setTimeout(() => {
      if (this.closed || this.signalingState !== 'stable' || !this.#needNegotiation) return;
      this.#needNegotiation = false;
      this.onnegotiationneeded?.();
    }, 0);
  }
}

export class FakeEnvironment implements MediaEnvironment {
  pcs: FakePeerConnection[] = [];
  media: any[] = [];
  display: any[] = [];
  /** The tracks handed out, in order. */
  tracks: FakeTrack[] = [];

  createPeerConnection(config: RTCConfiguration): RTCPeerConnection {
    const pc = new FakePeerConnection(config);
    this.pcs.push(pc);
    return pc as unknown as RTCPeerConnection;
  }

  async getUserMedia(constraints: MediaStreamConstraints): Promise<MediaStream> {
    this.media.push(constraints);
    const tracks: FakeTrack[] = [];
    if (constraints.video) tracks.push(new FakeTrack('video', { width: 1280, height: 720 }));
    if (constraints.audio) tracks.push(new FakeTrack('audio'));
    this.tracks.push(...tracks);
    return new FakeStream(tracks) as unknown as MediaStream;
  }

  async getDisplayMedia(options: DisplayMediaStreamOptions): Promise<MediaStream> {
    this.display.push(options);
    const track = new FakeTrack('video', { width: 1920, height: 1080 });
    this.tracks.push(track);
    return new FakeStream([track]) as unknown as MediaStream;
  }

  /** The peer connection created n-th (0-based). */
  pc(n: number): FakePeerConnection {
    const pc = this.pcs[n];
    if (!pc) throw new Error(`no peer connection #${n}`);
    return pc;
  }
}

/** Lets queued promise chains and zero-delay timers run. */
export async function settle(rounds = 10): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setTimeout(r, 0));
}

export function deferred<T = void>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
