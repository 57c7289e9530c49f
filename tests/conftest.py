import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/cases.py, tests/reference.py
# tiny models: threads only add overhead, and on a loaded 2-core machine they thrash
torch.set_num_threads(1)
