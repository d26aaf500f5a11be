"""``make_loss_fn(**fields)``: ``build_loss`` on a ``Config`` holding only the given loss fields, for tests that
call the loss with random tensors. ``directions`` is ``loss_directions``."""
from l2e.config import Config
from l2e.losses import build_loss


def make_loss_fn(directions=("q2p",), **fields):
    return build_loss(Config(loss_directions=list(directions), **fields))
