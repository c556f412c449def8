"""A paper-sized MPSL step on the secure Deployment Engine: ViT-B/16 activations of 50 samples, about 30 MB a message.

The README's secure federation on loopback (`flwr_harness.secure_federation`: TLS, SuperNode authentication, one
SuperNode process) runs a COCO-QA rehearsal (random weights, generated data) with `encoder-size='vit-b16'` and 50
samples per client: one step, whose forward reply carries [50, 198, 768] float32 activations (30.4 MB) up and
whose end-of-epoch message carries their gradient down. It checks that Flower's message path (gRPC between the
ServerApp, SuperLink, SuperNode and ClientApp process; the message TTL, which is our `step-timeout-s`) carries
them and the run completes, and that the bytes counted are those of the real messages.
"""

from __future__ import annotations

import pytest
from support.flwr_harness import flwr_run, secure_federation

from mpsl_flower.runs.readers import read_metrics

SAMPLES, TOKENS, WIDTH = 50, 197 + 1, 768  # COCO-QA's early fusion: 197 image tokens and one text token
ACTIVATION_BYTES = SAMPLES * TOKENS * WIDTH * 4
RUN_CONFIG = (
    f"dataset='coco-qa' rehearsal=true rehearsal-train-samples={SAMPLES} rehearsal-test-samples=10 "
    f"encoder-size='vit-b16' batch-size={SAMPLES} nr-of-epochs=1 eval-batch-size=10 min-partition-size=1 "
    "nr-of-last-encoder-blocks-to-finetune=1"  # the messages' size does not depend on it; the server's backward does
)


@pytest.mark.integration
def test_a_vit_b16_step_of_50_samples_crosses_the_secure_deployment(tmp_path):
    with secure_federation(tmp_path, devices=1) as federation:
        run_config = (
            f"{RUN_CONFIG} output-dir='{tmp_path / 'results'}' client-state-dir='{tmp_path / 'client-state'}' "
            f"pre-processors-cache-dir='{tmp_path / 'cache'}'"
        )
        run = flwr_run(federation.env, federation.superlink_log, run_config, num_supernodes=None)

    (folder,) = (tmp_path / "results").iterdir()
    (record,) = read_metrics(folder)
    assert record["steps"] == 1 and record["dropped_client_steps"] == 0, run.diagnostics
    assert record["clients_aggregated"] == 1, record
    # up: the forward reply's activations (and the small loss-gradient and weight replies); down: the cut gradient
    assert ACTIVATION_BYTES < record["bytes_up"] < 1.1 * ACTIVATION_BYTES + 10e6, record
    assert ACTIVATION_BYTES < record["bytes_down"] < 1.1 * ACTIVATION_BYTES, record
