"""Every config field, with its default; the other configs start from here.

Any field can be overridden on the command line, e.g.
``--config.target_sparsity=0.98 --config.method=gradual``.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  """The defaults: LeNet-300-100 on Fashion-MNIST with Drop Pruning to 95 %."""
  config = ml_collections.ConfigDict()

  # ---- data ----------------------------------------------------------------
  # "mnist", "fashion_mnist" or "cifar10".
  config.dataset = "fashion_mnist"
  # Folder with MNIST-layout IDX files (MNIST-like datasets; works offline). When
  # unset, TensorFlow Datasets is used.
  config.idx_dir = config_dict.placeholder(str)
  # TFDS data folder; unset = TFDS's default ($TFDS_DATA_DIR or ~/tensorflow_datasets).
  config.data_dir = config_dict.placeholder(str)
  # Let TFDS download and prepare a missing dataset (needs network and TensorFlow).
  config.download = False
  # Validation split: the LAST N images of the training split, never trained on;
  # hyperparameters are chosen on its error (docs/experiments.md, "Validation"). Unset =
  # 10,000 for training splits of at least 50,000 images (MNIST, Fashion-MNIST,
  # CIFAR-10), none for smaller ones; 0 = none (nothing is reported as validation).
  config.validation_examples = config_dict.placeholder(int)
  # Use only the first N examples of a split (tests, quick looks); unset = all. For the
  # training split this applies to the images left after the validation split.
  config.max_train_examples = config_dict.placeholder(int)
  config.max_test_examples = config_dict.placeholder(int)
  # Random crop (4 px padding) and horizontal flip of training images.
  config.augment = False
  # MNIST-like data (CIFAR-10 is always standardised): subtract the mean and divide by the
  # std of the pixels of the images trained on (the validation split held out), instead of
  # only scaling them to [0, 1]. Centred inputs condition SGD better (LeCun et al. 1998,
  # "Efficient BackProp").
  config.standardize = False

  # ---- model ---------------------------------------------------------------
  # "lenet300", "lenet5" or "vgg16".
  config.model = "lenet300"
  # VGG-16 only: scales every layer's width.
  config.width_multiplier = 1.0

  # "linen" (flax.linen modules) or "nnx" (the flax.nnx versions of the same
  # networks, experiments.models.NNX*; lenet300 and lenet5). Both train through
  # the same functional loop; the initial weights differ (another init RNG scheme).
  config.model_api = "linen"
  # A finished run folder (the same data, validation split and model) whose final weights
  # start this run instead of a random initialisation, e.g. a trained dense model to prune;
  # the optimizer state and the masks start fresh (experiments/finished_runs.py). A resumed
  # run restores its own checkpoint. Unset = random initialisation from the seed.
  config.init_workdir = config_dict.placeholder(str)

  # ---- optimisation ----------------------------------------------------------
  config.num_epochs = 20
  # Global batch size (over all devices and processes); must divide by their count.
  config.batch_size = 128
  config.eval_batch_size = 1000
  # "sgd" (with momentum) or "adam" (adamw when weight_decay > 0).
  config.optimizer = "sgd"
  config.learning_rate = 0.05
  config.momentum = 0.9
  config.nesterov = False
  config.weight_decay = 0.0
  # "constant", "cosine" (to 0 at the last step) or "step" (x lr_step_factor at
  # each of lr_step_fractions of the training, so that it scales with num_epochs).
  config.lr_schedule = "cosine"
  config.lr_step_fractions = (0.5, 0.75)
  config.lr_step_factor = 0.1
  # Linear learning-rate warmup over the first epochs (0 = none): it multiplies the
  # schedule above, so a run starts at a small fraction of the rate.
  config.warmup_epochs = 0.0
  config.seed = 0
  # Learning-rate rewinding (Renda et al. 2020) for the epochs after prune_end_epoch
  # (the fine-tuning phase, masks frozen, weights kept): they replay the schedule from
  # this epoch to the end, stretched or compressed to fit the phase. 0 = restart the
  # whole schedule (Le & Hua 2021); unset = the schedule runs on unchanged.
  config.lr_rewind_epoch = config_dict.placeholder(float)

  # ---- distillation ----------------------------------------------------------
  # A finished run folder (usually a dense run on the same data and validation split)
  # whose model teaches: the loss mixes the labels with its softened logits,
  # (1 - distill_weight) * CE(labels) + distill_weight * T^2 * CE(teacher / T, student / T),
  # T = distill_temperature (experiments/distill.py). Unset = labels only.
  config.teacher_workdir = config_dict.placeholder(str)
  config.distill_weight = 0.5
  config.distill_temperature = 4.0

  # ---- pruning ----------------------------------------------------------------
  # "dense", "drop" (Drop Pruning), "gradual" (Zhu & Gupta), "drop_away_only",
  # "drop_back_only", "random", "han" (Han et al. 2015 prune-retrain), or the dynamic
  # sparse training baselines "rigl" (Evci et al. 2020) and "set" (Mocanu et al. 2018),
  # sparse from the first step at target_sparsity.
  config.method = "drop"
  config.target_sparsity = 0.95
  # The pruning window in epochs (fractions allowed); masks are frozen after it.
  # rigl / set: the topology changes until prune_end_epoch (their end_step);
  # prune_begin_epoch is not used (they are sparse from the first step).
  config.prune_begin_epoch = 1.0
  config.prune_end_epoch = 12.0
  # Steps between pruning steps (rigl / set: between topology updates).
  config.update_every = 100
  config.drop_away_prob = 0.5
  config.drop_back_prob = 0.1
  # "none" (constant p and q) or "cosine": over the pruning window p rises to 1 and
  # q falls to 0 along a cosine, so the drop calms down as the target nears.
  config.drop_anneal = "none"
  # "active" (q |A| weights come back per step) or "pruned" (each pruned weight
  # with probability q); see docs/algorithm.md.
  config.drop_back_scale = "active"
  # "zero" or "restore": the value a revived weight starts from.
  config.regrow_init = "zero"
  # method="drop": which pool members drop away, "uniform" (each with p) or "importance"
  # (the less important more often: min(1, lam exp(-z / temperature)), z the importance
  # standardised over the pool, lam keeping p c expected removals), and which pruned
  # weights drop back, "uniform", "gradient" (larger dense |gradient| more often, the
  # same expected count) or "stash" (larger magnitude when last pruned more often; keeps
  # the stash, revived weights still restart by regrow_init). See docs/algorithm.md,
  # "Drop probabilities from importance".
  config.drop_away = "uniform"
  config.drop_back = "uniform"
  # T > 0 of those weighted rules (-> inf: uniform; -> 0: strictly by score); unset = the
  # library's 1.0. Only with drop_away="importance" or drop_back="gradient" / "stash".
  config.temperature = config_dict.placeholder(float)
  # What ranks the weights for the pool and the exact last step of "drop", "gradual",
  # "drop_away_only" and "drop_back_only": "magnitude" (|w|), "random" or "saliency"
  # (|w g|, g the step's dense gradient).
  config.importance = "magnitude"
  # "uniform", "global" or "erk".
  config.sparsity_distribution = "uniform"
  # Keep the masks in the optimizer state as bits (1/8 of the bytes; identical
  # results). For models whose optimizer state is tight on accelerator memory.
  config.packed_masks = False
  # method="han": prune-retrain cycles spread over the pruning window, and the
  # quality parameter (prune |w| < quality * std of the layer). Without a quality,
  # every cycle prunes by magnitude towards target_sparsity in equal increments.
  config.han_cycles = 5
  config.han_quality = config_dict.placeholder(float)
  # method="rigl" / "set": at each update every layer replaces the fraction d(t) of its
  # active weights (lowest magnitude out; largest dense gradient in for rigl, random
  # for set). d(t) = drop_fraction, in (0, 1], decayed by drop_fraction_decay: "cosine"
  # (to 0 at prune_end_epoch) or "constant". sparsity_distribution must be "uniform" or
  # "erk" (per-layer targets that stay fixed; "global" is refused).
  config.drop_fraction = 0.3
  config.drop_fraction_decay = "cosine"

  # ---- devices ---------------------------------------------------------------
  # How the step is spread over the devices: "jit" (jax.jit over a device mesh of all
  # devices of all processes, the batch sharded over every mesh axis; JAX's current way)
  # or "pmap" (jax.pmap over the local devices, params replicated; kept and tested).
  # See docs/experiments.md.
  config.parallel = "jit"
  # parallel="jit": the mesh's axis sizes (one may be -1: the remaining devices) and
  # names. The product must equal the device count.
  config.mesh_shape = (-1,)
  config.mesh_axes = ("data",)
  # parallel="jit": a mesh axis to shard the params and the optimizer state over
  # (FSDP: each array's largest axis divisible by the axis size); unset = replicated.
  config.fsdp_axis = config_dict.placeholder(str)
  # Simulated CPU devices (set before JAX starts; only main.py can apply it).
  # 0 = leave JAX's default.
  config.host_devices = 0
  # Use only the first N local devices; unset = all.
  config.num_devices = config_dict.placeholder(int)
  # Multi-host data parallelism: calls jax.distributed.initialize(). The workdir
  # must be on a file system that every process sees (the checkpoints are shared).
  config.multihost = False
  # Explicit cluster (e.g. several processes on one machine); unset = autodetect.
  config.coordinator_address = config_dict.placeholder(str)
  config.num_processes = config_dict.placeholder(int)
  config.process_id = config_dict.placeholder(int)

  # ---- run control -------------------------------------------------------------
  # Show a tqdm progress bar per epoch.
  config.progress = True
  # Stop cleanly after this epoch (its checkpoint is written); rerun to resume.
  config.stop_after_epochs = config_dict.placeholder(int)
  # Also checkpoint every N global steps (besides every epoch's end and SIGTERM), for
  # long epochs; unset = at epochs' ends only. Results are the same either way.
  config.checkpoint_every_steps = config_dict.placeholder(int)
  # Stop abruptly before this global step, saving nothing of the unfinished epoch
  # (simulates a crash; used by the resume test).
  config.stop_after_steps = config_dict.placeholder(int)
  return config
