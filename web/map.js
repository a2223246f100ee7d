// Maps on the pages. MapView: an SVG map drawn from coordinates — the service regions as the
// base, the streets of the engine's offline map (© OpenStreetMap contributors, ODbL) fetched for
// the box on show, a route line, and markers that glide from one position to the next; raster
// tiles only when the operator configured a tile server. addressPicker: an address box with the
// engine's suggestions (an accessible combobox) and a click on the map to pick a point. No
// library, nothing loaded from elsewhere by the page.

import { api, el, field } from "/assets/common.js";

const SVG = "http://www.w3.org/2000/svg";
/** The drawing's size in map units; the view keeps this aspect. */
const WIDTH = 1000;
const HEIGHT = 640;
const METRES_PER_DEG = 111195;
/** The engine refuses a streets box over half a degree a side. */
const STREETS_MAX_SIDE_DEG = 0.5;
/** Streets are fetched for the view grown by this share on each side, so small moves reuse them. */
const STREETS_MARGIN = 0.5;
/** Smallest area shown around markers: a city extract's streets, or the demo's whole blocks. */
const MIN_SPAN_CITY_M = 700;
const MIN_SPAN_REGIONS_M = 2500;
/** A driver farther than this from the route line is off it: the line is left whole. */
const ROUTE_SNAP_M = 120;
/** At most this many raster tiles for one view (more means the view is too far out for tiles). */
const MAX_TILES = 64;
const OSM_ATTRIBUTION = "© OpenStreetMap contributors, ODbL";
/** What a page assumes when the engine cannot say (an older engine, or the call failed). */
export const NO_MAP = Object.freeze({
  provider: "straight_line", routing: "straight_line", geocoding: false, streets: false,
  bounds: null, tiles_url: null, attribution: OSM_ATTRIBUTION,
});

/** Drawing order and width class of OSM highway values: minor first, so major roads lie on top. */
const STREET_RANK = {
  footway: 0, path: 0, cycleway: 0, steps: 0, pedestrian: 1, track: 0, bridleway: 0, corridor: 0,
  service: 2, living_street: 3, residential: 3, unclassified: 3, road: 3,
  tertiary_link: 4, tertiary: 5, secondary_link: 5, secondary: 6, primary_link: 6, primary: 7,
  trunk_link: 7, trunk: 8, motorway_link: 8, motorway: 9,
};
/** A street's name is drawn along it when its ends are this share of its length apart. */
const LABEL_STRAIGHTNESS = 0.85;
/** Classes whose names are drawn along them. */
const LABELLED = new Set(["motorway", "trunk", "primary", "secondary", "tertiary", "residential", "pedestrian", "living_street", "unclassified"]);

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

let infoPromise = null;
/** What the engine's maps can do (GET /api/v1/map), asked once per page; NO_MAP if it cannot say. */
export function mapInfo(token) {
  infoPromise ??= api("/api/v1/map", { token }).then((info) => ({ ...NO_MAP, ...info })).catch(() => NO_MAP);
  return infoPromise;
}

/** A street class safe to use as a CSS class name. */
function classOf(street) {
  return String(street.class || "road").replace(/[^a-z0-9_]/gi, "") || "road";
}

