// The WebSocket to the worker and a connection state that never claims more than it knows.
import { io } from "./vendor/socket.io.esm.min.js";

const SERVER_KICK_RETRY_MS = 1000;

/**
 * Connect and report state changes to `onState(state, detail)`: "connecting", "connected",
 * "reconnecting" or "disconnected". Event handlers are attached by the caller through `socket.on`.
 */
export function connect(onState) {
  // WebSocket only, no long-polling detour: fewer moving parts, and no sticky sessions needed behind a Service.
  // A handshake that hangs (a half-open path) is given up after `timeout` and retried, rather than after 20 s.
  const socket = io({ transports: ["websocket"], reconnectionDelay: 500, reconnectionDelayMax: 3000, timeout: 5000 });
  let attempt = 0;
  onState("connecting", "");
  socket.on("connect", () => {
    attempt = 0;
    onState("connected", "");
  });
  socket.on("disconnect", (reason) => {
    if (reason === "io client disconnect") {
      onState("disconnected", "closed by this page");
    } else if (reason === "io server disconnect") {
      // Socket.IO does not retry after a server-side disconnect; a restarting worker is worth a retry.
      onState("reconnecting", "the worker closed the connection");
      setTimeout(() => socket.connect(), SERVER_KICK_RETRY_MS);
    } else {
      onState("disconnected", reason);
    }
  });
  socket.on("connect_error", (error) => {
    const tried = attempt ? `attempt ${attempt}: ` : "";
    onState(socket.active ? "reconnecting" : "disconnected", `${tried}${error.message}`);
  });
  socket.io.on("reconnect_attempt", (n) => {
    attempt = n;
    onState("reconnecting", `attempt ${n}`);
  });
  socket.io.on("reconnect_failed", () => onState("disconnected", "gave up reconnecting"));
  return socket;
}
