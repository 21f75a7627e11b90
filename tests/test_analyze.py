"""analyze.py end to end on the shipped demo set (every subcommand), and its one-line errors."""
import json

import pytest
import timm
import torch

from conftest import REPO_ROOT, load_script
from timm_longtail.checkpoint import save_checkpoint
from timm_longtail.data import build_dataset


DEMO = ["--dataset", "demo", "-b", "250", "--workers", "0", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def analyze():
    return load_script(REPO_ROOT / "analyze.py", "analyze_script")


@pytest.fixture(scope="module")
def routed_checkpoint(tmp_path_factory):
    """A 3-expert model whose router stops some images early (so every usage group is filled)."""
    torch.manual_seed(0)
    model = timm.create_model("ride_resnet32_3e", num_classes=10)
    with torch.no_grad():
        model.router.out.bias.fill_(0.5)
    model.mark_router_trained()
    path = tmp_path_factory.mktemp("analyze") / "router.pth"
    save_checkpoint(path, model, model_name="ride_resnet32_3e", class_counts=build_dataset("demo").class_counts,
                    extra=dict(dataset=dict(name="demo")))
    return path


def _run(analyze, capsys, *argv):
    code = analyze.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("name, extra, check", [
    ("hardest-negative", ["--forward-mode", "ensemble,expert:1"],
     lambda r: set(r) == {"ensemble", "expert:1"} and r["ensemble"]["splits"]["all"]["n"] == 1000
     and sum(r["ensemble"]["splits"]["few"]["histogram"]) == r["ensemble"]["splits"]["few"]["n"] == 300),
    ("calibration", [], lambda r: set(r) == {"ensemble", "expert:0", "expert:1", "expert:2", "routed"}
     and 0 <= r["routed"]["splits"]["all"]["ece"] <= 1 and len(r["routed"]["splits"]["all"]["bins"]) == 15),
    ("test-agnostic", ["--forward-mode", "ensemble"],
     lambda r: len(r["ensemble"]["rows"]) == 11 and r["ensemble"]["rows"][5]["num_images"] == 1000
     and r["ensemble"]["rows"][0]["num_images"] < r["ensemble"]["rows"][4]["num_images"]),
    ("expert-usage", [], lambda r: r["num_experts"] == 3 and len(r["per_class"]) == 10
     and sum(r["splits"]["all"]["share"]) == pytest.approx(1.0) and r["splits"]["all"]["share"][0] > 0),
    ("expert-disagreement", [], lambda r: r["num_experts"] == 3 and r["splits"]["all"]["mean_pairwise_kl"] > 0
     and 0 < r["splits"]["all"]["top1_disagreement"] <= 1),
])
@pytest.mark.slow
def test_each_analysis_end_to_end(analyze, capsys, tmp_path, routed_checkpoint, name, extra, check):
    results = tmp_path / "out" / f"{name}.json"
    code, out, err = _run(analyze, capsys, name, "--checkpoint", str(routed_checkpoint), *DEMO, *extra,
                          "--results-file", str(results))
    assert code == 0, err
    payload = json.loads(results.read_text())
    assert payload["analysis"] == name and payload["num_samples"] == 1000 and payload["model"] == "ride_resnet32_3e"
    assert check(payload["result"]), payload["result"]
    csv_lines = results.with_suffix(".csv").read_text().splitlines()
    assert len(csv_lines) > 2 and results.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {results}" in out and str(REPO_ROOT) not in results.read_text()


def test_expert_usage_on_a_few_samples_writes_json_csv_and_plot(analyze, capsys, tmp_path, routed_checkpoint):
    """The quick lane's end-to-end analysis: 50 of the demo's images (the slow test above takes all 1,000)."""
    results = tmp_path / "usage.json"
    code, out, err = _run(analyze, capsys, "expert-usage", "--checkpoint", str(routed_checkpoint), *DEMO,
                          "--num-samples", "50", "--results-file", str(results))
    assert code == 0, err
    payload = json.loads(results.read_text())
    assert payload["num_samples"] == 50 and payload["result"]["num_experts"] == 3
    assert sum(payload["result"]["splits"]["all"]["share"]) == pytest.approx(1.0)
    assert results.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {results}" in out


@pytest.mark.slow
def test_bad_input_is_one_error_line_and_writes_nothing(analyze, capsys, tmp_path):
    results = tmp_path / "bad.json"
    cases = [
        (["expert-usage", "--model", "ride_resnet32_3e"], "needs a trained router"),
        (["expert-disagreement", "--model", "ride_resnet32_2e", "--num-experts", "1"], "the model has 1"),
        (["calibration", "--model", "ride_resnet32_2e", "--num-classes", "5"], "predicts 5 classes but demo has 10"),
        (["test-agnostic", "--model", "ride_resnet32_2e", "--split", "train"], "balanced test split"),
        (["hardest-negative", "--model", "ride_resnet32_2e", "--num-bins", "0"], "--num-bins must be >= 1"),
    ]
    for argv, message in cases:
        code, out, err = _run(analyze, capsys, *argv, *DEMO, "--results-file", str(results))
        assert code == 2, (argv, err)
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, (argv, err)
        assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def three_models(tmp_path_factory):
    """Three 2-expert models (different initialisations) and one of another architecture and
    one with other class counts."""
    folder = tmp_path_factory.mktemp("bias_variance")
    counts = build_dataset("demo").class_counts
    paths = {}
    for name, model_name, seed, class_counts in (("a", "ride_resnet32_2e", 0, counts), ("b", "ride_resnet32_2e", 1, counts),
                                                 ("c", "ride_resnet32_2e", 2, counts),
                                                 ("other_model", "ride_resnet32_3e", 3, counts),
                                                 ("other_counts", "ride_resnet32_2e", 4, [c + 1 for c in counts])):
        torch.manual_seed(seed)
        paths[name] = folder / f"{name}.pth"
        save_checkpoint(paths[name], timm.create_model(model_name, num_classes=10), model_name=model_name,
                        class_counts=class_counts, extra=dict(dataset=dict(name="demo", seed=seed),
                                                              recipe=dict(seed=seed)))
    return paths


@pytest.mark.slow
def test_bias_variance_end_to_end(analyze, capsys, tmp_path, three_models):
    results = tmp_path / "bv.json"
    code, out, err = _run(analyze, capsys, "bias-variance", "--checkpoints",
                          *[str(three_models[k]) for k in "abc"], *DEMO, "--results-file", str(results))
    assert code == 0, err
    payload = json.loads(results.read_text())
    result = payload["result"]
    assert result["num_models"] == 3 and payload["num_samples"] == 1000 and len(result["per_class"]) == 10
    assert [m["longtail_seed"] for m in payload["models"]] == [0, 1, 2]
    assert 0 <= result["splits"]["all"]["variance"] <= 1 and result["splits"]["few"]["n"] == 300
    assert results.with_suffix(".png").is_file() and "bias" in results.with_suffix(".csv").read_text()


@pytest.mark.slow
def test_bias_variance_refuses_what_it_cannot_compare(analyze, capsys, tmp_path, three_models):
    a, b = str(three_models["a"]), str(three_models["b"])
    cases = [
        ([a], "at least 2"),
        ([a, str(three_models["other_model"])], "differs from"),
        ([a, b, str(three_models["other_counts"])], "in classes"),
    ]
    for checkpoints, message in cases:
        code, out, err = _run(analyze, capsys, "bias-variance", "--checkpoints", *checkpoints, *DEMO,
                              "--results-file", str(tmp_path / "bad.json"))
        assert code == 2 and err.count("\n") == 1 and message in err, (checkpoints, err)
        assert list(tmp_path.iterdir()) == []


# ---- lossless-subset: the same images in two versions -------------------------------------------

LOSSLESS_ROWS = list(range(40, 140))


def _top1_on(model, images, targets, mode):
    """Top-1 (%) of ``model`` in ``mode`` on uint8 images, through the model's own eval transform."""
    from PIL import Image

    from timm_longtail.data import create_eval_transform

    transform = create_eval_transform(model)
    batch = torch.stack([transform(Image.fromarray(image)) for image in images])
    with torch.no_grad():
        logits = model.forward_routed(batch)[0] if mode == "routed" else model.eval()(batch, mode=mode)
    return 100.0 * float((logits.argmax(-1) == torch.as_tensor(targets)).double().mean())


@pytest.mark.slow
def test_lossless_subset_scores_both_versions_of_the_same_rows(analyze, capsys, tmp_path, routed_checkpoint):
    """Images altered in the folder (a stand-in for lossless originals) against the demo set's own copy
    of the same rows, in every forward mode; each figure checked against the model run directly."""
    from conftest import write_row_subset
    from timm_longtail.checkpoint import build_model_from_checkpoint

    test = build_dataset("demo", split="test")
    images = test.images[LOSSLESS_ROWS]
    altered = images[:, ::-1].copy()  # upside down: the model's answers change on many images
    folder = write_row_subset(tmp_path / "originals", altered, test.targets[LOSSLESS_ROWS], test.class_names,
                              LOSSLESS_ROWS)
    results = tmp_path / "out" / "lossless.json"
    code, out, err = _run(analyze, capsys, "lossless-subset", "--checkpoint", str(routed_checkpoint), *DEMO,
                          "--lossless-dir", str(folder), "--results-file", str(results))
    assert code == 0, err
    payload = json.loads(results.read_text())
    assert payload["num_samples"] == 100 and payload["row_range"] == [40, 139]
    assert payload["lossless_dir"] == "originals"  # a path outside the checkout: its name only
    model, _ = build_model_from_checkpoint(routed_checkpoint)
    targets = test.targets[LOSSLESS_ROWS]
    assert list(payload["result"]) == model.forward_modes()
    for mode, row in payload["result"].items():
        assert row["n"] == 100
        assert row["top1_lossless"] == pytest.approx(_top1_on(model, altered, targets, mode), abs=1e-9)
        assert row["top1_dataset"] == pytest.approx(_top1_on(model, images, targets, mode), abs=1e-9)
        assert row["delta"] == pytest.approx(row["top1_lossless"] - row["top1_dataset"])
        assert row["delta"] == pytest.approx(100 * (row["lossless_only"] - row["dataset_only"]) / 100)
        assert row["delta_ci95"][0] <= row["delta"] <= row["delta_ci95"][1]
    assert any(row["lossless_only"] + row["dataset_only"] > 0 for row in payload["result"].values())
    csv_lines = results.with_suffix(".csv").read_text().splitlines()
    assert csv_lines[0].startswith("forward_mode,n,top1_lossless,top1_dataset,delta") and len(csv_lines) == 6
    assert results.with_suffix(".png").read_bytes()[:4] == b"\x89PNG" and "lossless-subset:" in out

    # the same pixels stored losslessly: nothing changes, image by image
    same = write_row_subset(tmp_path / "same", images, targets, test.class_names, LOSSLESS_ROWS)
    code, out, err = _run(analyze, capsys, "lossless-subset", "--checkpoint", str(routed_checkpoint), *DEMO,
                          "--lossless-dir", str(same), "--forward-mode", "ensemble,routed")
    assert code == 0, err
    assert [line.split()[:6] for line in out.splitlines()[2:4]] == [
        [mode, "100", f"{_top1_on(model, images, targets, mode):.4g}", f"{_top1_on(model, images, targets, mode):.4g}",
         "0", "0"] for mode in ("ensemble", "routed")]


def test_lossless_subset_bad_input_is_one_error_line(analyze, capsys, tmp_path, routed_checkpoint):
    from conftest import write_row_subset

    test = build_dataset("demo", split="test")
    shifted = write_row_subset(tmp_path / "shifted", test.images[:50], test.targets[1:51], test.class_names)
    for extra, message in (([], "not the same images"), (["--num-samples", "100"], "drop --num-samples")):
        code, out, err = _run(analyze, capsys, "lossless-subset", "--checkpoint", str(routed_checkpoint), *DEMO,
                              "--lossless-dir", str(shifted), *extra, "--results-file", str(tmp_path / "x.json"))
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(SystemExit):  # --lossless-dir is required (argparse's usage error)
        analyze.main(["lossless-subset", "--checkpoint", str(routed_checkpoint), *DEMO])