export class MapView {
  /**
   * regions: a GeoJSON FeatureCollection of Polygon/MultiPolygon features with an id.
   * options.info: GET /api/v1/map (streets, bounds, tiles); options.token: to fetch streets.
   */
  constructor(container, regions, { info = NO_MAP, token = null, label = "Map of the delivery" } = {}) {
    this.info = info;
    this.token = token;
    const rings = [];
    for (const feature of regions.features || []) {
      const geometry = feature.geometry;
      if (!geometry) continue;
      const polygons = geometry.type === "Polygon" ? [geometry.coordinates] : geometry.coordinates;
      for (const polygon of polygons) rings.push({ id: feature.properties?.id ?? "", ring: polygon[0] });
    }
    const lons = rings.flatMap((r) => r.ring.map((p) => p[0]));
    const lats = rings.flatMap((r) => r.ring.map((p) => p[1]));
    const bounds = info.bounds;
    if (bounds) {
      lons.push(bounds.west, bounds.east);
      lats.push(bounds.south, bounds.north);
    }
    if (lons.length === 0) {
      lons.push(-180, 180);
      lats.push(-60, 75);
    }
    const pad = 0.01;
    this.minLon = Math.min(...lons) - pad;
    this.maxLon = Math.max(...lons) + pad;
    this.minLat = Math.min(...lats) - pad;
    this.maxLat = Math.max(...lats) + pad;
    this.kx = Math.cos(((this.minLat + this.maxLat) / 2) * Math.PI / 180);
    this.scale = WIDTH / ((this.maxLon - this.minLon) * this.kx);

    this.root = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "map", role: "group", "aria-label": label });
    this.layers = {};
    for (const name of ["tiles", "regions", "streets", "outlines", "names", "route", "markers"]) {
      this.layers[name] = svg("g", { class: `layer-${name}` });
      this.root.append(this.layers[name]);
    }
    for (const { id, ring } of rings) {
      const d = this.pathData(ring.map(([lon, lat]) => [lat, lon])) + " Z";
      this.layers.regions.append(svg("path", { d, class: "region" }));
      this.layers.outlines.append(svg("path", { d, class: "region-outline" }));
      const cx = ring.reduce((s, p) => s + p[0], 0) / ring.length;
      const cy = ring.reduce((s, p) => s + p[1], 0) / ring.length;
      const [lx, ly] = this.project(cy, cx);
      const text = svg("text", { x: lx.toFixed(1), y: ly.toFixed(1), class: "region-label", "text-anchor": "middle" });
      text.textContent = id;
      this.layers.outlines.append(text);
    }
    this.attribution = document.createElement("p");
    this.attribution.className = "map-attribution hidden";
    this.attribution.textContent = info.attribution || OSM_ATTRIBUTION;
    this.frame = document.createElement("div");
    this.frame.className = "map-frame";
    this.frame.append(this.root, this.attribution);
    container.replaceChildren(this.frame);

    this.markers = new Map();
    this.routePoints = [];
    this.streets = [];
    this.streetsBox = null;
    this.streetsSeq = 0;
    this.streetsTimer = null;
    this.tilesFailed = false;
    this.pickHandler = null;
    this.root.addEventListener("click", (event) => this.picked(event));
    this.home();
  }

  // ---- projection -----------------------------------------------------------------------------

  project(lat, lon) {
    return [(lon - this.minLon) * this.kx * this.scale, (this.maxLat - lat) * this.scale];
  }

  unproject(x, y) {
    return [this.maxLat - y / this.scale, this.minLon + x / (this.kx * this.scale)];
  }

  pathData(points) {
    return points.map(([lat, lon], i) => {
      const [x, y] = this.project(lat, lon);
      return `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
    }).join("");
  }

  // ---- the view -------------------------------------------------------------------------------

  /** Shows the box from (x0, y0) to (x1, y1) in map units, grown to the drawing's aspect. */
  setView(x0, y0, x1, y1) {
    let w = Math.max(x1 - x0, 1e-6);
    let h = Math.max(y1 - y0, 1e-6);
    if (w / h > WIDTH / HEIGHT) h = w * HEIGHT / WIDTH; else w = h * WIDTH / HEIGHT;
    const cx = (x0 + x1) / 2;
    const cy = (y0 + y1) / 2;
    this.view = { x: cx - w / 2, y: cy - h / 2, w, h };
    this.root.setAttribute("viewBox", `${this.view.x.toFixed(2)} ${this.view.y.toFixed(2)} ${w.toFixed(2)} ${h.toFixed(2)}`);
    this.root.style.setProperty("--k", (w / WIDTH).toFixed(5));
    for (const group of this.markers.values()) this.place(group);
    this.drawNames();
    this.drawTiles();
    this.scheduleStreets();
  }

  /** Fits points ([lat, lon]) with a margin, never closer than minSpanM metres across. */
  fit(points, { minSpanM = 0, margin = 1.3 } = {}) {
    const xy = points.map(([lat, lon]) => this.project(lat, lon));
    const xs = xy.map((p) => p[0]);
    const ys = xy.map((p) => p[1]);
    const minSpan = minSpanM / METRES_PER_DEG * this.scale;
    const w = Math.max(Math.max(...xs) - Math.min(...xs), minSpan) * margin;
    const h = Math.max(Math.max(...ys) - Math.min(...ys), minSpan) * margin;
    const cx = (Math.max(...xs) + Math.min(...xs)) / 2;
    const cy = (Math.max(...ys) + Math.min(...ys)) / 2;
    this.setView(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2);
  }

  /** The map's whole area: the city extract when there is one, else every region. */
  home() {
    const b = this.info.bounds;
    if (b) this.fit([[b.south, b.west], [b.north, b.east]], { margin: 1.05 });
    else this.setView(0, 0, (this.maxLon - this.minLon) * this.kx * this.scale, (this.maxLat - this.minLat) * this.scale);
  }

  /**
   * Zooms to the markers and the route (with a margin, never closer than a few blocks), so a
   * delivery of a kilometre fills the map while the regions and streets stay as the base.
   */
  refit() {
    const points = [...this.markers.values()].map((g) => [+g.dataset.lat, +g.dataset.lon]);
    points.push(...this.routePoints);
    if (points.length === 0) {
      this.home();
      return;
    }
    this.fit(points, { minSpanM: this.info.bounds ? MIN_SPAN_CITY_M : MIN_SPAN_REGIONS_M, margin: 1.4 });
  }

  /** The view in degrees, grown by `margin` of its size on each side. */
  viewBox(margin = 0) {
    const { x, y, w, h } = this.view;
    const [north, west] = this.unproject(x - w * margin, y - h * margin);
    const [south, east] = this.unproject(x + w * (1 + margin), y + h * (1 + margin));
    return { south, west, north, east };
  }

  // ---- markers --------------------------------------------------------------------------------

  place(group) {
    const [x, y] = this.project(+group.dataset.lat, +group.dataset.lon);
    const k = this.view.w / WIDTH;
    // A CSS transform (not the attribute) so that the move is animated: the dot glides.
    group.style.transform = `translate(${x.toFixed(1)}px, ${y.toFixed(1)}px) scale(${k.toFixed(4)})`;
  }

  /** Places (or moves) marker `name` with a label; `kind` (default: the name) styles it. */
  marker(name, lat, lon, label, kind = name) {
    let group = this.markers.get(name);
    if (!group) {
      group = svg("g", { class: `marker ${kind}`, "data-name": name });
      group.append(svg("circle", { r: kind === "driver" ? 16 : 13 }));
      // The driver's label sits on the left so it never covers the kitchen's or the door's.
      const text = kind === "driver"
        ? svg("text", { x: -22, y: 8, "text-anchor": "end" })
        : svg("text", { x: 20, y: 8 });
      group.append(text);
      this.layers.markers.append(group);
      this.markers.set(name, group);
    }
    group.querySelector("text").textContent = label;
    const known = group.dataset.lat !== undefined;
    group.dataset.lat = lat;
    group.dataset.lon = lon;
    // A new marker may change the area to show; a moving one just glides.
    if (known) this.place(group);
    else this.refit();
  }

  removeMarker(name) {
    this.markers.get(name)?.remove();
    this.markers.delete(name);
  }

  // ---- the route ------------------------------------------------------------------------------

  /** Draws the route line through points ([lat, lon]); `leg` styles it (to_pickup, to_dropoff). */
  showRoute(points, { leg = "route", label = "Route" } = {}) {
    this.layers.route.replaceChildren();
    this.routePoints = (points || []).filter((p) => Array.isArray(p) && Number.isFinite(p[0]) && Number.isFinite(p[1]));
    if (this.routePoints.length < 2) {
      this.routePoints = [];
      return;
    }
    const d = this.pathData(this.routePoints);
    const line = svg("path", { d, class: `route ${leg.replace(/[^a-z_]/gi, "")}`, "data-leg": leg, role: "img", "aria-label": label });
    this.layers.route.append(svg("path", { d, class: "route-casing" }), line);
    this.refit();
  }

  /**
   * Draws the route from the point on it nearest to the driver at (lat, lon) on, so the line
   * shows the way still to go. A driver far off the line (a re-route is coming) leaves it whole.
   */
  trimRoute(lat, lon) {
    const points = this.routePoints;
    if (points.length < 2) return;
    const [px, py] = this.project(lat, lon);
    let best = -1;
    let bestDistance = Infinity;
    for (let i = 0; i + 1 < points.length; i += 1) {
      const [ax, ay] = this.project(...points[i]);
      const [bx, by] = this.project(...points[i + 1]);
      const dx = bx - ax;
      const dy = by - ay;
      const t = dx || dy ? Math.max(0, Math.min(1, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy))) : 0;
      const distance = Math.hypot(px - (ax + t * dx), py - (ay + t * dy));
      if (distance < bestDistance) { bestDistance = distance; best = i; }
    }
    if (best < 0 || bestDistance / this.scale * METRES_PER_DEG > ROUTE_SNAP_M) return;
    this.routePoints = [[lat, lon], ...points.slice(best + 1)];
    const d = this.pathData(this.routePoints);
    for (const path of this.layers.route.children) path.setAttribute("d", d);
  }

  clearRoute() {
    this.layers.route.replaceChildren();
    this.routePoints = [];
  }

  // ---- picking a point ------------------------------------------------------------------------

  /** A click on the map calls handler(lat, lon); null stops it. */
  set onPick(handler) {
    this.pickHandler = typeof handler === "function" ? handler : null;
    this.root.classList.toggle("pickable", !!this.pickHandler);
  }

  get onPick() {
    return this.pickHandler;
  }

  picked(event) {
    if (!this.pickHandler) return;
    const matrix = this.root.getScreenCTM();
    if (!matrix) return;
    const point = new DOMPoint(event.clientX, event.clientY).matrixTransform(matrix.inverse());
    const [lat, lon] = this.unproject(point.x, point.y);
    this.pickHandler(Math.round(lat * 1e6) / 1e6, Math.round(lon * 1e6) / 1e6);
  }

  // ---- streets --------------------------------------------------------------------------------

  get drawsStreets() {
    return !!this.info.streets && !!this.token && !(this.info.tiles_url && !this.tilesFailed);
  }

  scheduleStreets() {
    if (!this.drawsStreets) return;
    clearTimeout(this.streetsTimer);
    this.streetsTimer = setTimeout(() => this.loadStreets(), 120);
  }

  /** Fetches the streets around the view unless the ones drawn already cover it. */
  async loadStreets() {
    const want = this.viewBox(0);
    const have = this.streetsBox;
    if (have && have.south <= want.south && have.west <= want.west && have.north >= want.north && have.east >= want.east) return;
    let box = this.viewBox(STREETS_MARGIN);
    const b = this.info.bounds;
    if (b) {
      box = {
        south: Math.max(box.south, b.south), west: Math.max(box.west, b.west),
        north: Math.min(box.north, b.north), east: Math.min(box.east, b.east),
      };
      if (box.south >= box.north || box.west >= box.east) return; // the view is off the map data
    }
    for (const [lo, hi] of [["south", "north"], ["west", "east"]]) {
      if (box[hi] - box[lo] > STREETS_MAX_SIDE_DEG) {
        const mid = (box[hi] + box[lo]) / 2;
        box[lo] = mid - STREETS_MAX_SIDE_DEG / 2 + 1e-5;
        box[hi] = mid + STREETS_MAX_SIDE_DEG / 2 - 1e-5;
      }
    }
    const bbox = [box.south, box.west, box.north, box.east].map((v) => v.toFixed(5)).join(",");
    const seq = ++this.streetsSeq;
    let data;
    try {
      data = await api(`/api/v1/map/streets?bbox=${bbox}`, { token: this.token });
    } catch {
      return; // the map stays as it is: regions and markers still tell the story
    }
    if (seq !== this.streetsSeq) return;
    this.streetsBox = box;
    this.drawStreets(data);
  }

  drawStreets(data) {
    const streets = (data.streets || []).filter((s) => Array.isArray(s.points) && s.points.length >= 2);
    this.streets = streets;
    const byClass = new Map();
    for (const street of streets) {
      const cls = classOf(street);
      if (!byClass.has(cls)) byClass.set(cls, []);
      byClass.get(cls).push(street);
    }
    const classes = [...byClass.keys()].sort((a, b) => (STREET_RANK[a] ?? 3) - (STREET_RANK[b] ?? 3));
    const casings = svg("g", { class: "street-casings" });
    const fills = svg("g", { class: "street-fills" });
    for (const cls of classes) {
      // One path per class (many subpaths): a few dozen elements for a whole city centre.
      const d = byClass.get(cls).map((s) => this.pathData(s.points)).join("");
      const rank = STREET_RANK[cls] ?? 3;
      if (rank >= 2) casings.append(svg("path", { d, class: `street-casing street-${cls}` }));
      fills.append(svg("path", { d, class: `street street-${cls}`, "data-class": cls, "data-count": byClass.get(cls).length }));
    }
    this.layers.streets.replaceChildren(casings, fills);
    this.root.classList.toggle("with-streets", streets.length > 0);
    this.attribution.textContent = data.attribution || this.info.attribution || OSM_ATTRIBUTION;
    this.attribution.classList.toggle("hidden", streets.length === 0 && !this.tilesShown);
    this.drawNames();
  }

  /** Names along the longest piece of each named street that is long enough on screen. */
  drawNames() {
    if (!this.layers || !this.view) return;
    this.layers.names.replaceChildren();
    if (this.streets.length === 0) return;
    const k = this.view.w / WIDTH;
    const longest = new Map();
    for (const street of this.streets) {
      if (!street.name || !LABELLED.has(classOf(street))) continue;
      const xy = street.points.map(([lat, lon]) => this.project(lat, lon));
      let length = 0;
      for (let i = 1; i < xy.length; i += 1) length += Math.hypot(xy[i][0] - xy[i - 1][0], xy[i][1] - xy[i - 1][1]);
      const best = longest.get(street.name);
      if (!best || best.length < length) longest.set(street.name, { xy, length, cls: classOf(street) });
    }
    const defs = svg("defs");
    this.layers.names.append(defs);
    let n = 0;
    for (const [name, { xy, length, cls }] of longest) {
      // About 7 px a character at 12 px, in map units at this zoom.
      if (length / k < name.length * 7.5 + 24) continue;
      // A winding street would bend its name out of reading order: only fairly straight ones.
      const [first, last] = [xy[0], xy[xy.length - 1]];
      if (Math.hypot(last[0] - first[0], last[1] - first[1]) < length * LABEL_STRAIGHTNESS) continue;
      const { x, y, w, h } = this.view;
      if (!xy.some(([px, py]) => px >= x && px <= x + w && py >= y && py <= y + h)) continue;
      const forward = last[0] >= first[0];
      const line = forward ? xy : [...xy].reverse();
      n += 1;
      const id = `street-name-${Math.random().toString(36).slice(2, 8)}-${n}`;
      defs.append(svg("path", { id, d: line.map(([px, py], i) => `${i ? "L" : "M"}${px.toFixed(1)},${py.toFixed(1)}`).join("") }));
      const text = svg("text", { class: `street-name street-name-${cls}`, dy: "0.35em" });
      const onPath = svg("textPath", { href: `#${id}`, startOffset: "50%", "text-anchor": "middle" });
      onPath.textContent = name;
      text.append(onPath);
      this.layers.names.append(text);
    }
  }

  // ---- raster tiles (only with a configured tile server) ---------------------------------------

  drawTiles() {
    const template = this.info.tiles_url;
    if (!template || this.tilesFailed || !this.view) return;
    const box = this.viewBox(0.1);
    const lat = (box.north + box.south) / 2;
    const widthM = (box.east - box.west) * METRES_PER_DEG * Math.cos(lat * Math.PI / 180);
    const pixels = this.root.clientWidth || 800;
    const z = Math.max(0, Math.min(19, Math.round(Math.log2(156543.03 * Math.cos(lat * Math.PI / 180) * pixels / Math.max(widthM, 1)))));
    const n = 2 ** z;
    const tileX = (lon) => Math.floor((lon + 180) / 360 * n);
    const tileY = (la) => {
      const r = Math.max(-85.05, Math.min(85.05, la)) * Math.PI / 180;
      return Math.floor((1 - Math.log(Math.tan(r) + 1 / Math.cos(r)) / Math.PI) / 2 * n);
    };
    const lonOf = (tx) => tx / n * 360 - 180;
    const latOf = (ty) => Math.atan(Math.sinh(Math.PI * (1 - 2 * ty / n))) * 180 / Math.PI;
    const [x0, x1, y0, y1] = [tileX(box.west), tileX(box.east), tileY(box.north), tileY(box.south)];
    if ((x1 - x0 + 1) * (y1 - y0 + 1) > MAX_TILES) return;
    const images = [];
    for (let tx = x0; tx <= x1; tx += 1) {
      for (let ty = y0; ty <= y1; ty += 1) {
        const [ax, ay] = this.project(latOf(ty), lonOf(tx));
        const [bx, by] = this.project(latOf(ty + 1), lonOf(tx + 1));
        const href = template.replace("{z}", z).replace("{x}", tx).replace("{y}", ty).replace("{s}", "a");
        const image = svg("image", {
          href, x: ax.toFixed(2), y: ay.toFixed(2), width: (bx - ax).toFixed(2), height: (by - ay).toFixed(2),
          preserveAspectRatio: "none", class: "tile",
        });
        image.addEventListener("error", () => this.tilesUnavailable(), { once: true });
        images.push(image);
      }
    }
    this.layers.tiles.replaceChildren(...images);
    this.tilesShown = images.length > 0;
    this.attribution.classList.toggle("hidden", !this.tilesShown && this.streets.length === 0);
  }

  /** The tile server does not answer: draw the engine's streets instead. */
  tilesUnavailable() {
    if (this.tilesFailed) return;
    this.tilesFailed = true;
    this.tilesShown = false;
    this.layers.tiles.replaceChildren();
    this.scheduleStreets();
  }
}

