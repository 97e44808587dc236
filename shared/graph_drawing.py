"""Graphs drawn as graphs, with no framework and no Graphviz: the framework-free description of a graph that
tf_impl/autograd.py and torch_impl/autograd.py each build from their own graph objects (a tf.function's concrete
graph; a grad_fn chain, an FX graph), a layered left-to-right layout in data-flow order, and the matplotlib drawing.

A drawing is plain JSON, so it travels in results.json from each side's process to the report:

    {"title": str, "caption": str, "panels": [{"title": str, "nodes": [node], "edges": [edge]}, ...]}
    node: {"id": str, "label": str (lines joined by newlines), "kind": one of KINDS}
    edge: {"source": node id, "target": node id, "label": str (what travels along it: a shape, a value)}

Each panel is one graph (a tf.function's graph, each branch function of its conditional, each graph Dynamo
captured); a drawing stacks its panels top to bottom, and `draw_beside` puts several drawings next to each other.

The layout is the project's own because it is measurably better on these graphs than networkx's layered layout
(no crossings against 7, one arrow through a box against 12), and Graphviz's dot would need a system binary on
every machine: docs/graph-layout.md.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from shared.plotting import pyplot, save_figure

# What a node is, and how it is drawn: (fill colour, border colour, legend text).
KINDS = {
    "input": ("#d9f2d9", "#2e7d32", "input (placeholder, argument)"),
    "const": ("#eeeeee", "#757575", "constant baked into the graph"),
    "op": ("#dbe9f7", "#1f5fa8", "operation"),
    "cond": ("#ffe9a8", "#b8860b", "conditional (both branches inside)"),
    "subgraph": ("#eadcf5", "#6a3d9a", "a branch graph, held by the conditional"),
    "grad": ("#fbe0d6", "#c0392b", "backward node (grad_fn)"),
    "leaf": ("#c8e6c9", "#1b5e20", "AccumulateGrad: writes a leaf's .grad"),
    "output": ("#fff8e1", "#8d6e63", "output"),
    "break": ("#ffcdd2", "#b71c1c", "graph break: Python runs here"),
}

FONT_SIZE = 9  # points; the figure is laid out in inches, so the text keeps this size at any graph size
EDGE_FONT_SIZE = 7.5
CHAR_WIDTH = 0.075  # inches per character at FONT_SIZE (DejaVu Sans, generous)
LINE_HEIGHT = 0.18  # inches per text line
BOX_PAD = 0.14  # inches around the text inside a box
LAYER_GAP = 0.95  # inches between the boxes of neighbouring layers (the arrows and their labels live there)
ROW_GAP = 0.32  # inches between boxes in one layer
PANEL_TITLE = 0.42  # inches above a panel for its title
TITLE = 0.5  # inches for a drawing's title
BLOCK_GAP = 0.5  # inches between drawings drawn beside (or above) each other
LEGEND = 0.55  # inches for the legend at the bottom
MARGIN = 0.2


def node(node_id: str, label: str, kind: str = "op") -> dict:
    if kind not in KINDS:
        raise ValueError(f"unknown node kind {kind!r}; one of {', '.join(KINDS)}")
    return {"id": node_id, "label": label, "kind": kind}


def edge(source: str, target: str, label: str = "") -> dict:
    return {"source": source, "target": target, "label": label}


def panel(title: str, nodes: list[dict], edges: list[dict]) -> dict:
    """One graph. Edges must join nodes of this panel; a node listed twice is one node."""
    ids = [n["id"] for n in nodes]
    unique = {n["id"]: n for n in nodes}
    missing = {e["source"] for e in edges} | {e["target"] for e in edges}
    missing -= set(unique)
    if missing:
        raise ValueError(f"panel {title!r}: edges name nodes it does not have: {sorted(missing)}")
    return {"title": title, "nodes": [unique[i] for i in dict.fromkeys(ids)], "edges": edges}


def drawing(title: str, panels: list[dict], caption: str = "") -> dict:
    return {"title": title, "caption": caption, "panels": panels}


# ---- layout: layers in data-flow order, left to right ------------------------------------------------------

def box_size(label: str) -> tuple[float, float]:
    """Width and height in inches of a node's box."""
    lines = label.split("\n")
    return (max(0.75, CHAR_WIDTH * max(len(line) for line in lines) + 2 * BOX_PAD),
            LINE_HEIGHT * len(lines) + 2 * BOX_PAD)


