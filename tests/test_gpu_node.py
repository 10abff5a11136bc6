"""The offline GPU node's bundle (tools/gpu_node): wheel tags, completeness, size, pins, and run.sh's refusals.
The whole node, rehearsed on the CPU, is `make gpu-rehearsal` (tools/gpu_node/rehearse.sh, run by .ci/run)."""
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("bundle", os.path.join(ROOT, "tools", "gpu_node", "bundle.py"))
bundle = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bundle)


def fake_wheel(directory, filename, requires=()):
    """A wheel file with just the name and METADATA the bundle tool reads."""
    name, version = filename.split("-")[:2]
    path = os.path.join(directory, filename)
    with zipfile.ZipFile(path, "w") as whl:
        metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        metadata += "".join(f"Requires-Dist: {req}\n" for req in requires)
        whl.writestr(f"{name}-{version}.dist-info/METADATA", metadata)
        whl.writestr(f"{name}-{version}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                          "Tag: py3-none-any\n")
        whl.writestr(f"{name}-{version}.dist-info/RECORD", "")
    return path


@pytest.mark.parametrize("filename, installs", [
    ("pure-1.0-py3-none-any.whl", True),
    ("binary-1.0-cp312-cp312-manylinux_2_28_x86_64.whl", True),
    ("older-1.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True),
    ("legacy-1.0-cp312-cp312-manylinux1_x86_64.whl", True),
    ("stable-1.0-cp38-abi3-manylinux2014_x86_64.whl", True),
    ("anyabi-1.0-py3-none-manylinux_2_28_x86_64.whl", True),
    ("newglibc-1.0-cp312-cp312-manylinux_2_34_x86_64.whl", False),
    ("otherpython-1.0-cp311-cp311-manylinux_2_28_x86_64.whl", False),
    ("arm-1.0-cp312-cp312-manylinux_2_28_aarch64.whl", False),
    ("musl-1.0-cp312-cp312-musllinux_1_2_x86_64.whl", False),
    ("source-1.0-cp312-cp312-linux_x86_64.whl", False),
])
def test_wheel_tags_for_cpython_312_on_manylinux_2_28(tmp_path, filename, installs):
    (tmp_path / filename).write_bytes(b"")
    problems = bundle.check_tags(str(tmp_path), "3.12", "manylinux_2_28_x86_64")
    assert problems == ([] if installs else [problems[0]])
    if not installs:
        assert problems[0].startswith(f"{filename} does not install on CPython 3.12 manylinux_2_28_x86_64")


def test_an_empty_bundle_and_a_bad_platform_are_refused(tmp_path):
    assert bundle.check_tags(str(tmp_path), "3.12", "manylinux_2_28_x86_64") == [
        f"{tmp_path} holds no wheels; build the bundle with `make gpu-bundle`"]
    with pytest.raises(bundle.BundleError, match="--platform must look like manylinux_2_28_x86_64"):
        bundle.check_tags(str(tmp_path), "3.12", "linux_x86_64")


def test_every_requirement_is_in_the_bundle_or_on_the_node(tmp_path, monkeypatch):
    monkeypatch.setattr(bundle, "read_list", lambda path: (
        [("nodeps-pkg==1.0", "no-deps")] if path.endswith("wheels.txt") else [("numpy", ""), ("requests", "")]))
    fake_wheel(str(tmp_path), "app-1.0-py3-none-any.whl",
               ["numpy>=2", "helper", 'oldbackport; python_version < "3.8"', "docs-tool; extra == 'docs'"])
    fake_wheel(str(tmp_path), "helper-2.0-py3-none-any.whl", ["requests"])
    fake_wheel(str(tmp_path), "nodeps_pkg-1.0-py3-none-any.whl", ["torch~=1.13"])  # not checked: installed --no-deps
    bundle.check_complete(str(tmp_path), "3.12")
    fake_wheel(str(tmp_path), "other-1.0-py3-none-any.whl", ["missing-thing", 'win-only; sys_platform == "win32"'])
    with pytest.raises(bundle.BundleError, match=r"missing-thing \(for other\) is neither in tools/gpu_node/wheels.txt "
                                                 r"nor on the node; add it to wheels.txt$"):
        bundle.check_complete(str(tmp_path), "3.12")


def test_a_bundle_over_its_limit_names_its_largest_files():
    sizes = {"wheels/big.whl": 40 * 2**20, "wheels/mid.whl": 15 * 2**20, "data/x.hdf5": 6 * 2**20, "run.sh": 10}
    with pytest.raises(bundle.BundleError, match=r"^the bundle is 61\.0 MiB, over its 60 MiB limit; the largest files: "
                                                 r"wheels/big\.whl \(40\.0 MiB\), wheels/mid\.whl \(15\.0 MiB\), "
                                                 r"data/x\.hdf5 \(6\.0 MiB\)$"):
        bundle.check_size(sizes)
    bundle.check_size({**sizes, "data/x.hdf5": 5 * 2**20 - 10})  # exactly 60 MiB: at the limit, accepted


def test_the_bundle_pins_what_the_project_pins():
    """A package in wheels.txt that the project's requirements pin too has the project's version (the
    node runs what the tests ran), except wandb, whose line says why."""
    pinned = {}
    for name in ("requirements.txt", "requirements-nodeps.txt"):
        for requirement, _ in bundle.read_list(os.path.join(ROOT, name)):
            package, _, version = requirement.partition("==")
            pinned[bundle.normalize(package)] = version
    shared = {}
    for requirement, _ in bundle.read_list(os.path.join(ROOT, "tools", "gpu_node", "wheels.txt")):
        package, _, version = requirement.partition("==")
        if bundle.normalize(package) in pinned:
            shared[bundle.normalize(package)] = (version, pinned[bundle.normalize(package)])
    assert {"gymnasium", "pyrallis", "dsrl", "osrl-lib", "fast-safe-rl", "oapackage", "wandb"} <= set(shared)
    assert {name: pair for name, pair in shared.items() if pair[0] != pair[1]} == {"wandb": ("0.31.0", "0.18.7")}
    node = set(bundle.node_packages())
    assert not node & {bundle.normalize(r.partition("==")[0]) for r, _ in
                       bundle.read_list(os.path.join(ROOT, "tools", "gpu_node", "wheels.txt"))}  # nothing twice


@pytest.fixture
def node_copy(tmp_path):
    """The repository's GPU-check files and a bundle with one small wheel, as the node receives them."""
    tree = tmp_path / "tree"
    (tree / "gpu_bundle" / "wheels").mkdir(parents=True)
    (tree / "tools" / "gpu_node").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "tools", "gpu_node", "run.sh"), tree / "gpu_bundle" / "run.sh")
    fake_wheel(str(tree / "gpu_bundle" / "wheels"), "tiny-1.0-py3-none-any.whl")
    version = "%d.%d" % sys.version_info[:2]
    (tree / "gpu_bundle" / "manifest.tsv").write_text(f"# python: {version}\nbytes\tpath\n0\twheels/tiny-1.0-py3-none-any.whl\n")
    return tree


