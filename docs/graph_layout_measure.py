"""The hand layout of shared/graph_drawing.py against networkx's layered layout, on the project's own graphs: the
autograd lesson's drawings from a run's results.json, measured (crossings, arrows through boxes, edge length, size)
and drawn both ways (docs/graph-layout.md).

    python compare.py --task autograd --out /tmp/autograd
    python docs/graph_layout_measure.py /tmp/autograd/results.json docs
"""
from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import networkx as nx

from shared import graph_drawing as gd

SHOWN = ("tf_function_z", "torch_export_cond")  # the two drawn in docs/graph-layout.md


def networkx_layout(graph: dict) -> dict:
    """The same layers (left to right, data-flow order), placed by networkx.multipartite_layout; straight arrows."""
    g = nx.DiGraph()
    g.add_nodes_from(n["id"] for n in graph["nodes"])
    g.add_edges_from((e["source"], e["target"]) for e in graph["edges"])
    generations = {k: list(gen) for k, gen in enumerate(nx.topological_generations(g))}
    pos = nx.multipartite_layout(g, subset_key=generations, align="vertical")
    layer = {n: k for k, gen in generations.items() for n in gen}
    sizes = {n["id"]: gd.box_size(n["label"]) for n in graph["nodes"]}
    widths = [max(sizes[n][0] for n in gen) for gen in generations.values()]
    x, centres = gd.MARGIN, []
    for w in widths:
        centres.append(x + w / 2)
        x += w + gd.LAYER_GAP
    # networkx spaces a layer's nodes evenly: scale so that the closest two boxes keep ROW_GAP between them
    scale = 1.0
    for gen in generations.values():
        ys = sorted((pos[n][1], n) for n in gen)
        for (y0, a), (y1, b) in zip(ys, ys[1:]):
            need = (sizes[a][1] + sizes[b][1]) / 2 + gd.ROW_GAP
            scale = max(scale, need / max(y1 - y0, 1e-9))
    ys = {n: pos[n][1] * scale for n in g}
    bottom = min(ys[n] - sizes[n][1] / 2 for n in g)
    top = max(ys[n] + sizes[n][1] / 2 for n in g)
    boxes = {n: (centres[layer[n]], ys[n] - bottom + gd.MARGIN, *sizes[n]) for n in g}
    routes = [[(boxes[e["source"]][0] + boxes[e["source"]][2] / 2, boxes[e["source"]][1]),
               (boxes[e["target"]][0] - boxes[e["target"]][2] / 2, boxes[e["target"]][1])] for e in graph["edges"]]
    gd.spread_ports(graph, boxes, routes)
    return {"nodes": boxes, "edges": routes, "size": (x - gd.LAYER_GAP + gd.MARGIN, top - bottom + 2 * gd.MARGIN)}


def _cross(p, q, r, s) -> bool:
    def orient(a, b, c):
        v = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        return 0 if abs(v) < 1e-9 else (1 if v > 0 else -1)
    return orient(p, q, r) * orient(p, q, s) < 0 and orient(r, s, p) * orient(r, s, q) < 0


def _through_box(p, q, box) -> bool:
    """Does segment p-q pass through the inside of the box (shrunk by a hair)?"""
    x, y, w, h = box
    x0, x1, y0, y1 = x - w / 2 + 1e-3, x + w / 2 - 1e-3, y - h / 2 + 1e-3, y + h / 2 - 1e-3
    for t in [k / 200 for k in range(201)]:
        px, py = p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])
        if x0 < px < x1 and y0 < py < y1:
            return True
    return False


def measures(graph: dict, placed: dict) -> dict:
    segments = [[(a, b) for a, b in zip(route, route[1:])] for route in placed["edges"]]
    crossings = 0
    for (i, si), (j, sj) in itertools.combinations(enumerate(segments), 2):
        ei, ej = graph["edges"][i], graph["edges"][j]
        if {ei["source"], ei["target"]} & {ej["source"], ej["target"]}:
            continue  # arrows that share a box meet there, by design
        crossings += any(_cross(*a, *b) for a in si for b in sj)
    length = sum(((b[0] - a[0]) ** 2 + (b[1] - a[1]) ** 2) ** 0.5 for s in segments for a, b in s)
    through = sum(any(_through_box(a, b, box) for a, b in s)
                  for e, s in zip(graph["edges"], segments)
                  for node_id, box in placed["nodes"].items() if node_id not in (e["source"], e["target"]))
    width, height = placed["size"]
    return {"nodes": len(graph["nodes"]), "edges": len(graph["edges"]), "crossings": crossings,
            "arrows_through_boxes": through, "edge_length_in": round(length, 2), "width_in": round(width, 2),
            "height_in": round(height, 2)}


def main(results: Path, out: Path) -> None:
    found = json.loads(results.read_text())
    drawings = {name: one for result in found["frameworks"].values()
                for name, one in (result.get("drawings") or {}).items()}
    print(json.dumps(sorted(drawings), indent=0))
    rows, hand_layout = [], gd.layout
    totals = {"hand": {}, "networkx": {}}
    for name, one in drawings.items():
        for panel in one["panels"]:
            for method, fn in (("hand", hand_layout), ("networkx", networkx_layout)):
                m = measures(panel, fn(panel))
                rows.append({"drawing": name, "panel": panel["title"], "layout": method, **m})
                for k in ("crossings", "arrows_through_boxes", "edge_length_in"):
                    totals[method][k] = round(totals[method].get(k, 0) + m[k], 2)
    shown = [drawings[name] for name in SHOWN if name in drawings]
    for method, fn in (("hand", hand_layout), ("networkx", networkx_layout)):
        gd.layout = fn
        gd.draw_beside(shown, out / f"graph-layout-{method}.png")
    gd.layout = hand_layout
    (out / "graph-layout-measures.json").write_text(json.dumps({"rows": rows, "totals": totals}, indent=1))
    print(json.dumps(totals, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
