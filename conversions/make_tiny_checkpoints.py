"""Write a tiny random-weight SpiritLM checkpoint tree: ``python conversions/make_tiny_checkpoints.py OUT``.

Same as ``spiritlens make-tiny OUT``; see ``spiritlens.synthetic.tiny`` for the layout.
"""

import sys

from spiritlens.cli import main

if __name__ == "__main__":
    sys.exit(main(["make-tiny", *sys.argv[1:]]))
