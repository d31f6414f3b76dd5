"""Index every shape file under a folder, then search the index by text.

    python clients/examples/index_folder.py ../shared/data/modelnet10 --url http://127.0.0.1:8000 \
        --query "a chair" --limit 50

Each file's id is its path relative to the folder; its metadata holds the parent folder names
(`category` = the first one, as ModelNet's <class>/<split>/file layout has it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from recon_client import ReconClient, ReconError  # noqa: E402

SUFFIXES = {".obj", ".stl", ".ply", ".off", ".glb", ".gltf", ".3mf", ".pcd", ".npy", ".npz"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--api-key")
    ap.add_argument("--query", action="append", default=[], help="text query (repeatable)")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--limit", type=int, help="index at most this many files")
    ap.add_argument("--up-axis", default="z", choices=("y", "z"))
    args = ap.parse_args(argv)

    files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in SUFFIXES)[: args.limit]
    with ReconClient(args.url, api_key=args.api_key) as client:
        added = 0
        for path in files:
            rel = path.relative_to(args.folder)
            meta = {"category": rel.parts[0] if len(rel.parts) > 1 else None, "file": str(rel)}
            try:
                client.add_shape(str(rel), path, metadata=meta, up_axis=args.up_axis)
                added += 1
            except ReconError as e:
                print(f"skipped {rel}: {e}", file=sys.stderr)
        print(f"indexed {added} of {len(files)} files")
        for query in args.query:
            print(f"\n{query!r}:")
            for hit in client.search_text(query, k=args.k)["hits"]:
                print(f"  {hit['score']:+.3f}  {hit['id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
