// SLAM viewer entry point: WebSocket to the bridge, message dispatch, stats and image panel.
// Each binary message is [n][topic: n ASCII bytes][msgpack map] (see docs/viewer.md).
// The first message the page sends is {"auth": TOKEN|null}: with CurveZMQ on, the bridge
// sends nothing until the token matches and closes with code 4401 otherwise
// (docs/security.md). The token comes in the URL fragment (#token=..., never sent over
// HTTP) or is typed into the form; it is kept in sessionStorage for reconnects.
import { decode, int64Ids, typedArray } from "./msgpack.js";
import { MapScene } from "./scene.js";

/** Counters the tests (and curious users) can read. */
const viewerState = {
  connected: false, messages: 0, snapshots: 0, points: 0, poses: 0, keyframes: 0, loops: 0,
  lastState: null, frames: 0, status: 0, errors: 0, lastError: null, lastStatus: null,
  replies: 0, authSent: false, authRequired: false, authReason: null,
};
window.viewerState = viewerState;

const $ = (id) => document.getElementById(id);
const scene = new MapScene($("scene"));
const imageCanvas = $("image");
let socket = null;
let lastSeq = -1;
let paused = false;
let pendingImage = null;
let decodingImage = false;
const TOKEN_KEY = "slamViewerToken";
const CLOSE_UNAUTHORIZED = 4401;
let token = takeToken();

function stored(value) {
  try {
    if (value === undefined) return sessionStorage.getItem(TOKEN_KEY);
    if (value === null) sessionStorage.removeItem(TOKEN_KEY);
    else sessionStorage.setItem(TOKEN_KEY, value);
  } catch { /* storage disabled: the token lives as long as the page */ }
  return value ?? null;
}

/** The token of the URL fragment (then removed from the address bar) or of this tab's storage. */
function takeToken() {
  const fromUrl = new URLSearchParams(location.hash.slice(1)).get("token");
  if (!fromUrl) return stored();
  history.replaceState(null, "", location.pathname + location.search);
  return stored(fromUrl.trim());
}

function send(cmd) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ cmd }));
}

function note(text) { $("note").textContent = text; }

function setText(id, text) { $(id).textContent = text; }

function syncCounters() {
  viewerState.points = scene.pointCount;
  viewerState.poses = scene.poseCount;
  viewerState.keyframes = scene.keyframes.size;
  viewerState.loops = scene.loops.length;
  setText("shown", `${scene.pointCount} shown`);
}

function onSnapshot(msg) {
  if (!msg.ok) { note(`snapshot refused: ${msg.error}`); return; }
  scene.clear();
  const pts = msg.points || {};
  scene.upsertPoints(int64Ids(pts.ids), typedArray(pts.xyz, Float32Array), typedArray(pts.rgb, Uint8Array));
  scene.setTrajectory(typedArray(msg.trajectory?.positions, Float32Array));
  for (const kf of msg.keyframes || []) scene.setKeyframe(kf.id, kf.position, kf.orientation);
  for (const loop of msg.loops || []) scene.addLoop(loop.cur_kf, loop.loop_kf);
  lastSeq = msg.last_seq ?? -1;
  viewerState.snapshots++;
}

function onPose(msg) {
  if (msg.seq <= lastSeq) {
    if (msg.seq + 100 >= lastSeq) return; // already in the snapshot
    lastSeq = -1; // the service restarted its count (reset): take a fresh snapshot
    send("snapshot");
  }
  lastSeq = msg.seq;
  if (msg.position && msg.orientation) {
    scene.addPose(msg.position);
    scene.setCamera(msg.position, msg.orientation, msg.state);
  } else {
    scene.setState(msg.state);
  }
  viewerState.lastState = msg.state;
  setState(msg.state);
  if (typeof msg.latency_ms === "number") setText("latency", `${msg.latency_ms.toFixed(1)} ms`);
}

function onMap(msg) {
  if (msg.reset) { // the service replaced its map: start over and fetch the new trajectory
    scene.clear();
    send("snapshot");
  }
  const added = msg.added || {}, moved = msg.moved || {}, removed = msg.removed || {};
  if (added.ids) scene.upsertPoints(int64Ids(added.ids), typedArray(added.xyz, Float32Array), typedArray(added.rgb, Uint8Array));
  if (moved.ids) scene.movePoints(int64Ids(moved.ids), typedArray(moved.xyz, Float32Array));
  if (removed.ids) scene.removePoints(int64Ids(removed.ids));
}

function onLoop(msg) {
  scene.addLoop(msg.cur_kf, msg.loop_kf);
  note(`loop closed: keyframe ${msg.cur_kf} ↔ ${msg.loop_kf} (${msg.n_matches} matches)`);
  setTimeout(() => send("snapshot"), 500); // the corrected trajectory comes with a snapshot
}

function setState(state) {
  const el = $("state");
  el.textContent = state ?? "–";
  el.className = state ?? "";
}

