/**
 * 1:1 calls: ringing over `rtc.call` / `rtc.accept` / `rtc.decline` /
 * `rtc.cancel` and the `rtc.ring*`, `rtc.accepted`, `rtc.declined`,
 * `rtc.call_ended` pushes. After acceptance both sides join the call's room
 * (an `auto` room, so the call is peer-to-peer).
 */
import { Emitter } from './emitter.js';
import type { CallParty } from './protocol.js';
import type { Room, RoomOptions } from './room.js';
import type { Signaling } from './signaling.js';

export type OutgoingCallState = 'ringing' | 'accepted' | 'declined' | 'ended' | 'cancelled';

export type OutgoingCallEvents = {
  /** The callee accepted; `room` is joined already unless `join: false` was given (then null). */
  accepted: (room: Room | null) => void;
  declined: () => void;
  /** Nobody answered (`timeout`), the callee is `offline`, or joining failed (`error`). */
  ended: (reason: string) => void;
};

/** Options of `Switchboard.call` and `IncomingCall.accept`. */
export interface CallOptions extends RoomOptions {
  /** Join the call's room when accepted (caller side). Default true. */
  join?: boolean;
}

/** A call this client placed. */
export class OutgoingCall extends Emitter<OutgoingCallEvents> {
  readonly id: string;
  readonly room: string;
  readonly user: string;
  state: OutgoingCallState = 'ringing';
  /** The joined room after acceptance. */
  joined: Room | null = null;
  #sig: Signaling;
  #join: (room: string) => Promise<Room>;
  #autoJoin: boolean;
  #joining: Promise<Room | null> | null = null;

  /** @internal */
  constructor(
    id: string,
    room: string,
    user: string,
    sig: Signaling,
    join: (room: string) => Promise<Room>,
    autoJoin: boolean,
  ) {
    super();
    this.id = id;
    this.room = room;
    this.user = user;
    this.#sig = sig;
    this.#join = join;
    this.#autoJoin = autoJoin;
  }

  /** Stops ringing (caller only). */
  async cancel(): Promise<void> {
    if (this.state !== 'ringing') return;
    this.state = 'cancelled';
    await this.#sig.rpc('rtc.cancel', { call: this.id });
  }

  /** Resolves with the joined room when accepted; rejects when declined or ended. */
  answered(): Promise<Room | null> {
    if (this.state === 'accepted' && this.#joining) return this.#joining;
    if (this.state !== 'ringing') return Promise.reject(new Error(`switchboard: call ${this.state}`));
    return new Promise((resolve, reject) => {
      const offs = [
        this.once('accepted', (room) => {
          offs.forEach((f) => f());
          resolve(room);
        }),
        this.once('declined', () => {
          offs.forEach((f) => f());
          reject(new Error('switchboard: call declined'));
        }),
        this.once('ended', (reason) => {
          offs.forEach((f) => f());
          reject(new Error(`switchboard: call ended (${reason})`));
        }),
      ];
    });
  }

  /** @internal */
  handleAccepted(): Promise<Room | null> {
    if (this.state !== 'ringing') return this.#joining ?? Promise.resolve(null);
    this.state = 'accepted';
    this.#joining = this.#joinAccepted();
    return this.#joining;
  }

  async #joinAccepted(): Promise<Room | null> {
    if (!this.#autoJoin) {
      this.emit('accepted', null);
      return null;
    }
    try {
      this.joined = await this.#join(this.room);
    } catch (err) {
      this.state = 'ended';
      this.emit('ended', 'error');
      throw err;
    }
    this.emit('accepted', this.joined);
    return this.joined;
  }

  /** @internal */
  handleDeclined(): void {
    if (this.state !== 'ringing') return;
    this.state = 'declined';
    this.emit('declined');
  }

  /** @internal */
  handleEnded(reason: string): void {
    if (this.state !== 'ringing') return;
    this.state = 'ended';
    this.emit('ended', reason);
  }
}

export type IncomingCallState = 'ringing' | 'accepted' | 'declined' | 'ended';

export type IncomingCallEvents = {
  /** Stopped ringing here: `answered_elsewhere`, `declined_elsewhere`, `cancelled` or `timeout`. */
  ended: (reason: string) => void;
};

/** A call ringing this client. */
export class IncomingCall extends Emitter<IncomingCallEvents> {
  readonly id: string;
  readonly room: string;
  readonly from: CallParty;
  readonly data: unknown;
  state: IncomingCallState = 'ringing';
  #sig: Signaling;
  #join: (room: string, options?: RoomOptions) => Promise<Room>;

  /** @internal */
  constructor(
    id: string,
    room: string,
    from: CallParty,
    data: unknown,
    sig: Signaling,
    join: (room: string, options?: RoomOptions) => Promise<Room>,
  ) {
    super();
    this.id = id;
    this.room = room;
    this.from = from;
    this.data = data;
    this.#sig = sig;
    this.#join = join;
  }

  /** Accepts (`rtc.accept`) and joins the call's room. */
  async accept(options?: RoomOptions): Promise<Room> {
    if (this.state !== 'ringing') throw new Error(`switchboard: call ${this.state}`);
    this.state = 'accepted';
    const res = await this.#sig.rpc<{ call: string; room: string }>('rtc.accept', { call: this.id });
    return this.#join(res?.room ?? this.room, options);
  }

  /** Declines (`rtc.decline`). */
  async decline(): Promise<void> {
    if (this.state !== 'ringing') return;
    this.state = 'declined';
    await this.#sig.rpc('rtc.decline', { call: this.id });
  }

  /** @internal */
  handleEnded(reason: string): void {
    if (this.state !== 'ringing') return;
    this.state = 'ended';
    this.emit('ended', reason);
  }
}
