"""`recon-serve`: the command line of the package.

    recon-serve eval [--benchmark modelnet40|modelnet10] [--checkpoint PATH] [--data DIR] [--votes N]
                     [--runtime torch|onnxruntime [--int8]] --json FILE
    recon-serve eval-retrieval --data DIR_OR_NPZ [--checkpoint PATH] [--shape-embeddings max,mean_max] --json FILE
    recon-serve eval-seg [--checkpoint PATH] --json FILE
    recon-serve info [--checkpoint PATH]
    recon-serve import-official CKPT --out FILE [--config cfgs/.../X.yaml] [--num-group G] [--num-points N] ...
    recon-serve export [CHECKPOINT] --out DIR [--mode auto|custom_op|pure]
    recon-serve check-export DIR --json FILE [--checkpoint CKPT]
    recon-serve serve [--host H] [--port P] [--index DIR] [--checkpoint PATH] [--backend onnxruntime|torch|URL]
                      [--backend torch --device cuda [--bf16]] [--int8]
    recon-serve embed [SOURCE] --index DIR [--workers N] [--engine local|ray] [--metadata CSV] [--reindex]
    recon-serve retrain DATA --out DIR [--repo DIR] [--epochs N]       (runs `recon-train retrain`)
    recon-serve deploy CANDIDATE --repo DIR [--server URL] [--force]
    recon-serve rollback --repo DIR [--server URL]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _write_json(path, data) -> None:
    """Write figures for other tools (no-op without --json)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2))


def _eval(args) -> int:
    from recon_serve.benchmarks import evaluate_benchmark
    from recon_serve.model.factory import DEFAULT_CHECKPOINT, create_model

    ckpt_path = args.checkpoint or DEFAULT_CHECKPOINT
    if args.int8 and args.runtime != "onnxruntime":
        print("error: --int8 needs --runtime onnxruntime", file=sys.stderr)
        return 2
    t0 = time.time()
    model, ckpt = create_model(ckpt_path)
    backend = None
    if args.runtime == "onnxruntime":  # the graph the server runs for classify: the global one, fp32 or int8
        from recon_serve.backends.ort_backend import OrtBackend
        from recon_serve.settings import Settings

        backend = OrtBackend(ckpt_path, Settings.from_env().cache_dir, threads=args.threads, int8=args.int8)
    try:
        result = evaluate_benchmark(model, ckpt or {}, args.benchmark, args.data, votes=args.votes, backend=backend)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if backend is not None:
            backend.close()
    result.update(checkpoint=str(ckpt_path), runtime=args.runtime + (" int8" if args.int8 else ""),
                  seconds=round(time.time() - t0, 1))
    rows = [("overall accuracy (OA)", result.get("oa")), ("mean class accuracy", result.get("macc")),
            (f"OA with {result['votes']} votes", result.get("oa_vote")),
            ("zero-shot / text-prompted OA", result.get("zero_shot_oa")),
            ("zero-shot mean class acc", result.get("zero_shot_macc"))]
    print(f"{result['split']}, {result['n']} shapes ({result['restriction']}; {result['runtime']})")
    for name, v in rows:
        if v is not None:
            print(f"  {name:<32} {v:6.2f} %")
    print(f"  took {result['seconds']} s")
    _write_json(args.json, result)
    return 0


def _eval_retrieval(args) -> int:
    from recon_serve.benchmarks import evaluate_retrieval, load_labelled
    from recon_serve.model.factory import DEFAULT_CHECKPOINT, create_model

    ckpt_path = args.checkpoint or DEFAULT_CHECKPOINT
    t0 = time.time()
    try:
        data = load_labelled(args.data, args.points, args.up_axis)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model, ckpt = create_model(ckpt_path)
    kinds = tuple(k for k in (args.shape_embeddings or "").split(",") if k)
    try:
        r = evaluate_retrieval(model, data, shape_kinds=kinds, d2=not args.no_d2, ckpt=ckpt)
    except ValueError as e:  # the checkpoint's text tower is not the configured one
        print(f"error: {e}", file=sys.stderr)
        return 2
    r.update(checkpoint=str(ckpt_path), data=str(args.data), seconds=round(time.time() - t0, 1))
    print(f"{args.data}: {r['n']} shapes in {r['classes']} classes, leave-one-out")
    print(f"  {'':<28} {'NN':>6} {'1-tier':>7} {'2-tier':>7} {'DCG':>6}")
    rows = [("shape embedding", r)] + ([("text embedding as shape", r["text_embedding"])] if "text_embedding" in r else [])
    rows += [(f"shape embedding: {k}", r["candidates"][k]) for k in kinds]
    rows += [("D2 shape distribution", r["d2"])] if "d2" in r else []
    for name, m in rows:
        print(f"  {name:<28} {m['nn']:6.3f} {m['first_tier']:7.3f} {m['second_tier']:7.3f} {m['dcg']:6.3f}")
    if "top1" in r:
        print(f"  text search P@10 {r['p_at_10']:.3f}; zero-shot top-1 {r['top1']:.3f} (chance {r['chance']:.3f})")
    print(f"  took {r['seconds']} s")
    _write_json(args.json, r)
    return 0


