"""Tests for :mod:`atp_graph.topology`: seeded generated graphs and graphs read from files, validated up front."""

from __future__ import annotations

import networkx as nx
import pytest

from atp_graph.games.topology import TOPOLOGIES, TopologyError, build_graph, load_graph


def _edges(g: nx.Graph) -> list[tuple[int, int]]:
    return sorted(tuple(sorted(e)) for e in g.edges())


def _params(topology: str) -> dict:
    # Erdős–Rényi needs a p well above ln(n)/n to be connected for every seed tried here.
    return {"p": 0.5} if topology == "random" else {"p": 0.3}


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg, msg
    return msg


def test_topology_names():
    assert set(TOPOLOGIES) == {"complete", "small-world", "scale-free", "ring", "grid", "random", "star"}


@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("n", [5, 8, 12, 24])
def test_builds_connected_graph_of_n_nodes(topology, n):
    g = build_graph(topology, n, seed=1, **_params(topology))
    assert sorted(g.nodes()) == list(range(n))
    assert nx.is_connected(g)
    assert nx.number_of_selfloops(g) == 0
    assert _edges(g) == _edges(build_graph(topology, n, seed=1, **_params(topology)))


def test_shapes_by_hand():
    assert build_graph("complete", 6).number_of_edges() == 15
    assert build_graph("ring", 6).number_of_edges() == 6
    assert all(d == 2 for _, d in build_graph("ring", 9).degree())
    star = build_graph("star", 6)
    assert sorted(d for _, d in star.degree()) == [1, 1, 1, 1, 1, 5]
    assert build_graph("grid", 12).number_of_edges() == 17  # 3 x 4 lattice
    assert build_graph("grid", 7).number_of_edges() == 6  # prime: a 1 x 7 path
    sw = build_graph("small-world", 20, k=4, p=0.0)
    assert all(d == 4 for _, d in sw.degree())
    assert build_graph("scale-free", 20, m=2).number_of_edges() == 2 * (20 - 2)


@pytest.mark.parametrize("topology", ["small-world", "random", "scale-free"])
def test_seed_changes_random_topologies(topology):
    edge_sets = {tuple(_edges(build_graph(topology, 24, seed=s, **_params(topology)))) for s in range(4)}
    assert len(edge_sets) == 4


@pytest.mark.parametrize(
    ("args", "kwargs", "words"),
    [
        (("small-world", 10), {"k": 10}, "--k"),
        (("small-world", 10), {"k": 30}, "--k"),
        (("small-world", 10), {"k": 1}, "--k"),
        (("small-world", 10), {"p": 1.5}, "--p"),
        (("small-world", 10), {"p": -0.1}, "--p"),
        (("random", 10), {"p": 2.0}, "--p"),
        (("scale-free", 5), {"m": 5}, "--m"),
        (("scale-free", 5), {"m": 0}, "--m"),
        (("hypercube", 10), {}, "unknown topology 'hypercube'"),
        (("complete", 1), {}, "--agents"),
        (("ring", 0), {}, "--agents"),
        (("star", -3), {}, "--agents"),
        (("random", 30), {"p": 0.0}, "disconnected"),
    ],
)
def test_bad_parameters(args, kwargs, words):
    with pytest.raises(TopologyError) as info:
        build_graph(*args, **kwargs)
    assert words in _one_line_error(info)


def test_unknown_topology_lists_choices():
    with pytest.raises(TopologyError) as info:
        build_graph("mesh", 5)
    msg = _one_line_error(info)
    assert all(t in msg for t in TOPOLOGIES)


# ---------------------------------------------------------------- graphs from files


def _triangle_with_tail() -> nx.Graph:
    g = nx.Graph()
    g.add_edges_from([("alice", "bob"), ("bob", "carol"), ("carol", "alice"), ("carol", "dave")])
    return g


def _same_shape(loaded: nx.Graph, original: nx.Graph) -> None:
    assert sorted(loaded.nodes()) == list(range(original.number_of_nodes()))
    labels = {i: d["label"] for i, d in loaded.nodes(data=True)}
    assert sorted(map(str, labels.values())) == sorted(map(str, original.nodes()))
    got = sorted(tuple(sorted((str(labels[u]), str(labels[v])))) for u, v in loaded.edges())
    want = sorted(tuple(sorted((str(u), str(v)))) for u, v in original.edges())
    assert got == want


