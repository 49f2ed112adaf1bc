# Two commands run everything: `make serve` (API + UI on the embedded model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch. On machines whose pip has no local CPU wheel, point pip at the CPU index, e.g.
# TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu".
TORCH_SPEC ?= torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install serve test test-slow resilience-slow bench lint toy-model clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

serve: install
	$(BIN)/assistant serve --host $(HOST) --port $(PORT)

test: install
	bash scripts/ensure-chromium.sh
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q --durations=20

test-slow: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow

resilience-slow: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests/resilience -m slow -q -s

bench: install
	$(BIN)/python -m benchmarks.serve && $(BIN)/python -m benchmarks.preprocess && $(BIN)/python -m benchmarks.train && $(BIN)/python -m benchmarks.threads

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# make toy-model: stages 0-3 with the shape-keyed focus phase (2b: every object's colour by its shape, 3 epochs; 2b2:
# where / is there / how many by shape, 1 epoch; 2b3: every shape and colour counted, 1 epoch; 2b4: where every
# object is, 2 epochs, read from stage 0's place-aware patch tokens), then 2c on instruct_varied_all
# (instruct_varied: "is there any text?" of text-free scenes too, descriptions in 12 phrasings; with count_all and
# exists_all for a third of the scenes, 600 steps) and GRPO (3b, descriptions asked in 12 phrasings) beside DPO;
# the GRPO model is shipped (docs/recipe.md, sessions 13-19).
# make toy-model CONNECTOR=qformer: the Q-Former variant in runs/toy_qformer (not installed; docs/connectors.md)
CONNECTOR ?= mlp2x_gelu
toy-model: install
	$(BIN)/python -m training.recipe --connector $(CONNECTOR) $(if $(filter qformer,$(CONNECTOR)),--workdir runs/toy_qformer,--focus_task color_all:3,keyed:1,count_all:1,region_all:2 --refresh_task instruct_varied_all --n_refresh 9600 --set sft_refresh.max_steps=600 --rl_task rl_detail_varied --grpo --ship grpo)

clean:
	rm -rf $(VENV) build *.egg-info
