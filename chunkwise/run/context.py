"""What a chunk needs to know about its run (`RunContext`): small, frozen and picklable, fixed when
the run starts. The live per-process objects built from it (client, slots, estimator, stop flag)
are the run's `chunkwise.run.session.RunSession`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from chunkwise.params import RunParams


class RunContext(BaseModel):
    """Everything about a run that a chunk needs, fixed when the run starts."""

    model_config = ConfigDict(frozen=True)

    run_dir: str
    params: RunParams
    host: str
    system_prompt: str
    input_fingerprint: str
    model_digest: str
    server_version: str
    is_simulator: bool
    #: The backend asks the server to refuse an over-long prompt instead of cutting it (Ollama's
    #: `truncate: false`, `ServerFacts.truncate_switch`); recorded in the manifest and stats.json.
    send_truncate_false: bool
    chars_per_token: float
    #: The run's thinking setting as its backend sends it (None: not sent), resolved at setup from what
    #: the server says the model can do (`Backend.check`).
    think: bool | str | None = None
    #: The server may cut an over-long prompt silently (`ServerFacts.cuts_prompts`: Ollama before 0.12.6).
    #: True for a context recorded before the field existed: the cautious reading.
    cuts_prompts: bool = True

    @property
    def dir(self) -> Path:
        return Path(self.run_dir)

    def options(self, num_predict: int | None = None) -> dict[str, Any]:
        """The sampling options as the manifest and the content key record them (in Ollama's names, the
        run's first vocabulary: renaming them would refuse every earlier run's resume). What goes on the
        wire is each client's translation of `chunkwise.backend.ChatOptions`."""
        p = self.params
        return {
            "num_ctx": p.num_ctx,
            "num_predict": num_predict or p.num_predict,
            "temperature": p.temperature,
            "seed": p.seed,
        }

    def content_key(self) -> str:
        """Digest of everything that determines the answers; equal keys mean reusable results."""
        p = self.params
        material = {
            "input": self.input_fingerprint,
            "model": p.model,
            "digest": self.model_digest,
            "options": self.options(),
            "mode": p.mode,
            "system": hashlib.sha256(self.system_prompt.encode()).hexdigest(),
            "format": p.format,
            "trim": p.trim_threshold,
            "chars_per_token": self.chars_per_token,
        }
        if self.think is not None:  # absent for models that cannot think: their keys stay as they were
            material["think"] = self.think
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
