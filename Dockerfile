# The project image for docker-compose.yml (gateway and UI). The GPU engine runs in vLLM's own image.
#   docker build -t llava-assistant .                                   # CPU torch, no vLLM (the default)
#   docker build --build-arg EXTRAS=gpu --build-arg TORCH_INDEX=https://pypi.org/simple -t llava-assistant:gpu .
# The second installs the `gpu` extra (vLLM 0.30.0 with CUDA torch 2.13.0) for `assistant serve --engine vllm`
# in-process; it needs the NVIDIA container runtime to run.
FROM python:3.11-slim
ARG EXTRAS=""
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY assistant assistant
COPY training training
COPY serving serving
COPY ui ui
COPY evals evals
RUN pip install "torch==2.13.0" --index-url "${TORCH_INDEX}" && pip install ".${EXTRAS:+[$EXTRAS]}"
EXPOSE 8000 7860
CMD ["assistant", "serve", "--host", "0.0.0.0", "--port", "8000"]