def _eval_seg(args) -> int:
    from recon_serve.data.procedural import generate_dataset
    from recon_serve.evaluate import evaluate_seg
    from recon_serve.model.factory import DEFAULT_CHECKPOINT, create_model

    ckpt_path = args.checkpoint or DEFAULT_CHECKPOINT
    t0 = time.time()
    model, ckpt = create_model(ckpt_path)
    if model.seg_head is None:
        print(f"error: {ckpt_path} has no segmentation head", file=sys.stderr)
        return 2
    data = generate_dataset(per_category=args.per_category, seed=args.seed, split="test", n_points=args.points)
    if ckpt.get("part_names") and list(ckpt["part_names"]) != data.part_names:
        print("error: the checkpoint's part names differ from the generator's", file=sys.stderr)
        return 2
    r = evaluate_seg(model, data)
    r.update(checkpoint=str(ckpt_path), split=f"procedural/test seed={args.seed}", seconds=round(time.time() - t0, 1))
    print(f"procedural test split: {r['n']} shapes of {len(data.categories)} categories, {r['points']} points each")
    print(f"  instance mIoU (true category)      {r['instance_miou']:6.2f} %")
    print(f"  class mIoU (true category)         {r['class_miou']:6.2f} %")
    print(f"  instance mIoU (inferred category)  {r['inferred_category_instance_miou']:6.2f} %")
    print(f"  category inferred from parts       {r['category_accuracy']:6.2f} %")
    print(f"  took {r['seconds']} s")
    _write_json(args.json, r)
    return 0


def _info(args) -> int:
    from recon_serve.model.factory import DEFAULT_CHECKPOINT, create_model

    model, ckpt = create_model(args.checkpoint or DEFAULT_CHECKPOINT)
    info = {k: ckpt.get(k) for k in ("config", "class_names", "normalisation", "teacher", "recipe", "metrics")}
    info["parameters"] = sum(p.numel() for p in model.parameters())
    print(json.dumps(info, indent=2, default=str))
    return 0


def _export(args) -> int:
    from recon_serve.export.triton_repo import write_model_repository

    try:
        summary = write_model_repository(args.checkpoint, args.out, args.version, mode=args.mode,
                                         python_site_packages=args.python_site_packages, deploy_root=args.deploy_root)
    except (FileNotFoundError, FileExistsError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if summary["note"]:
        print(f"note: {summary['note']}", file=sys.stderr)
    print(json.dumps(summary, indent=2))
    return 0


def _check_export(args) -> int:
    from recon_serve.export.check import check_export

    try:
        result = check_export(args.dir, args.checkpoint, args.data)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _write_json(args.json, result)
    print(f"{result['version_dir']}: max_abs_diff {result['max_abs_diff']:.2e} "
          f"({' and '.join(result['runtimes_compared'])} against torch eager); "
          f"FPS/kNN indices {'equal' if result['indices_equal'] else 'DIFFER'}")
    plan = result["runtimes"]["tensorrt"]
    print(f"TensorRT plan: max_abs_diff {plan['max_abs_diff']:.2e} against torch eager" if "max_abs_diff" in plan
          else f"TensorRT plan: not compared ({plan['skipped']})")
    return 0


def _import_official(args) -> int:
    from recon_serve.model.official import import_official

    names = [n.strip() for n in args.class_names.split(",") if n.strip()] if args.class_names else None
    try:
        ckpt = import_official(args.checkpoint, args.out, config=args.config, class_names=names,
                               num_group=args.num_group, num_points=args.num_points, group_size=args.group_size,
                               up_axis=args.up_axis)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg = ckpt["config"]
    uses = "labels only (no projection: /v1/embed, zero-shot and search answer 409)" if not (
        cfg["text_weight"] or cfg["img_weight"]) else (
        f"embedding = {cfg['text_weight']:g} x text_proj + {cfg['img_weight']:g} x img_proj in {ckpt['teacher']}'s space "
        "(serve with RECON_TEXT_TOWER=clip:ViT-B-32:/path/to/ViT-B-32.pt)")
    print(f"wrote {args.out}: depth {cfg['depth']}, width {cfg['trans_dim']}, {cfg['num_group']} groups x "
          f"{cfg['group_size']} points, {cfg['num_points']} points, up axis {cfg['up_axis']}, "
          f"{cfg.get('num_classes', 0) or 'no'} classes ({ckpt['class_names_source'] or 'no names'}); {uses}")
    return 0


def _serve(args) -> int:
    import logging

    import uvicorn

    from recon_serve.api.app import RequestIdFilter, create_app
    from recon_serve.settings import Settings

    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    settings = Settings.from_env(checkpoint=args.checkpoint, backend=args.backend, index_dir=args.index,
                                 max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, api_keys=args.api_keys,
                                 read_keys=args.read_keys, cors_origins=args.cors_origins,
                                 threads=args.threads, cache_dir=args.cache_dir, text_tower=args.text_tower,
                                 device=args.device, bf16=args.bf16, int8=args.int8)
    from recon_serve.api.protocol import protocol_class

    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                http=protocol_class(settings.header_timeout_s))
    return 0


