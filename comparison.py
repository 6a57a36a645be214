"""The authors' entry point: `python comparison.py --video … --model_orig … --model_pruned … --save out.mp4`.
Same flags as `lips compare-video`, which it calls."""

import sys

from lipslib.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare-video", *sys.argv[1:]]))
