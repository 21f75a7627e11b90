"""Write the table of every registered model (params, MACs per forward mode) into README.md.

    python scripts/model_table.py            # rewrite the table between the README markers
    python scripts/model_table.py --check    # exit 1 if README's table is out of date

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
from timm_longtail.models import measure_compute

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- model-table:begin -->", "<!-- model-table:end -->"
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


def readme_table(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md lacks the {BEGIN} / {END} markers")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that README's table is current")
    args = parser.parse_args(argv)
    text = README.read_text()
    table = render()
    if args.check:
        if readme_table(text) != table:
            print("README.md model table is out of date: run python scripts/model_table.py", file=sys.stderr)
            return 1
        print("README.md model table is current")
        return 0
    before, rest = text.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    README.write_text(f"{before}{BEGIN}\n{table}\n{END}{after}")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