def layers(graph: dict) -> dict[str, int]:
    """Each node's layer: the longest path to it from a node without inputs, so every edge points to a later layer;
    a node without inputs (an input, a constant) then moves right up to the layer before its first reader, so a
    constant sits beside the operation that reads it. Raises ValueError on a cycle."""
    ids = [n["id"] for n in graph["nodes"]]
    inputs, outputs = defaultdict(list), defaultdict(list)
    for e in graph["edges"]:
        inputs[e["target"]].append(e["source"])
        outputs[e["source"]].append(e["target"])
    layer, pending = {}, {i: len(inputs[i]) for i in ids}
    ready = [i for i in ids if pending[i] == 0]
    while ready:
        current = ready.pop(0)
        layer[current] = max((layer[s] + 1 for s in inputs[current]), default=0)
        for target in outputs[current]:
            pending[target] -= 1
            if pending[target] == 0:
                ready.append(target)
    if len(layer) != len(ids):
        raise ValueError(f"graph {graph.get('title')!r} has a cycle through {sorted(set(ids) - set(layer))}")
    for i in ids:
        if not inputs[i] and outputs[i]:
            layer[i] = min(layer[t] for t in outputs[i]) - 1
    return layer


def layout(graph: dict) -> dict:
    """Positions in inches for one panel: {"nodes": {id: (x, y, w, h)}, "edges": [[(x, y), ...] per edge],
    "size": (width, height)}. Edges that skip layers pass through reserved slots (so they never cross a box);
    the order inside each layer follows the neighbours' mean position (a few sweeps each way), which keeps the
    arrows short and mostly uncrossed."""
    layer = layers(graph)
    sizes = {n["id"]: box_size(n["label"]) for n in graph["nodes"]}
    # Long edges become chains through dummy slots, one per layer they skip.
    chains, succ, pred = [], defaultdict(list), defaultdict(list)
    slots = {i: layer[i] for i in layer}
    for index, e in enumerate(graph["edges"]):
        chain = [e["source"]]
        for step in range(layer[e["source"]] + 1, layer[e["target"]]):
            dummy = f"\0{index}:{step}"
            slots[dummy] = step
            sizes[dummy] = (0.0, 0.22)
            chain.append(dummy)
        chain.append(e["target"])
        for a, b in zip(chain, chain[1:]):
            succ[a].append(b)
            pred[b].append(a)
        chains.append(chain)
    count = max(slots.values(), default=-1) + 1
    order = [[i for i in slots if slots[i] == k] for k in range(count)]  # dict order: the order nodes were listed

    def rank(k: int, neighbours: dict) -> None:
        where = {i: p for layer_nodes in order for p, i in enumerate(layer_nodes)}
        centre = {i: (len(order[slots[i]]) - 1) / 2 for i in where}

        def key(i):
            near = [where[j] - centre[j] for j in neighbours[i]]
            return sum(near) / len(near) if near else where[i] - centre[i]

        order[k].sort(key=key)

    for _ in range(4):
        for k in range(1, count):
            rank(k, pred)
        for k in range(count - 2, -1, -1):
            rank(k, succ)
    widths = [max((sizes[i][0] for i in layer_nodes), default=0.0) for layer_nodes in order]
    x, centres = MARGIN, []
    for w in widths:
        centres.append(x + w / 2)
        x += w + LAYER_GAP
    width = x - LAYER_GAP + MARGIN
    y = _heights(order, sizes, pred, succ)
    bottom = min((y[i] - sizes[i][1] / 2 for i in y), default=0.0)
    top = max((y[i] + sizes[i][1] / 2 for i in y), default=0.0)
    height = top - bottom + 2 * MARGIN
    boxes = {i: (centres[slots[i]], y[i] - bottom + MARGIN, *sizes[i]) for i in y}
    routes = []
    for chain in chains:
        points = [(boxes[chain[0]][0] + boxes[chain[0]][2] / 2, boxes[chain[0]][1])]
        points += [(boxes[d][0], boxes[d][1]) for d in chain[1:-1]]
        points.append((boxes[chain[-1]][0] - boxes[chain[-1]][2] / 2, boxes[chain[-1]][1]))
        routes.append(points)
    spread_ports(graph, boxes, routes)
    return {"nodes": {i: boxes[i] for i in layer}, "edges": routes, "size": (width, height)}


