"""Build the GX GUI plugin: gui/dbus-opendtu/*.qml + gui/translations/*.ts -> gui/dbus-opendtu.json.

gui-v2 (Venus OS v3.70 and later) loads a plugin from one JSON file: metadata plus `resource`, the base64 of a
binary Qt resource (rcc) holding the QML pages and the .qm translations under the prefix /<name>. Steps:
lrelease each .ts to .qm; write <name>.qrc listing the files (sorted); `rcc -binary -compress-algo zlib` (zlib:
gui-v2's WebAssembly build has no zstd); base64 into the JSON. The tools come from the pinned PyPI wheel
PySide6-Essentials (a build and test dependency only, never on the GX: the GX gets the built JSON).

The output is reproducible: the same sources give the same bytes (rcc's file times come from the
content, see source_date). `python -m scripts.build_gui` writes gui/dbus-opendtu.json; `--check` exits 1 when
the committed file differs from a fresh build; `--output PATH` writes elsewhere.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = "dbus-opendtu"          # = plugin name = qrc prefix = app folder under /data/apps = JSON file name
SOURCE = ROOT / "gui" / NAME
TRANSLATIONS = ROOT / "gui" / "translations"
OUTPUT = ROOT / "gui" / f"{NAME}.json"
SETTINGS_PAGE = "PageSettingsDbusOpenDtu.qml"
PLUGIN_VERSION = "1.0"
MIN_GUI_VERSION = "v1.2.14"    # gui-v2 of Venus OS v3.70~45, the first that loads plugins
QT_VERSION = "6.8.3"           # the pinned PySide6-Essentials (requirements.txt); gui-v2 builds on Qt 6.8.3


class BuildError(Exception):
    pass


def qt_dir() -> Path:
    """The PySide6 package folder, holding lupdate, lrelease, qmllint and Qt/libexec/rcc."""
    try:
        import PySide6
    except ImportError as exc:
        raise BuildError(f"PySide6-Essentials=={QT_VERSION} is needed to build the GUI plugin "
                         "(pip install -r requirements.txt)") from exc
    if PySide6.__version__ != QT_VERSION:
        raise BuildError(f"PySide6 {PySide6.__version__} found, the build is pinned to {QT_VERSION}")
    return Path(PySide6.__file__).parent


def tool(name: str) -> str:
    base = qt_dir()
    path = base / "Qt" / "libexec" / name if name == "rcc" else base / name
    if not path.is_file():
        raise BuildError(f"{path} missing from the PySide6 wheel")
    return str(path)


def source_date(files: list[Path]) -> int:
    """The file time rcc writes for every file: derived from the content, not the clock, so that a build is
    reproducible, yet changes with any change. It must change: Qt's QML disk cache takes a qrc file whose time is
    unchanged for unchanged and would run the compiled code of the previous version."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return 1_500_000_000 + int.from_bytes(digest.digest()[:4], "big") % 500_000_000    # 2017..2033


def _run(args: list[str], cwd: Path, date: int = 1) -> None:
    env = dict(os.environ, QT_RCC_SOURCE_DATE_OVERRIDE=str(date), SOURCE_DATE_EPOCH=str(date))
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise BuildError(f"{' '.join(args)}: exit {done.returncode}\n{done.stdout}{done.stderr}")


def qml_files() -> list[Path]:
    return sorted(SOURCE.glob("*.qml"))


def ts_files() -> list[Path]:
    return sorted(TRANSLATIONS.glob(f"{NAME}_*.ts"))


def build() -> bytes:
    """The plugin JSON's bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / NAME
        work.mkdir()
        for qml in qml_files():
            shutil.copyfile(qml, work / qml.name)
        translations = []
        for ts in ts_files():
            qm = ts.with_suffix(".qm").name
            _run([tool("lrelease"), "-silent", str(ts), "-qm", str(work / qm)], work)
            translations.append(f"qrc:/{NAME}/{qm}")
        files = sorted(p.name for p in work.iterdir())
        qrc = "".join(f"<file>{f}</file>" for f in files)
        (work / f"{NAME}.qrc").write_text(f'<RCC><qresource prefix="/{NAME}">{qrc}</qresource></RCC>\n')
        _run([tool("rcc"), "-binary", "-compress-algo", "zlib", "-o", f"{NAME}.rcc", f"{NAME}.qrc"], work,
             source_date(sorted(work.iterdir())))
        resource = (work / f"{NAME}.rcc").read_bytes()
    plugin = {
        "name": NAME,
        "version": PLUGIN_VERSION,
        "minRequiredVersion": MIN_GUI_VERSION,
        "maxRequiredVersion": "",
        "translations": translations,
        "integrations": [{"type": 1, "url": f"qrc:/{NAME}/{SETTINGS_PAGE}"}],
        "resource": base64.b64encode(resource).decode("ascii"),
    }
    return (json.dumps(plugin, indent=2) + "\n").encode("utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.build_gui", description=__doc__.split("\n")[0])
    ap.add_argument("--output", type=Path, default=OUTPUT)
    ap.add_argument("--check", action="store_true", help="exit 1 if the output is not what a build gives")
    args = ap.parse_args(argv)
    try:
        data = build()
    except BuildError as exc:
        print(f"build_gui: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if not args.output.is_file() or args.output.read_bytes() != data:
            print(f"build_gui: {args.output} is out of date: run python -m scripts.build_gui", file=sys.stderr)
            return 1
        return 0
    args.output.write_bytes(data)
    print(f"build_gui: wrote {args.output} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
