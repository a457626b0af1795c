"""The coupled-neuron graph: edge values against direct computations, analysis, selection, I/O."""

import itertools
import json

import networkx as nx
import numpy as np
import pytest
import torch

from spin_interp import ablate
from spin_interp import graph as sg
from spin_interp.attribution import WeightScores, score_neurons
from spin_interp.models import hf_parameters, model_fingerprint
from spin_interp.select import Selection
from spin_interp.testing import tiny_examples, tiny_model

N_LAYERS, D_MLP, D_MODEL = 3, 64, 32


@pytest.fixture(scope="module")
def llama3():
    return tiny_model("llama", n_layers=N_LAYERS)


def _synthetic_scores(model, seed=0):
    """Dense neuron scores with the model's fingerprint (random, but reproducible)."""
    fp = model_fingerprint(model)
    gen = torch.Generator().manual_seed(seed)
    modules = [f"model.layers.{i}.mlp" for i in range(N_LAYERS)]
    out = {}
    for key in ("fairness", "privacy", "general"):
        values = {m: torch.rand(D_MLP, generator=gen) for m in modules}
        meta = {"model_fingerprint": fp, "method": "synthetic"}
        out[key] = WeightScores({m: (D_MLP,) for m in modules}, values, None, meta)
    return out


def _cos(a, b):
    a, b = a.detach(), b.detach()
    return float(a @ b / (a.norm() * b.norm()))


# -------------------------------------------------------------------------------------------------
# edges


def test_virtual_weights_equal_direct_cosines(llama3):
    cands = [(0, 3), (0, 10), (1, 5), (1, 63), (2, 0), (2, 7), (2, 40)]
    G = sg.build_neuron_graph(llama3, cands, threshold=0.0, dtype=torch.float64)
    assert G.is_directed()
    # every pair from an earlier to a later layer, nothing within a layer or backwards
    expected = {
        (sg.node_id(*a), sg.node_id(*b)) for a, b in itertools.permutations(cands, 2) if a[0] < b[0]
    }
    assert set(G.edges()) == expected
    p = {k: v.detach().double() for k, v in hf_parameters(llama3).items()}
    for u, v, d in G.edges(data=True):
        (lu, iu), (lv, iv) = (tuple(map(int, x[1:].split(".mlp."))) for x in (u, v))
        out_dir = p[f"model.layers.{lu}.mlp.down_proj.weight"][:, iu]  # [d_model, d_mlp] column
        gate = p[f"model.layers.{lv}.mlp.gate_proj.weight"][iv]  # [d_mlp, d_model] row
        up = p[f"model.layers.{lv}.mlp.up_proj.weight"][iv]
        cg, cu = _cos(out_dir, gate), _cos(out_dir, up)
        assert d["cos_gate"] == pytest.approx(cg, abs=1e-12)
        assert d["cos_up"] == pytest.approx(cu, abs=1e-12)
        best, row = (cu, up) if abs(cu) > abs(cg) else (cg, gate)
        assert d["weight"] == pytest.approx(best, abs=1e-12)
        assert d["abs_weight"] == pytest.approx(abs(best), abs=1e-12)
        assert d["read"] == ("up" if row is up else "gate")
        assert d["dot"] == pytest.approx(float(out_dir @ row), rel=1e-10)


def test_threshold_keeps_exactly_the_strong_pairs(llama3):
    cands = [(layer, u) for layer in range(N_LAYERS) for u in range(0, D_MLP, 4)]
    full = sg.build_neuron_graph(llama3, cands, threshold=0.0, read="up")
    G = sg.build_neuron_graph(llama3, cands, threshold=0.25, read="up")
    strong = {(u, v) for u, v, d in full.edges(data=True) if abs(d["weight"]) >= 0.25}
    assert set(G.edges()) == strong and 0 < len(strong) < full.number_of_edges()
    assert all(d["read"] == "up" and "cos_gate" not in d for _, _, d in G.edges(data=True))
    # float32 default agrees with float64
    G64 = sg.build_neuron_graph(llama3, cands, threshold=0.25, read="up", dtype=torch.float64)
    for u, v, d in G.edges(data=True):
        assert d["weight"] == pytest.approx(G64[u][v]["weight"], abs=1e-6)


