"""Run by tests/test_elastic.py under torchrun: several ``l2g`` commands, one after the other, in the same
processes (each joins a new process group through the agent's store: l2g.engine.elastic's handshake).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/elastic_job.py \
        train synth --out R ... -- seg train synth --out S ... -- cams --run-dir R --out C
"""

from __future__ import annotations

import sys

from l2g.cli import main


def commands(argv: list[str]) -> list[list[str]]:
    found: list[list[str]] = [[]]
    for arg in argv:
        if arg == "--":
            found.append([])
        else:
            found[-1].append(arg)
    return [command for command in found if command]


if __name__ == "__main__":
    for command in commands(sys.argv[1:]):
        code = main(command)
        if code != 0:
            sys.exit(code)
