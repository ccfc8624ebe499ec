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
    rows = mmkeras.kernels.available("all" if args.all_backends else None)
    width = max(len(r["kernel"]) for r in rows) + 2
    print(f"{'backend':<12}{'kernel':<{width}}usable  detail")
    for r in rows:
        usable = "yes" if r["usable"] else "no"
        print(f"{r['backend']:<12}{r['kernel']:<{width}}{usable:<8}"
              f"{r['detail'] or ''}")
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
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
