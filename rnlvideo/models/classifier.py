"""The classifier of a model, and loading weights whose classifier has another shape."""

from collections.abc import Mapping

from torch import Tensor, nn

CLASSIFIER_PREFIX = "head.fc."  # TSM ResNets; other models name theirs in `classifier_prefix`


def classifier_prefix(model: nn.Module) -> str:
    """The state-dict prefix of ``model``'s classifier (``head.fc.`` unless the model says)."""
    return getattr(model, "classifier_prefix", CLASSIFIER_PREFIX)


def load_refitting_classifier(
    model: nn.Module, state: Mapping[str, Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """Load ``state`` into ``model``, leaving a classifier of another shape as initialised.

    Returns ``(refit, missing, unexpected)``: the classifier keys left out for their shape
    (another number of classes, as when fine-tuning), and the other keys ``model`` lacks or
    does not know. The caller decides whether ``missing`` or ``unexpected`` is an error.
    """
    own = model.state_dict()
    prefix = classifier_prefix(model)
    refit = [
        key
        for key, value in state.items()
        if key.startswith(prefix) and key in own and own[key].shape != value.shape
    ]
    kept = {key: value for key, value in state.items() if key not in refit}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    return refit, [key for key in missing if key not in refit], list(unexpected)