// ---- the address box ------------------------------------------------------------------------
// Type an address and pick one of the engine's suggestions (GET /api/v1/geocode), or click the
// map to pick a point (named by GET /api/v1/geocode/reverse). Without geocoding it is the plain
// address + latitude + longitude fields of before.

/** Wait after the last keystroke before asking for suggestions. */
const DEBOUNCE_MS = 180;
const SUGGESTIONS = 8;

let pickers = 0;

function coordinates(lat, lon) {
  return `${lat.toFixed(5)}, ${lon.toFixed(5)}`;
}

/**
 * options: label; info (GET /api/v1/map); token; map (a MapView to mark the point on and to pick
 * from, optional); near ({lat, lon}: suggestions close to it first); initial ({lat, lon, address});
 * marker ([name, label] of the map marker); onChange(place or null); noun ("delivery address")
 * and at ("Delivering to") for its messages.
 * Returns { node, value(), resolve(), set(place), setNear(point), onChange } (onChange may be
 * replaced later).
 */
export function addressPicker({
  label, info, token, map = null, near = null, initial = null, marker = ["dropoff", "You"], onChange = () => {},
  noun = "delivery address", at = "Delivering to",
}) {
  return info.geocoding
    ? suggestingPicker({ label, token, map, near, initial, marker, onChange, noun, at })
    : coordinatePicker({ label, map, initial, marker, onChange, noun });
}