function onStatus(msg) {
  viewerState.status++;
  const { fps, frames, tracked_frames, keyframes, map_points, paused: p, finished } = msg;
  viewerState.lastStatus = { fps, frames, tracked_frames, keyframes, map_points, paused: p, finished };
  if (msg.state) { viewerState.lastState = msg.state; setState(msg.state); }
  setText("fps", Number(msg.fps ?? 0).toFixed(1));
  setText("frames", `${msg.tracked_frames ?? "?"} tracked / ${msg.frames ?? "?"}${msg.finished ? " (finished)" : ""}`);
  setText("keyframes", `${msg.keyframes ?? "?"}`);
  setText("mappoints", `${msg.map_points ?? "?"}`);
  setText("loops", `${msg.loops_closed ?? 0}`);
  setText("relocs", `${msg.relocalisations ?? 0}${msg.maps > 1 ? ` · ${msg.maps} maps` : ""}`);
  const q = msg.queue_depth || {};
  setText("queues", `frames ${q.frames ?? 0} · mapping ${q.mapping ?? 0}`);
  setText("drops", `${msg.drops ?? 0}`);
  paused = Boolean(msg.paused);
  $("pause").textContent = paused ? "resume" : "pause";
}

function onImage(msg) {
  pendingImage = msg; // keep only the newest while one is decoding
  if (!decodingImage) drawNextImage();
}

async function drawNextImage() {
  const msg = pendingImage;
  pendingImage = null;
  if (!msg) return;
  decodingImage = true;
  try {
    const bitmap = await createImageBitmap(new Blob([msg.jpeg], { type: "image/jpeg" }));
    imageCanvas.width = bitmap.width;
    imageCanvas.height = bitmap.height;
    const ctx = imageCanvas.getContext("2d");
    ctx.drawImage(bitmap, 0, 0);
    bitmap.close();
    const uv = typedArray(msg.uv, Float32Array);
    const r = Math.max(2, bitmap.width / 200);
    ctx.strokeStyle = "#3ee07a";
    ctx.lineWidth = Math.max(1, r / 2);
    ctx.beginPath();
    for (let i = 0; i + 1 < uv.length; i += 2) {
      ctx.moveTo(uv[i] + r, uv[i + 1]);
      ctx.arc(uv[i], uv[i + 1], r, 0, 2 * Math.PI);
    }
    ctx.stroke();
    viewerState.frames++;
  } catch (err) {
    reportError(`image: ${err.message ?? err}`);
  } finally {
    decodingImage = false;
    if (pendingImage) drawNextImage();
  }
}

function onBridge(msg) {
  if (msg.error) note(`bridge: ${msg.error}`);
  else if (msg.resync) note(`viewer fell behind: ${msg.dropped} messages skipped, resynced`);
}

function onReply(msg) {
  viewerState.replies++;
  note(msg.ok ? "" : `command failed: ${msg.error}`);
}

const HANDLERS = {
  snapshot: onSnapshot, pose: onPose, map: onMap, status: onStatus, image: onImage,
  keyframe: (m) => scene.setKeyframe(m.id, m.position, m.orientation),
  loop: onLoop, bridge: onBridge, reply: onReply,
};

function reportError(text) {
  viewerState.errors++;
  viewerState.lastError = text;
  console.error(text);
}

function onMessage(event) {
  const bytes = new Uint8Array(event.data);
  const n = bytes[0];
  const topic = String.fromCharCode(...bytes.subarray(1, 1 + n));
  try {
    const handler = HANDLERS[topic];
    if (handler) handler(decode(bytes.subarray(1 + n)));
    viewerState.messages++;
    syncCounters();
  } catch (err) {
    reportError(`${topic}: ${err.message ?? err}`);
  }
}

function connect() {
  const conn = $("conn");
  socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  socket.binaryType = "arraybuffer";
  socket.onopen = () => {
    viewerState.connected = true;
    socket.send(JSON.stringify({ auth: token ?? null }));
    viewerState.authSent = token != null;
    conn.textContent = `connected to ${location.host}`;
    conn.className = "ok";
  };
  socket.onclose = (event) => {
    viewerState.connected = false;
    conn.className = "down";
    if (event.code === CLOSE_UNAUTHORIZED) {
      askForToken(event.reason);
      return;
    }
    conn.textContent = "disconnected, retrying…";
    setTimeout(connect, 2000);
  };
  socket.onmessage = onMessage;
}

/** The bridge refused the credential: show the form, reconnect once a token is typed. */
function askForToken(reason) {
  viewerState.authRequired = true;
  viewerState.authReason = reason;
  if (token != null) token = stored(null);
  $("conn").textContent = `refused: ${reason || "credential required"}`;
  $("auth").hidden = false;
  $("token").focus();
}

$("auth").addEventListener("submit", (e) => {
  e.preventDefault();
  const typed = $("token").value.trim();
  if (!typed) return;
  token = stored(typed);
  $("token").value = "";
  $("auth").hidden = true;
  $("conn").textContent = "connecting…";
  connect();
});

function drawPlaceholder() {
  const ctx = imageCanvas.getContext("2d");
  ctx.fillStyle = "#0d0f12";
  ctx.fillRect(0, 0, imageCanvas.width, imageCanvas.height);
  ctx.fillStyle = "#5a6270";
  ctx.font = "24px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.fillText("no image yet", imageCanvas.width / 2, imageCanvas.height / 2);
}

function animate() {
  scene.render();
  requestAnimationFrame(animate);
}

$("pause").addEventListener("click", () => send(paused ? "resume" : "pause"));
$("refresh").addEventListener("click", () => send("snapshot"));
$("follow").addEventListener("change", (e) => { scene.follow = e.target.checked; });
$("colour").addEventListener("change", (e) => { scene.colorMode = e.target.value; scene.dirty.colors = true; });
drawPlaceholder();
connect();
animate();
