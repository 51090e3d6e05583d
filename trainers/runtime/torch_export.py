"""ONNX and TorchScript files of a plain torch module (timm and hf; ultralytics has its own).

One way for both frameworks: ``torch.onnx.export`` with the TorchScript-based exporter
(``dynamo=False``: no onnxscript needed, opset 17, batch axis dynamic) and ``torch.jit.trace``;
the model runs in eval mode on CPU in float32. Imported in export child processes only.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

OPSET = 17


def export_module(
    module: torch.nn.Module,
    example: torch.Tensor,
    fmt: str,
    out_path: Path,
    *,
    output_names: list[str],
) -> Path:
    module = module.float().eval().to("cpu")
    example = example.float().to("cpu")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            torch.onnx.export(
                module,
                (example,),
                str(out_path),
                dynamo=False,
                opset_version=OPSET,
                input_names=["images"],
                output_names=output_names,
                dynamic_axes={
                    "images": {0: "batch"},
                    **{name: {0: "batch"} for name in output_names},
                },
            )
        elif fmt == "torchscript":
            traced = torch.jit.trace(module, (example,), strict=False, check_trace=False)
            traced.save(str(out_path))
        else:
            raise ValueError(f"unknown export format {fmt!r}: onnx or torchscript")
    return out_path
