// socket.io 4 peer for scripts/bench (WebSocket transport only).
//   emit("sub", channel, ack)   joins the room `channel`, then acks
//   emit("pub", channel, data)  broadcasts event "m" with `data` to the room
// Usage: node socketio-server.js [port] (default 9102), listens on 127.0.0.1.
'use strict';
const http = require('node:http');
const { Server } = require('socket.io');

const port = Number(process.argv[2] || 9102);
const httpServer = http.createServer();
const io = new Server(httpServer, {
  transports: ['websocket'],
  serveClient: false,
  perMessageDeflate: false,
  httpCompression: false,
});

io.on('connection', (socket) => {
  socket.on('sub', (channel, ack) => {
    socket.join(channel);
    if (typeof ack === 'function') ack();
  });
  socket.on('pub', (channel, data) => {
    io.to(channel).emit('m', data);
  });
});
httpServer.listen(port, '127.0.0.1', () =>
  console.log(`socket.io server on 127.0.0.1:${port}`),
);
