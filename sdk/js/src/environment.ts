/**
 * What the SDK needs from the browser for media. Injected so the signaling
 * state machine runs (and is tested) without a browser.
 */

export interface MediaEnvironment {
  createPeerConnection(config: RTCConfiguration): RTCPeerConnection;
  getUserMedia(constraints: MediaStreamConstraints): Promise<MediaStream>;
  getDisplayMedia(options: DisplayMediaStreamOptions): Promise<MediaStream>;
}

/** The real browser APIs (`RTCPeerConnection`, `navigator.mediaDevices`). */
export function browserEnvironment(): MediaEnvironment {
  return {
    createPeerConnection(config) {
      if (typeof RTCPeerConnection === 'undefined') {
        throw new Error('switchboard: RTCPeerConnection is not available here');
      }
      return new RTCPeerConnection(config);
    },
    getUserMedia(constraints) {
      return navigator.mediaDevices.getUserMedia(constraints);
    },
    getDisplayMedia(options) {
      return navigator.mediaDevices.getDisplayMedia(options);
    },
  };
}
