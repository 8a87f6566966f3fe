# convnet-repro: one make target per experiment. `make help` lists them.
SHELL := /bin/bash
export KERAS_BACKEND := tensorflow
export TF_CPP_MIN_LOG_LEVEL ?= 2
# Offline data root (holds mnist/ IDX files and imagenette2-224/). On a machine
# with internet, leave it unset and tensorflow-datasets downloads the data.
ifneq ($(wildcard ../shared/data),)
export CONVNET_REPRO_DATA_DIR ?= $(abspath ../shared/data)
endif

VENV ?= .venv
PY := $(VENV)/bin/python
RUN := $(PY) -m convnet_repro.experiments.train
TF_EXTRA ?= cpu
ARGS ?=

.DEFAULT_GOAL := help

help:  ## Show the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## .*$$' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-28s %s\n", $$1, $$2}'

install:  ## Create .venv and install the project (TF_EXTRA=cpu|cuda)
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[$(TF_EXTRA),dev,sweep,jax]"
	$(PY) -m pip install --no-deps "tf-keras>=2.21,<2.22"

# The fast suite runs on every core (pytest-xdist; a test file stays on one
# worker, so a file's session fixtures are built once per worker that needs
# them). JOBS=0 runs it in this process, without workers.
JOBS ?= auto
test:  ## Fast tests (the CI command), JOBS=auto workers (one per core)
	$(PY) -m pytest -m "not slow" -q -n $(JOBS) --dist loadfile

BACKEND ?= jax
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
test-backends:  ## Layer tests (numpy references, gradients, save/load) under another Keras backend: BACKEND=jax (default, CI) or torch (opt-in; CPU wheel 192 MB, ~4 min)
	@$(PY) -c "import $(BACKEND)" 2>/dev/null || { echo "test-backends: the $(BACKEND) backend is not installed; run: $(PY) -m pip install $(if $(filter torch,$(BACKEND)),torch --index-url $(TORCH_CPU_INDEX),-e '.[$(BACKEND)]')" >&2; exit 2; }
	KERAS_BACKEND=$(BACKEND) $(PY) -m pytest tests/layers -m "not slow" -q

test-slow:  ## Slow tests: every full-scale rehearsal, real servers, subprocess faults (~1.5-2 h on 2 cores)
	$(PY) -m pytest -m slow -q

test-ci-slow:  ## The slow tests CI runs: one full-scale rehearsal per family, tfds layout, real kill
	$(PY) -m pytest -m "slow and ci_slow" -q

lint:  ## ruff check + format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench:  ## Layer benchmarks per backend (TF graph/XLA, JAX jit, torch eager): UnsharedConv2D / TiledConv2D vs peers -> results/bench_layers.md
	$(PY) -m benchmarks.bench_layers $(ARGS)

bench-input:  ## Input pipeline images/s per CPU core, each paper's augmentation (results/bench_input.md)
	$(PY) -m benchmarks.bench_input $(ARGS)

gpu-budget:  ## FLOPs, GPU-hours and CPU step time of every full-scale config -> results/gpu_budget.md (~25 min CPU)
	$(PY) -m benchmarks.gpu_budget --measure $(ARGS)

gpu-steps:  ## Training-step time of the full-scale models on this machine's GPU (config dtype and bf16, XLA) -> results/gpu_steps.md
	$(PY) -m benchmarks.device_steps --policy config mixed_bfloat16 $(ARGS)

