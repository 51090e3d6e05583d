// Annotation overlays as SVG in the image's own pixel space (viewBox = image size), laid
// over an <img> with object-fit: contain, so shapes line up at any displayed size.

import { classColor, svg } from "./dom.js";

/**
 * Index of a DICE/COCO document: categories by id (name, colour, skeleton) and the
 * annotations of each image path.
 */
export function indexDocument(doc) {
  const categories = new Map();
  for (const c of doc.categories || []) {
    if (c.name === "__background__") continue;
    categories.set(Number(c.id), {
      id: Number(c.id),
      name: c.name,
      color: classColor(c.id),
      keypoints: c.keypoints || [],
      // COCO writes pairs ([[1, 2], ...]); the protos flatten them: accept both
      skeleton: (c.skeleton || []).flat().map(Number),
    });
  }
  const pathOf = new Map();
  for (const img of doc.images || []) pathOf.set(img.id, img.file_name);
  const byPath = new Map();
  for (const ann of doc.annotations || []) {
    const path = pathOf.get(ann.image_id);
    if (path === undefined) continue;
    let list = byPath.get(path);
    if (!list) {
      list = [];
      byPath.set(path, list);
    }
    list.push(ann);
  }
  const sizes = new Map();
  for (const img of doc.images || []) sizes.set(img.file_name, [img.width, img.height]);
  return { categories, byPath, sizes };
}

function polygonsOf(ann) {
  const seg = ann.segmentation;
  if (Array.isArray(seg)) return seg.filter((p) => Array.isArray(p) && p.length >= 6);
  return []; // RLE masks are not drawn as outlines
}

/**
 * An <svg> with one <g class="ann" data-cat> per annotation: its box (<rect>), polygons
 * (<polygon>), keypoints (<circle>) with skeleton (<line>), and the class name.
 * `items` are {categoryId, box:{x,y,width,height}, polygons:[[x,y,...]], keypoints:[{x,y,v}],
 * score, label}.
 */
export function overlaySvg(width, height, items, categories, { labels = true } = {}) {
  const w = Number(width) || 1;
  const hgt = Number(height) || 1;
  // lines are drawn in screen pixels (vector-effect: non-scaling-stroke in the CSS); text
  // and keypoint dots scale with the image, so they keep their size relative to it
  const side = Math.max(w, hgt);
  const stroke = side / 250;
  const fontSize = side / 30;
  const root = svg("svg", {
    class: "overlay",
    viewBox: `0 0 ${w} ${hgt}`,
    preserveAspectRatio: "xMidYMid meet",
    "aria-hidden": "true",
    focusable: "false",
  });
  for (const it of items) {
    const cat = categories.get(Number(it.categoryId)) || {
      name: it.label || `class ${it.categoryId}`,
      color: classColor(it.categoryId),
      skeleton: [],
    };
    const color = cat.color;
    const g = svg("g", {
      class: "ann",
      "data-cat": String(it.categoryId),
      "data-class": cat.name,
      stroke: color,
      "stroke-width": 2,
      fill: "none",
    });
    const polys = it.polygons || [];
    for (const p of polys) {
      const pts = [];
      for (let i = 0; i + 1 < p.length; i += 2) pts.push(`${p[i]},${p[i + 1]}`);
      g.append(svg("polygon", { points: pts.join(" "), fill: color, "fill-opacity": "0.25" }));
    }
    const box = it.box;
    if (box && box.width > 0 && box.height > 0) {
      g.append(
        svg("rect", {
          x: box.x,
          y: box.y,
          width: box.width,
          height: box.height,
          "stroke-dasharray": polys.length ? "6 4" : null,
        }),
      );
    }
    const kps = it.keypoints || [];
    if (kps.length) {
      const sk = cat.skeleton || [];
      for (let i = 0; i + 1 < sk.length; i += 2) {
        const a = kps[sk[i] - 1];
        const b = kps[sk[i + 1] - 1];
        if (a && b && a.v > 0 && b.v > 0) {
          g.append(svg("line", { class: "bone", x1: a.x, y1: a.y, x2: b.x, y2: b.y }));
        }
      }
      kps.forEach((k, i) => {
        if (k.v > 0) {
          g.append(
            svg("circle", {
              class: "kp",
              cx: k.x,
              cy: k.y,
              r: side / 100,
              fill: k.v === 2 ? color : "white",
              "data-kp": String(i),
            }),
          );
        }
      });
    }
    if (labels) {
      const anchor = box && box.width > 0 ? [box.x, box.y] : firstPoint(polys, kps);
      if (anchor) {
        const text = it.score !== undefined ? `${cat.name} ${(it.score * 100).toFixed(0)}%` : cat.name;
        g.append(
          svg(
            "text",
            {
              x: anchor[0] + stroke,
              y: Math.max(fontSize, anchor[1] - stroke),
              fill: color,
              stroke: "white",
              "stroke-width": fontSize / 6,
              "paint-order": "stroke",
              "font-size": fontSize,
              class: "ann-label",
            },
            text,
          ),
        );
      }
    }
    root.append(g);
  }
  return root;
}

function firstPoint(polys, kps) {
  if (polys.length) return [polys[0][0], polys[0][1]];
  const k = kps.find((p) => p.v > 0);
  return k ? [k.x, k.y] : null;
}

/** A COCO annotation as an overlay item. */
export function itemFromAnnotation(ann) {
  const kps = [];
  const raw = ann.keypoints || [];
  for (let i = 0; i + 2 < raw.length; i += 3) {
    kps.push({ x: raw[i], y: raw[i + 1], v: raw[i + 2] });
  }
  const b = ann.bbox;
  return {
    categoryId: ann.category_id,
    box: Array.isArray(b) && b.length === 4 ? { x: b[0], y: b[1], width: b[2], height: b[3] } : null,
    polygons: polygonsOf(ann),
    keypoints: kps,
  };
}

/** A Predict detection as an overlay item. */
export function itemFromDetection(d) {
  return {
    categoryId: d.categoryId ?? 0,
    label: d.categoryName,
    score: d.score ?? 0,
    box: d.box
      ? { x: d.box.x || 0, y: d.box.y || 0, width: d.box.width || 0, height: d.box.height || 0 }
      : null,
    polygons: (d.polygons || []).map((p) => p.coordinates || []).filter((p) => p.length >= 6),
    keypoints: (d.keypoints || []).map((k) => ({ x: k.x || 0, y: k.y || 0, v: k.visibility || 2 })),
  };
}