def test_fold_norm_uses_the_mlp_input_gain():
    m = tiny_model("llama", n_layers=2)
    gain = hf_parameters(m)["model.layers.1.post_attention_layernorm.weight"]
    with torch.no_grad():
        gain.copy_(torch.linspace(0.2, 3.0, D_MODEL))
    G = sg.build_neuron_graph(m, [(0, 1), (1, 2)], threshold=0.0, read="gate", fold_norm=True)
    p = hf_parameters(m)
    o = p["model.layers.0.mlp.down_proj.weight"][:, 1].double()
    r = p["model.layers.1.mlp.gate_proj.weight"][2].double() * gain.double()
    d = G["L0.mlp.1"]["L1.mlp.2"]
    assert d["weight"] == pytest.approx(_cos(o, r), abs=1e-6)
    assert G.graph["fold_norm"] is True


def test_gpt2_conv1d_layout():
    m = tiny_model("gpt2", n_layers=2)
    G = sg.build_neuron_graph(m, [(0, 5), (1, 100)], threshold=0.0, dtype=torch.float64)
    p = hf_parameters(m)
    o = p["transformer.h.0.mlp.c_proj.weight"][5].double()  # Conv1D [d_mlp, d_model]: row
    r = p["transformer.h.1.mlp.c_fc.weight"][:, 100].double()  # Conv1D [d_model, d_mlp]: column
    d = G["L0.mlp.5"]["L1.mlp.100"]
    assert d["weight"] == pytest.approx(_cos(o, r), abs=1e-12) and d["read"] == "up"
    assert G.graph["shapes"] == {f"transformer.h.{i}.mlp": 128 for i in range(2)}
    with pytest.raises(ValueError, match="no gate projection"):
        sg.build_neuron_graph(m, [(0, 5), (1, 100)], read="gate")


def test_coactivation_equals_numpy_corrcoef(llama3):
    cands = [(layer, u) for layer in range(N_LAYERS) for u in range(0, 12)]
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 3))
    acts = base @ rng.normal(size=(3, len(cands))) + 0.7 * rng.normal(size=(40, len(cands)))
    G = sg.build_neuron_graph(llama3, cands, edges="coactivation", activations=acts, threshold=0.3)
    assert not G.is_directed()
    r = np.corrcoef(acts, rowvar=False)
    nodes = [sg.node_id(*c) for c in cands]
    want = {
        frozenset((nodes[i], nodes[j]))
        for i in range(len(cands))
        for j in range(i + 1, len(cands))
        if abs(r[i, j]) >= 0.3
    }
    assert {frozenset(e) for e in G.edges()} == want and len(want) > 10
    for u, v, d in G.edges(data=True):
        i, j = nodes.index(u), nodes.index(v)
        assert d["weight"] == pytest.approx(r[i, j], abs=1e-12)
    assert G.graph["n_prompts"] == 40


def test_collect_unit_activations_matches_the_cache(llama3):
    cands = [(2, 9), (0, 4), (0, 1)]
    examples = tiny_examples(4, seed=3)
    acts = sg.collect_unit_activations(llama3, examples, cands, progress=False)
    assert acts.shape == (4, 3)
    order = sg.candidate_units(llama3, cands)
    assert [(layer, u) for layer, _, u in order] == [(0, 1), (0, 4), (2, 9)]
    from spin_interp.models import encode_examples

    enc, _ = encode_examples(llama3, examples[:1])
    _, cache = llama3.run_with_cache(enc[0].input_ids[None])
    mask = enc[0].labels != -100
    for col, (layer, _, unit) in enumerate(order):
        direct = cache[f"blocks.{layer}.mlp.hook_post"][0][mask][:, unit].mean()
        assert float(acts[0, col]) == pytest.approx(float(direct), abs=1e-6)
    every = sg.collect_unit_activations(llama3, examples, cands, positions="all", progress=False)
    assert not torch.equal(every, acts)
    # examples passed straight to build_neuron_graph give the same graph
    G1 = sg.build_neuron_graph(llama3, cands, edges="coactivation", activations=acts, threshold=0.0)
    G2 = sg.build_neuron_graph(
        llama3, cands, edges="coactivation", examples=examples, threshold=0.0, progress=False
    )
    assert set(G1.edges()) == set(G2.edges())