# STORE=DIR: the MLflow store (mlruns.db, mlartifacts/, checkpoints/, and the
# Hydra outputs) is in DIR rather than in the checkout, e.g. the long tier's
# snapshot restored with experiments/store_snapshot.py; data and results stay.
STORE ?=
STORE_ROOT := $(abspath $(or $(STORE),.))
STORE_OVERRIDES := $(if $(STORE),tracking.uri=sqlite:///$(STORE_ROOT)/mlruns.db tracking.artifact_location=$(STORE_ROOT)/mlartifacts paths.checkpoint_dir=$(STORE_ROOT)/checkpoints paths.output_dir=$(STORE_ROOT)/outputs)

ui:  ## MLflow UI on the local tracking store (STORE=DIR: another one)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(STORE_ROOT)/mlruns.db --default-artifact-root $(STORE_ROOT)/mlartifacts

bn-mnist:  ## BN paper Fig. 1: MNIST MLP with/without BN, 50k steps, 5 seeds (~10 min CPU)
	$(RUN) experiment=bn_mnist $(ARGS)

bn-mnist-short:  ## BN Fig. 1 shortened: 3k steps, 1 seed (outputs/bn_mnist_short)
	$(RUN) experiment=bn_mnist_short $(ARGS)

data-check:  ## Build every conf/data config; print shapes, ranges, speed
	$(PY) -m convnet_repro.experiments.data $(ARGS)

bn-inception:  ## BN Fig. 2-3: Inception vs BN-x5/x30 steps, mini ~34 min CPU (SCALE=mini-long: 3 seeds; SCALE=full: ImageNet)
	$(RUN) experiment=$(if $(filter full,$(SCALE)),bn_inception_full,$(if $(filter mini-long,$(SCALE)),bn_inception_long,bn_inception)) $(ARGS)

# Concept studies (issue #8): experiments/studies/, conf/study/, results/studies/.
STUDY := $(PY) -m convnet_repro.experiments.studies
STUDIES := conv_vs_correlation edge_efficiency parameter_sharing equivariance variable_size_pooling structured_output first_layer_filters

studies: $(addprefix study-,$(STUDIES))  ## All concept studies (issue #8), minutes each

study-conv_vs_correlation:  ## DL book 9.1: true conv vs cross-correlation, associativity
	$(STUDY).conv_vs_correlation $(ARGS)

study-edge_efficiency:  ## DL book 9.2: edge detection, conv vs dense/sparse matrix
	$(STUDY).edge_efficiency $(ARGS)

study-parameter_sharing:  ## DL book 9.2-9.5: dense/unshared/tiled/conv on MNIST
	$(STUDY).parameter_sharing $(ARGS)

study-equivariance:  ## DL book 9.2-9.3: shift equivariance, pooling invariance
	$(STUDY).equivariance $(ARGS)

study-variable_size_pooling:  ## DL book 9.3: QuadrantPooling2D on mixed input sizes
	$(STUDY).variable_size_pooling $(ARGS)

study-structured_output:  ## DL book 9.6: FCN labels every pixel of MNIST composites
	$(STUDY).structured_output $(ARGS)

study-first_layer_filters:  ## DL book 9.10: learned first-layer filters (Imagenette)
	$(STUDY).first_layer_filters $(ARGS)

# The long tier: each mini model until its tuning-split top-1 plateaus
# (conf/fragment/imagenette_mini_long.yaml); trained one experiment at a time
# (finished runs are skipped on a rerun, a killed one resumes), each scored by
# its report hook, then the table of scale mini-long.
IMAGENETTE_LONG := imagenette_alexnet_5cnns_long imagenette_vgg_a_long imagenette_googlenet_long imagenette_resnet18_long

imagenet-table:  ## ImageNet table (AlexNet/VGG/GoogLeNet/ResNet), mini scale on Imagenette, ~35 min CPU; FRACTION=0.25 shortens; SCALE=mini-long: trained to a plateau (hours; STORE=DIR: in a restored store)
ifeq ($(SCALE),mini-long)
	@for e in $(IMAGENETTE_LONG); do $(RUN) experiment=$$e $(STORE_OVERRIDES) $(ARGS) || exit $$?; done
	$(MAKE) imagenet-report SCALE=mini-long
else
	$(PY) -m convnet_repro.experiments.reports.imagenet_table --run --fraction $(or $(FRACTION),1.0) $(ARGS)
endif

mini-choices:  ## Re-make the mini configs' choices (inits, crop area) on the tuning split, ~1.5 h CPU (QUESTIONS="alexnet_init ...")
	$(PY) -m convnet_repro.experiments.choices $(foreach q,$(QUESTIONS),--question $(q)) $(ARGS)

imagenet-report:  ## Rebuild results/imagenet_table/ from the MLflow store (SCALE=mini|mini-long|full; STORE=DIR)
	$(PY) -m convnet_repro.experiments.reports.imagenet_table --scale $(or $(SCALE),mini) $(if $(STORE),--tracking-uri sqlite:///$(STORE_ROOT)/mlruns.db) $(ARGS)

rehearse:  ## Dress rehearsal of a full-scale config before GPU-days: EXPERIMENT=imagenet_resnet50 [ARGS="--layout tfds"]
	$(PY) -m convnet_repro.experiments.rehearse experiment=$(or $(EXPERIMENT),imagenet_resnet50) $(ARGS)

smoke:  ## Engine smoke run (tiny generated data, seconds; into /tmp)
	$(RUN) experiment=smoke debug=smoke $(ARGS)

bench-eval-memory:  ## Evaluation peak RSS at N and 4N images (144 crops, 1000 classes); ARGS="--images 100"
	$(PY) -m benchmarks.bench_eval_memory $(ARGS)

engine-bench:  ## Engine loop overhead vs bare model.fit (BN-MNIST MLP)
	$(PY) -m benchmarks.engine_bench $(ARGS)

.PHONY: help install test test-backends test-slow test-ci-slow lint bench bench-input gpu-budget gpu-steps ui bn-mnist bn-mnist-short data-check bn-inception studies study-conv_vs_correlation study-edge_efficiency study-parameter_sharing study-equivariance study-variable_size_pooling study-structured_output study-first_layer_filters imagenet-table mini-choices imagenet-report rehearse smoke bench-eval-memory engine-bench
