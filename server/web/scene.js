// The 3-D scene of the viewer: map points, trajectory, current camera, keyframes, loops.
// Inputs are in the SLAM world frame (camera optical convention: x right, y down,
// z forward); one group rotated by pi about x shows it y-up for three.js.
import * as THREE from "./vendor/three.module.js";
import { OrbitRig } from "./controls.js";

const COLORS = {
  background: 0x14161a,
  trajectory: 0xffa640,
  keyframe: 0x4aa3ff,
  loop: 0xff3fd2,
  grid: 0x2c313a,
  tracking: 0x3ee07a,
  initializing: 0xffd23f,
  lost: 0xff4040,
};
// A camera pyramid in its own optical frame (depth 1, 4:3): apex, then 4 image corners.
const PYRAMID = [[0, 0, 0], [-0.67, -0.5, 1], [0.67, -0.5, 1], [0.67, 0.5, 1], [-0.67, 0.5, 1]];
const PYRAMID_EDGES = [[0, 1], [0, 2], [0, 3], [0, 4], [1, 2], [2, 3], [3, 4], [4, 1]];

/** A Float32/Uint8 vertex buffer that grows by doubling; `count` items of `itemSize`. */
class Growable {
  constructor(Type, itemSize, normalized = false) {
    Object.assign(this, { Type, itemSize, normalized, count: 0 });
    this.array = new Type(1024 * itemSize);
    this.attribute = this.makeAttribute();
  }

  makeAttribute() {
    const attr = new THREE.BufferAttribute(this.array, this.itemSize, this.normalized);
    attr.setUsage(THREE.DynamicDrawUsage);
    return attr;
  }

  /** Make room for `n` items; returns true when the attribute was replaced. */
  reserve(n) {
    if (n * this.itemSize <= this.array.length) return false;
    let size = this.array.length;
    while (size < n * this.itemSize) size *= 2;
    const grown = new this.Type(size);
    grown.set(this.array.subarray(0, this.count * this.itemSize));
    this.array = grown;
    this.attribute = this.makeAttribute();
    return true;
  }
}

function pyramidVertices(position, quaternion, scale, out) {
  const q = new THREE.Quaternion(quaternion[0], quaternion[1], quaternion[2], quaternion[3]);
  const p = new THREE.Vector3(position[0], position[1], position[2]);
  const corners = PYRAMID.map((c) => new THREE.Vector3(...c).multiplyScalar(scale).applyQuaternion(q).add(p));
  for (const [a, b] of PYRAMID_EDGES) out.push(corners[a].x, corners[a].y, corners[a].z, corners[b].x, corners[b].y, corners[b].z);
}

function lineObject(color, Type = THREE.LineSegments) {
  const geometry = new THREE.BufferGeometry();
  geometry.setAttribute("position", new THREE.Float32BufferAttribute([], 3));
  return new Type(geometry, new THREE.LineBasicMaterial({ color }));
}

/** A colour ramp (dark blue -> cyan -> green -> yellow -> red) for t in [0, 1], 0..255. */
function heightColor(t) {
  const stops = [[40, 60, 200], [30, 190, 230], [60, 220, 90], [250, 220, 50], [240, 60, 40]];
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i;
  return stops[i].map((a, k) => a + (stops[i + 1][k] - a) * f);
}

export class MapScene {
  constructor(container) {
    THREE.ColorManagement.enabled = false; // colours are shown as given (sRGB bytes)
    this.container = container;
    this.renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
    this.renderer.outputColorSpace = THREE.LinearSRGBColorSpace;
    this.renderer.setPixelRatio(window.devicePixelRatio);
    this.renderer.setClearColor(COLORS.background);
    container.appendChild(this.renderer.domElement);
    this.scene = new THREE.Scene();
    this.camera = new THREE.PerspectiveCamera(55, 1, 0.01, 1000);
    this.autoFrame = true;
    this.follow = false;
    this.colorMode = "auto";
    this.rig = new OrbitRig(this.camera, this.renderer.domElement, () => { this.autoFrame = false; });
    this.world = new THREE.Group();
    this.world.rotation.x = Math.PI; // optical (y down, z forward) -> y up
    this.scene.add(this.world);
    this.grid = new THREE.GridHelper(10, 20, COLORS.grid, COLORS.grid);
    this.scene.add(this.grid);
    this.buildObjects();
    this.clear();
    new ResizeObserver(() => this.resize()).observe(container);
    this.resize();
  }

