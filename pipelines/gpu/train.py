"""Pretend to train on a GPU: reports where it ran."""

import os

print(f"training on {os.environ.get('TITAN_WORKER')} (a worker with the GPU tag)")
