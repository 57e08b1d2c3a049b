// Rooms through the server API (docs/MEDIA.md "Server API for rooms").

// Creates `room` in `mode` ('sfu' | 'p2p' | 'auto') with `room_create` and
// checks the mode the server reports.
export async function createRoom(server, room, mode) {
  const r = await server.api('room_create', { room, mode });
  const created = r.result?.room;
  if (!created || created.mode !== mode) {
    throw new Error(`room_create ${room}: asked for mode ${mode}, got ${JSON.stringify(r)}`);
  }
  return created;
}
