"""PNG plots of `mmkeras train`: readable figures with titles, axes, legends.

matplotlib is imported lazily with the non-interactive Agg backend, so the
plots work on machines without a display.
"""

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def training_curves(path, history, task):
    """Loss (and any metric) per epoch, training vs validation."""
    plt = _pyplot()
    metrics = [k for k in history if not k.startswith("val_")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6),
                             squeeze=False)
    for ax, name in zip(axes[0], metrics):
        epochs = np.arange(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], marker="o", label="training")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], marker="s",
                    label="validation")
        ax.set_title(f"{task}: {name}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def confusion_matrix(path, labels, predictions, class_names):
    """Counts of true vs predicted class on the test split."""
    plt = _pyplot()
    n = len(class_names)
    counts = np.zeros((n, n), int)
    np.add.at(counts, (labels, predictions), 1)
    fig, ax = plt.subplots(figsize=(6, 5.2))
    image = ax.imshow(counts, cmap="Blues")
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                ax.text(j, i, counts[i, j], ha="center", va="center",
                        color="white" if counts[i, j] > counts.max() / 2
                        else "black", fontsize=8)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title("Confusion matrix (test split)")
    fig.colorbar(image, ax=ax, label="test samples")
    _save(fig, path)


def modality_accuracy(path, full, per_modality):
    """Test accuracy with all modalities, each alone, and each missing."""
    plt = _pyplot()
    names = ["all modalities", *per_modality]
    values = [full, *per_modality.values()]
    colors = ["tab:green"] + ["tab:blue" if n.startswith("only") else
                              "tab:orange" for n in per_modality]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    bars = ax.bar(range(len(values)), values, color=colors)
    for bar, value in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, value + 0.01,
                f"{value:.1%}", ha="center", fontsize=8)
    ax.set_xticks(range(len(values)),
                  [n.replace("_", " ") for n in names], rotation=20,
                  ha="right")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("test accuracy")
    ax.set_title("Accuracy with modalities present or missing")
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in
                       ("tab:green", "tab:blue", "tab:orange")],
              labels=["all", "one modality only", "one modality missing"],
              loc="lower right")
    _save(fig, path)


def captions(path, images, generated, truth):
    """Test images with their generated descriptions."""
    plt = _pyplot()
    cols = 4
    rows = int(np.ceil(len(images) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.0 * rows),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, text, label in zip(axes.ravel(), images, generated, truth):
        ax.imshow(image[..., 0], cmap="gray_r")
        ax.set_title(f"{text}\n(true: {label})", fontsize=8)
    fig.suptitle("Generated captions of test images")
    _save(fig, path)


def retrieval(path, queries, candidates, top, labels, class_names):
    """Audio queries (as waveforms) with their top retrieved images."""
    plt = _pyplot()
    k = top.shape[1]
    fig, axes = plt.subplots(len(queries), k + 1,
                             figsize=(2.2 * (k + 1), 2.0 * len(queries)),
                             squeeze=False)
    for row, (query, hits) in enumerate(zip(queries, top)):
        ax = axes[row, 0]
        ax.plot(query, linewidth=0.4)
        ax.set_title(f"audio query: {class_names[labels[row]]}", fontsize=8)
        ax.set_xlabel("sample", fontsize=7)
        ax.set_yticks([])
        for col, index in enumerate(hits, start=1):
            ax = axes[row, col]
            ax.imshow(candidates[index][..., 0], cmap="gray_r")
            right = labels[index] == labels[row]
            ax.set_title(f"#{col}: {class_names[labels[index]]}",
                         fontsize=8, color="green" if right else "red")
            ax.axis("off")
    fig.suptitle("Audio queries and their top retrieved test images "
                 "(green: same digit)")
    _save(fig, path)


def text_to_image(path, texts, generated, real):
    """Images generated from descriptions beside the real test images."""
    plt = _pyplot()
    n = len(texts)
    fig, axes = plt.subplots(2, n, figsize=(2.0 * n, 4.6), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(generated[i][..., 0], cmap="gray_r", vmin=0, vmax=1)
        axes[0, i].set_title(str(texts[i]), fontsize=6, wrap=True)
        axes[1, i].imshow(real[i][..., 0], cmap="gray_r", vmin=0, vmax=1)
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("generated")
    axes[1, 0].set_ylabel("real")
    fig.suptitle("Images generated from descriptions (top) and the real "
                 "test images (bottom)")
    _save(fig, path)


def throughput(path, timings):
    """GFLOP/s against sequence length, one line per backend and kernel."""
    plt = _pyplot()
    modes = sorted({r["mode"] for r in timings})
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4),
                             squeeze=False)
    for ax, mode in zip(axes[0], modes):
        rows = [r for r in timings if r["mode"] == mode]
        for key in sorted({(r["backend"], r["impl"]) for r in rows}):
            line = sorted((r["T"], r["gflops"]) for r in rows
                          if (r["backend"], r["impl"]) == key)
            ax.plot(*zip(*line), marker="o", label=f"{key[0]}: {key[1]}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length T = S")
        ax.set_ylabel("GFLOP/s")
        ax.set_title(f"attention {mode}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)
