"""One process of the DDP test: `torchrun --nproc_per_node 2 torch_worker.py
OUT_DIR KIND`. Trains the small model KIND of torch_test.py on this
process's shard of every global batch through the DDP plan and writes
`OUT_DIR/rank{RANK}.npz` (initial and trained weights, plan facts).
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "torch"
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/: model_helpers
sys.path.insert(0, HERE)

import mmkeras  # isort: skip  first: see mmkeras/_import_guard.py
import numpy as np
from torch_test import BATCH, build, data, weights

from mmkeras import distribution


def main(out_dir, kind):
    plan = distribution.plan("data")
    x, y, info, train = data(kind)
    model = build(info, train, kind)
    initial = weights(model)
    model = plan.prepare(model)
    (x, y), batch_size = plan.shard((x, y), BATCH)
    model.fit(x, y, batch_size=batch_size, shuffle=False, verbose=0)
    facts = {"rank": plan.rank, "world_size": plan.world_size,
             "describe": plan.describe(), "local_rows": len(y),
             "batch_size": batch_size,
             "usage": {k: sorted(v) for k, v in
                       mmkeras.kernels.usage().items()}}
    arrays = {"facts": np.array(json.dumps(facts))}
    for name, ws in (("initial", initial), ("trained", weights(model))):
        arrays.update({f"{name}_{i}": w for i, w in enumerate(ws)})
    np.savez(os.path.join(out_dir, f"rank{plan.rank}.npz"), **arrays)
    plan.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
