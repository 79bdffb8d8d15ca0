"""Entry point of the inspection worker process
(``python -m skills.vision._worker_main FD_IN FD_OUT [FD_SHARED]``)."""

import sys

from skills.vision.worker import _serve

if __name__ == "__main__":
    _serve(*(int(a) for a in sys.argv[1:4]))
