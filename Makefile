# Two commands run everything: `make serve` (API + UI on the embedded model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch. On machines whose pip has no local CPU wheel, point pip at the CPU index, e.g.
# TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu".
TORCH_SPEC ?= torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install serve test test-slow resilience-slow bench lint toy-model toy-model-one-run clean

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

# make toy-model: six recipe runs. The first (runs/toy): stages 0-3 with the shape-keyed focus phase (2b: every
# object's colour by its shape, 3 epochs; 2b2: where / is there / how many by shape, 1 epoch; 2b3: every shape and
# colour counted, 1 epoch; 2b4: where every object is, 2 epochs, read from stage 0's place-aware patch tokens), 2c on
# instruct_varied_all (600 steps) and GRPO (3b) beside DPO (docs/recipe.md, sessions 13-19); with stage 0 at one
# thread (configs/toy/bootstrap.yaml) it rebuilds session 19's model bit for bit on the machine session 33 checked
# (not on session 35's: stage 0 differs by machine). The second
# (runs/toy_position) continues its GRPO model: 2b5, every region and relation question of a scene (position_all, 2
# epochs), 2b6, the same opened by a description for half the images (position_detail, 1 epoch), 2c on
# instruct_many_pos (descriptions asked in 1,239 phrasings, a position_detail conversation for one scene in six;
# sessions 20-21). The third (runs/toy_keyed) continues that 2c: 2b7, position_detail again (1 epoch), 2c on
# instruct_many_keyed (a color_all conversation for one scene in six besides; sessions 21-22). The fourth
# (runs/toy_sized) continues that 2c: 2b8, the colour and size of every object and the largest / smallest
# (color_size_detail, 1 epoch), 2c on instruct_many_sized (that conversation in place of the colour one). The fifth
# (runs/toy_sized2) continues that 2c: 2b9, color_size_detail again with the vision tower trainable at a tenth of
# the learning rate (vision_lr_scale), 2c as before. The sixth (runs/toy_compare2) continues that 2c: 2b10, the
# same turns plus the colour of the larger or smaller of two same-shape objects (color_size_compare, 2 epochs, the
# tower at 0.3 of the rate), 2c on instruct_many_compare2 (that conversation for one scene in two of the rest;
# session 27, arm AJ), then DPO and GRPO beside it; its GRPO model is shipped, in float16 (configs/toy/grpo.yaml
# since session 28: an invented object costs 70% of the reward, only prompts the model errs on, the anchor at 0.3;
# its prompts since session 30, rl_detail_varied_sized: descriptions, and the colour of an object named by its size).
# make toy-model CONNECTOR=qformer: the Q-Former variant in runs/toy_qformer (not installed; docs/connectors.md)
CONNECTOR ?= mlp2x_gelu
TOY_TAIL = --n_refresh 9600 --set sft_refresh.max_steps=600
# the first run's GRPO as it was built (configs/toy/grpo.yaml changed in session 28; its model starts the chain)
GRPO_BEFORE_28 = --set grpo.object_penalty=0 --set grpo.hard_samples=0 --set grpo.anchor_weight=0 --set grpo.max_steps=200
toy-model: install
ifeq ($(CONNECTOR),qformer)
	$(BIN)/python -m training.recipe --connector qformer --workdir runs/toy_qformer
