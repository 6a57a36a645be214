"""lipslib — Layer-Importance Pruning Schedules (LIPS) for Ultralytics YOLO11 detectors.

Library layers (dependencies point downward only):
  assets → layers → engine → evaluate / finetune → (sensitivity, schedule, optimize, reporting) → cli
"""

from lipslib.errors import LipsError

__version__ = "0.1.0"
__all__ = ["LipsError", "__version__"]
