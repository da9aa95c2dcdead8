// Orbit-style mouse controls: left drag orbits around `target`, right drag (or
// shift + left drag) pans, the wheel zooms.  `onUserInput` fires on any interaction
// so the viewer can stop auto-framing.
import * as THREE from "./vendor/three.module.js";

export class OrbitRig {
  constructor(camera, element, onUserInput = () => {}) {
    this.camera = camera;
    this.element = element;
    this.onUserInput = onUserInput;
    this.target = new THREE.Vector3();
    this.radius = 5;
    this.azimuth = -0.45; // around +y (up); 0 looks along the first camera's optical axis
    this.elevation = 0.5; // above the horizontal plane
    this.drag = null;
    element.addEventListener("contextmenu", (e) => e.preventDefault());
    element.addEventListener("pointerdown", (e) => this.down(e));
    element.addEventListener("pointermove", (e) => this.move(e));
    element.addEventListener("pointerup", (e) => this.up(e));
    element.addEventListener("pointercancel", (e) => this.up(e));
    element.addEventListener("wheel", (e) => this.wheel(e), { passive: false });
    this.update();
  }

  down(e) {
    this.element.setPointerCapture(e.pointerId);
    const pan = e.button === 2 || e.button === 1 || e.shiftKey;
    this.drag = { x: e.clientX, y: e.clientY, pan };
    this.onUserInput();
  }

  move(e) {
    if (!this.drag) return;
    const dx = e.clientX - this.drag.x;
    const dy = e.clientY - this.drag.y;
    this.drag.x = e.clientX;
    this.drag.y = e.clientY;
    if (this.drag.pan) this.pan(dx, dy);
    else this.rotate(dx, dy);
  }

  up(e) {
    if (this.element.hasPointerCapture(e.pointerId)) this.element.releasePointerCapture(e.pointerId);
    this.drag = null;
  }

  wheel(e) {
    e.preventDefault();
    this.radius *= Math.exp(e.deltaY * 0.001);
    this.radius = Math.min(Math.max(this.radius, 1e-3), 1e5);
    this.onUserInput();
    this.update();
  }

  rotate(dx, dy) {
    const speed = (2 * Math.PI) / Math.max(this.element.clientHeight, 1);
    this.azimuth -= dx * speed;
    this.elevation = Math.min(Math.max(this.elevation + dy * speed, -1.55), 1.55);
    this.update();
  }

  pan(dx, dy) {
    const fov = THREE.MathUtils.degToRad(this.camera.fov);
    const perPixel = (2 * this.radius * Math.tan(fov / 2)) / Math.max(this.element.clientHeight, 1);
    const right = new THREE.Vector3().setFromMatrixColumn(this.camera.matrix, 0);
    const up = new THREE.Vector3().setFromMatrixColumn(this.camera.matrix, 1);
    this.target.addScaledVector(right, -dx * perPixel).addScaledVector(up, dy * perPixel);
    this.update();
  }

  /** Look at `center` from `radius` away, keeping the current viewing direction. */
  frame(center, radius) {
    this.target.copy(center);
    this.radius = radius;
    this.update();
  }

  update() {
    const c = Math.cos(this.elevation);
    const offset = new THREE.Vector3(
      this.radius * c * Math.sin(this.azimuth),
      this.radius * Math.sin(this.elevation),
      this.radius * c * Math.cos(this.azimuth),
    );
    this.camera.position.copy(this.target).add(offset);
    this.camera.up.set(0, 1, 0);
    this.camera.lookAt(this.target);
    this.camera.near = Math.max(this.radius * 1e-3, 1e-4);
    this.camera.far = this.radius * 1e3 + 10;
    this.camera.updateProjectionMatrix();
    this.camera.updateMatrixWorld();
  }
}
