"""The options of ``musecl bench``, apart from the benchmark itself: building the command line
(``musecl --help``) then does not import torch."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``musecl bench`` (shared by ``musecl.scaling.bench.main`` and ``musecl.cli``)."""
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: about a minute on a quiet 2-core machine with --no-end-to-end")
    parser.add_argument("--out", type=Path, default=None, help="folder to write bench.json into")
    parser.add_argument("--no-end-to-end", dest="end_to_end", action="store_false",
                        help="skip timing `musecl run` on the toy city")
    parser.add_argument("--params", type=Path, default=None,
                        help="settings of the end-to-end run (default params/ci.yaml; quick: params/smoke.yaml)")
    parser.add_argument("--compile", action="store_true", help="with --device cuda: also time torch.compile")
    parser.add_argument("--device", default="cpu",
                        help="cuda: measure only the encoders at the paper's sizes on the GPU (precision, "
                             "images on host or device, channels_last)")
    return parser

