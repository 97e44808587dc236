"""--pair: your own Keras model against your PyTorch port, weights mapped, compared layer by layer in float32 and
float64, the known porting traps named (docs/pair.md). check_pair is the same check as one Python call."""
from harness.pair import flags, run
from harness.pair.run import check_pair

__all__ = ["check_pair", "flags", "run"]
