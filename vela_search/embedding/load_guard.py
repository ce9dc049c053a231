"""A switch that makes every model load fail at once, for runs that must never pay for one.

With ``VELA_NO_MODEL_LOAD=1`` in the environment, :meth:`VelaEmbedder.from_pretrained` refuses to load
anything. Scripts use it to make sure a rescan or a refused request stays cheap (a 7B load is tens of
seconds and ~16 GB of GPU memory); the test suite uses it to prove that commands which promise not to load a
model do not. No heavy imports here: the check runs before torch is touched.
"""

from __future__ import annotations

import os

from vela_search.errors import ModelLoadError

__all__ = ["NO_MODEL_LOAD_ENV", "forbid_model_load_if_asked"]

NO_MODEL_LOAD_ENV = "VELA_NO_MODEL_LOAD"


def forbid_model_load_if_asked(what: object) -> None:
    """Refuse a model load when :data:`NO_MODEL_LOAD_ENV` is set (to anything but empty or ``0``).

    Raises:
        ModelLoadError: naming the model and the variable.
    """
    if os.environ.get(NO_MODEL_LOAD_ENV, "") not in ("", "0"):
        raise ModelLoadError(f"refusing to load the model {what}: {NO_MODEL_LOAD_ENV} is set")