def _embed(args) -> int:
    from recon_serve.batch.embed import JobOptions, embed_library

    if args.source is None and not args.reindex:
        print("error: give a SOURCE folder or list file (or --reindex to re-read the last one)", file=sys.stderr)
        return 2
    try:
        report = embed_library(args.source, args.index, checkpoint=args.checkpoint, workers=args.workers,
                               engine=args.engine, metadata_csv=args.metadata, reindex=args.reindex,
                               prune=args.prune, progress=not args.no_progress, state_dir=args.state_dir,
                               options=JobOptions(n_points=args.n_points, up_axis=args.up_axis,
                                                  batch_size=args.batch_size))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _write_json(args.json, report)
    print(f"{report['files']} files: {report['embedded']} embedded, {report['skipped']} unchanged, "
          f"{report['failed']} failed; index {report['index']} holds {report['index_size']} shapes "
          f"({report['files_per_second']} files/s, {report['workers']} workers, {report['engine']})")
    for err in report["errors"][:20]:
        print(f"  failed: {err['id']}: {err['reason']}", file=sys.stderr)
    if len(report["errors"]) > 20:
        print(f"  ... {len(report['errors']) - 20} more in {args.index}/embed_report.json", file=sys.stderr)
    return 0


def _notify(server: str | None, api_key: str | None) -> int:
    """Ask a running server to switch to the repository's live version."""
    if not server:
        print("no --server given: restart or reload the servers on this repository (POST /v1/admin/reload)")
        return 0
    import httpx

    headers = {"X-API-Key": api_key} if api_key else {}
    try:
        r = httpx.post(server.rstrip("/") + "/v1/admin/reload", headers=headers, timeout=600)
    except httpx.HTTPError as e:
        print(f"error: the server did not answer ({e}); the repository has switched, the server has not",
              file=sys.stderr)
        return 1
    if r.status_code != 200:
        print(f"error: the server refused the new version ({r.status_code}): {r.text}", file=sys.stderr)
        return 1
    print(f"server {server}: {r.json()}")
    return 0


def _deploy(args) -> int:
    from recon_serve.export.versions import deploy

    report_path = Path(args.candidate).with_name("retrain_report.json")
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    if report is None and not args.force:
        print(f"error: no {report_path.name} next to {args.candidate} (made by `recon-serve retrain`); "
              "deploy an unevaluated model only with --force", file=sys.stderr)
        return 2
    if report is not None and not report.get("better") and not args.force:
        print(f"error: the candidate is worse than the current model on the held-out split "
              f"({report['new']['oa']:.2f} % vs {report['old']['oa']:.2f} %); use --force to deploy it anyway",
              file=sys.stderr)
        return 3
    try:
        result = deploy(args.candidate, args.repo, note={"report": str(report_path)} if report else None,
                        python_site_packages=args.python_site_packages)
    except (FileNotFoundError, FileExistsError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.repo}: version {result['version']} is live (was {result['previous']})")
    return _notify(args.server, args.api_key)


def _rollback(args) -> int:
    from recon_serve.export.versions import rollback

    try:
        result = rollback(args.repo)
    except (FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.repo}: version {result['version']} is live again (version {result['previous']} retired)")
    return _notify(args.server, args.api_key)