def run_sh(tree, *args, python=sys.executable):
    proc = subprocess.run(["bash", str(tree / "gpu_bundle" / "run.sh"), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHON": python})
    return proc.returncode, proc.stderr.strip().splitlines()


def test_run_sh_refuses_a_bundle_for_another_python(node_copy, tmp_path):
    manifest = node_copy / "gpu_bundle" / "manifest.tsv"
    manifest.write_text(manifest.read_text().replace("# python: 3.", "# python: 2."))
    code, err = run_sh(node_copy, str(tmp_path / "out"))
    version = "%d.%d" % sys.version_info[:2]
    assert code == 2 and err == [f"error: this bundle's wheels are for Python 2.{sys.version_info[1]}, but {sys.executable} "
                                 f"is Python {version}; rebuild it with make gpu-bundle BUNDLE_PYTHON={version} (or set PYTHON)"]


def test_run_sh_refuses_a_bundle_that_lacks_a_wheel(node_copy, tmp_path):
    os.remove(node_copy / "gpu_bundle" / "wheels" / "tiny-1.0-py3-none-any.whl")
    code, err = run_sh(node_copy, str(tmp_path / "out"))
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: the bundle lacks wheels/tiny-1.0-py3-none-any.whl, which its manifest lists; "
                             "rebuild it with make gpu-bundle")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_run_sh_on_a_machine_without_cuda_points_to_the_cpu_dry_run(node_copy, tmp_path):
    code, err = run_sh(node_copy, str(tmp_path / "out"))
    assert code == 2 and err[-1] == ("error: torch sees no CUDA device on this machine; bash gpu_bundle/run.sh OUT --cpu "
                                     "runs the dry run on the CPU")
    code, err = run_sh(node_copy)
    assert code == 2 and err == ["usage: bash gpu_bundle/run.sh OUT [--cpu]"]


def test_run_sh_checks_the_returned_files_against_the_bundle_tools_limit():
    with open(os.path.join(ROOT, "tools", "gpu_node", "run.sh")) as f:
        assert f"-ge $(({bundle.RETURN_FILE_MIB} * 1024 * 1024))" in f.read()


def test_the_node_list_has_the_nodes_packages_and_none_of_ours():
    """98 packages, torch and numpy among them, and nothing the bundle must carry."""
    node = bundle.node_packages()
    assert len(node) == len(set(node)) == 98 and {"torch", "numpy", "h5py", "pytest", "protobuf"} <= set(node)
    assert not {"gymnasium", "pyrallis", "wandb", "dsrl", "pybullet"} & set(node)
