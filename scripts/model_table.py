"""Write README.md's generated tables: every registered model (params, MACs per forward mode), and
the RIDE authors' released checkpoints with the model and tag each converts to.

    python scripts/model_table.py            # rewrite the tables between the README markers
    python scripts/model_table.py --check    # exit 1 if a README table is out of date

Every figure is computed from the models here (parameters counted, MACs counted by
``torch.utils.flop_counter`` at the default cfg's input size): none is typed by hand.
"""
from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path
from typing import List, Optional

import timm_longtail  # noqa: F401  (registers the models)
import timm
from timm_longtail.convert.export import official_checkpoints_table
from timm_longtail.hub.card import load_reference
from timm_longtail.models import measure_compute

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- model-table:begin -->", "<!-- model-table:end -->"
OFFICIAL = ("<!-- official-table:begin -->", "<!-- official-table:end -->")
HEADER = (
    "| model | default tag | experts | params (M) | input | GMACs ensemble | GMACs one expert | router MACs |\n"
    "|---|---|---|---|---|---|---|---|"
)


def model_row(name: str) -> str:
    """One markdown row for ``name`` at its default pretrained cfg."""
    model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    profile = measure_compute(model)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    router = f"{sum(profile.router_macs):,}" if profile.router_macs else "-"
    size = "x".join(str(s) for s in cfg["input_size"][1:])
    return (f"| `{name}` | {cfg['tag']} | {model.num_experts} | {params:.2f} | {size} | "
            f"{profile.macs_per_image('ensemble') / 1e9:.3f} | {profile.macs_per_image('expert:0') / 1e9:.3f} | {router} |")


def render(patterns: Optional[List[str]] = None) -> str:
    names = sorted(timm.list_models("ride_*")) + sorted(timm.list_models("nclpp_*"))
    if patterns:
        names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]
    return "\n".join([HEADER] + [model_row(n) for n in names])


def readme_table(text: str, markers: tuple = (BEGIN, END)) -> str:
    begin, end = markers
    if begin not in text or end not in text:
        raise SystemExit(f"README.md lacks the {begin} / {end} markers")
    return text.split(begin, 1)[1].split(end, 1)[0].strip()


def _replace(text: str, markers: tuple, table: str) -> str:
    begin, end = markers
    before, rest = text.split(begin, 1)
    return f"{before}{begin}\n{table}\n{end}{rest.split(end, 1)[1]}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that README's table is current")
    args = parser.parse_args(argv)
    text = README.read_text()
    tables = {(BEGIN, END): render(), OFFICIAL: official_checkpoints_table(load_reference())}
    if args.check:
        stale = [markers[0] for markers, table in tables.items() if readme_table(text, markers) != table]
        if stale:
            print(f"README.md tables out of date ({', '.join(stale)}): run python scripts/model_table.py", file=sys.stderr)
            return 1
        print("README.md tables are current")
        return 0
    for markers, table in tables.items():
        text = _replace(text, markers, table)
    README.write_text(text)
    print("\n\n".join(tables.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
