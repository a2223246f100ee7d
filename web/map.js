// A map drawn as SVG from coordinates: the service regions as the base, and markers that glide
// from one position to the next. No tiles, nothing from elsewhere.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 1000;

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

export class MapView {
  /** regions: a GeoJSON FeatureCollection of Polygon/MultiPolygon features with an id. */
  constructor(container, regions) {
    const rings = [];
    for (const feature of regions.features) {
      const geometry = feature.geometry;
      const polygons = geometry.type === "Polygon" ? [geometry.coordinates] : geometry.coordinates;
      for (const polygon of polygons) rings.push({ id: feature.properties.id, ring: polygon[0] });
    }
    const lons = rings.flatMap((r) => r.ring.map((p) => p[0]));
    const lats = rings.flatMap((r) => r.ring.map((p) => p[1]));
    const pad = 0.01;
    this.minLon = Math.min(...lons) - pad;
    this.maxLon = Math.max(...lons) + pad;
    this.minLat = Math.min(...lats) - pad;
    this.maxLat = Math.max(...lats) + pad;
    this.kx = Math.cos(((this.minLat + this.maxLat) / 2) * Math.PI / 180);
    this.scale = WIDTH / ((this.maxLon - this.minLon) * this.kx);
    this.height = Math.round((this.maxLat - this.minLat) * this.scale);
    this.root = svg("svg", { viewBox: `0 0 ${WIDTH} ${this.height}`, class: "map", role: "img", "aria-label": "Map of the delivery" });
    for (const { id, ring } of rings) {
      const d = ring.map(([lon, lat], i) => {
        const [x, y] = this.project(lat, lon);
        return `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
      }).join(" ") + " Z";
      this.root.append(svg("path", { d, class: "region" }));
      const cx = ring.reduce((s, p) => s + p[0], 0) / ring.length;
      const cy = ring.reduce((s, p) => s + p[1], 0) / ring.length;
      const [lx, ly] = this.project(cy, cx);
      const label = svg("text", { x: lx, y: ly, class: "region-label", "text-anchor": "middle" });
      label.textContent = id;
      this.root.append(label);
    }
    this.markers = new Map();
    this.view = { x: 0, y: 0, w: WIDTH, h: this.height };
    container.replaceChildren(this.root);
  }

  /**
   * Zooms to the markers (with a margin, and never closer than about 2.5 km across), so a
   * delivery of a kilometre fills the map while the region outlines stay as the base.
   */
  refit() {
    const points = [...this.markers.values()].map((g) => this.project(+g.dataset.lat, +g.dataset.lon));
    if (points.length === 0) return;
    const xs = points.map((p) => p[0]);
    const ys = points.map((p) => p[1]);
    const minSpan = 2500 / 111195 * this.scale; // ~2.5 km in map units
    let w = Math.max(Math.max(...xs) - Math.min(...xs), minSpan) * 1.5;
    let h = Math.max(Math.max(...ys) - Math.min(...ys), minSpan) * 1.5;
    const aspect = WIDTH / this.height;
    if (w / h > aspect) h = w / aspect; else w = h * aspect;
    const cx = (Math.max(...xs) + Math.min(...xs)) / 2;
    const cy = (Math.max(...ys) + Math.min(...ys)) / 2;
    this.view = { x: cx - w / 2, y: cy - h / 2, w, h };
    this.root.setAttribute("viewBox", `${this.view.x.toFixed(1)} ${this.view.y.toFixed(1)} ${w.toFixed(1)} ${h.toFixed(1)}`);
    const k = w / WIDTH;
    this.root.style.setProperty("--k", k.toFixed(4));
    for (const group of this.markers.values()) this.place(group);
  }

  place(group) {
    const [x, y] = this.project(+group.dataset.lat, +group.dataset.lon);
    const k = this.view.w / WIDTH;
    // A CSS transform (not the attribute) so that the move is animated: the dot glides.
    group.style.transform = `translate(${x.toFixed(1)}px, ${y.toFixed(1)}px) scale(${k.toFixed(4)})`;
  }

  project(lat, lon) {
    return [(lon - this.minLon) * this.kx * this.scale, (this.maxLat - lat) * this.scale];
  }

  /** Places (or moves) marker `name` with a one-letter label. */
  marker(name, lat, lon, label) {
    let group = this.markers.get(name);
    if (!group) {
      group = svg("g", { class: `marker ${name}`, "data-name": name });
      group.append(svg("circle", { r: name === "driver" ? 16 : 13 }));
      // The driver's label sits on the left so it never covers the kitchen's or the door's.
      const text = name === "driver"
        ? svg("text", { x: -22, y: 8, "text-anchor": "end" })
        : svg("text", { x: 20, y: 8 });
      text.textContent = label;
      group.append(text);
      this.root.append(group);
      this.markers.set(name, group);
    }
    const known = group.dataset.lat !== undefined;
    group.dataset.lat = lat;
    group.dataset.lon = lon;
    // A new marker may change the area to show; a moving one just glides.
    if (known) this.place(group);
    else this.refit();
  }
}