def test_load_edge_list(tmp_path):
    g = _triangle_with_tail()
    path = tmp_path / "g.txt"
    nx.write_edgelist(g, path, data=False)
    with open(path, "a") as f:
        f.write("# a comment\ndave dave\n")  # comments ignored, self-loops dropped
    loaded = load_graph(path)
    _same_shape(loaded, g)
    assert nx.number_of_selfloops(loaded) == 0


def test_load_csv_edge_list(tmp_path):
    g = _triangle_with_tail()
    path = tmp_path / "g.csv"
    nx.write_edgelist(g, path, delimiter=",", data=False)
    _same_shape(load_graph(path), g)


def test_load_graphml(tmp_path):
    g = _triangle_with_tail()
    path = tmp_path / "g.graphml"
    nx.write_graphml(g, path)
    _same_shape(load_graph(path), g)


def test_load_gml(tmp_path):
    g = nx.convert_node_labels_to_integers(_triangle_with_tail())
    path = tmp_path / "g.gml"
    nx.write_gml(g, path)
    loaded = load_graph(path)
    assert loaded.number_of_nodes() == 4 and _edges(loaded) == _edges(g)


def test_load_directed_multigraph_becomes_simple_undirected(tmp_path):
    g = nx.MultiDiGraph([(0, 1), (1, 0), (1, 2), (1, 2)])
    path = tmp_path / "g.graphml"
    nx.write_graphml(g, path)
    loaded = load_graph(path)
    assert type(loaded) is nx.Graph and loaded.number_of_edges() == 2


def test_load_larger_graph(tmp_path):
    g = nx.karate_club_graph()
    path = tmp_path / "karate.edges"
    nx.write_edgelist(g, path, data=False)
    loaded = load_graph(path)
    assert loaded.number_of_nodes() == 34 and loaded.number_of_edges() == 78


def _write_disconnected(path):
    g = nx.Graph([(0, 1), (1, 2), (3, 4)])
    if path.suffix == ".graphml":
        nx.write_graphml(g, path)
    elif path.suffix == ".gml":
        nx.write_gml(g, path)
    else:
        nx.write_edgelist(g, path, data=False)


@pytest.mark.parametrize("name", ["d.txt", "d.graphml", "d.gml"])
def test_disconnected_file_rejected(tmp_path, name):
    path = tmp_path / name
    _write_disconnected(path)
    with pytest.raises(TopologyError) as info:
        load_graph(path)
    msg = _one_line_error(info)
    assert str(path) in msg and "disconnected (2 components)" in msg


def test_too_small_files_rejected(tmp_path):
    one = nx.Graph()
    one.add_node("solo")
    nx.write_graphml(one, tmp_path / "one.graphml")
    (tmp_path / "loop.txt").write_text("a a\n")
    (tmp_path / "empty.txt").write_text("")
    for name, has in [("one.graphml", 1), ("loop.txt", 1), ("empty.txt", 0)]:
        with pytest.raises(TopologyError) as info:
            load_graph(tmp_path / name)
        assert f"needs at least 2 nodes, has {has}" in _one_line_error(info)


def test_missing_file(tmp_path):
    with pytest.raises(TopologyError) as info:
        load_graph(tmp_path / "missing.txt")
    assert _one_line_error(info) == f"{tmp_path / 'missing.txt'}: cannot read: no such file"


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("g.graphml", "this is not xml <<<\n{{{"),
        ("g.graphml", b"\x89PNG\r\n\x1a\n\x00\x00\xff"),
        ("g.graphml", '<?xml version="1.0"?><graphml><graph><node id="a"/><edge source="a"'),
        ("g.gml", "this is not a graph ]]["),
        ("g.gml", b"\x89PNG\r\n\x1a\n\x00\x00\xff"),
        ("g.txt", b"\xff\xfe\x00 \x80\x81\n"),
        ("g.csv", b"a,b\n\xff,\xfe\n"),
    ],
)
def test_garbage_rejected_in_one_line(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(TopologyError) as info:
        load_graph(path)
    assert _one_line_error(info).startswith(f"{path}: ")


def test_directory_is_not_a_graph(tmp_path):
    with pytest.raises(TopologyError) as info:
        load_graph(tmp_path)
    assert _one_line_error(info).startswith(f"{tmp_path}: ")


def test_malformed_edge_list_line_rejected(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("alice bob\nbob carol\ncarol\n")  # last line truncated
    with pytest.raises(TopologyError):
        load_graph(path)
