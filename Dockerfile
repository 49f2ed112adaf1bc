# The project image for docker-compose.yml (gateway and UI). The GPU engine runs in vLLM's own image.
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY assistant assistant
COPY training training
COPY serving serving
COPY ui ui
COPY evals evals
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu && pip install .
EXPOSE 8000 7860
CMD ["assistant", "serve", "--host", "0.0.0.0", "--port", "8000"]
