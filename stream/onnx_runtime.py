"""The classifier exported to ONNX and run by ONNX Runtime: CPU scoring with less overhead.

On CPU a PyTorch forward of this small BERT costs ~1.5 ms of Python and dispatch before
any arithmetic; ONNX Runtime's costs ~0.15 ms and releases the GIL for the whole run.
Latency-sized batches (tens of windows, split into length buckets) are dominated by that
fixed cost, so serving on CPU uses this runtime when it is installed
(``python -m bench inference`` measures both and their score agreement).

The graph is exported in memory from the verified safetensors weights at load time, so
artifacts stay weights-only and nothing extra is trusted from disk.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch


def available() -> bool:
    """Whether ONNX Runtime and the ONNX exporter's dependency are installed."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _Probability(torch.nn.Module):
    """classifier logits -> P(attack), the exact function Scorer computes in torch."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(input_ids=input_ids, attention_mask=attention_mask).logits.float()[:, 0])


class OnnxClassifier:
    """A BertForSequenceClassification as an ONNX Runtime session (dynamic batch and length)."""

    def __init__(self, model: torch.nn.Module, threads: int) -> None:
        import onnxruntime as ort

        seq = model.config.max_position_embeddings
        example = (torch.full((2, seq), 3, dtype=torch.long), torch.ones(2, seq, dtype=torch.long))
        buf = io.BytesIO()
        with warnings.catch_warnings():  # the exporter's tracer warnings are about shapes we declare dynamic
            warnings.simplefilter("ignore")
            torch.onnx.export(_Probability(model).eval(), example, buf, input_names=["input_ids", "attention_mask"],
                              output_names=["score"], dynamo=False, opset_version=17,
                              dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                                            "score": {0: "batch"}})
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]