def _retrain(args) -> int:
    import subprocess

    # training/ builds on recon_serve, never the reverse: run it as its own program
    return subprocess.call([sys.executable, "-m", "training.cli", "retrain", *args.rest])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="recon-serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval", help="accuracy on a benchmark's official test split (ModelNet40 or ModelNet10)")
    e.add_argument("--benchmark", choices=("modelnet40", "modelnet10"), default="modelnet40")
    e.add_argument("--checkpoint", help="checkpoint (default: the shipped model)")
    e.add_argument("--data", help="data root (default $RECON_DATA or ../shared/data)")
    e.add_argument("--votes", type=int, default=10, help="votes for oa_vote (the paper's protocol: 10); 1 skips it")
    e.add_argument("--runtime", choices=("torch", "onnxruntime"), default="torch",
                   help="torch eager (default) or the ONNX Runtime graph the server runs")
    e.add_argument("--int8", action="store_true", help="with --runtime onnxruntime: the int8 graph (RECON_INT8)")
    e.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: its own)")
    e.add_argument("--json", help="write the figures here")
    e.set_defaults(fn=_eval)
    rt = sub.add_parser("eval-retrieval", help="leave-one-out retrieval (PSB measures), text search, zero-shot, D2 baseline")
    rt.add_argument("--data", required=True, help="a packed .npz set, or a folder of <class>/ sub-folders of shape files")
    rt.add_argument("--checkpoint", help="checkpoint (default: the shipped model)")
    rt.add_argument("--points", type=int, default=1024, help="points per shape given to the model")
    rt.add_argument("--up-axis", choices=("y", "z"), default="z", help="the files' up axis (folders of meshes)")
    rt.add_argument("--shape-embeddings", help="also measure these poolings, comma-separated (max,mean_max,cls_max,cls_max_text)")
    rt.add_argument("--no-d2", action="store_true", help="skip the D2 baseline")
    rt.add_argument("--json", help="write the figures here")
    rt.set_defaults(fn=_eval_retrieval)
    s = sub.add_parser("eval-seg", help="part mIoU on the held-out procedural test set")
    s.add_argument("--checkpoint", help="checkpoint (default: the shipped model)")
    s.add_argument("--per-category", type=int, default=20, help="test shapes per category")
    s.add_argument("--points", type=int, default=2048)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", help="write the figures here")
    s.set_defaults(fn=_eval_seg)
    i = sub.add_parser("info", help="print a checkpoint's model card fields")
    i.add_argument("--checkpoint")
    i.set_defaults(fn=_info)
    o = sub.add_parser("import-official", help="an official qizekun/ReCon .pth as a self-describing checkpoint")
    o.add_argument("checkpoint", help="official checkpoint (ckpt-last.pth, modelnet40.pth, scan_hardest.pth, ...)")
    o.add_argument("--out", required=True, help="recon-serve checkpoint to write")
    o.add_argument("--config", help="the official cfgs/*.yaml it was trained with (num_group, npoints, dataset)")
    o.add_argument("--num-group", type=int, help="FPS centres (official: 64; ScanObjectNN 128; ModelNet-8k 512)")
    o.add_argument("--num-points", type=int, help="points per cloud (official: 1024; ScanObjectNN 2048; 8k 8192)")
    o.add_argument("--group-size", type=int, help="points per patch (official: 32)")
    o.add_argument("--up-axis", choices=("y", "z"), help="the model's up axis (official: y)")
    o.add_argument("--class-names", help="comma-separated names for the head (default: the data set's, for 40 or 15)")
    o.set_defaults(fn=_import_official)
    x = sub.add_parser("export", help="write a Triton model repository (ONNX + python backend) from a checkpoint")
    x.add_argument("checkpoint", nargs="?", help="checkpoint (default: the shipped model)")
    x.add_argument("--out", required=True, help="model repository directory")
    x.add_argument("--mode", choices=("auto", "custom_op", "pure"), default="auto",
                   help="auto: custom-op graph when its kernel library builds, else pure ONNX")
    x.add_argument("--version", type=int, help="version number (default: next free)")
    x.add_argument("--python-site-packages", help="site-packages (numpy<2, onnxruntime) the python backend model uses")
    x.add_argument("--deploy-root", help="path of --out on the serving host (for the custom-op library path)")
    x.set_defaults(fn=_export)
    c = sub.add_parser("check-export", help="compare the newest exported version with torch eager, exactly for indices")
    c.add_argument("dir", help="model repository directory")
    c.add_argument("--json", required=True, help="write the figures here")
    c.add_argument("--checkpoint", help="checkpoint (default: the one named in the model card)")
    c.add_argument("--data", help="data root for ModelNet10 test clouds (default $RECON_DATA or ../shared/data)")
    c.set_defaults(fn=_check_export)
    v = sub.add_parser("serve", help="run the HTTP server (settings also from RECON_* environment variables)")
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--index", help="shape index directory, or milvus://host:19530 / milvus:///file.db "
                   "(default $RECON_INDEX_DIR or ./index)")
    v.add_argument("--checkpoint", help="checkpoint or model repository (default: the shipped model)")
    v.add_argument("--backend", help="onnxruntime (default) | torch | Triton URL http://host:8000")
    v.add_argument("--max-batch", type=int, help="most shapes per model call")
    v.add_argument("--max-wait-ms", type=float, help="longest wait to fill a batch")
    v.add_argument("--api-keys", help="comma-separated keys; write endpoints then need X-API-Key")
    v.add_argument("--read-keys", help="comma-separated keys; reading records and search then need X-API-Key")
    v.add_argument("--cors-origins", help="comma-separated browser origins allowed to call the API")
    v.add_argument("--threads", type=int, help="intra-op threads for the backend")
    v.add_argument("--device", help="torch backend's device: cpu (default) | cuda | cuda:N")
    v.add_argument("--bf16", action="store_true", default=None, help="torch backend on CUDA: bf16 autocast")
    v.add_argument("--int8", action="store_true", default=None,
                   help="onnxruntime backend: int8 global graph (all endpoints but /v1/segment)")
    v.add_argument("--cache-dir", help="exported ONNX cache (default ~/.cache/recon-serve/onnx)")
    v.add_argument("--text-tower", help="minilm (default) | clip:ARCH:PATH, e.g. clip:ViT-B-32:/models/ViT-B-32.pt")
    v.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    v.set_defaults(fn=_serve)
    b = sub.add_parser("embed", help="embed a folder or list of shape files into a search index (resumable)")
    b.add_argument("source", nargs="?", help="folder (searched recursively) or a text file listing paths")
    b.add_argument("--index", required=True, help="index directory (created if missing; the server's --index), "
                   "or a milvus:// URI")
    b.add_argument("--state-dir", help="with a milvus:// index: where the resumable manifest and report go "
                   "(default ./embed-state)")
    b.add_argument("--checkpoint", help="checkpoint or model repository (default: the shipped model)")
    b.add_argument("--workers", type=int, help="parallel workers (default: all cores)")
    b.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="ray: workers as Ray actors (local Ray, or the cluster RAY_ADDRESS names)")
    b.add_argument("--metadata", help="CSV with an 'id' or 'path' column; other columns become metadata")
    b.add_argument("--reindex", action="store_true", help="embed every file again (after a model change)")
    b.add_argument("--prune", action="store_true", help="remove ids whose files are no longer in SOURCE")
    b.add_argument("--batch-size", type=int, default=16, help="files per model call")
    b.add_argument("--n-points", type=int, default=1024)
    b.add_argument("--up-axis", choices=("y", "z"), default="z", help="the files' up axis (OBJ/glTF are often y)")
    b.add_argument("--no-progress", action="store_true")
    b.add_argument("--json", help="also write the report here")
    b.set_defaults(fn=_embed)
    r = sub.add_parser("retrain", help="fine-tune on your labelled shapes and compare with the current model",
                       add_help=False)
    r.add_argument("rest", nargs=argparse.REMAINDER)
    r.set_defaults(fn=_retrain)
    for name, fn, text in (("deploy", _deploy, "export a retrained checkpoint as the repository's new live version"),
                           ("rollback", _rollback, "make the previously deployed version live again")):
        d = sub.add_parser(name, help=text)
        if name == "deploy":
            d.add_argument("candidate", help="candidate checkpoint (with retrain_report.json beside it)")
            d.add_argument("--force", action="store_true", help="deploy even if worse or unevaluated")
            d.add_argument("--python-site-packages", help="site-packages the Triton python backend model uses")
        d.add_argument("--repo", required=True, help="model repository (Triton layout)")
        d.add_argument("--server", help="running recon-serve URL to switch without restart")
        d.add_argument("--api-key", help="X-API-Key for the server's admin endpoint")
        d.set_defaults(fn=fn)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
