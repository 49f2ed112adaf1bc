"""The vllm engine's contract with one vLLM release, checked against that release's source (its wheel, read with
`ast`, never imported), and a stand-in of the same API for CPU tests.

    pip download vllm==0.30.0 --no-deps -d /tmp/vllm_whl
    python -m serving.engines.vllm_contract --wheel-dir /tmp/vllm_whl

It fails when the engine uses a method, engine argument or `SamplingParams` field the release lacks, when the
stand-in has a member the real class does not, when vLLM has a finish reason the engine does not handle, when a
model directory written by `assistant.modeling.save_model` lacks a config field vLLM's LLaVA-NeXT loader reads,
or when vLLM's requirements reject the transformers, pillow or torch installed here.
"""

VLLM_VERSION = "0.30.0"  # the release the `gpu` extra pins and docker-compose.yml runs