# -------------------------------------------------------------------------------------------------
# nodes, analysis


def test_node_attributes_and_mi(llama3):
    scores = _synthetic_scores(llama3)
    sel = Selection(
        {f"model.layers.{i}.mlp": (D_MLP,) for i in range(N_LAYERS)},
        {"model.layers.1.mlp": torch.tensor([2, 5]), "model.layers.2.mlp": torch.tensor([7])},
    )
    G = sg.build_neuron_graph(
        llama3, sel, scores=scores, threshold=0.0, mi={"L1.mlp.2": 0.5, (2, 7): 0.25}
    )
    d = G.nodes["L1.mlp.5"]
    assert (d["layer"], d["module"], d["unit"]) == (1, "model.layers.1.mlp", 5)
    for key in ("fairness", "privacy", "general"):
        assert d[key] == pytest.approx(float(scores[key]["model.layers.1.mlp"][5]))
    assert G.nodes["L1.mlp.2"]["mi"] == 0.5 and G.nodes["L2.mlp.7"]["mi"] == 0.25
    assert "mi" not in d
    assert G.graph["model_fingerprint"] == model_fingerprint(llama3)
    assert G.graph["scores"] == ["fairness", "general", "privacy"]


def test_louvain_is_deterministic_with_a_seed(llama3):
    cands = [(layer, u) for layer in range(N_LAYERS) for u in range(D_MLP)]
    G = sg.build_neuron_graph(llama3, cands, threshold=0.3)
    a, b = sg.communities(G, seed=3), sg.communities(G, seed=3)
    assert a == b and len(a) > 1
    assert set().union(*a) == set(G.nodes)
    # a graph with the same nodes and edges added in another order gives the same answer
    H = nx.DiGraph()
    H.graph.update(G.graph)
    H.add_nodes_from(reversed(list(G.nodes(data=True))))
    H.add_edges_from(reversed(list(G.edges(data=True))))
    assert sg.communities(H, seed=3) == a


def test_components_centrality_profile_summaries(llama3):
    G = sg.build_neuron_graph(
        llama3,
        [(layer, u) for layer in range(N_LAYERS) for u in range(D_MLP)],
        scores=_synthetic_scores(llama3),
        threshold=0.35,
    )
    comps = sg.components(G)
    assert sum(len(c) for c in comps) == G.number_of_nodes()
    assert [len(c) for c in comps] == sorted((len(c) for c in comps), reverse=True)
    deg = sg.centrality(G, "degree")
    n = G.number_of_nodes()
    assert all(deg[x] == pytest.approx(G.degree(x) / (n - 1)) for x in G)
    b1 = sg.centrality(G, "betweenness", k=20, seed=1)
    assert b1 == sg.centrality(G, "betweenness", k=20, seed=1)
    # in a 3-layer DAG only middle-layer units lie on paths
    exact = sg.centrality(G, "betweenness", k=None)
    assert all(v == 0 for x, v in exact.items() if G.nodes[x]["layer"] != 1)
    prof = sg.layer_profile(G)
    assert [r["layer"] for r in prof] == [0, 1, 2]
    assert sum(r["out_later"] for r in prof) == G.number_of_edges()
    assert prof[0]["in_earlier"] == 0 and prof[-1]["out_later"] == 0
    assert "mean_fairness" in prof[0]
    s = sg.graph_summary(G, betweenness=True)
    assert s["nodes"] == n and s["edges"] == G.number_of_edges() and s["directed"]
    assert s["components"] == len(comps) and s["top_hubs"][0]["degree"] == max(
        dict(G.degree()).values()
    )
    assert len(s["top_betweenness"]) == 10
    json.dumps(s)  # JSON-ready
    rows = sg.summary(G, top=5)
    assert len(rows) == 5 and rows[0]["degree"] >= rows[-1]["degree"]
    assert {"node", "layer", "unit", "community", "fairness"} <= set(rows[0])
    sg.annotate_graph(G, betweenness_k=10)
    assert all("community" in d and "betweenness" in d for _, d in G.nodes(data=True))