def _heights(order: list[list[str]], sizes: dict, pred: dict, succ: dict) -> dict[str, float]:
    """Vertical centres: each layer stacked in its order, then moved a few times towards the mean height of each
    node's neighbours (the nearest placement that keeps the order and the gaps), so chains run straight."""
    y = {}
    for layer_nodes in order:
        level = 0.0
        for i in layer_nodes:
            y[i] = level - sizes[i][1] / 2
            level -= sizes[i][1] + ROW_GAP
        shift = -(level + ROW_GAP) / 2  # centred on 0
        for i in layer_nodes:
            y[i] += shift
    for _ in range(6):
        for layer_nodes, neighbours in [(k, pred) for k in order[1:]] + [(k, succ) for k in reversed(order[:-1])]:
            wanted = [sum(y[j] for j in neighbours[i]) / len(neighbours[i]) if neighbours[i] else y[i]
                      for i in layer_nodes]
            for i, value in zip(layer_nodes, _nearest_in_order(wanted, [sizes[i][1] for i in layer_nodes])):
                y[i] = value
    return y


def _nearest_in_order(wanted: list[float], heights: list[float]) -> list[float]:
    """Heights top to bottom as near as possible (least squares) to `wanted` while each box stays ROW_GAP below
    the one above: with offsets o (the gaps summed) this is u = y + o non-increasing, an isotonic regression
    (pool adjacent violators)."""
    offsets = [0.0]
    for upper, lower in zip(heights, heights[1:]):
        offsets.append(offsets[-1] + (upper + lower) / 2 + ROW_GAP)
    blocks = []  # [mean, count], means non-increasing
    for value in (w + o for w, o in zip(wanted, offsets)):
        blocks.append([value, 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            (m2, n2), (m1, n1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    u = [mean for mean, count in blocks for _ in range(count)]
    return [value - o for value, o in zip(u, offsets)]


def spread_ports(graph: dict, boxes: dict, routes: list) -> None:
    """Several arrows into (or out of) one box meet its side at points spread over its height, in the order of
    where they come from, so they stay apart (the shared x of z = 2x^2 + 5x has two)."""
    for end, index, other in (("target", -1, -2), ("source", 0, 1)):
        by_node = defaultdict(list)
        for e, route in zip(graph["edges"], routes):
            by_node[e[end]].append(route)
        for node_id, node_routes in by_node.items():
            if len(node_routes) < 2:
                continue
            _, y, _, h = boxes[node_id]
            node_routes.sort(key=lambda r: -r[other][1])
            step = min(0.14, 0.7 * h / (len(node_routes) - 1))
            for k, route in enumerate(node_routes):
                route[index] = (route[index][0], y + step * ((len(node_routes) - 1) / 2 - k))


# ---- drawing --------------------------------------------------------------------------------------------------

def _render_panel(axis, graph: dict, placed: dict) -> None:
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    from matplotlib.path import Path as MplPath

    kinds = {n["id"]: n for n in graph["nodes"]}
    for e, points in zip(graph["edges"], placed["edges"]):
        codes = [MplPath.MOVETO] + [MplPath.LINETO] * (len(points) - 1)
        axis.add_patch(FancyArrowPatch(path=MplPath(points, codes), arrowstyle="-|>", mutation_scale=11,
                                       color="#444444", linewidth=1.1, shrinkA=0, shrinkB=1, zorder=1))
        if e["label"]:
            (x0, y0), (x1, y1) = points[0], points[1]
            axis.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.02, e["label"], fontsize=EDGE_FONT_SIZE, ha="center",
                      va="bottom", color="#333333", zorder=3,
                      bbox={"boxstyle": "round,pad=0.12", "facecolor": "white", "edgecolor": "none", "alpha": 0.9})
    for node_id, (x, y, w, h) in placed["nodes"].items():
        fill, border, _ = KINDS[kinds[node_id]["kind"]]
        dashed = kinds[node_id]["kind"] in ("const", "break")
        axis.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.08",
                                      facecolor=fill, edgecolor=border, linewidth=1.4, zorder=2,
                                      linestyle="--" if dashed else "-"))
        axis.text(x, y, kinds[node_id]["label"], fontsize=FONT_SIZE, ha="center", va="center", zorder=4,
                  linespacing=1.15)


