"""Which implementation of privchat_tcp's hot modules runs: the compiled twins or the pure ones.

Every hot module has a pure-Python twin (``_<stem>_py.py``) and a compiled one (``_<stem>_c``,
built from ``ext/_<stem>_c.pyx`` by ``setup.py``); the package uses the compiled twin when it was
built, unless ``PRIVCHAT_NO_EXTENSIONS=1``. A checkout without an in-place build (a clone after
``pip install .``, or the runner's copy of it) silently runs the pure twins, several times slower.
The benchmarks ask this module what really runs, and say it next to every result.

This file is the benchmarks' only knowledge of where the twins live, and it finds them by their
file names under the package (``privchat_tcp/_frame_py.py`` today, ``privchat_tcp/wire/...``
after a move), so it survives modules moving. It needs nothing but the standard library, so it
can probe any checkout with any interpreter::

    cd CHECKOUT && PYTHONPATH=. python /path/to/benchmarks/impl.py     # prints the probe as JSON

or from Python: ``probe()`` (this interpreter), ``probe_tree(root)`` (a child interpreter on a
checkout), ``build_tree(root)`` (compile the twins in place there), ``require(...)`` (stop with
the reason and the fix unless the wanted implementation runs).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

PACKAGE = "privchat_tcp"
NO_EXT_ENV = "PRIVCHAT_NO_EXTENSIONS"
#: the modules the server imports at start-up, in either layout (missing ones are skipped), and
#: facades that are not named after their twin (the store's records)
ENTRY_MODULES = (
    "privchat_tcp.cli",
    "privchat_tcp.server",
    "privchat_tcp.net.tcp",
    "privchat_tcp.app",
    "privchat_tcp.store.base",
    "privchat_tcp.service.model",
    "privchat_tcp.store.memory",
)
FIX = (
    "install what the build needs (Cython: `pip install 'Cython>=3.0,<4'`; a C compiler and "
    "Python's headers: `apt-get install build-essential python3-dev`; OpenSSL's headers for "
    "_aead_c: `apt-get install libssl-dev`) and run again, or build the twins in the checkout "
    "(`PRIVCHAT_BUILD_EXT=yes python setup.py build_ext --inplace`, i.e. `make build`); "
    "--pure measures the pure-Python twins on purpose"
)


#: the fix for a process that measures the package it imported (dispatch.py, bench_codec.py)
FIX_INPLACE = (
    "build the twins in the checkout: `PRIVCHAT_BUILD_EXT=yes python setup.py build_ext "
    "--inplace` (i.e. `make build`; it needs Cython, `pip install 'Cython>=3.0,<4'`, a C "
    "compiler and Python's headers, `apt-get install build-essential python3-dev`, and OpenSSL's "
    "headers for _aead_c, `apt-get install libssl-dev`); --pure measures the pure-Python twins "
    "on purpose"
)


def _import_optional(name: str, pkg_dir: Path) -> ModuleType | None:
    """``name`` if ``pkg_dir`` has it (a module that moved away is None), else None.

    Asked of the files, not of the import system: an editable install of another checkout in the
    same environment would otherwise answer for a module this one does not have."""
    path = pkg_dir.parent.joinpath(*name.split("."))
    if not (path.with_suffix(".py").exists() or (path / "__init__.py").exists()):
        return None
    return importlib.import_module(name)


def _twin_stems(pkg_dir: Path) -> dict[str, str]:
    """stem -> the package holding ``_<stem>_py`` (e.g. "frame" -> "privchat_tcp.wire")."""
    stems: dict[str, str] = {}
    for path in sorted(pkg_dir.rglob("_*_py.py")):
        stem = path.name[1 : -len("_py.py")]
        rel = path.parent.relative_to(pkg_dir.parent)
        stems[stem] = ".".join(rel.parts)
    return stems


def _chosen_by_attributes(pure: ModuleType, compiled: ModuleType | None) -> tuple[str, str] | None:
    """("c"|"py", "module.attr") for a privchat_tcp module holding the twin in use under a name
    of its own (``_impl``, ``_records``), or None."""
    skip = {"impl_py", "impl_c", pure.__name__.rpartition(".")[2]}
    if compiled is not None:
        skip.add(compiled.__name__.rpartition(".")[2])
    for modname, mod in sorted(sys.modules.items()):
        if mod is None or modname.partition(".")[0] != PACKAGE or mod in (pure, compiled):
            continue
        for attr, value in list(vars(mod).items()):
            if attr in skip:
                continue
            if value is pure:
                return "py", f"{modname}.{attr}"
            if compiled is not None and value is compiled:
                return "c", f"{modname}.{attr}"
    return None


def probe() -> dict[str, Any]:
    """What this interpreter's privchat_tcp uses, per twin: "c" or "py", and how that was told.

    For each twin, in order: the package's own registry (``privchat_tcp._ext.loaded``, where it
    has one), the facade's ``IMPL`` (``frame.IMPL``, ``pbwire.IMPL``, ``aead.IMPL``: the facade
    is the module named after the twin beside it), a module attribute bound to one twin (the
    store's ``_records``), and last the package's rule (built and no PRIVCHAT_NO_EXTENSIONS).
    """
    pkg = importlib.import_module(PACKAGE)
    pkg_dir = Path(pkg.__file__ or "").resolve().parent
    stems = _twin_stems(pkg_dir)
    for name in ENTRY_MODULES:
        _import_optional(name, pkg_dir)
    no_ext = os.environ.get(NO_EXT_ENV, "")
    ext = _import_optional(f"{PACKAGE}._ext", pkg_dir)
    registry: dict[str, str] = dict(getattr(ext, "loaded", {}) or {})
    twins: dict[str, str] = {}
    how: dict[str, str] = {}
    compiled_files: dict[str, str | None] = {}
    in_use: dict[str, str | None] = {}
    errors: dict[str, str] = {}
    for stem, package in stems.items():
        pure = importlib.import_module(f"{package}._{stem}_py")
        compiled: ModuleType | None
        try:
            compiled = importlib.import_module(f"{package}._{stem}_c")
            compiled_files[stem] = compiled.__file__
        except ImportError as exc:
            compiled = None
            compiled_files[stem] = None
            errors[stem] = f"{type(exc).__name__}: {exc}"
        facade = _import_optional(f"{package}.{stem}", pkg_dir)
        by_attr = _chosen_by_attributes(pure, compiled)
        if registry.get(stem) in ("c", "py"):
            twins[stem], how[stem] = registry[stem], f"{PACKAGE}._ext.loaded"
        elif (
            getattr(facade, "IMPL", None) in ("c", "py")
            and getattr(facade, "impl_py", pure) is pure
        ):
            twins[stem], how[stem] = facade.IMPL, f"{package}.{stem}.IMPL"  # type: ignore[union-attr]
        elif by_attr is not None:
            twins[stem], how[stem] = by_attr
        else:
            rule = compiled is not None and no_ext in ("", "0")
            twins[stem], how[stem] = ("c" if rule else "py"), "inferred: built and not disabled"
        in_use[stem] = compiled_files[stem] if twins[stem] == "c" else pure.__file__
    foreign = sorted(
        name
        for name, mod in sys.modules.items()
        if name.partition(".")[0] == PACKAGE
        and getattr(mod, "__file__", None)
        and pkg_dir not in Path(mod.__file__).resolve().parents
    )
    kinds = set(twins.values())
    implementation = "unknown" if not kinds else "mixed"
    if len(kinds) == 1:
        implementation = {"c": "compiled", "py": "pure"}[kinds.pop()]
    return {
        "implementation": implementation,
        "twins": twins,
        "modules": in_use,
        "compiled_modules": compiled_files,
        "how": how,
        "import_errors": errors,
        "package": str(pkg_dir),
        "foreign_modules": foreign,
        "python": sys.executable,
        NO_EXT_ENV: no_ext,
    }


def summary(info: dict[str, Any]) -> str:
    """One line: "compiled (frame c, pbwire c, record c, aead c)"."""
    twins = ", ".join(f"{stem} {kind}" for stem, kind in info.get("twins", {}).items())
    extra = f"; {NO_EXT_ENV}={info[NO_EXT_ENV]}" if info.get(NO_EXT_ENV) else ""
    return f"{info.get('implementation', 'unknown')} ({twins}{extra})"


def record(info: dict[str, Any]) -> dict[str, Any]:
    """The fields a result file carries: ``implementation`` ("compiled" or "pure"), which twin
    each module ran (``twins``: stem -> "c" | "py") and its file, relative to the checkout."""
    top = Path(info.get("package", ".")).parent
    files = {}
    for stem, path in info.get("modules", {}).items():
        inside = path is not None and top in Path(path).parents
        files[stem] = str(Path(path).relative_to(top)) if inside else path
    return {
        "implementation": info.get("implementation", "unknown"),
        "twins": info.get("twins", {}),
        "modules": files,
    }


def problem(info: dict[str, Any], want: str) -> str | None:
    """Why ``info`` is not the ``want``ed implementation ("compiled" or "pure"), or None."""
    foreign = info.get("foreign_modules", [])
    if want == "pure":  # a compiled twin loaded from elsewhere but not used does no harm
        foreign = [m for m in foreign if not m.rpartition(".")[2].endswith("_c")]
    if foreign:
        return (
            f"{', '.join(foreign)} imported from outside {info.get('package')} (an editable "
            "install of another checkout in this environment answers for what the tree lacks)"
        )
    if info.get("implementation") == want:
        return None
    if want == "pure":
        return (
            f"asked for the pure twins, but {summary(info)} runs: {NO_EXT_ENV}=1 was not honoured"
        )
    errors = info.get("import_errors", {})
    reasons: dict[str, list[str]] = {}
    for stem, kind in info.get("twins", {}).items():
        if kind == "c":
            continue
        err = errors.get(stem)
        if err is None:
            why = f"built but not used ({NO_EXT_ENV}={info.get(NO_EXT_ENV)!r}?)"
        elif err.startswith("ModuleNotFoundError") and f"_{stem}_c" in err:
            why = "not built"
        else:
            why = err
        reasons.setdefault(why, []).append(f"_{stem}_c")
    detail = "; ".join(f"{', '.join(names)}: {why}" for why, names in reasons.items())
    return (
        f"{summary(info)} runs from {info.get('package')}, not the compiled twins "
        f"({detail or 'no twins found'})"
    )


def require(pure: bool, what: str) -> dict[str, Any]:
    """This process's probe; stop (exit 2) with the reason and the fix unless it runs the
    compiled twins, or the pure ones when ``pure``."""
    info = probe()
    err = problem(info, "pure" if pure else "compiled")
    if err is not None:
        sys.exit(f"{what}: {err}.\nFix: {FIX_INPLACE}.")
    return info


def reexec_pure() -> None:
    """Run this command again with PRIVCHAT_NO_EXTENSIONS=1 (the package reads it at import)."""
    if os.environ.get(NO_EXT_ENV) != "1":
        env = dict(os.environ, **{NO_EXT_ENV: "1"})
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


# ---- on a checkout, from outside ---------------------------------------------------------------


def tree_env(root: Path, pure: bool = False, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment that imports ``root``'s privchat_tcp (and its benchmarks)."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = str(root)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop(NO_EXT_ENV, None)
    if pure:
        env[NO_EXT_ENV] = "1"
    return env


def probe_tree(
    root: Path, pure: bool = False, python: str = sys.executable, timeout: float = 120.0
) -> dict[str, Any]:
    """``probe()`` in a child ``python`` importing ``root``'s package, as the server does."""
    code = Path(__file__).read_text()
    proc = subprocess.run(
        [python, "-c", code],
        cwd=root,
        env=tree_env(root, pure),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"probe of {root} failed: {proc.stderr.strip()[-600:]}")
    info: dict[str, Any] = json.loads(proc.stdout)
    package = Path(info["package"])
    if Path(root).resolve() not in package.parents:
        raise RuntimeError(f"{root}: privchat_tcp was imported from {package}, not from the tree")
    return info


def compiled_files(root: Path) -> list[Path]:
    """The compiled twins present under ``root``/privchat_tcp, for any interpreter."""
    return sorted(p for p in (root / PACKAGE).rglob("_*_c.*") if p.suffix in (".so", ".pyd"))


def stale(root: Path) -> list[str]:
    """Why ``root``'s in-place build should not be trusted: a .pyx newer than its module, or a
    debug build (PRIVCHAT_DEBUG=1: line tracing), per setup.py's build/privchat-ext-mode."""
    out = []
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    built = {p.name.partition(".")[0]: p for p in compiled_files(root) if p.name.endswith(suffix)}
    for pyx in sorted((root / "ext").glob("_*_c.pyx")):
        so = built.get(pyx.stem)
        if so is not None and so.stat().st_mtime < pyx.stat().st_mtime:
            out.append(f"ext/{pyx.name} is newer than {so.relative_to(root)}")
    stamp = root / "build" / "privchat-ext-mode"
    if stamp.exists() and stamp.read_text().strip() != "release":
        out.append(f"{stamp.relative_to(root)} says {stamp.read_text().strip()!r}")
    return out


def _has_cython(python: str) -> bool:
    return subprocess.run([python, "-c", "import Cython"], capture_output=True).returncode == 0


def prerequisites(python: str = sys.executable) -> list[str]:
    """What a compile of the twins with ``python`` visibly lacks (empty: nothing seen missing)."""
    missing = []
    if not _has_cython(python):
        missing.append(f"Cython is not installed for {python} (pip install 'Cython>=3.0,<4')")
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        missing.append(f"no C compiler ({cc}; apt-get install build-essential)")
    include = sysconfig.get_paths()["include"]
    if not Path(include, "Python.h").exists():
        missing.append(f"no Python headers ({include}/Python.h; apt-get install python3-dev)")
    dirs = [include, "/usr/include", "/usr/local/include", "/opt/homebrew/include"]
    if not any(Path(d, "openssl", "evp.h").exists() for d in dirs):
        missing.append("no OpenSSL headers for _aead_c (openssl/evp.h; apt-get install libssl-dev)")
    return missing


def build_tree(root: Path, python: str = sys.executable, log: Path | None = None) -> str:
    """Compile the twins into ``root`` (a copy: this writes there) with PRIVCHAT_BUILD_EXT=yes.

    With Cython in ``python``: ``setup.py build_ext --inplace``. Without it, the way
    ``pip install .`` built them: ``pip wheel`` (an isolated build environment that fetches
    Cython from the package index), then the compiled modules are taken out of the wheel.
    Returns how it built; raises RuntimeError with the reason, the build's last lines and the fix.
    """
    env = tree_env(root)
    env["PRIVCHAT_BUILD_EXT"] = "yes"
    env.pop("PRIVCHAT_DEBUG", None)
    log = log or root / "build-ext.log"
    if _has_cython(python):
        how = "setup.py build_ext --inplace"
        argv = [python, "setup.py", "build_ext", "--inplace", "--parallel", "2"]
    else:
        how = "pip wheel (Cython from the package index, as pip install . does)"
        wheels = root / "build" / "wheel"
        argv = [python, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(root)]
    with open(log, "w") as out:
        proc = subprocess.run(
            argv, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=900
        )
    if proc.returncode == 0 and "wheel" in argv:
        for whl in sorted((root / "build" / "wheel").glob("*.whl")):
            with zipfile.ZipFile(whl) as zf:
                for name in zf.namelist():
                    stem, _, suffix = name.rpartition("/")[2].partition(".")
                    if (
                        stem.startswith("_")
                        and stem.endswith("_c")
                        and suffix.endswith(("so", "pyd"))
                    ):
                        zf.extract(name, root)
    if proc.returncode != 0 or not compiled_files(root):
        tail = "\n".join("    " + line for line in log.read_text().splitlines()[-15:])
        seen = prerequisites(python)
        why = "; ".join(seen) if seen else "the build failed (see its last lines below)"
        raise RuntimeError(
            f"could not build the compiled twins in {root} ({how}): {why}\n"
            f"  {' '.join(argv)} (exit {proc.returncode}), log {log}:\n{tail}\nFix: {FIX}."
        )
    return how


def main() -> int:
    print(json.dumps(probe(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
