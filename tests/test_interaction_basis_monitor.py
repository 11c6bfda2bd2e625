"""InteractionBasisMonitor end to end: real fits on scikit-learn digits, read back from TensorBoard event files."""

import copy

import lightning.pytorch as pl
import pytest
import torch
from helpers import fit_digits, read_events
from torch import nn

from lightning_probes.datasets import load_digits_tensors
from lightning_probes.measures.interaction_basis import edges_for_mass, find_sections, interaction_graph
from lightning_probes.models import MLPClassifier
from lightning_probes.monitors.interaction_basis import InteractionBasisMonitor
from lightning_probes.schedules import every

LAYERS = ["features.0", "features.2", "classifier"]
SCALARS = ["n_directions", "n_directions_pca", "edges_90", "edges_90_pca", "edges_99", "edges_99_pca",
           "constant_edge_share", "constant_edge_share_pca", "constant_lambda"]


def small_model():
    return MLPClassifier(hidden=(24, 16), lr=0.2)


def probe_data(n=160):
    x, y = load_digits_tensors()
    return x[:n], y[:n]


def fit(tmp_path, monitor, max_steps=20, model=None, **trainer_kw):
    return fit_digits(tmp_path, monitor, model or small_model(), max_steps, **trainer_kw)


def test_fit_logs_every_tag_the_dashboard_and_pictures(tmp_path):
    monitor = InteractionBasisMonitor(layers=LAYERS, schedule=every(10), images_every=2, num_samples=160,
                                      probe_data=probe_data(), ablation=True)
    fit(tmp_path, monitor, max_steps=15)
    events = read_events(str(tmp_path))
    for layer in LAYERS:
        for name in SCALARS:
            steps = [s for s, _ in events.scalars[f"probes/lib/{layer}/{name}"]]
            assert steps == [0, 10, 15], (layer, name)  # at_start, every(10), at_end
        assert events.images[f"probes/lib/edges/{layer}"] == [0, 15]  # probes 0, 2 (the final one)
        assert f"probes/lib/ablation/{layer}" in events.images
    assert "probes/lib/lambda_spectrum" in events.images
    assert "| layer | LIB dirs |" in events.texts["probes/lib/summary"][-1]
    assert set(events.charts()["probes/lib"]) == {
        "directions kept: LIB vs PCA", *(f"edges holding {q}% of the edge mass ({basis})" for q in (90, 99)
                                        for basis in ("LIB", "PCA")),
        "share of the edge mass on the constant direction", "the constant direction's eigenvalue"}
    logged = dict(events.scalars["probes/lib/features.2/n_directions"])
    assert logged == {s: v["features.2/n_directions"] for s, v in monitor.history}
    for _, values in monitor.history:
        for layer in LAYERS:  # M lives in the whitened PCA space: LIB never keeps more than PCA
            assert 1 <= values[f"{layer}/n_directions"] <= values[f"{layer}/n_directions_pca"]
            assert values[f"{layer}/edges_90"] <= values[f"{layer}/edges_99"]
            assert values[f"{layer}/edges_90_pca"] <= values[f"{layer}/edges_99_pca"]


def test_logged_figures_equal_the_measure_run_by_hand(tmp_path):
    x, y = probe_data()
    monitor = InteractionBasisMonitor(layers=LAYERS, schedule=every(100), images_every=0, num_samples=160,
                                      probe_data=(x, y), at_end=False)
    model = small_model()
    fresh = copy.deepcopy(model).eval()  # the weights the step-0 probe saw
    fit(tmp_path, monitor, max_steps=1, model=model)  # one probe, at step 0, before the first update
    step, logged = monitor.history[0]
    assert step == 0
    f = fresh.features
    sections = [f[0:2], f[2:4], fresh.classifier]
    with torch.no_grad():
        acts = [x]
        for s in sections:
            acts.append(s(acts[-1]))
    graph = interaction_graph(sections, acts)  # defaults: raw logits at the output, plain gradients
    last = len(LAYERS) - 1
    for depth, layer in enumerate(LAYERS):
        lib, pca = graph.bases.lib[depth], graph.bases.pca[depth]
        # the constant direction is column 0 of both bases, its feature constant over the probe set, and apart
        assert lib.constant and pca.constant
        features = lib.features(acts[depth])
        assert float(features[:, 0].std()) < 1e-9 * float(features[:, 0].abs().mean())
        assert logged[f"{layer}/constant_lambda"] == pytest.approx(float(features[0, 0]) ** 2)
        assert logged[f"{layer}/n_directions"] == lib.n_directions - 1
        assert logged[f"{layer}/n_directions_pca"] == pca.n_directions - 1
        # counts over the data directions: the constant's column, and its row unless the next node is the logits
        rows = slice(0, None) if depth == last else slice(1, None)
        E_lib, E_pca = graph.lib_edges[depth], graph.pca_edges[depth]
        assert logged[f"{layer}/edges_90"] == edges_for_mass(E_lib[rows, 1:], 0.9)
        assert logged[f"{layer}/edges_99_pca"] == edges_for_mass(E_pca[rows, 1:], 0.99)
        for key, E in (("constant_edge_share", E_lib), ("constant_edge_share_pca", E_pca)):
            share = 1 - float(E[rows, 1:].sum() / E.sum())
            assert logged[f"{layer}/{key}"] == pytest.approx(share, rel=1e-9)
        # at initialisation the constant→constant edge holds almost all of the mass (the biases): apart now
        if depth < last:
            assert float(E_lib[0, 0] / E_lib.sum()) > 0.5
            assert logged[f"{layer}/edges_90"] > 1
    assert graph.lib_edges[-1].shape[0] == 10  # raw logits: ten rows, no constant


