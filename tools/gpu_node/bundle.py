"""The offline GPU node's bundle: what the node lacks, built here with network (docs/gpu.md).

    python tools/gpu_node/bundle.py build [--python 3.12] [--out gpu_bundle] [--episodes 100]
    python tools/gpu_node/bundle.py check-tags gpu_bundle [--python 3.12] [--platform manylinux_2_28_x86_64]

``build`` writes into ``--out`` (``make gpu-bundle``):
- ``wheels/``: every wheel of ``wheels.txt`` for CPython ``--python`` on manylinux x86-64 (pure-Python
  wheels where they exist), after checking that each requirement of each wheel is in the bundle or on
  the node (``node-packages.txt``), for that Python;
- ``data/OfflineBallRun-v0.hdf5``: the BallRun file the GPU check trains on, collected from the simulator
  here (the node has none), kept when it is already there;
- ``run.sh``, the node's one command, and ``manifest.tsv``: every file with its size, and the Python
  the wheels are for.
It fails in one line when the bundle passes ``LIMIT_MIB``, naming the largest files.

``check-tags`` says, from the wheels' file names and ``packaging.tags``, whether every wheel installs on
that CPython and platform: one line per wheel that does not.
"""
from __future__ import annotations

import argparse
import email.parser
import os
import re
import shutil
import subprocess
import sys
import zipfile
from typing import Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

NODE_CARRY_MIB = 64  # what the GPU node takes beside its command, the repository's tracked files included
LIMIT_MIB = 60  # the bundle's share: the tracked files are about 3 MiB
RETURN_FILE_MIB = 16  # the most a file that comes back from the node may hold (run.sh checks its files)
TASK = "OfflineBallRun-v0"
# manylinux x86-64 up to glibc 2.28 (the node's is newer); pip's legacy names are aliases of these
MAX_GLIBC_MINOR = 28
LEGACY_MANYLINUX = {"manylinux1": 5, "manylinux2010": 12, "manylinux2014": 17}


class BundleError(Exception):
    pass


def read_list(path: str) -> List[Tuple[str, str]]:
    """(requirement, comment) of each line of wheels.txt / node-packages.txt that names a package."""
    rows = []
    with open(path) as f:
        for line in f:
            requirement, _, comment = line.partition("#")
            if requirement.strip():
                rows.append((requirement.strip(), comment.strip()))
    return rows


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def node_packages() -> List[str]:
    return [normalize(name) for name, _ in read_list(os.path.join(HERE, "node-packages.txt"))]


def manylinux_platforms(glibc_minor: int = MAX_GLIBC_MINOR) -> List[str]:
    """The platform tags a manylinux_2_{glibc_minor} x86-64 machine accepts, newest first."""
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(glibc_minor, 4, -1)]
    platforms += [f"{legacy}_x86_64" for legacy, minor in LEGACY_MANYLINUX.items() if minor <= glibc_minor]
    return platforms


def python_tag(version: str) -> str:
    if not re.fullmatch(r"3\.\d+", version):
        raise BundleError(f"--python must look like 3.12, got {version!r}")
    return "cp" + version.replace(".", "")


