"""Packaging: only `mmr1` lands in site-packages, with the side folders mapped inside it."""

import subprocess
import sys
import zipfile
from pathlib import Path

import mmr1.datamodules
import mmr1.encoders
import mmr1.fusion

ROOT = Path(__file__).resolve().parents[1]


def test_side_folders_are_imported_as_mmr1_subpackages():
    for module, folder in ((mmr1.encoders, "encoders"), (mmr1.fusion, "fusion"), (mmr1.datamodules, "datamodules")):
        assert Path(module.__file__).resolve().parent == ROOT / folder


def test_wheel_holds_only_mmr1_and_every_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    str(ROOT), "-w", str(tmp_path)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("mmr1-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"mmr1", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    shipped = {str(Path(n).parent) for n in names if n.endswith("__init__.py")}
    expected = {"mmr1"}
    for top, prefix in (("mmr1", "mmr1"), ("encoders", "mmr1/encoders"), ("fusion", "mmr1/fusion"),
                        ("datamodules", "mmr1/datamodules")):
        for init in (ROOT / top).rglob("__init__.py"):
            expected.add(str(Path(prefix) / init.parent.relative_to(ROOT / top)).rstrip("/."))
    assert shipped == expected


def test_python_dash_m_is_the_same_program():
    out = subprocess.run([sys.executable, "-m", "mmr1", "--help"], check=True, capture_output=True, text=True)
    assert "mmr1 init --preset tiny" in out.stdout
