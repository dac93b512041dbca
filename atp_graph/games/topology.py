"""Social graphs: seeded NetworkX topologies and graphs read from files, validated before a run starts."""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from ..config import TOPOLOGIES
from ..errors import UserError, printable
from ..scenarios.loader import FileProblem, read_regular


class TopologyError(UserError):
    """A graph that cannot host a diffusion run."""


MAX_EDGES = 2_000_000
"""Most edges a generated graph may have (beyond it, building the graph and playing rounds take hours)."""


def implied_edges(topology: str, n: int, *, k: int = 4, p: float = 0.1, m: int = 2) -> int:
    """About how many edges ``topology`` has on ``n`` nodes (the expected count for ``random``)."""
    full = n * (n - 1) // 2
    counts = {
        "complete": full,
        "small-world": n * (k // 2),
        "scale-free": (n - m) * m,
        "ring": n,
        "grid": 2 * n,
        "random": int(p * full),
        "star": n - 1,
    }
    return counts.get(topology, full)


def build_graph(topology: str, n: int, *, k: int = 4, p: float = 0.1, m: int = 2, seed: int = 0) -> nx.Graph:
    """Build a seeded graph on nodes ``0..n-1``.

    ``small-world``: Watts–Strogatz (each node joined to ``k`` nearest ring neighbours, rewired with prob. ``p``;
    connected variant). ``scale-free``: Barabási–Albert with ``m`` edges per new node. ``random``: Erdős–Rényi
    with edge probability ``p``. ``grid``: the most square 2-D lattice with ``n`` nodes.
    """
    if topology not in TOPOLOGIES:
        raise TopologyError(f"unknown topology {topology!r}; choose one of {', '.join(TOPOLOGIES)}")
    if n < 2:
        raise TopologyError(f"--agents must be at least 2, got {n}")
    if not 0 <= p <= 1:
        raise TopologyError(f"--p must be in [0, 1], got {p}")
    edges = implied_edges(topology, n, k=k, p=p, m=m)
    if edges > MAX_EDGES:
        raise TopologyError(
            f"{topology} graph of {n:,} agents would have about {edges:,} edges, over the limit of {MAX_EDGES:,}; "
            "use fewer --agents or a sparser topology"
        )
    if topology == "complete":
        g = nx.complete_graph(n)
    elif topology == "small-world":
        if not 2 <= k < n:
            raise TopologyError(f"--k must be at least 2 and below --agents ({n}), got {k}")
        g = nx.connected_watts_strogatz_graph(n, k, p, tries=200, seed=seed)
    elif topology == "scale-free":
        if not 1 <= m < n:
            raise TopologyError(f"--m must be at least 1 and below --agents ({n}), got {m}")
        g = nx.barabasi_albert_graph(n, m, seed=seed)
    elif topology == "ring":
        g = nx.cycle_graph(n)
    elif topology == "grid":
        rows = max(r for r in range(1, int(n**0.5) + 1) if n % r == 0)
        g = nx.convert_node_labels_to_integers(nx.grid_2d_graph(rows, n // rows))
    elif topology == "random":
        g = nx.gnp_random_graph(n, p, seed=seed)
    else:
        g = nx.star_graph(n - 1)
    check_graph(g, f"{topology} graph")
    return g


MAX_GRAPH_BYTES = 256 * 1024**2
"""Largest graph file read."""


def load_graph(path: str | Path) -> nx.Graph:
    """Read an edge list (``.txt``/``.edges``/``.csv``), GraphML or GML file; nodes are relabelled ``0..n-1``
    (the original labels are kept in the ``label`` attribute). A file of more than :data:`MAX_EDGES` edges is
    refused, as a generated graph would be."""
    path = Path(path)
    try:
        raw = read_regular(path, MAX_GRAPH_BYTES)
    except FileProblem as e:
        raise TopologyError(f"{printable(str(path))}: {e}") from None
    parallel, numbered = 0, False
    try:
        if path.suffix.lower() == ".graphml":
            g = nx.parse_graphml(raw)
        elif path.suffix.lower() == ".gml":
            g = nx.parse_gml(raw.decode("utf-8").splitlines(), label="id")
        else:
            g, parallel = _read_edge_list(path, raw.decode("utf-8"))
            numbered = True
    except TopologyError:
        raise
    except Exception as e:  # networkx raises many types for malformed files
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TopologyError(f"{path}: cannot read graph: {printable(first)}") from None
    _check_size(g.number_of_edges(), path)
    notes = []
    if g.is_directed():
        notes.append(f"{path}: directed graph read as undirected (agents see each other both ways)")
    if g.is_multigraph() or g.is_directed():
        simple = nx.Graph(g.to_undirected() if g.is_directed() else g)
        parallel = g.number_of_edges() - simple.number_of_edges() if g.is_multigraph() else 0
        g = simple
    if parallel:
        notes.append(f"{path}: {parallel} parallel edge(s) merged")
    loops = nx.number_of_selfloops(g)
    if loops:
        notes.append(f"{path}: {loops} self-loop(s) removed (an agent is not its own neighbour)")
    g.remove_edges_from(list(nx.selfloop_edges(g)))
    if not numbered:
        g = nx.convert_node_labels_to_integers(g, label_attribute="label")
    check_graph(g, str(path))
    g.graph["notes"] = notes
    return g


def _check_size(edges: int, path: Path) -> None:
    """Refuse a graph file of more than :data:`MAX_EDGES` edges (the limit of a generated graph)."""
    if edges > MAX_EDGES:
        raise TopologyError(f"{path}: more than {MAX_EDGES:,} edges, the most a graph may have")


def _read_edge_list(path: Path, text: str) -> tuple[nx.Graph, int]:
    """Read ``u v`` (or ``u v weight``; commas allowed) per line of ``text``; ``#`` starts a comment. Every other
    line is an error naming its line number: a silently skipped line would change the graph. Returns the graph,
    its nodes already numbered ``0..n-1`` in order of first appearance (the file's names in ``label``), and how
    many repeated edges were merged (the caller notes them)."""
    rows = text.splitlines()
    _check_size(sum(1 for row in rows if row.split("#", 1)[0].strip()), path)  # before building anything
    ids: dict[str, int] = {}
    g = nx.Graph()
    parallel = 0
    for no, raw in enumerate(rows, 1):
        line = raw.split("#", 1)[0].replace(",", " ").split()
        if not line:
            continue
        if len(line) not in (2, 3):
            raise TopologyError(f"{path}:{no}: expected 'u v' (an edge per line), got '{printable(raw.strip())}'")
        u, v = (ids.setdefault(x, len(ids)) for x in line[:2])
        if g.has_edge(u, v):
            parallel += 1
        else:
            g.add_edge(u, v)
    nx.set_node_attributes(g, {i: label for label, i in ids.items()}, "label")
    return g, parallel


def check_graph(g: nx.Graph, what: str) -> None:
    """Reject graphs with fewer than 2 nodes or more than one component."""
    if g.number_of_nodes() < 2:
        raise TopologyError(f"{what}: needs at least 2 nodes, has {g.number_of_nodes()}")
    if not nx.is_connected(g):
        parts = nx.number_connected_components(g)
        hint = "; try a larger --p or another --seed" if what.startswith("random") else ""
        raise TopologyError(f"{what}: graph is disconnected ({parts} components); diffusion needs one component{hint}")