  buildObjects() {
    this.pointXyz = new Growable(Float32Array, 3);
    this.pointRgb = new Growable(Uint8Array, 3);
    this.pointShown = new Growable(Uint8Array, 3, true);
    this.pointGeometry = new THREE.BufferGeometry();
    const material = new THREE.PointsMaterial({ size: 3, sizeAttenuation: false, vertexColors: true });
    this.points = new THREE.Points(this.pointGeometry, material);
    this.points.frustumCulled = false;
    this.trajectoryXyz = new Growable(Float32Array, 3);
    this.trajectory = new THREE.Line(new THREE.BufferGeometry(), new THREE.LineBasicMaterial({ color: COLORS.trajectory }));
    this.trajectory.frustumCulled = false;
    this.keyframeLines = lineObject(COLORS.keyframe);
    this.loopLines = lineObject(COLORS.loop);
    this.current = lineObject(COLORS.tracking);
    const unit = [];
    pyramidVertices([0, 0, 0], [0, 0, 0, 1], 1, unit);
    this.current.geometry.setAttribute("position", new THREE.Float32BufferAttribute(unit, 3));
    this.current.visible = false;
    this.world.add(this.points, this.trajectory, this.keyframeLines, this.loopLines, this.current);
  }

  /** Forget everything (before a snapshot). */
  clear() {
    this.idToIndex = new Map();
    this.indexToId = [];
    this.pointXyz.count = this.pointRgb.count = this.pointShown.count = 0;
    this.trajectoryXyz.count = 0;
    this.keyframes = new Map();
    this.loops = [];
    this.colourful = 0; // points whose image colour is not grey
    this.box = new THREE.Box3();
    this.pointBox = new THREE.Box3();
    this.dirty = { points: true, colors: true, trajectory: true, keyframes: true, loops: true };
  }

  get pointCount() { return this.pointXyz.count; }
  get poseCount() { return this.trajectoryXyz.count; }

  /** Add or overwrite points: ids (numbers), xyz Float32Array (N*3), rgb Uint8Array (N*3) or null. */
  upsertPoints(ids, xyz, rgb) {
    const n = this.pointXyz.count + ids.length;
    this.pointXyz.reserve(n); this.pointRgb.reserve(n); this.pointShown.reserve(n);
    for (let i = 0; i < ids.length; i++) {
      let k = this.idToIndex.get(ids[i]);
      if (k === undefined) {
        k = this.pointXyz.count++;
        this.pointRgb.count++; this.pointShown.count++;
        this.idToIndex.set(ids[i], k);
        this.indexToId[k] = ids[i];
      }
      this.pointXyz.array.set(xyz.subarray(3 * i, 3 * i + 3), 3 * k);
      if (rgb && rgb.length >= 3 * ids.length) {
        this.pointRgb.array.set(rgb.subarray(3 * i, 3 * i + 3), 3 * k);
        const r = rgb[3 * i], g = rgb[3 * i + 1], b = rgb[3 * i + 2];
        if (Math.max(r, g, b) - Math.min(r, g, b) > 16) this.colourful++;
      }
    }
    this.dirty.points = this.dirty.colors = true;
  }

  movePoints(ids, xyz) {
    for (let i = 0; i < ids.length; i++) {
      const k = this.idToIndex.get(ids[i]);
      if (k !== undefined) this.pointXyz.array.set(xyz.subarray(3 * i, 3 * i + 3), 3 * k);
    }
    this.dirty.points = this.dirty.colors = true;
  }

