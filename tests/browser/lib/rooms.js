// Rooms through the server API (docs/MEDIA.md "Server API for rooms").

// Creates `room` in `mode` with `room_create`. Returns false when the server
// has no `room_create` yet (HTTP 404): then every room is an SFU room, which
// the caller must be able to accept; the test log says so.
export async function createRoom(t, server, room, mode) {
  const r = await fetch(`${server.httpUrl}/api/room_create`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-API-Key': server.apiKey },
    body: JSON.stringify({ room, mode }),
    signal: AbortSignal.timeout(5000),
  });
  const text = await r.text();
  if (r.status === 404 && mode === 'sfu') {
    t.diagnostic(`room_create is not available (HTTP 404): relying on implicit rooms being SFU rooms`);
    return false;
  }
  if (!r.ok) throw new Error(`room_create ${room} (${mode}) -> HTTP ${r.status}: ${text}`);
  const body = JSON.parse(text);
  if (body.error) throw new Error(`room_create ${room} (${mode}) -> error ${JSON.stringify(body.error)}`);
  if (body.result?.room?.mode !== undefined && body.result.room.mode !== mode) {
    throw new Error(`room_create ${room}: asked for mode ${mode}, got ${JSON.stringify(body.result.room)}`);
  }
  return true;
}