# -------------------------------------------------------------------------------------------------
# selection


def _planted_graph():
    """Two 6-cliques: A (high fairness and privacy, low general) and B (low), plus loose nodes."""
    G = nx.Graph()
    G.graph.update(shapes={"model.layers.0.mlp": 16, "model.layers.1.mlp": 16}, edges="weights")
    G.graph["model_fingerprint"] = "m0"
    for i in range(16):
        layer = i % 2
        high = i < 6
        G.add_node(
            sg.node_id(layer, i),
            layer=layer,
            module=f"model.layers.{layer}.mlp",
            unit=i,
            fairness=1.0 + i if high else 0.01 * i,
            privacy=2.0 + i if high else 0.02 * i,
            general=0.001 * i if high else 1.0 + i,
        )
    nodes = list(G.nodes)
    for a, b in itertools.combinations(nodes[:6], 2):
        G.add_edge(a, b, weight=0.9)
    for a, b in itertools.combinations(nodes[6:12], 2):
        G.add_edge(a, b, weight=-0.8)
    G.add_edge(nodes[12], nodes[0], weight=0.4)  # a hub-ish extra edge onto A
    return G, nodes


def test_select_by_graph_policies_on_a_planted_graph():
    G, nodes = _planted_graph()
    hubs = sg.select_by_graph(G, "hubs", budget=1)
    assert hubs.count() == 1 and hubs["model.layers.0.mlp"].tolist() == [0]  # degree 6
    comm = sg.select_by_graph(G, "community", budget=4)
    chosen = {sg.node_id(i % 2, i) for i in itertools.chain(*comm.to_sets().values())}
    assert comm.count() == 4 and chosen <= set(nodes[:6])
    assert comm.meta["communities_used"][0]["size"] == 7  # A and the node hanging on it
    # a budget larger than the best community fills from the next one
    assert sg.select_by_graph(G, "community", budget=9).count() == 9
    core = sg.select_by_graph(G, "coupled_core", budget=10)
    got = {sg.node_id(i % 2, i) for i in itertools.chain(*core.to_sets().values())}
    assert got == set(nodes[:6]) and core.meta["core_k"] == 5
    for sel, policy in ((hubs, "hubs"), (comm, "community"), (core, "coupled_core")):
        assert sel.meta["mode"] == f"graph-{policy}" and sel.fingerprint == "m0"
        assert sel.shapes == {"model.layers.0.mlp": (16,), "model.layers.1.mlp": (16,)}