  /** Remove by swapping the last point into the hole. */
  removePoints(ids) {
    const bufs = [this.pointXyz, this.pointRgb, this.pointShown];
    for (const id of ids) {
      const k = this.idToIndex.get(id);
      if (k === undefined) continue;
      const last = this.pointXyz.count - 1;
      for (const b of bufs) {
        b.array.copyWithin(3 * k, 3 * last, 3 * last + 3);
        b.count--;
      }
      const lastId = this.indexToId[last];
      this.idToIndex.set(lastId, k);
      this.indexToId[k] = lastId;
      this.indexToId.length = last;
      this.idToIndex.delete(id);
    }
    this.dirty.points = this.dirty.colors = true;
  }

  /** Replace the trajectory with positions (Float32Array N*3). */
  setTrajectory(positions) {
    this.trajectoryXyz.count = 0;
    this.trajectoryXyz.reserve(positions.length / 3);
    this.trajectoryXyz.array.set(positions);
    this.trajectoryXyz.count = positions.length / 3;
    for (let i = 0; i < positions.length; i += 3) this.box.expandByPoint(new THREE.Vector3().fromArray(positions, i));
    this.dirty.trajectory = true;
  }

  addPose(position) {
    const t = this.trajectoryXyz;
    t.reserve(t.count + 1);
    t.array.set(position, 3 * t.count++);
    this.box.expandByPoint(new THREE.Vector3(...position));
    this.dirty.trajectory = true;
  }

  /** The live camera: position [x,y,z], orientation [x,y,z,w]; state picks the colour. */
  setCamera(position, orientation, state) {
    this.current.position.set(position[0], position[1], position[2]);
    this.current.quaternion.set(orientation[0], orientation[1], orientation[2], orientation[3]);
    this.current.visible = true;
    this.setState(state);
  }

  setState(state) {
    this.current.material.color.setHex(COLORS[state] ?? COLORS.tracking);
  }

  setKeyframe(id, position, orientation) {
    if (!position || !orientation) return;
    this.keyframes.set(id, { position, orientation });
    this.box.expandByPoint(new THREE.Vector3(...position));
    this.dirty.keyframes = this.dirty.loops = true;
  }

  addLoop(curKf, loopKf) {
    this.loops.push([curKf, loopKf]);
    this.dirty.loops = true;
  }

  resize() {
    const w = Math.max(this.container.clientWidth, 1);
    const h = Math.max(this.container.clientHeight, 1);
    this.renderer.setSize(w, h);
    this.camera.aspect = w / h;
    this.rig.update();
  }

  /** Bounding box of trajectory and keyframes, and its diagonal (metres, at least 0.5). */
  extent() {
    const box = this.box;
    return { box, size: box.isEmpty() ? 0.5 : Math.max(box.getSize(new THREE.Vector3()).length(), 0.5) };
  }

  render() {
    const { box, size } = this.extent();
    const mapSize = this.pointBox.isEmpty() ? 0 : this.pointBox.getSize(new THREE.Vector3()).length();
    const frustum = Math.min(Math.max(0.06 * size, 0.025 * mapSize, 0.03), 1.0);
    this.current.scale.setScalar(frustum);
    this.flush(frustum * 0.6);
    this.updateView(box, size);
    this.renderer.render(this.scene, this.camera);
  }

  updateView(box, size) {
    const toView = (v) => this.world.localToWorld(v.clone());
    if (this.follow && this.current.visible) {
      this.rig.target.copy(toView(this.current.position));
      this.rig.update();
    } else if (this.autoFrame && !box.isEmpty()) {
      const all = box.clone().union(this.pointBox);
      const extent = Math.max(all.getSize(new THREE.Vector3()).length(), size);
      this.rig.frame(toView(all.getCenter(new THREE.Vector3())), 0.85 * extent + 0.3);
    }
  }