/** Today's fields: an address line and the point as numbers. */
function coordinatePicker({ label, map, initial, marker, onChange, noun }) {
  const handle = { onChange };
  const address = field(label, { name: "address", value: initial?.address ?? "", required: true });
  const lat = field("Latitude", { name: "lat", type: "number", step: "any", value: initial?.lat ?? "" });
  const lon = field("Longitude", { name: "lon", type: "number", step: "any", value: initial?.lon ?? "" });
  const node = el("div", {}, address.label, address.input,
    el("div", { class: "row" }, el("div", {}, lat.label, lat.input), el("div", {}, lon.label, lon.input)));
  function value() {
    const place = { lat: parseFloat(lat.input.value), lon: parseFloat(lon.input.value), address: address.input.value.trim() };
    return Number.isFinite(place.lat) && Number.isFinite(place.lon) ? place : null;
  }
  function set(place) {
    lat.input.value = place.lat;
    lon.input.value = place.lon;
    if (place.address) address.input.value = place.address;
    mark();
  }
  function mark() {
    const place = value();
    if (map && place) map.marker(marker[0], place.lat, place.lon, marker[1]);
    handle.onChange(place);
  }
  lat.input.addEventListener("change", mark);
  lon.input.addEventListener("change", mark);
  if (map) {
    map.onPick = (pickedLat, pickedLon) => {
      set({ lat: pickedLat, lon: pickedLon, address: address.input.value || coordinates(pickedLat, pickedLon) });
      map.refit();
    };
  }
  return Object.assign(handle, {
    node,
    value,
    set,
    setNear() {},
    async resolve() {
      const place = value();
      if (!place) throw new Error(`Enter the latitude and longitude of the ${noun}.`);
      if (!place.address) throw new Error(`Enter the ${noun}.`);
      return place;
    },
  });
}

