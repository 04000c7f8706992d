"""Convert an official TSM / RNL release checkpoint into a checkpoint of ours.

    python tools/convert_official.py SRC DST OVERRIDES... [--trust-source]
    python tools/convert_official.py rnl_r50.pth.tar rnl_r50.pt +experiment=rnl_sthv1
    python tools/convert_official.py TSM_somethingv1_resnet50_8f.pth tsm_r50.pt \
        +experiment=rnl_sthv1 placement=none

The Hydra overrides configure the target architecture (nothing is inferred from the file); every
official key must find its place in it and every model key must be filled, else the tool stops
and lists the keys that do not match, both ways. DST is a self-contained checkpoint of ours (the
converted weights, the config and class names, ``source``: where it came from), so
``tools/test.py ckpt=DST`` and ``rnlvideo.load_model(DST)`` rebuild the model from the file
alone (``model.weights=null`` is stored: the backbone's ImageNet weights are not needed).
SRC is read with ``torch.load(weights_only=True)``; ``--trust-source`` allows full unpickling
(which can run code from the file) for release files that need it.
"""

import argparse
import logging
import sys
from pathlib import Path

from rnlvideo.checkpoint_format import checkpoint_metadata
from rnlvideo.config import build_model, compose_config, portable_config
from rnlvideo.data.lists import class_names_for
from rnlvideo.files import save_atomic
from rnlvideo.models.official import (
    OfficialCheckpointError,
    convert_official_state_dict,
    read_official_checkpoint,
    require_tsm_resnet,
)

logger = logging.getLogger("convert_official")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="official checkpoint (.pth / .pth.tar)")
    parser.add_argument("destination", type=Path, help="checkpoint of ours to write (.pt)")
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides of the target, e.g. +experiment=rnl_sthv1"
    )
    parser.add_argument(
        "--trust-source",
        action="store_true",
        help="allow torch.load(weights_only=False) for files that need it (runs pickled code)",
    )
    args = parser.parse_args(argv)
    if not args.overrides:
        parser.error(
            "give the target architecture as Hydra overrides, e.g. +experiment=rnl_sthv1 "
            "(RNL TSM-R50) or +experiment=rnl_sthv1 placement=none (TSM-R50)"
        )
    return args


def stored_overrides(overrides: list[str]) -> list[str]:
    """The overrides to store: the given ones, with the backbone initialisation switched off."""
    if any(o.split("=", 1)[0].lstrip("+~") == "model.weights" for o in overrides):
        return list(overrides)
    return [*overrides, "model.weights=null"]


def convert(source: Path, destination: Path, overrides: list[str], trust_source: bool) -> dict:
    """Convert ``source`` for the model ``overrides`` configure and write ``destination``."""
    overrides = stored_overrides(overrides)
    cfg = compose_config(overrides)
    model = build_model(cfg, load_weights=False)  # the checkpoint provides every weight
    require_tsm_resnet(model, f"model._target_={cfg.model._target_}")
    official, metadata = read_official_checkpoint(source, trust_source=trust_source)
    state = convert_official_state_dict(official, model)
    model.load_state_dict(state, strict=True)
    names = class_names_for(cfg.data.val.list_file, cfg.data.num_classes, cfg.data.category_file)
    checkpoint = {
        "model": state,
        **checkpoint_metadata(portable_config(cfg), names),
        "source": {"path": str(source), "format": "official TSM / RNL release", **metadata},
    }
    save_atomic(checkpoint, destination)
    logger.info(
        "%s -> %s: %d tensors, overrides %s, source metadata %s",
        source,
        destination,
        len(state),
        " ".join(overrides),
        metadata or "none",
    )
    return checkpoint


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    args = parse_args(argv)
    try:
        convert(args.source, args.destination, args.overrides, args.trust_source)
    except OfficialCheckpointError as err:
        logger.error("%s", err)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
