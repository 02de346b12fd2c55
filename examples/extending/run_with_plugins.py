"""The `xares-fusion` command with the examples of this directory registered.

Encoders and fusions can be given to the command by file path; projectors and metrics are found
by their registered name only, and a name is registered when the module defining it is imported.
This launcher imports the example modules, then runs the ordinary command line in the same
process, so every registered name below works in any command:

    python examples/extending/run_with_plugins.py list metrics            # ... TokenF1 ...
    python examples/extending/run_with_plugins.py run band-energy synthetic tones \\
        --set model.projector.name=stack-mlp --set 'model.projector.args={stack: 2}'

Give these names, not the files' paths: a module is registered once per process, and loading
the same file again by its path would register its names a second time.
A package of your own can declare encoders as entry points of the ``xares_fusion.encoders``
group instead; for projectors and metrics a launcher like this one is the way.
"""

from __future__ import annotations

import sys
from pathlib import Path

from xares_fusion.registry import load_module_from_file

HERE = Path(__file__).resolve().parent
PLUGINS = ("my_encoder.py", "my_fusion.py", "my_projector.py", "my_metric.py")
# band-energy (encoder), scalar-mix (fusion), stack-mlp (projector), TokenF1 (metric)

for name in PLUGINS:
    load_module_from_file(HERE / name)

if __name__ == "__main__":
    from xares_fusion.cli import main

    sys.exit(main())
