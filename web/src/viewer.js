// The 3D view: one THREE.Points cloud coloured per point, OrbitControls for orbit / zoom / pan.
import {
  BufferGeometry,
  CanvasTexture,
  Color,
  Float32BufferAttribute,
  GridHelper,
  PerspectiveCamera,
  Points,
  PointsMaterial,
  Scene,
  SRGBColorSpace,
  Sphere,
  Vector3,
  WebGLRenderer,
} from 'three';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';

// A round, softly shaded sprite so points read as small balls rather than squares.
function discTexture() {
  const size = 64;
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = size;
  const g = canvas.getContext('2d');
  const grad = g.createRadialGradient(size * 0.4, size * 0.4, size * 0.05, size / 2, size / 2, size / 2);
  grad.addColorStop(0, '#ffffff');
  grad.addColorStop(0.75, '#d0d0d0');
  grad.addColorStop(0.95, '#a8a8a8');
  grad.addColorStop(1, 'rgba(160,160,160,0)');
  g.fillStyle = grad;
  g.beginPath();
  g.arc(size / 2, size / 2, size / 2, 0, Math.PI * 2);
  g.fill();
  const texture = new CanvasTexture(canvas);
  texture.colorSpace = SRGBColorSpace;
  return texture;
}

export class Viewer {
  constructor(container) {
    this.container = container;
    this.renderer = new WebGLRenderer({ antialias: true, alpha: true, preserveDrawingBuffer: true });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    this.renderer.setClearColor(0x000000, 0);
    container.prepend(this.renderer.domElement);
    this.canvas = this.renderer.domElement;
    this.canvas.setAttribute('aria-label', '3D view of the shape');

    this.scene = new Scene();
    this.camera = new PerspectiveCamera(40, 1, 0.01, 1000);
    this.controls = new OrbitControls(this.camera, this.canvas);
    this.controls.enableDamping = true;
    this.controls.dampingFactor = 0.12;
    this.controls.addEventListener('change', () => this.requestRender());
    this.sprite = discTexture();
    this.points = null;
    this.grid = null;
    this.home = null;
    this.upAxis = 'z';

    this.canvas.addEventListener('dblclick', () => this.resetView());
    new ResizeObserver(() => this.resize()).observe(container);
    this.resize();
    this.setUp('z');
    this.loop();
  }

  setUp(axis) {
    this.upAxis = axis === 'y' ? 'y' : 'z';
    this.camera.up.set(0, this.upAxis === 'y' ? 1 : 0, this.upAxis === 'z' ? 1 : 0);
  }

  resize() {
    const w = Math.max(1, this.container.clientWidth);
    const h = Math.max(1, this.container.clientHeight);
    this.renderer.setSize(w, h, false);
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
    this.requestRender();
  }

  clear() {
    if (this.points) {
      this.scene.remove(this.points);
      this.points.geometry.dispose();
      this.points.material.dispose();
      this.points = null;
    }
    if (this.grid) {
      this.scene.remove(this.grid);
      this.grid.geometry.dispose();
      this.grid.material.dispose();
      this.grid = null;
    }
    this.requestRender();
  }

  // points: [[x, y, z], ...] in the file's frame; colors: [[r, g, b] in 0..1, ...] (sRGB), one per point
  show(points, colors, upAxis) {
    this.clear();
    this.setUp(upAxis);
    const n = points.length;
    const pos = new Float32Array(n * 3);
    const col = new Float32Array(n * 3);
    const c = new Color();
    for (let i = 0; i < n; i++) {
      pos.set(points[i], i * 3);
      c.setRGB(colors[i][0], colors[i][1], colors[i][2], SRGBColorSpace);
      col[i * 3] = c.r;
      col[i * 3 + 1] = c.g;
      col[i * 3 + 2] = c.b;
    }
    const geometry = new BufferGeometry();
    geometry.setAttribute('position', new Float32BufferAttribute(pos, 3));
    geometry.setAttribute('color', new Float32BufferAttribute(col, 3));
    geometry.computeBoundingSphere();
    const sphere = geometry.boundingSphere || new Sphere(new Vector3(), 1);
    const radius = sphere.radius > 0 ? sphere.radius : 1;
    // point size in world units: about the mean spacing of n points on a surface of this size
    const size = Math.min(0.12, Math.max(0.012, 2.2 / Math.sqrt(n))) * radius;
    const material = new PointsMaterial({
      size, vertexColors: true, map: this.sprite, alphaTest: 0.5, sizeAttenuation: true, transparent: false,
    });
    this.points = new Points(geometry, material);
    this.scene.add(this.points);

    // a floor grid under the shape, perpendicular to the up axis
    const up = this.upAxis === 'y' ? new Vector3(0, 1, 0) : new Vector3(0, 0, 1);
    let low = Infinity;
    for (let i = 0; i < n; i++) low = Math.min(low, this.upAxis === 'y' ? pos[i * 3 + 1] : pos[i * 3 + 2]);
    this.grid = new GridHelper(radius * 4, 16, 0xb7bfcc, 0xd5dae2);
    if (this.upAxis === 'z') this.grid.rotation.x = Math.PI / 2;
    this.grid.position.copy(sphere.center);
    if (this.upAxis === 'y') this.grid.position.y = low; else this.grid.position.z = low;
    this.scene.add(this.grid);

    // camera: three-quarter view from the front-right, a little above
    const side = this.upAxis === 'y' ? new Vector3(1, 0, 1.4) : new Vector3(1.4, -1, 0);
    const dir = side.normalize().addScaledVector(up, 0.55).normalize();
    const distance = radius / Math.sin((this.camera.fov * Math.PI) / 360) * 1.08;
    this.home = { target: sphere.center.clone(), position: sphere.center.clone().addScaledVector(dir, distance) };
    this.camera.near = distance / 100;
    this.camera.far = distance * 100;
    this.camera.updateProjectionMatrix();
    this.controls.minDistance = radius * 0.2;
    this.controls.maxDistance = distance * 10;
    this.resetView();
  }

  resetView() {
    if (!this.home) return;
    this.camera.position.copy(this.home.position);
    this.controls.target.copy(this.home.target);
    this.controls.update();
    this.requestRender();
  }

  requestRender() {
    this.dirty = true;
  }

  loop() {
    requestAnimationFrame(() => this.loop());
    const moved = this.controls.update();  // damping keeps moving a few frames after a drag
    if (this.dirty || moved) {
      this.dirty = false;
      this.renderer.render(this.scene, this.camera);
      this.frames = (this.frames || 0) + 1;
    }
  }
}
