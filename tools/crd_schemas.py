"""Extract one served version's OpenAPI schema from an upstream CRD into manifests/schemas/.

    python tools/crd_schemas.py CRD.yaml VERSION --repo OWNER/NAME --tag TAG --commit SHA \
        --path PATH_IN_REPO

writes ``manifests/schemas/<group>_<version>_<kind>.json.gz``: the CRD's
``spec.versions[name=VERSION].schema.openAPIV3Schema`` with its source (repository, tag, commit,
path) recorded beside it. The tests validate rendered objects against these files.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parents[1] / "manifests" / "schemas"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("crd", type=Path)
    ap.add_argument("version")
    ap.add_argument("--repo", required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--commit", required=True)
    ap.add_argument("--path", required=True)
    a = ap.parse_args()
    crd = yaml.safe_load(a.crd.read_text())
    spec = crd["spec"]
    served = [v for v in spec["versions"] if v["name"] == a.version]
    if not served:
        raise SystemExit(f"{a.crd}: no version {a.version}")
    doc = {
        "group": spec["group"],
        "version": a.version,
        "kind": spec["names"]["kind"],
        "scope": spec["scope"],
        "source": {"repo": a.repo, "tag": a.tag, "commit": a.commit, "path": a.path},
        "openAPIV3Schema": served[0]["schema"]["openAPIV3Schema"],
    }
    name = f"{spec['group']}_{a.version}_{spec['names']['kind'].lower()}.json.gz"
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    # mtime=0: the same input gives the same bytes
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / name).write_bytes(gzip.compress(data, mtime=0))
    print(OUT / name)


if __name__ == "__main__":
    main()