def test_find_sections_of_the_mlp_are_the_module_runs_between_node_points():
    model = small_model().eval()
    sections = find_sections(model, LAYERS, torch.zeros(2, 64)).sections
    f = model.features
    assert [list(s) if isinstance(s, nn.Sequential) else [s] for s in sections] == [
        [f[0], f[1]], [f[2], f[3]], [model.classifier]]
    # node points may skip modules
    skip = find_sections(model, ["features.0", "classifier"], torch.zeros(2, 64)).sections
    assert list(skip[0]) == [f[0], f[1], f[2], f[3]]
    # a Sequential's input is its first step's
    whole = find_sections(model, ["features"], torch.zeros(2, 64)).sections
    assert list(whole[0]) == [f[0], f[1], f[2], f[3], model.classifier]


class Residual(pl.LightningModule):
    """x -> h = fc1(x); h + fc2(relu(h)) -> head: not a chain of modules."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 16)
        self.fc2 = nn.Linear(16, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        h = self.fc1(x)
        return self.head(h + self.fc2(torch.relu(h)))

    def training_step(self, batch, _):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class ResidualBlock(nn.Module):
    """The user-given section: from fc1's input to head's input."""

    def __init__(self, model: Residual):
        super().__init__()
        self.fc1, self.fc2 = model.fc1, model.fc2

    def forward(self, x):
        h = self.fc1(x)
        return h + self.fc2(torch.relu(h))


def test_unsupported_model_gets_a_clear_error_and_works_with_explicit_sections(tmp_path):
    with pytest.raises(ValueError, match=r"output of 'fc1' is not the input of 'fc2'.*supported models"):
        fit(tmp_path, InteractionBasisMonitor(layers=["fc1", "head"], probe_data=probe_data()), model=Residual())
    model = Residual()
    monitor = InteractionBasisMonitor(layers=["fc1", "head"], sections=[ResidualBlock(model), "head"],
                                      schedule=every(5), images_every=0, probe_data=probe_data())
    fit(tmp_path, monitor, max_steps=5, model=model)
    assert [s for s, _ in monitor.history] == [0, 5]
    assert monitor.failures == 0
    assert monitor.history[-1][1]["head/n_directions"] <= 11  # 10 logits + the constant


def test_layers_out_of_forward_order_are_refused(tmp_path):
    with pytest.raises(ValueError, match="consecutive node points in forward order: 'features.0' runs before"):
        fit(tmp_path, InteractionBasisMonitor(layers=["classifier", "features.0"], probe_data=probe_data()))


def test_layer_inside_an_unsplittable_block_is_refused(tmp_path):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(64, 24)

        def forward(self, x):
            return torch.relu(self.lin(x))

    model = small_model()
    model.features[0] = Block()
    model.features[1] = nn.Identity()
    with pytest.raises(ValueError, match=r"'features.0.lin' is not a step.*inside 'features.0' \(Block\)"):
        fit(tmp_path, InteractionBasisMonitor(layers=["features.0.lin", "classifier"], probe_data=probe_data()),
            model=model)


def test_unknown_layer_lists_the_module_names(tmp_path):
    with pytest.raises(ValueError, match=r"No module named 'fc9'.*'features.0', 'features.1'"):
        fit(tmp_path, InteractionBasisMonitor(layers=["fc9"]))


@pytest.mark.parametrize("bad", [dict(layers=[]), dict(layers="classifier"), dict(layers=["a", "a"]),
                                 dict(truncation=0.0), dict(truncation=float("nan")), dict(num_samples=1),
                                 dict(final_basis="svd"), dict(sections=["classifier"]),
                                 dict(max_jacobian_elements=0), dict(max_samples=10), dict(schedule="often"),
                                 dict(final_basis="raw"), dict(gradients="smooth"), dict(integration_points=0),
                                 dict(integration_points=2.5)])
def test_bad_arguments_fail_in_the_constructor(bad):
    args = dict(layers=["features.0", "classifier"]) | bad
    with pytest.raises((ValueError, TypeError)):
        InteractionBasisMonitor(**args)


def test_state_dict_extends_the_base_and_warns_on_other_layers(tmp_path):
    monitor = InteractionBasisMonitor(layers=LAYERS, schedule=every(5), images_every=0, probe_data=probe_data())
    fit(tmp_path, monitor, max_steps=5)
    state = monitor.state_dict()
    assert state["layers"] == LAYERS and state["history"]["n_seen"] == 2
    other = InteractionBasisMonitor(layers=["features.2", "classifier"])
    with pytest.warns(UserWarning, match="written for layers"):
        other.load_state_dict(state)
    assert other.history == monitor.history
    assert "layers" in monitor.state_key and monitor.state_key != other.state_key


def test_chunked_jacobians_are_reported_once(tmp_path):
    monitor = InteractionBasisMonitor(layers=LAYERS, schedule=every(2), images_every=0, num_samples=64,
                                      probe_data=probe_data(), max_jacobian_elements=200)
    with pytest.warns(UserWarning, match="max_jacobian_elements") as record:
        fit(tmp_path, monitor, max_steps=4)
    assert monitor.failures == 0 and len(monitor.history) == 3
    assert sum("max_jacobian_elements" in str(w.message) for w in record) == 1


@pytest.mark.parametrize("final_basis", ["pca", "identity"])
def test_exposed_options_reach_the_measure(tmp_path, final_basis):
    """gradients / integration_points / final_basis as logged equal the measure run by hand with the same options
    (GELU net: the integrated gradients differ from the plain ones there)."""
    x, y = probe_data()
    options = dict(gradients="integrated", integration_points=4, final_basis=final_basis)
    monitor = InteractionBasisMonitor(layers=LAYERS, schedule=every(100), images_every=0, num_samples=160,
                                      probe_data=(x, y), at_end=False, **options)
    model = MLPClassifier(hidden=(24, 16), lr=0.2, activation="gelu")
    fresh = copy.deepcopy(model).eval()
    fit(tmp_path, monitor, max_steps=1, model=model)
    logged = monitor.history[0][1]
    f = fresh.features
    sections = [f[0:2], f[2:4], fresh.classifier]
    with torch.no_grad():
        acts = [x]
        for s in sections:
            acts.append(s(acts[-1]))
    graph = interaction_graph(sections, acts, final_basis=final_basis, gradients="integrated", integration_points=4)
    plain = interaction_graph(sections, acts, final_basis=final_basis)
    for depth, layer in enumerate(LAYERS):
        assert logged[f"{layer}/constant_lambda"] == pytest.approx(float(graph.bases.lib[depth].constant_eigenvalue))
        assert logged[f"{layer}/n_directions"] == graph.bases.lib[depth].n_data_directions
    assert float(plain.bases.lib[0].constant_eigenvalue) != pytest.approx(logged["features.0/constant_lambda"],
                                                                          rel=1e-6)
    last = graph.bases.lib[-1]
    assert last.constant and (final_basis == "identity") == torch.equal(last.C, torch.eye(11, dtype=last.C.dtype))
    assert "gradients" in monitor.state_key
    assert "gradients" not in InteractionBasisMonitor(layers=LAYERS).state_key  # plain monitors keep their key


def test_probe_set_smaller_than_a_layer_is_reported_once(tmp_path):
    monitor = InteractionBasisMonitor(layers=LAYERS, schedule=every(2), images_every=0, num_samples=20,
                                      probe_data=probe_data(20))
    with pytest.warns(UserWarning, match="probe samples") as record:
        fit(tmp_path, monitor, max_steps=4)
    assert monitor.failures == 0 and len(monitor.history) == 3
    texts = [str(w.message) for w in record if "probe samples" in str(w.message)]
    assert len(texts) == 1 and "node layer 0 (width 64), node layer 1 (width 24)" in texts[0]
    for _, values in monitor.history:
        assert values["features.0/n_directions_pca"] <= 19 and values["features.2/n_directions_pca"] <= 19


class Drift(nn.Module):
    """Adds how often it has been called: state a Jacobian cannot see."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x + self.calls


def test_section_with_hidden_state_is_reported(tmp_path):
    model = small_model()
    model.features.insert(2, Drift())  # between hidden layer 1's ReLU and the second Linear
    monitor = InteractionBasisMonitor(layers=["features.0", "features.3", "classifier"], schedule=every(5),
                                      images_every=0, probe_data=probe_data(), on_error="raise")
    with pytest.raises(ValueError, match="must be a pure function of its node activations"):
        fit(tmp_path, monitor, max_steps=5, model=model)
