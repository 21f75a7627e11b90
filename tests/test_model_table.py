"""README's model table is generated, not typed: its CIFAR rows match a fresh computation.

(The full check, every model at 224 px, is `python scripts/model_table.py --check`, ~2 min.)
"""
import pytest

from conftest import REPO_ROOT, load_script


@pytest.fixture(scope="module")
def model_table():
    return load_script(REPO_ROOT / "scripts" / "model_table.py", "model_table")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ride_resnet32_2e", "ride_resnet32_3e", "ride_resnet32_4e", "ride_resnet32_6e", "nclpp_resnet32"])
def test_readme_rows_are_current(model_table, name):
    rows = model_table.readme_table((REPO_ROOT / "README.md").read_text()).splitlines()
    assert model_table.model_row(name) in rows


def test_table_lists_every_registered_model(model_table):
    import timm

    table = model_table.readme_table((REPO_ROOT / "README.md").read_text())
    for name in timm.list_models("ride_*") + timm.list_models("nclpp_*"):
        assert f"| `{name}` |" in table


def test_readme_official_checkpoints_table_is_current(model_table):
    """One row per entry of the RIDE authors' model zoo (hub_cards/reference.yaml), generated."""
    from timm_longtail.convert.export import official_checkpoints_table
    from timm_longtail.hub.card import load_reference

    reference = load_reference()
    table = model_table.readme_table((REPO_ROOT / "README.md").read_text(), model_table.OFFICIAL)
    assert table == official_checkpoints_table(reference)
    assert len(table.splitlines()) == 2 + len(reference["reference_model_zoo"]) == 14