def test_select_budgets_and_edit_reverts_bit_exactly(llama3):
    scores = {
        k: score_neurons(llama3, tiny_examples(3, seed=s), progress=False)
        for s, k in enumerate(("fairness", "privacy", "general"))
    }
    cands = [(layer, u) for layer in range(N_LAYERS) for u in range(D_MLP)]
    G = sg.build_neuron_graph(llama3, cands, scores=scores, threshold=0.3)
    snap = {k: v.detach().clone() for k, v in hf_parameters(llama3).items()}
    for policy in sg.POLICIES:
        for budget in (1, 7):
            sel = sg.select_by_graph(G, policy, budget=budget, seed=0, high=0.3, low=0.7)
            assert 1 <= sel.count() <= budget
            if policy != "coupled_core":
                assert sel.count() == budget
            assert sel.shapes == {f"model.layers.{i}.mlp": (D_MLP,) for i in range(N_LAYERS)}
            assert sel.fingerprint == model_fingerprint(llama3)
            assert sel == sg.select_by_graph(G, policy, budget=budget, seed=0, high=0.3, low=0.7)
            edit = ablate.zero_neurons(llama3, sel)
            wsel = sg.to_weight_selection(llama3, sel)
            assert wsel.count() == edit.n_entries() == sel.count() * 3 * D_MODEL
            with edit.applied():
                params = hf_parameters(llama3)
                for name, idx in wsel.indices.items():
                    assert torch.all(params[name].reshape(-1)[idx] == 0)
            assert all(torch.equal(snap[k], v) for k, v in hf_parameters(llama3).items())
            # the weight form zeroes exactly the same entries and reverts too
            wedit = ablate.zero_weights(llama3, wsel)
            assert {n: i.tolist() for n, (i, _) in wedit.changes.items()} == {
                n: i.tolist() for n, (i, _) in edit.changes.items()
            }
            with wedit.applied():
                pass
            assert all(torch.equal(snap[k], v) for k, v in hf_parameters(llama3).items())
    hubs = sg.select_by_graph(G, "hubs", budget=5)
    deg = dict(G.degree())
    picked = {sg.node_id(int(m.split(".")[2]), u) for m, s in hubs.to_sets().items() for u in s}
    assert min(deg[x] for x in picked) >= max(deg[x] for x in G if x not in picked)


# -------------------------------------------------------------------------------------------------
# saving, loading, drawing


@pytest.mark.parametrize("suffix", [".graphml", ".json"])
def test_round_trip(llama3, tmp_path, suffix):
    G = sg.build_neuron_graph(
        llama3,
        [(layer, u) for layer in range(N_LAYERS) for u in range(0, D_MLP, 2)],
        scores=_synthetic_scores(llama3),
        threshold=0.3,
        mi={(0, 0): 0.125},
    )
    sg.annotate_graph(G)
    path = sg.save_graph(G, tmp_path / f"g{suffix}")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    H = sg.load_graph(path)
    assert H.is_directed() and list(H.nodes) == list(G.nodes)
    assert dict(H.nodes(data=True)) == dict(G.nodes(data=True))
    assert {(u, v): d for u, v, d in H.edges(data=True)} == {
        (u, v): d for u, v, d in G.edges(data=True)
    }
    assert H.graph["shapes"] == G.graph["shapes"] and H.graph["threshold"] == 0.3
    assert sg.communities(H, seed=2) == sg.communities(G, seed=2)
    assert sg.select_by_graph(H, "community", budget=6) == sg.select_by_graph(
        G, "community", budget=6
    )


def test_draw_graph(llama3, tmp_path):
    pytest.importorskip("matplotlib")
    G = sg.build_neuron_graph(
        llama3,
        [(layer, u) for layer in range(N_LAYERS) for u in range(D_MLP)],
        scores=_synthetic_scores(llama3),
        threshold=0.35,
    )
    for color_by in ("community", "fairness"):
        out = sg.draw_graph(G, tmp_path / f"g_{color_by}.png", color_by=color_by)
        assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no attribute"):
        sg.draw_graph(G, tmp_path / "x.png", color_by="nope")


# -------------------------------------------------------------------------------------------------
# errors


