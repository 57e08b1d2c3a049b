/** The little SDP reading the SDK needs: which mid carries which msid. */

export interface MediaSection {
  mid: string;
  kind: string;
  direction: 'sendrecv' | 'sendonly' | 'recvonly' | 'inactive';
  /** `a=msid:<stream> <track>`; the SFU puts `<participant> <track id>` there. */
  msid: { stream: string; track: string } | null;
}

export function mediaSections(sdp: string): MediaSection[] {
  const out: MediaSection[] = [];
  let cur: MediaSection | null = null;
  for (const raw of sdp.split(/\r?\n/)) {
    const line = raw.trim();
    if (line.startsWith('m=')) {
      cur = { mid: '', kind: line.slice(2).split(' ')[0] ?? '', direction: 'sendrecv', msid: null };
      out.push(cur);
    } else if (cur) {
      if (line.startsWith('a=mid:')) {
        cur.mid = line.slice(6);
      } else if (line.startsWith('a=msid:')) {
        const [stream, track] = line.slice(7).split(' ');
        if (stream) cur.msid = { stream, track: track ?? '' };
      } else if (
        line === 'a=sendrecv' ||
        line === 'a=sendonly' ||
        line === 'a=recvonly' ||
        line === 'a=inactive'
      ) {
        cur.direction = line.slice(2) as MediaSection['direction'];
      }
    }
  }
  return out;
}