/** The combobox (WAI-ARIA 1.2 pattern: input role=combobox, a listbox of options). */
function suggestingPicker({ label, token, map, near, initial, marker, onChange, noun, at }) {
  const handle = { onChange };
  pickers += 1;
  const id = `address-${pickers}`;
  const listId = `${id}-suggestions`;
  const statusId = `${id}-status`;
  const input = el("input", {
    id, name: "address", type: "text", role: "combobox", autocomplete: "off", spellcheck: "false",
    "aria-autocomplete": "list", "aria-expanded": "false", "aria-controls": listId, "aria-describedby": statusId,
    placeholder: "Street and house number",
  });
  const list = el("ul", { id: listId, role: "listbox", class: "suggestions hidden", "aria-label": "Address suggestions" });
  const status = el("p", { id: statusId, class: "address-status muted", role: "status", "aria-live": "polite" });
  const hint = map ? el("p", { class: "muted address-status" }, "Or click the map to pick the point.") : null;
  const node = el("div", { class: "combo" }, el("label", { for: id }, label), input, list, status, hint);

  let results = [];
  let active = -1;
  let chosen = null;
  let timer = null;
  let asked = 0;
  let nearPoint = near;

  function say(text, warn = false) {
    status.textContent = text;
    status.classList.toggle("warn", warn);
    status.classList.toggle("muted", !warn);
  }

  function close() {
    list.classList.add("hidden");
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
    active = -1;
  }

  function highlight(index) {
    active = index;
    [...list.children].forEach((option, i) => option.setAttribute("aria-selected", i === index ? "true" : "false"));
    const option = list.children[index];
    if (option) {
      input.setAttribute("aria-activedescendant", option.id);
      option.scrollIntoView({ block: "nearest" });
    } else {
      input.removeAttribute("aria-activedescendant");
    }
  }

  function show(found) {
    results = found;
    list.replaceChildren(...found.map((place, i) => el("li", {
      id: `${listId}-${i}`, role: "option", "aria-selected": "false",
      onmousedown: (event) => event.preventDefault(), // keep the focus in the box
      onclick: () => choose(place),
    }, place.label)));
    if (found.length === 0) {
      close();
      return;
    }
    list.classList.remove("hidden");
    input.setAttribute("aria-expanded", "true");
    highlight(-1);
  }

  function query(text, limit) {
    const params = new URLSearchParams({ q: text, limit: String(limit) });
    if (nearPoint) params.set("near", `${nearPoint.lat},${nearPoint.lon}`);
    return api(`/api/v1/geocode?${params}`, { token });
  }

  function unavailable(error) {
    return error.code === "maps_unavailable"
      ? new Error(map ? "Address search is not available right now. Click the map to pick the point." : "Address search is not available right now.")
      : error;
  }

  async function suggest() {
    const text = input.value.trim();
    const ask = ++asked;
    if (!text) {
      show([]);
      say("");
      return;
    }
    try {
      const { results: found } = await query(text, SUGGESTIONS);
      if (ask !== asked) return; // a newer keystroke asked again
      show(found);
      say(found.length === 0
        ? `No address matches “${text}”. Check the spelling${map ? ", or click the map to pick the point" : ""}.`
        : `${found.length} ${found.length === 1 ? "address" : "addresses"} found. Use the arrow keys or click to choose.`,
      found.length === 0);
    } catch (error) {
      if (ask !== asked) return;
      show([]);
      say(unavailable(error).message, true);
    }
  }

  function set(place, { announce = true } = {}) {
    chosen = { lat: place.lat, lon: place.lon, address: place.address ?? place.label };
    input.value = chosen.address;
    asked += 1; // an answer still on its way is for text no longer in the box
    close();
    if (announce) say(`${at} ${chosen.address}.`);
    if (map) {
      map.marker(marker[0], chosen.lat, chosen.lon, marker[1]);
      map.refit();
    }
    handle.onChange(chosen);
  }

  function choose(place) {
    set({ lat: place.lat, lon: place.lon, address: place.label });
  }

  input.addEventListener("input", () => {
    if (chosen) {
      chosen = null;
      handle.onChange(null);
    }
    clearTimeout(timer);
    timer = setTimeout(suggest, DEBOUNCE_MS);
  });
  input.addEventListener("keydown", (event) => {
    const open = !list.classList.contains("hidden");
    if (event.key === "ArrowDown") {
      event.preventDefault();
      if (!open && results.length) { list.classList.remove("hidden"); input.setAttribute("aria-expanded", "true"); }
      if (results.length) highlight(Math.min(active + 1, results.length - 1));
    } else if (event.key === "ArrowUp") {
      event.preventDefault();
      if (open && results.length) highlight(Math.max(active - 1, 0));
    } else if (event.key === "Enter") {
      if (open && active >= 0) {
        event.preventDefault();
        choose(results[active]);
      }
    } else if (event.key === "Escape") {
      if (open) {
        event.preventDefault();
        close();
      }
    }
  });
  input.addEventListener("blur", () => setTimeout(close, 150));
  input.addEventListener("focus", () => {
    if (!chosen && results.length) { list.classList.remove("hidden"); input.setAttribute("aria-expanded", "true"); }
  });

  if (map) {
    map.onPick = async (lat, lon) => {
      // The point counts at once; its name follows when the engine knows one.
      set({ lat, lon, address: coordinates(lat, lon) }, { announce: false });
      say(`${at} the point ${coordinates(lat, lon)}.`);
      const mine = asked;
      try {
        const place = await api(`/api/v1/geocode/reverse?lat=${lat}&lon=${lon}`, { token });
        if (mine !== asked || !chosen || chosen.lat !== lat || chosen.lon !== lon) return;
        chosen.address = place.label;
        input.value = place.label;
        say(`${at} ${place.label} (the point you picked).`);
        handle.onChange(chosen);
      } catch {
        // No name for it: the coordinates stay as the label.
      }
    };
  }
  if (initial && Number.isFinite(initial.lat) && Number.isFinite(initial.lon)) set(initial, { announce: false });

  return Object.assign(handle, {
    node,
    value: () => chosen,
    set,
    setNear(point) { nearPoint = point; },
    /** The chosen place; typed text nobody chose is looked up and its best match taken. */
    async resolve() {
      if (chosen) return chosen;
      const text = input.value.trim();
      if (!text) throw new Error(map ? `Type the ${noun}, or click the map to pick the point.` : `Type the ${noun}.`);
      let found;
      try {
        ({ results: found } = await query(text, 1));
      } catch (error) {
        throw unavailable(error);
      }
      if (found.length === 0) {
        const message = `No address matches “${text}”. Check the spelling${map ? ", or click the map to pick the point" : ""}.`;
        say(message, true);
        throw new Error(message);
      }
      choose(found[0]);
      return chosen;
    },
  });
}