  flush(keyframeScale) {
    if (this.dirty.points) {
      this.pointGeometry.setAttribute("position", this.pointXyz.attribute);
      this.pointGeometry.setAttribute("color", this.pointShown.attribute);
      this.pointXyz.attribute.needsUpdate = true;
      this.pointGeometry.setDrawRange(0, this.pointXyz.count);
      this.dirty.points = false;
    }
    if (this.dirty.colors) this.recolor();
    if (this.dirty.trajectory) {
      this.trajectory.geometry.setAttribute("position", this.trajectoryXyz.attribute);
      this.trajectoryXyz.attribute.needsUpdate = true;
      this.trajectory.geometry.setDrawRange(0, this.trajectoryXyz.count);
      this.dirty.trajectory = false;
    }
    if (this.dirty.keyframes || keyframeScale !== this.keyframeScale) {
      const out = [];
      for (const kf of this.keyframes.values()) pyramidVertices(kf.position, kf.orientation, keyframeScale, out);
      this.keyframeLines.geometry.setAttribute("position", new THREE.Float32BufferAttribute(out, 3));
      this.keyframeScale = keyframeScale;
      this.dirty.keyframes = false;
    }
    if (this.dirty.loops) {
      const out = [];
      for (const [a, b] of this.loops) {
        const ka = this.keyframes.get(a), kb = this.keyframes.get(b);
        if (ka && kb) out.push(...ka.position, ...kb.position);
      }
      this.loopLines.geometry.setAttribute("position", new THREE.Float32BufferAttribute(out, 3));
      this.dirty.loops = false;
    }
  }

  /** Point colours: image colours (rgb) or a height ramp, per colorMode. */
  recolor() {
    const n = this.pointXyz.count, xyz = this.pointXyz.array, shown = this.pointShown.array;
    // auto: image colours when the map has colour (5 % of points not grey), else height
    const hasColour = this.colourful > 0.05 * n;
    const useRgb = this.colorMode === "rgb" || (this.colorMode === "auto" && hasColour);
    if (useRgb) {
      shown.set(this.pointRgb.array.subarray(0, 3 * n));
    }
    this.measurePoints();
    if (!useRgb && n > 0) {
      // world y points down: height is -y; colour between the 2nd and 98th percentile
      const lo = -this.pointBox.max.y, span = Math.max(this.pointBox.max.y - this.pointBox.min.y, 1e-6);
      for (let i = 0; i < n; i++) shown.set(heightColor((-xyz[3 * i + 1] - lo) / span), 3 * i);
    }
    this.pointShown.attribute.needsUpdate = true;
    this.placeGrid();
    this.dirty.colors = false;
  }

  /** pointBox: per-axis 2nd..98th percentiles of (a sample of) the map points. */
  measurePoints() {
    const n = this.pointXyz.count, xyz = this.pointXyz.array;
    this.pointBox.makeEmpty();
    if (n === 0) return;
    const step = Math.max(1, Math.floor(n / 4000));
    const lo = [], hi = [];
    for (let axis = 0; axis < 3; axis++) {
      const v = [];
      for (let i = 0; i < n; i += step) v.push(xyz[3 * i + axis]);
      v.sort((a, b) => a - b);
      lo.push(v[Math.floor(0.02 * (v.length - 1))]);
      hi.push(v[Math.ceil(0.98 * (v.length - 1))]);
    }
    this.pointBox.set(new THREE.Vector3(...lo), new THREE.Vector3(...hi));
  }

  /** The grid lies under the map (2nd percentile of point height), sized to the scene. */
  placeGrid() {
    const { box, size } = this.extent();
    const all = box.clone().union(this.pointBox);
    if (all.isEmpty()) return;
    const floor = this.pointBox.isEmpty() ? -box.max.y - 0.5 * size : -this.pointBox.max.y;
    const center = all.getCenter(new THREE.Vector3());
    const span = Math.max(all.max.x - all.min.x, all.max.z - all.min.z, 1);
    this.grid.scale.setScalar((1.5 * span) / 10);
    this.grid.position.set(center.x, floor, -center.z);
  }
}
