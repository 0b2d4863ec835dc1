import os
import sys

from .cli import main

rc = main()
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    # A torchrun worker whose run is over (results written, process group destroyed): leave
    # without the interpreter's teardown, where gloo's threads have sometimes aborted a finished
    # rank ("terminate called without an active exception", exit -6) and failed the whole launch.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc if isinstance(rc, int) else 1)
sys.exit(rc)