def _block(one: dict) -> dict:
    """A drawing laid out: its panels, and its size in inches with its title and caption."""
    placed = [layout(p) for p in one["panels"]]
    width = max([p["size"][0] for p in placed] + [CHAR_WIDTH * 1.15 * len(one["title"]) + 0.4])
    caption = _wrap(one["caption"], width) if one["caption"] else ""
    caption_h = (LINE_HEIGHT * 1.1 * (caption.count("\n") + 1) + 0.2) if caption else 0.0
    height = TITLE + sum(p["size"][1] + PANEL_TITLE for p in placed) + caption_h
    return {"drawing": one, "placed": placed, "width": width, "height": height, "caption": caption}


def _render_block(figure, block: dict, x: float, top: float, size: tuple) -> set:
    """Draw a laid-out drawing with its top-left corner at (x, top) inches; returns the node kinds it used."""
    width, height = size
    one, used = block["drawing"], set()
    figure.text((x + block["width"] / 2) / width, (top - TITLE / 2) / height, one["title"], ha="center",
                va="center", fontsize=11, fontweight="bold")
    y = top - TITLE
    for graph, place in zip(one["panels"], block["placed"]):
        pw, ph = place["size"]
        y -= PANEL_TITLE
        figure.text((x + 0.05) / width, (y + 0.08) / height, graph["title"], fontsize=9.5, style="italic",
                    va="bottom", ha="left")
        axis = figure.add_axes(((x + (block["width"] - pw) / 2) / width, (y - ph) / height, pw / width, ph / height))
        axis.set_xlim(0, pw)
        axis.set_ylim(0, ph)
        axis.axis("off")
        _render_panel(axis, graph, place)
        used.update(n["kind"] for n in graph["nodes"])
        y -= ph
    if block["caption"]:
        figure.text((x + 0.05) / width, (y - 0.1) / height, block["caption"], fontsize=8.5, va="top", ha="left",
                    linespacing=1.25)
    return used


def draw_beside(drawings: list[dict], path: Path, stacked: bool = False) -> Path:
    """Drawings next to each other, left to right (stacked=True: top to bottom), each with its panels stacked and
    its caption underneath, and one legend of the node kinds used. Written atomically as PNG."""
    from matplotlib.patches import Patch


    blocks = [_block(d) for d in drawings]
    gaps = BLOCK_GAP * (len(blocks) - 1)
    if stacked:
        width = max(b["width"] for b in blocks) + 2 * MARGIN
        body = sum(b["height"] for b in blocks) + gaps
    else:
        width = sum(b["width"] for b in blocks) + gaps + 2 * MARGIN
        body = max(b["height"] for b in blocks)
    height = body + LEGEND + 2 * MARGIN
    figure = pyplot().figure(figsize=(width, height))
    used, x, top = set(), MARGIN, height - MARGIN
    for block in blocks:
        used |= _render_block(figure, block, x, top, (width, height))
        if stacked:
            top -= block["height"] + BLOCK_GAP
        else:
            x += block["width"] + BLOCK_GAP
    handles = [Patch(facecolor=KINDS[k][0], edgecolor=KINDS[k][1], label=KINDS[k][2]) for k in KINDS if k in used]
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False,
                  bbox_to_anchor=(0.5, MARGIN / height))
    return save_figure(figure, path)


def draw(one: dict, path: Path) -> Path:
    """One drawing (its panels stacked) as a PNG."""
    return draw_beside([one], path)


def _wrap(text: str, width_in: float) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, max(30, int(width_in / (CHAR_WIDTH * 0.95)))))