def download(version: str, wheels_dir: str) -> None:
    """pip download of wheels.txt for CPython ``version`` on manylinux x86-64: wheels only, no dependencies."""
    tag = python_tag(version)
    os.makedirs(wheels_dir, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--python-version", version, "--implementation", "cp", "--abi", tag, "--abi", "abi3", "--abi", "none",
           *[arg for platform in manylinux_platforms() for arg in ("--platform", platform)],
           "-d", wheels_dir, "-r", os.path.join(HERE, "wheels.txt")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")] or proc.stderr.splitlines()[-1:]
        raise BundleError(f"pip could not download the wheels for Python {version}: {' '.join(errors)}")


def wheel_metadata(path: str) -> email.message.Message:
    with zipfile.ZipFile(path) as whl:
        name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(whl.read(name).decode())


def check_complete(wheels_dir: str, version: str) -> None:
    """Every requirement of every wheel (its markers evaluated for the node) is in the bundle or on the node,
    except for the wheels marked ``no-deps`` in wheels.txt."""
    from packaging.requirements import Requirement
    from packaging.utils import parse_wheel_filename

    unchecked = {normalize(Requirement(req).name) for req, comment in read_list(os.path.join(HERE, "wheels.txt"))
                 if comment == "no-deps"}
    files = {normalize(str(parse_wheel_filename(f)[0])): os.path.join(wheels_dir, f)
             for f in os.listdir(wheels_dir) if f.endswith(".whl")}
    available = set(files) | set(node_packages())
    environment = {"python_version": version, "python_full_version": f"{version}.0", "sys_platform": "linux",
                   "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
                   "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
    missing = []
    for name, path in sorted(files.items()):
        if name in unchecked:
            continue
        for line in wheel_metadata(path).get_all("Requires-Dist") or []:
            req = Requirement(line)
            if (req.marker is None or req.marker.evaluate(environment)) and normalize(req.name) not in available:
                missing.append(f"{req.name} (for {name})")
    if missing:
        raise BundleError(f"the bundle is not --no-deps-complete: {', '.join(missing)} is neither in "
                          "tools/gpu_node/wheels.txt nor on the node; add it to wheels.txt")


def check_tags(wheels_dir: str, version: str, platform: str) -> List[str]:
    """One line per wheel that CPython ``version`` on ``platform`` (manylinux_2_M_x86_64) cannot install."""
    from packaging.tags import compatible_tags, cpython_tags
    from packaging.utils import parse_wheel_filename

    match = re.fullmatch(r"manylinux_2_(\d+)_x86_64", platform)
    if not match:
        raise BundleError(f"--platform must look like manylinux_2_28_x86_64, got {platform!r}")
    major, minor = (int(part) for part in version.split("."))
    platforms = manylinux_platforms(int(match.group(1)))
    supported = set(cpython_tags((major, minor), platforms=platforms))
    supported |= set(compatible_tags((major, minor), interpreter=python_tag(version), platforms=platforms))
    wheels = sorted(f for f in os.listdir(wheels_dir) if f.endswith(".whl"))
    if not wheels:
        return [f"{wheels_dir} holds no wheels; build the bundle with `make gpu-bundle`"]
    return [f"{name} does not install on CPython {version} {platform} (its tags: "
            f"{', '.join(sorted(str(t) for t in parse_wheel_filename(name)[3]))})"
            for name in wheels if not parse_wheel_filename(name)[3] & supported]


def collect_dataset(path: str, episodes: int) -> None:
    """The GPU check's BallRun file, from the simulator here (the node has none)."""
    from lspc.data.collect import collect, write_dsrl_hdf5

    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_dsrl_hdf5(path, collect(TASK, episodes=episodes, seed=0), {"task": TASK, "seed": 0, "episodes": episodes})


def write_manifest(out: str, version: str) -> Dict[str, int]:
    sizes = {}
    for directory, _, files in os.walk(out):
        for name in files:
            path = os.path.join(directory, name)
            if os.path.relpath(path, out) != "manifest.tsv":
                sizes[os.path.relpath(path, out)] = os.path.getsize(path)
    with open(os.path.join(out, "manifest.tsv"), "w") as f:
        f.write(f"# python: {version}\n# made by: make gpu-bundle BUNDLE_PYTHON={version}\nbytes\tpath\n")
        f.writelines(f"{size}\t{path}\n" for path, size in sorted(sizes.items()))
    return sizes


def check_size(sizes: Dict[str, int], limit_mib: float = LIMIT_MIB) -> None:
    total = sum(sizes.values())
    if total > limit_mib * 2**20:
        largest = sorted(sizes.items(), key=lambda item: -item[1])[:3]
        raise BundleError(f"the bundle is {total / 2**20:.1f} MiB, over its {limit_mib} MiB limit; the largest files: "
                          + ", ".join(f"{path} ({size / 2**20:.1f} MiB)" for path, size in largest))


def build(out: str, version: str, episodes: int) -> Dict[str, int]:
    python_tag(version)
    wheels_dir = os.path.join(out, "wheels")
    if os.path.isdir(wheels_dir):  # one version of each: never wheels of an earlier build beside new ones
        shutil.rmtree(wheels_dir)
    download(version, wheels_dir)
    check_complete(wheels_dir, version)
    dataset = os.path.join(out, "data", f"{TASK}.hdf5")
    if not os.path.isfile(dataset):
        collect_dataset(dataset, episodes)
    shutil.copy(os.path.join(HERE, "run.sh"), os.path.join(out, "run.sh"))
    sizes = write_manifest(out, version)
    check_size(sizes)
    return sizes


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, help="build | check-tags")
    make = commands.add_parser("build", help="download the wheels, collect the data, write run.sh and the manifest")
    make.add_argument("--python", default="3.12", help="the node's Python (default: 3.12)")
    make.add_argument("--out", default=os.path.join(ROOT, "gpu_bundle"), help="the bundle's folder (default: gpu_bundle/)")
    make.add_argument("--episodes", type=int, default=100, help="BallRun episodes collected for the check (default: 100)")
    tags = commands.add_parser("check-tags", help="does every wheel install on that CPython and platform")
    tags.add_argument("bundle", help="the bundle's folder")
    tags.add_argument("--python", default="3.12", help="default: 3.12")
    tags.add_argument("--platform", default="manylinux_2_28_x86_64", help="default: manylinux_2_28_x86_64")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            sizes = build(args.out, args.python, args.episodes)
            wheels = sum(1 for path in sizes if path.startswith("wheels/"))
            print(f"gpu bundle: {args.out}, {wheels} wheels for Python {args.python}, "
                  f"{sum(sizes.values()) / 2**20:.1f} MiB of {LIMIT_MIB} MiB")
            return 0
        problems = check_tags(os.path.join(args.bundle, "wheels"), args.python, args.platform)
    except BundleError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    if not problems:
        print(f"every wheel in {args.bundle}/wheels installs on CPython {args.python} {args.platform}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
