"""The `mmkeras` command: `info`, `bench`, `train`."""

import argparse
import importlib.metadata
import platform
import sys

# Keep in sync with the subcommands registered in `build_parser`.
PACKAGES = ("keras", "numpy", "tensorflow-cpu", "tensorflow", "jax", "jaxlib",
            "torch", "triton", "keras-hub", "scikit-learn")


def _version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def info(args):
    """Prints the backend, versions and which kernels are usable, and why."""
    import keras

    import mmkeras

    print(f"mmkeras {mmkeras.__version__}")
    print(f"python {platform.python_version()} on {platform.machine()}")
    print(f"keras backend: {keras.backend.backend()} (set KERAS_BACKEND to change)")
    for name in PACKAGES:
        version = _version(name)
        if version:
            print(f"  {name:<15} {version}")
    policy = mmkeras.kernels.default_implementation()
    print(f"kernel policy: {policy} (MMKERAS_KERNELS)")
    print(f"CPU kernels: {mmkeras.kernels.cpu_isa_summary()}")
    rows = mmkeras.kernels.available("all" if args.all_backends else None)
    width = max(len(r["kernel"]) for r in rows) + 2
    print(f"{'backend':<12}{'kernel':<{width}}usable  detail")
    for r in rows:
        usable = "yes" if r["usable"] else "no"
        print(f"{r['backend']:<12}{r['kernel']:<{width}}{usable:<8}"
              f"{r['detail'] or ''}")
    return 0


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer. Received: {text!r}")
    return value


def train(args):
    """Trains, evaluates and plots one task; prints the results table."""
    import keras

    from mmkeras import train as job

    print(f"mmkeras train --task {args.task} on the {keras.backend.backend()} "
          "backend", flush=True)
    try:
        metrics = job.train(task=args.task, fusion=args.fusion,
                            epochs=args.epochs, data=args.data, out=args.out,
                            seed=args.seed,
                            max_train_samples=args.max_train_samples,
                            distribute=args.distribute,
                            image_backbone=args.image_backbone,
                            freeze_backbone=args.freeze_backbone,
                            tokenizer=args.tokenizer)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"mmkeras train: error: {e}", file=sys.stderr)
        return 2
    if metrics is None:  # not the chief process of a torchrun job
        return 0
    print()
    print(job.results_table(metrics))
    out = args.out or f"mmkeras_out/{args.task}"
    print(f"\nwrote the model, metrics.json and plots to {out}/")
    return 0


def bench(args):
    """Runs the kernel benchmarks and prints their tables."""
    from mmkeras.benchmarks import attention

    argv = ["--repeats", str(args.repeats), "--backends", args.backends]
    if args.plot:
        argv += ["--plot", args.plot]
    if args.which in ("attention", "all"):
        attention.main(argv + ["--memory-length", str(args.memory_length),
                               "--shapes", args.shapes,
                               "--dtypes", args.dtypes])
    if args.which in ("fusion", "all"):
        from mmkeras.benchmarks import fusion

        fusion.main(["--repeats", str(args.repeats)])
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="mmkeras",
        description="Multimodal Keras 3 models with fused kernels.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser(
        "info", help="backend, versions, and which kernels are usable"
    )
    p_info.add_argument(
        "--all-backends", action="store_true",
        help="check the kernels of every installed backend (imports them)",
    )
    p_info.set_defaults(func=info)

    from mmkeras.train import FUSIONS
    from mmkeras.train import TASKS
    from mmkeras.train import TOKENIZERS

    p_train = sub.add_parser(
        "train", help="train and evaluate a model on built-in or your data",
        description="Trains the model of a task with model.fit, evaluates it "
        "on the test split, prints a results table and writes the .keras "
        "model, metrics.json and PNG plots to --out.")
    p_train.add_argument("--task", choices=TASKS, default="classify",
                         help="classify (fusion classifier), caption "
                         "(image to text), retrieve (audio-image dual "
                         "encoder), text2image (text to image)")
    p_train.add_argument("--fusion", choices=sorted(FUSIONS), default="gated",
                         help="fusion layer of the classify task")
    p_train.add_argument("--epochs", type=_positive_int, default=None,
                         help="training epochs (default: per task)")
    p_train.add_argument("--data", default=None, metavar="MANIFEST",
                         help="a CSV or JSONL manifest of your own data "
                         "(columns image, audio, text, label); default: the "
                         "built-in tri-modal digits")
    p_train.add_argument("--out", default=None, metavar="DIR",
                         help="output folder (default: mmkeras_out/TASK)")
    p_train.add_argument("--seed", type=int, default=0)
    p_train.add_argument("--max-train-samples", type=_positive_int,
                         default=None, metavar="N",
                         help="train on at most N samples (a quick run)")
    p_train.add_argument(
        "--distribute", choices=("data", "model"), default=None,
        help="scale out with the backend's own engine: data = replicas "
        "(jax DataParallel, tf MirroredStrategy, torch DDP under torchrun), "
        "model = jax ModelParallel (weights sharded over a 'model' axis)")
    p_train.add_argument(
        "--image-backbone", default=None, metavar="PRESET_DIR",
        help="retrieve: a local keras-hub preset directory (ViT, ResNet, "
        "CLIP/SigLIP: its vision tower, ...) as the image tower; written by "
        "backbone.save_to_preset(DIR). Never downloads: a hub name fails")
    p_train.add_argument("--freeze-backbone", action="store_true",
                         help="keep the --image-backbone weights fixed")
    p_train.add_argument(
        "--tokenizer", choices=TOKENIZERS, default="word",
        help="how text becomes token ids: word (mmkeras' word tokenizer, "
        "the fastest) or wordpiece (keras-hub's WordPieceTokenizer over a "
        "vocabulary built offline from the training texts)")
    p_train.set_defaults(func=train)

    p_bench = sub.add_parser(
        "bench", help="time the fused kernels against Keras (and torch SDPA)")
    p_bench.add_argument("which", nargs="?", default="attention",
                         choices=["attention", "fusion", "all"])
    p_bench.add_argument("--backends", default="tensorflow,jax,torch")
    p_bench.add_argument("--shapes", default="1x512,1x2048,1x4096,8x256",
                         help="comma-separated BxT (batch x T = S) of the "
                         "attention runs")
    p_bench.add_argument("--dtypes", default="float32,bfloat16",
                         help="comma-separated dtypes of the attention runs")
    p_bench.add_argument("--repeats", type=_positive_int, default=5)
    p_bench.add_argument("--memory-length", type=int, default=16384,
                         help="T = S of the memory check (0 skips it)")
    p_bench.add_argument("--plot", nargs="?", const="attention_throughput.png",
                         default=None, metavar="PNG",
                         help="write GFLOP/s against sequence length to PNG")
    p_bench.set_defaults(func=bench)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