else
	$(BIN)/python -m training.recipe --no-install --focus_task color_all:3,keyed:1,count_all:1,region_all:2 --refresh_task instruct_varied_all $(TOY_TAIL) --rl_task rl_detail_varied --grpo --ship grpo $(GRPO_BEFORE_28)
	$(BIN)/python -m training.recipe --no-install --workdir runs/toy_position --continue_from runs/toy/final_grpo --focus_task position_all:2,position_detail:1 --refresh_task instruct_many_pos $(TOY_TAIL) --ship sft
	$(BIN)/python -m training.recipe --no-install --workdir runs/toy_keyed --continue_from runs/toy_position/final_sft --focus_task position_detail:1 --refresh_task instruct_many_keyed $(TOY_TAIL) --ship sft
	$(BIN)/python -m training.recipe --no-install --workdir runs/toy_sized --continue_from runs/toy_keyed/final_sft --focus_task color_size_detail:1 --refresh_task instruct_many_sized $(TOY_TAIL) --ship sft
	$(BIN)/python -m training.recipe --no-install --workdir runs/toy_sized2 --continue_from runs/toy_sized/final_sft --focus_task color_size_detail:1 --refresh_task instruct_many_sized $(TOY_TAIL) --set "sft_focus.train_parts=[vision_tower,connector,language_model]" --set sft_focus.vision_lr_scale=0.1 --ship sft
	$(BIN)/python -m training.recipe --workdir runs/toy_compare2 --continue_from runs/toy_sized2/final_sft --focus_task color_size_compare:2 --refresh_task instruct_many_compare2 $(TOY_TAIL) --set "sft_focus.train_parts=[vision_tower,connector,language_model]" --set sft_focus.vision_lr_scale=0.3 --rl_task rl_detail_varied_sized --grpo --ship grpo
endif

# make toy-model-one-run: the chain's skills in one recipe run (runs/toy_one; docs/recipe.md, sessions 41-48): stage 2
# -> color_all until its held-out colour check reads 0.75 (the lookup by shape) -> dense_detail (every skill of an
# image at once) -> position_all until its relation check reads 0.75 -> dense_detail (625 steps) -> 500 steps of
# multiples_position (the counts of a scene holding a key twice, with its position turns; the tower at 0.3) -> 2c on
# instruct_many_compare3 (600 steps); focus stages at batch 8, grouped by length. Stage 0 at one thread: on this
# machine that is D8's lineage (sessions 42-47); session 48's stage 0 at two threads gave one on which color_all's
# lookup had not formed after 4,100 steps (D8: 1,000). On D5's stages 0-2 and D8's 2b..2b4 (session 49) its 2b5 is
# MP's bit for bit and its model gives MP's figures through the API. Whole, from nothing, on another machine (session
# 50, an Intel Xeon): 6,097 s, 13.3 stage-2 units (D8's lineage ~10.1): the lookup formed at 1,600 steps and
# position's relations at 4,600 (D8: 1,800); since session 52 stage 0 trains beside the data step (~0.7 units less
# there, benchmarks/recipe_start.py). Not shipped: below the chain's model on colour by size in crowds and
# size (docs/recipe.md, "What to try next")
ONE_RUN_FOCUS = --focus_task color_all:6,dense_detail:1,position_all:6,dense_detail:1,multiples_position:1:8000 \
	--focus_check stage2b=color:0.75,stage2b3=position:0.75 \
	--set stage2b.skill_check_every=100 --set stage2b3.skill_check_every=200 \
	--set "stage2b3.skill_check_answer_types=[relation,yes_no]" \
	--set sft_focus.per_device_train_batch_size=8 --set stage2b.warmup_steps=112 --set stage2b3.warmup_steps=112 \
	--set stage2b.lr_scheduler_type=constant_with_warmup --set stage2b2.lr_scheduler_type=constant_with_warmup \
	--set stage2b3.lr_scheduler_type=constant_with_warmup --set stage2b4.max_steps=625 \
	--set stage2b5.max_steps=500 --set stage2b5.lr_scheduler_type=constant_with_warmup --set stage2b5.warmup_steps=50 \
	--set "stage2b5.train_parts=[vision_tower,connector,language_model]" --set stage2b5.vision_lr_scale=0.3 \
	--set stage2b5.seed=1
ONE_RUN_GROUPED = $(foreach c,pretrain sft sft_focus sft_refresh,--set $(c).train_sampling_strategy=group_by_length --set $(c).threads=2)
toy-model-one-run: install
	$(BIN)/python -m training.recipe --no-install --workdir runs/toy_one $(ONE_RUN_FOCUS) \
	  --refresh_task instruct_many_compare3 $(TOY_TAIL) --ship sft $(ONE_RUN_GROUPED)

clean:
	rm -rf $(VENV) build *.egg-info
