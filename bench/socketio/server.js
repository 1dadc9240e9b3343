// The baseline the gateway benchmark compares against: Socket.IO v4 on Node.js
// with the Redis adapter (the seed system's real-time stack).
//
// Each client connects with ?user=<id> and joins two rooms: "all" (the
// broadcast workload: one conversation everyone is in) and "u:<id>" (the
// targeted workload: events for one user). Events come from another process
// through @socket.io/redis-emitter (emitter.js). WebSocket transport only,
// no compression, like the gateway. Run by bench/gateway_bench.py.
"use strict";

const { createServer } = require("http");
const { Server } = require("socket.io");
const { createClient } = require("redis");
const { createAdapter } = require("@socket.io/redis-adapter");

const port = Number(process.env.PORT || 3000);
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379";

async function main() {
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const http = createServer();
  const io = new Server(http, {
    transports: ["websocket"],
    perMessageDeflate: false,
    httpCompression: false,
    serveClient: false,
    maxHttpBufferSize: 65536,
  });
  io.adapter(createAdapter(pub, sub));
  io.on("connection", (socket) => {
    socket.join(["all", `u:${socket.handshake.query.user}`]);
  });
  http.listen(port, "127.0.0.1", () => console.log(`listening ${port}`));
  const stop = () => {
    io.close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
