#!/usr/bin/env python3
"""Fetch a pinned PJRT plugin wheel into third_party/cache/NAME/.

Usage: python3 third_party/fetch.py [NAME ...]   (default: cpu)

Downloads the wheel named in plugins.toml with `pip download --no-deps`, checks its sha256,
and unpacks it. Idempotent: when the cache already holds the pinned version it does nothing.
"""
import hashlib
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    tomllib = None

HERE = pathlib.Path(__file__).resolve().parent
CACHE = HERE / "cache"
STAMP = ".sirocco-fetched"


def wheel_pip_args(wheel: str) -> list[str]:
    """pip flags that select exactly this wheel's python/abi/platform tags."""
    _dist, _version, python_tag, abi_tag, platform_tag = wheel[: -len(".whl")].split("-")
    args = ["--only-binary=:all:", "--platform", platform_tag]
    if python_tag.startswith("cp"):
        args += ["--python-version", f"{python_tag[2]}.{python_tag[3:]}",
                 "--implementation", "cp", "--abi", abi_tag]
    return args


def sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(name: str, entry: dict) -> pathlib.Path:
    target = CACHE / name
    stamp = target / STAMP
    expected = f"{entry['package']}=={entry['version']} {entry['sha256']}"
    if stamp.exists() and stamp.read_text().strip() == expected:
        print(f"{name}: {entry['package']} {entry['version']} already in {target}")
        return target
    with tempfile.TemporaryDirectory(dir=HERE) as tmp:
        tmp = pathlib.Path(tmp)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--disable-pip-version-check", "-d", str(tmp),
               *wheel_pip_args(entry["wheel"]), f"{entry['package']}=={entry['version']}"]
        print(f"{name}: downloading {entry['wheel']}")
        subprocess.run(cmd, check=True)
        wheel = tmp / entry["wheel"]
        if not wheel.exists():
            sys.exit(f"{name}: pip did not produce {entry['wheel']} (got {[p.name for p in tmp.iterdir()]})")
        actual = sha256_of(wheel)
        if actual != entry["sha256"]:
            sys.exit(f"{name}: sha256 mismatch for {wheel.name}: expected {entry['sha256']}, got {actual}")
        unpacked = tmp / "unpacked"
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(unpacked)
        library = unpacked / entry["library"]
        if not library.exists():
            sys.exit(f"{name}: {entry['library']} is not inside {wheel.name}")
        (unpacked / STAMP).write_text(expected + "\n")
        if target.exists():
            shutil.rmtree(target)
        CACHE.mkdir(exist_ok=True)
        unpacked.rename(target)
    print(f"{name}: {entry['package']} {entry['version']} unpacked into {target}")
    return target


def parse_manifest(text: str) -> dict:
    """plugins.toml is flat tables of string values: parse it without tomllib on old Pythons."""
    if tomllib is not None:
        return tomllib.loads(text)
    manifest, table = {}, None
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("[") and line.endswith("]"):
            table = manifest.setdefault(line[1:-1].strip(), {})
        elif "=" in line and table is not None:
            key, value = line.split("=", 1)
            table[key.strip()] = value.strip().strip('"')
    return manifest


def main() -> None:
    manifest = parse_manifest((HERE / "plugins.toml").read_text())
    names = sys.argv[1:] or ["cpu"]
    for name in names:
        if name not in manifest:
            sys.exit(f"unknown plugin {name!r}; the manifest has: {', '.join(manifest)}")
        fetch(name, manifest[name])


if __name__ == "__main__":
    main()