def test_errors(llama3, tmp_path):
    ok = [(0, 1), (1, 2)]
    with pytest.raises(ValueError, match="empty"):
        sg.build_neuron_graph(llama3, [])
    empty_sel = Selection({"model.layers.0.mlp": (D_MLP,)}, {})
    with pytest.raises(ValueError, match="empty"):
        sg.build_neuron_graph(llama3, empty_sel)
    with pytest.raises(ValueError, match="unknown edges kind"):
        sg.build_neuron_graph(llama3, ok, edges="attention")
    with pytest.raises(ValueError, match="layer 9 does not exist"):
        sg.build_neuron_graph(llama3, [(9, 1)])
    with pytest.raises(ValueError, match=r"unit must be an int in \[0, 64\)"):
        sg.build_neuron_graph(llama3, [(0, 64)])
    with pytest.raises(ValueError, match="not an MLP module"):
        sg.build_neuron_graph(llama3, [("model.layers.0.attn", 1)])
    wname = "model.layers.0.mlp.up_proj.weight"
    with pytest.raises(ValueError, match="NEURON selection"):
        sg.build_neuron_graph(llama3, Selection({wname: (64, 32)}, {wname: torch.tensor([1])}))
    with pytest.raises(ValueError, match="has 64 units"):
        sg.build_neuron_graph(
            llama3, Selection({"model.layers.0.mlp": (8,)}, {"model.layers.0.mlp": [1]})
        )
    with pytest.raises(ValueError, match="threshold must be in"):
        sg.build_neuron_graph(llama3, ok, threshold=1.5)
    with pytest.raises(ValueError, match="unknown read"):
        sg.build_neuron_graph(llama3, ok, read="down")
    with pytest.raises(ValueError, match="needs activations"):
        sg.build_neuron_graph(llama3, ok, edges="coactivation")
    with pytest.raises(ValueError, match=r"must be \[n_prompts, 2\]"):
        sg.build_neuron_graph(llama3, ok, edges="coactivation", activations=torch.zeros(5, 3))
    with pytest.raises(ValueError, match="max_edges"):
        sg.build_neuron_graph(
            llama3,
            [(layer, u) for layer in range(2) for u in range(10)],
            threshold=0.0,
            max_edges=50,
        )
    with pytest.raises(ValueError, match="not a candidate node"):
        sg.build_neuron_graph(llama3, ok, mi={"L2.mlp.3": 1.0})
    wscores = WeightScores({wname: (64, 32)}, {wname: torch.rand(64, 32)}, None, {})
    with pytest.raises(ValueError, match="score_neurons"):
        sg.build_neuron_graph(llama3, ok, scores={"fairness": wscores})
    other = _synthetic_scores(llama3)
    other["privacy"].meta["model_fingerprint"] = "someone-else"
    with pytest.raises(ValueError, match="different models"):
        sg.build_neuron_graph(llama3, ok, scores=other)
    with pytest.raises(ValueError, match="score the neurons of this model"):
        sg.build_neuron_graph(
            tiny_model("llama", n_layers=N_LAYERS, seed=4), ok, scores=_synthetic_scores(llama3)
        )

    G = sg.build_neuron_graph(llama3, ok, threshold=0.0)
    with pytest.raises(ValueError, match="unknown policy"):
        sg.select_by_graph(G, "random", budget=3)
    with pytest.raises(ValueError, match="budget must be a positive int"):
        sg.select_by_graph(G, "hubs", budget=0)
    with pytest.raises(ValueError, match="needs a 'fairness' score"):
        sg.select_by_graph(G, "community", budget=3)
    with pytest.raises(ValueError, match="no nodes"):
        sg.select_by_graph(nx.Graph(), "hubs", budget=3)
    with pytest.raises(ValueError, match="not an MLP or attention module"):
        sg.to_weight_selection(llama3, Selection({"x.mlp": (4,)}, {"x.mlp": [1]}))
    with pytest.raises(ValueError, match="unknown centrality"):
        sg.centrality(G, "eigen")

    with pytest.raises(ValueError, match="use .graphml or .json"):
        sg.save_graph(G, tmp_path / "g.gexf")
    G.nodes["L0.mlp.1"]["vector"] = [1, 2]
    with pytest.raises(ValueError, match="GraphML holds only"):
        sg.save_graph(G, tmp_path / "g.graphml")
    assert not list(tmp_path.iterdir())  # nothing half-written
    (tmp_path / "x.json").write_text('{"nodes": []}')
    with pytest.raises(ValueError, match="not a graph saved by"):
        sg.load_graph(tmp_path / "x.json")
    with pytest.raises(FileNotFoundError):
        sg.load_graph(tmp_path / "missing.graphml")
