"""Stage 1b: one embedding per tile for each foundation model (or imported features).

Modules: ``registry`` (build from src/pathfuse/resources/encoders.yaml), ``layers`` (CTransPath stem, CONCH
pooling head), ``weights`` (local checkpoints, strict keys, hashes), ``transforms``,
``inference`` (device, precision, DataLoader, batch loop), ``slide_tiles`` (tiles read from
slides), ``extract`` (stage entry ``embed_shard``), ``tile_sources`` + ``tile_datasets`` (stage
entry ``embed_dataset``), ``byo`` (bring your own features).
"""

import os

# pathfuse never downloads weights; make sure nothing timm or huggingface_hub does can either.
# Set before timm (and so huggingface_hub) is imported, which reads it at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
