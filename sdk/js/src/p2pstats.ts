/**
 * Connection quality and active speakers for peer-to-peer rooms, where no
 * SFU measures them: read from each peer connection's getStats() on a
 * timer, graded with the SFU's thresholds and scale so the app sees the same
 * `quality` and `activeSpeakers` events in both modes.
 */
import type { Quality, Speaker } from './protocol.js';

/** The SFU's grading (crates/media `Quality::from_measurements`). */
export function gradeQuality(rttSeconds: number, jitterSeconds: number, loss: number): Quality {
  if (loss < 0.02 && rttSeconds < 0.15 && jitterSeconds < 0.03) return 'excellent';
  if (loss < 0.08 && rttSeconds < 0.4 && jitterSeconds < 0.1) return 'good';
  return 'poor';
}

/**
 * A WebRTC `audioLevel` (linear, 0..1, 1 = 0 dBov) on the SFU's scale
 * (0 = silent … 127 = loudest, i.e. 127 + dBov).
 */
export function levelFromAudioLevel(audioLevel: number): number {
  if (!(audioLevel > 0)) return 0;
  const dbov = 20 * Math.log10(Math.min(1, audioLevel));
  return Math.max(0, Math.min(127, Math.round(127 + dbov)));
}

/** Louder than -50 dBov counts as speaking (as in the SFU). */
export const SPEAKING_LEVEL = 127 - 50;

/** One reading of a peer connection. */
export interface PeerSample {
  rtt: number;
  jitter: number;
  packetsLost: number;
  packetsReceived: number;
  /** Level of the remote audio (SFU scale), if any. */
  remoteLevel: number;
  /** Level of our own microphone as sent (SFU scale), if any. */
  localLevel: number;
}

type StatsLike = { forEach(cb: (value: any) => void): void };

/** Reads what the grading needs from a getStats() report. */
export function readStats(report: StatsLike): PeerSample {
  const sample: PeerSample = { rtt: 0, jitter: 0, packetsLost: 0, packetsReceived: 0, remoteLevel: 0, localLevel: 0 };
  let selectedPair: string | null = null;
  const pairs = new Map<string, any>();
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) selectedPair = s.selectedCandidatePairId;
    if (s.type === 'candidate-pair') pairs.set(s.id, s);
  });
  let pair = selectedPair ? pairs.get(selectedPair) : undefined;
  if (!pair) for (const p of pairs.values()) if (p.nominated && p.state === 'succeeded') pair = p;
  if (pair && typeof pair.currentRoundTripTime === 'number') sample.rtt = pair.currentRoundTripTime;
  report.forEach((s) => {
    if (s.type === 'inbound-rtp') {
      sample.packetsLost += Math.max(0, s.packetsLost ?? 0);
      sample.packetsReceived += s.packetsReceived ?? 0;
      sample.jitter = Math.max(sample.jitter, s.jitter ?? 0);
      if (s.kind === 'audio' && typeof s.audioLevel === 'number') {
        sample.remoteLevel = Math.max(sample.remoteLevel, levelFromAudioLevel(s.audioLevel));
      }
    } else if (s.type === 'media-source' && s.kind === 'audio' && typeof s.audioLevel === 'number') {
      sample.localLevel = Math.max(sample.localLevel, levelFromAudioLevel(s.audioLevel));
    }
  });
  return sample;
}

/** Loss between two readings of the same connection. */
export function lossBetween(prev: PeerSample | undefined, cur: PeerSample): number {
  const lost = cur.packetsLost - (prev?.packetsLost ?? 0);
  const received = cur.packetsReceived - (prev?.packetsReceived ?? 0);
  const total = lost + received;
  return total > 0 && lost > 0 ? lost / total : 0;
}

/** The speakers to report: loud enough, loudest first, at most three. */
export function pickSpeakers(levels: Array<[string, number]>): Speaker[] {
  return levels
    .filter(([, level]) => level > SPEAKING_LEVEL)
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .slice(0, 3)
    .map(([participant, level]) => ({ participant, level }));
}
