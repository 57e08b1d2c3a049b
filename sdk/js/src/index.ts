/**
 * Switchboard browser SDK: messaging through centrifuge-js, plus WebRTC
 * rooms (SFU and peer-to-peer, switched transparently) and 1:1 calls.
 */
export { Switchboard, defaultEndpoint, defaultTransports } from './client.js';
export type { SwitchboardEvents, SwitchboardOptions } from './client.js';
export { Room, SIMULCAST_ENCODINGS } from './room.js';
export type { RoomEvents, RoomOptions, SubscriptionOptions, CloseReason } from './room.js';
export { OutgoingCall, IncomingCall } from './calls.js';
export type { CallOptions, OutgoingCallEvents, IncomingCallEvents, OutgoingCallState, IncomingCallState } from './calls.js';
export { LocalTrack, RemoteTrack, RemoteParticipant } from './tracks.js';
export type { PublishOptions } from './tracks.js';
export { Emitter } from './emitter.js';
export { browserEnvironment } from './environment.js';
export type { MediaEnvironment } from './environment.js';
export { centrifugeSignaling, decodeData } from './signaling.js';
export type { ConnectionEvent, Signaling } from './signaling.js';
export type * from './protocol.js';
// Messaging: the bundled centrifuge-js, for apps that want it directly.
export { Centrifuge, Subscription, UnauthorizedError } from 'centrifuge';
export type * from 'centrifuge';
