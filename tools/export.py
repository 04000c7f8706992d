"""Export a checkpoint for deployment, checked against the eager model.

    python tools/export.py ckpt=outputs/demo/last.pt format=onnx out=demo.onnx
    python tools/export.py ckpt=outputs/demo/last.pt format=torch_export out=demo.pt2
    python tools/export.py ckpt=PATH out=model.onnx protocol=2x3 protocol.crop_size=224

The model is rebuilt from the checkpoint as by tools/test.py (its stored config validated,
nothing run from the file; ``--trust-code`` as there) and exported with a dynamic batch axis:
``onnx`` with the current ONNX exporter (torch.onnx, dynamo), ``torch_export`` as a ``.pt2``
program (``format`` defaults to the suffix of ``out``). The file is then loaded back and run at
batch 1 and batch 3 (onnxruntime / torch.export.load) on the same clips as the eager model; it
is written only if no logit differs by more than ``tolerance`` (default 1e-4) times the largest
|logit| (at least 1). The measured differences are printed either way. When the export fails,
its parts are exported and checked one by one to name the part that fails (``locate=false``
skips that search, which takes minutes for a ResNet-50 in ONNX). Other ``key=value``
arguments change keys of the stored config (e.g. ``protocol=...``, stored in the file's metadata
for the runtime). Exits with 2 when the checkpoint is refused, 3 when the export fails or does
not match (nothing written).
This is a thin wrapper over :func:`rnlvideo.export`.
"""

import logging
import sys

import rnlvideo
from rnlvideo.cli import TOOL_ERRORS, TRUST_FLAG, exit_refused, parse_flag, split_tool_args
from rnlvideo.deploy import TOLERANCE, ExportError, ExportReport
from rnlvideo.text import printable

logger = logging.getLogger("export")
USAGE = (
    "usage: python tools/export.py ckpt=PATH out=FILE [format=onnx|torch_export] "
    "[tolerance=1e-4] [locate=true|false] [--trust-code] [key=value ...]"
)
EXPORT_FAILED = 3


def main(argv: list[str]) -> ExportReport:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    for chatty in ("onnx_ir", "onnxscript", "torch"):  # per-pass INFO lines of the exporters
        logging.getLogger(chatty).setLevel(logging.WARNING)
    tolerance = TOLERANCE
    try:
        own, overrides = split_tool_args(argv, ("ckpt", "out", "format", "tolerance", "locate"))
        if "ckpt" not in own or "out" not in own:
            raise ValueError(USAGE)
        tolerance = float(own.get("tolerance", TOLERANCE))
        report = rnlvideo.export(
            own["ckpt"],
            own["out"],
            format=own.get("format"),
            overrides=overrides,
            trust_code=TRUST_FLAG in own,
            tolerance=tolerance,
            locate=parse_flag(own.get("locate", "true"), "locate"),
        )
    except ExportError as err:
        for comparison in err.comparisons:
            print(comparison.describe(tolerance))
        exit_refused(logger, err, EXPORT_FAILED)
    except TOOL_ERRORS as err:
        exit_refused(logger, err)
    for comparison in report.comparisons:
        print(comparison.describe(tolerance))
    print(
        f"{report.format} export checked with {report.runtime} (tolerance "
        f"{report.tolerance:g} x max(1, |logit|)) in {report.seconds:.1f} s: "
        f"wrote {printable(str(report.path))}"
    )
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
