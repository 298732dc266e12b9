"""Ship a `grefel pretrain` run's tiny encoder inside the package (maintainers only).

    python tools/ship_tiny_encoder.py RUN_FOLDER "grefel pretrain RUN_FOLDER --encoder-task expression"

copies RUN_FOLDER/tiny-encoder.pth to grefel/weights/shipped/ and writes its record beside it
(tiny-encoder.json: the command, the synthesis seed, sha256, pretext metrics, the closest demo
character), which `grefel train --preset tiny` checks before loading the file.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grefel.core.io import write_json
from grefel.training.pretrain import shipping_record
from grefel.weights.catalog import SHIPPED, SHIPPED_FOLDER


def main(folder: str, command: str) -> None:
    record = shipping_record(folder, command)
    target = SHIPPED_FOLDER / SHIPPED["tiny-encoder"]
    shutil.copyfile(Path(folder) / record["file"], target)
    write_json(target.with_suffix(".json"), record)
    print(f"{target}: sha256 {record['sha256']}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
