"""Disk size of each echostream install: the core against every extra and ``[all]``.

Walks the dependency closure of ``echostream[EXTRA]`` through the metadata of the environment it
runs in (which must hold ``[all]``: README's test install does) and adds up the files each
distribution's RECORD lists, so no second environment has to be built:

    python benchmarks/install_size.py

Prints a table (packages and MB per install) and the largest packages of the core.
"""

from __future__ import annotations

import argparse
import re
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement

INSTALLS = {"core": (), "server": ("server",), "train": ("train",), "hub": ("hub",), "ray": ("ray",), "onnx": ("onnx",),
            "all": ("all",)}


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(extras: tuple[str, ...]) -> set[str]:
    """Distribution names ``echostream[extras]`` installs, echostream included."""
    env = default_environment()
    done: set[tuple[str, str]] = set()  # (distribution, extra or "") already expanded
    todo = [("echostream", e) for e in ("", *extras)]
    while todo:
        name, extra = todo.pop()
        if (_key(name), extra) in done:
            continue
        done.add((_key(name), extra))
        for line in metadata.distribution(name).requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({**env, "extra": extra}):
                if req.marker is None and extra:  # already taken with extra ""
                    continue
                todo += [(req.name, e) for e in ("", *req.extras)]
    return {name for name, _ in done}


def size_mb(name: str) -> float:
    dist = metadata.distribution(name)
    return sum(f.size or 0 for f in dist.files or []) / 1e6


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    sizes: dict[str, dict[str, float]] = {}
    print(f"{'install':<8} {'packages':>8} {'MB':>8} {'MB without torch':>17}")
    for label, extras in INSTALLS.items():
        names = closure(extras)
        sizes[label] = {n: size_mb(n) for n in names}
        total = sum(sizes[label].values())
        print(f"{label:<8} {len(names):>8} {total:>8.0f} {total - sizes[label].get('torch', 0.0):>17.0f}")
    core = sizes["core"]
    extra = {n: s for n, s in sizes["all"].items() if n not in core}
    print("\nlargest of the core: " + ", ".join(f"{n} {s:.0f}" for n, s in sorted(core.items(), key=lambda x: -x[1])[:6]))
    print("largest [all] adds:  " + ", ".join(f"{n} {s:.0f}" for n, s in sorted(extra.items(), key=lambda x: -x[1])[:6]))


if __name__ == "__main__":
    main()
