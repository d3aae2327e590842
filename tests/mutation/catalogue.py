"""The planted bugs: one `Mutant` each, grouped by area. Kinds: off-by-one, dropped term, option ignored, wrong
orientation, check removed. Snippets are matched with indentation ignored (see runner.py)."""

from .runner import Mutant

MODEL_TESTS = ("tests/model/test_modeling.py", "tests/model/test_token_dropping.py")
LOSS_TESTS = ("tests/model/test_modeling.py", "-k", "cmpm")
METRIC_TESTS = ("tests/evaluation/test_metrics.py",)
SAMPLER_TESTS = ("tests/training/test_sampler.py",)
BUILD_TESTS = ("tests/data/test_build.py",)
WIRING_TESTS = ("tests/training/test_wiring.py",)
DISTRIBUTED_RUN_TESTS = ("tests/training/test_distributed_run.py",)
CONVERSION_TESTS = ("tests/model/test_conversion.py",)

MUTANTS = [
    # --- loss -------------------------------------------------------------------------------------------------------
    Mutant(
        "cmpm-one-direction-only", "loss", "dropped term", "modeling_ivt/modeling_ivt.py",
        "return kl(image_to_text) + kl(text_to_image)",
        "return kl(image_to_text)",
        LOSS_TESTS,
    ),
    Mutant(
        "cmpm-targets-not-normalised", "loss", "dropped term", "modeling_ivt/modeling_ivt.py",
        "targets = labels / labels.norm(dim=1, keepdim=True)",
        "targets = labels",
        LOSS_TESTS,
    ),
    Mutant(
        "cmpm-text-to-image-transposed", "loss", "wrong orientation", "modeling_ivt/modeling_ivt.py",
        "text_to_image = text_features @ nn.functional.normalize(image_features, dim=-1).t()",
        "text_to_image = image_features @ nn.functional.normalize(text_features, dim=-1).t()",
        LOSS_TESTS,
    ),
    Mutant(
        "cmpm-under-autocast", "loss", "check removed", "modeling_ivt/modeling_ivt.py",
        "with torch.autocast(image_features.device.type, enabled=False):",
        "with torch.enable_grad():",
        LOSS_TESTS,
    ),
    Mutant(
        "gathered-cmpm-never-gathers", "loss", "option ignored", "training/loss.py",
        """
        if self.gathers:
            image_features = gather_with_grad(image_features)
        """,
        """
        if False:
            image_features = gather_with_grad(image_features)
        """,
        DISTRIBUTED_RUN_TESTS,
    ),
    Mutant(
        "local-loss-ignored", "loss", "option ignored", "training/loss.py",
        """
        def __init__(self, local_loss: bool = False, world_size: int = 1):
            super().__init__()
            self.gathers = world_size > 1 and not local_loss
        """,
        """
        def __init__(self, local_loss: bool = False, world_size: int = 1):
            super().__init__()
            self.gathers = world_size > 1
        """,
        DISTRIBUTED_RUN_TESTS,
    ),
    Mutant(
        "itc-targets-not-spread", "loss", "dropped term", "training/loss.py",
        "return positives / positives.sum(dim=1, keepdim=True)",
        "return positives",
        ("tests/pretraining/test_losses.py",),
    ),
    Mutant(
        "hard-negative-may-be-a-positive", "loss", "check removed", "training/loss.py",
        'weights = nn.functional.softmax(logits.detach().float().masked_fill(positive_mask, float("-inf")), dim=1)',
        "weights = nn.functional.softmax(logits.detach().float(), dim=1)",
        ("tests/pretraining/test_losses.py",),
    ),
    Mutant(
        "hard-negatives-from-one-process", "loss", "wrong orientation", "training/loss.py",
        "negative_text_index = sample_hard_negatives(logits_per_image, positives, generator)",
        "negative_text_index = sample_hard_negatives(logits_per_image, positives, generator) % batch_size",
        ("tests/pretraining/test_pretraining_run.py", "-k", "itc_over"),
    ),
    # --- token dropping ---------------------------------------------------------------------------------------------
    Mutant(
        "drop-count-never-reaches-the-maximum", "token dropping", "off-by-one", "modeling_ivt/modeling_ivt.py",
        "num_drop = torch.floor(uniform * (max_drop + 1)).long()",
        "num_drop = torch.floor(uniform * max_drop).long()",
        MODEL_TESTS,
    ),
    Mutant(
        "n-counted-without-cls-and-sep", "token dropping", "off-by-one", "modeling_ivt/modeling_ivt.py",
        "max_drop = torch.minimum(torch.floor(lengths * ratio).long(), candidates.sum(dim=1))",
        "max_drop = torch.minimum(torch.floor(candidates.sum(dim=1) * ratio).long(), candidates.sum(dim=1))",
        MODEL_TESTS,
    ),
    Mutant(
        "cls-may-be-dropped", "token dropping", "check removed", "modeling_ivt/modeling_ivt.py",
        "candidates[:, 0] = False",
        "pass",
        MODEL_TESTS,
    ),
    Mutant(
        "sep-may-be-dropped", "token dropping", "check removed", "modeling_ivt/modeling_ivt.py",
        "if protect_last_token:",
        "if False:",
        MODEL_TESTS,
    ),
    Mutant(
        "tokens-dropped-at-evaluation", "token dropping", "check removed", "modeling_ivt/modeling_ivt.py",
        "if self.training and self.config.token_drop_ratio > 0:",
        "if self.config.token_drop_ratio > 0:",
        MODEL_TESTS,
    ),
    # --- metrics ----------------------------------------------------------------------------------------------------
    Mutant(
        "recall-at-k-off-by-one", "metrics", "off-by-one", "training/metrics.py",
        'sums = {f"R@{k}": (ranks[:, 0] < k).to(torch.float64).sum() for k in RECALL_AT}',
        'sums = {f"R@{k}": (ranks[:, 0] <= k).to(torch.float64).sum() for k in RECALL_AT}',
        METRIC_TESTS,
    ),
    Mutant(
        "average-precision-off-by-one", "metrics", "off-by-one", "training/metrics.py",
        "precision = torch.where(valid, positions / (ranks.to(torch.float64) + 1), 0.0)",
        "precision = torch.where(valid, positions / (ranks.to(torch.float64) + 2), 0.0)",
        METRIC_TESTS,
    ),
    Mutant(
        "minp-from-the-first-relevant-image", "metrics", "wrong orientation", "training/metrics.py",
        "last_rank = ranks.gather(1, (num_relevant - 1).unsqueeze(1)).squeeze(1)",
        "last_rank = ranks[:, 0]",
        METRIC_TESTS,
    ),
    Mutant(
        "ranks-within-a-bucket-dropped", "metrics", "dropped term", "training/metrics.py",
        "ranks += ahead[torch.searchsorted(flat, relevant_flat)]",
        "pass",
        METRIC_TESTS,
    ),
    Mutant(
        "ties-favour-the-later-image", "metrics", "wrong orientation", "training/metrics.py",
        "order = scores.view(-1)[flat].argsort(descending=True, stable=True)",
        "order = len(flat) - 1 - scores.view(-1)[flat].flip(0).argsort(descending=True, stable=True)",
        METRIC_TESTS,
    ),
    Mutant(
        "reference-ties-favour-the-later-image", "metrics", "wrong orientation", "training/metrics.py",
        "order = scores.argsort(dim=1, descending=True, stable=True)",
        "order = scores.shape[1] - 1 - scores.flip(1).argsort(dim=1, descending=True, stable=True)",
        METRIC_TESTS,
    ),
    Mutant(
        "gallery-not-normalised", "metrics", "dropped term", "training/metrics.py",
        "gallery_embeds = torch.nn.functional.normalize(gallery_embeds.to(device=device, dtype=torch.float32), dim=-1)",
        "gallery_embeds = gallery_embeds.to(device=device, dtype=torch.float32)",
        METRIC_TESTS,
    ),
    Mutant(
        "query-without-match-accepted", "metrics", "check removed", "training/metrics.py",
        "if len(missing):",
        "if False:",
        METRIC_TESTS,
    ),
    # --- sampler ----------------------------------------------------------------------------------------------------
    Mutant(
        "every-process-takes-the-same-batches", "sampler", "option ignored", "training/sampler.py",
        "return batches[self.rank :: self.num_replicas][:per_process]",
        "return batches[:per_process]",
        SAMPLER_TESTS,
    ),
    Mutant(
        "small-identities-not-filled-up", "sampler", "check removed", "training/sampler.py",
        "if len(indices) < self.pairs_per_id:",
        "if False:",
        SAMPLER_TESTS,
    ),
    Mutant(
        "resume-restarts-the-epoch", "sampler", "option ignored", "training/sampler.py",
        "yield from self._epoch_batches(self.epoch)[self.batches_consumed :]",
        "yield from self._epoch_batches(self.epoch)",
        SAMPLER_TESTS,
    ),
    Mutant(
        "same-order-every-epoch", "sampler", "option ignored", "training/sampler.py",
        'rng = random.Random(f"identity-sampler-{self.seed}-{epoch}")',
        'rng = random.Random(f"identity-sampler-{self.seed}")',
        SAMPLER_TESTS,
    ),
    # --- builder validation -----------------------------------------------------------------------------------------
    Mutant(
        "empty-caption-list-accepted", "builder validation", "check removed", "dataset_scripts/build.py",
        "elif not captions:",
        "elif False:",
        BUILD_TESTS,
    ),
    Mutant(
        "whitespace-caption-accepted", "builder validation", "check removed", "dataset_scripts/build.py",
        "elif any(not caption.strip() for caption in captions):",
        "elif any(not caption for caption in captions):",
        BUILD_TESTS,
    ),
    Mutant(
        "boolean-person-id-accepted", "builder validation", "check removed", "dataset_scripts/build.py",
        "elif isinstance(person_id, bool) or not isinstance(person_id, int):",
        "elif not isinstance(person_id, int):",
        BUILD_TESTS,
    ),
    Mutant(
        "attributes-string-accepted", "builder validation", "check removed", "dataset_scripts/build.py",
        "if not isinstance(attributes, list) or not all(isinstance(phrase, str) for phrase in attributes):",
        "if not all(isinstance(phrase, str) for phrase in attributes):",
        BUILD_TESTS,
    ),
    Mutant(
        "images-not-fully-decoded", "builder validation", "check removed", "modeling_ivt/image_utils.py",
        """
        if mode is None:
            image.load()
            return image
        """,
        """
        if mode is None:
            return image
        """,
        BUILD_TESTS,
    ),
    Mutant(
        "generator-without-lock", "builder validation", "check removed", "dataset_scripts/generate.py",
        'with FileLock(str(output_dir.parent / f".{output_dir.name}.lock")):',
        "if True:",
        ("tests/data/test_generate.py", "-k", "concurrent"),
    ),
    # --- training wiring --------------------------------------------------------------------------------------------
    Mutant(
        "mixed-precision-ignored", "training wiring", "option ignored", "training/stage.py",
        "mixed_precision=mixed_precision,",
        'mixed_precision="no",',
        WIRING_TESTS,
    ),
    Mutant(
        "gradient-accumulation-ignored", "training wiring", "option ignored", "training/stage.py",
        "gradient_accumulation_steps=gradient_accumulation_steps,",
        "gradient_accumulation_steps=1,",
        WIRING_TESTS,
    ),
    Mutant(
        "checkpoints-total-limit-ignored", "training wiring", "option ignored", "training/checkpointing.py",
        "if self.total_limit is not None:",
        "if False:",
        WIRING_TESTS,
    ),
    Mutant(
        "fp16-on-cpu-accepted", "training wiring", "check removed", "training/stage.py",
        'if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":',
        "if False:",
        WIRING_TESTS,
    ),
    Mutant(
        "gradient-checkpointing-ignored", "training wiring", "option ignored", "training/run.py",
        "if config.gradient_checkpointing:",
        "if False:",
        WIRING_TESTS,
    ),
    Mutant(
        "run-always-uses-the-per-process-loss", "training wiring", "option ignored", "training/run.py",
        "local_loss=config.finetune.local_loss,",
        "local_loss=True,",
        DISTRIBUTED_RUN_TESTS,
    ),
    Mutant(
        "without-validation-the-first-epoch-is-kept", "training wiring", "off-by-one", "training/run.py",
        "elif validation is None and last:",
        "elif validation is None and progress.epoch == 1:",
        WIRING_TESTS,
    ),
    Mutant(
        "items-depend-on-the-worker", "training wiring", "option ignored", "training/ivt_training.py",
        "generator = torch.Generator().manual_seed(item_seed)",
        'generator = torch.Generator().manual_seed(item_seed + getattr(torch.utils.data.get_worker_info(), "id", 0))',
        ("tests/training/test_wiring.py", "-k", "workers"),
    ),
    # --- converters -------------------------------------------------------------------------------------------------
    Mutant(
        "position-grid-transposed", "converters", "wrong orientation", "modeling_ivt/conversion_utils.py",
        "grid = grid.reshape(1, old_grid[0], old_grid[1], hidden).permute(0, 3, 1, 2).float()",
        "grid = grid.reshape(1, old_grid[1], old_grid[0], hidden).permute(0, 3, 2, 1).float()",
        CONVERSION_TESTS,
    ),
    Mutant(
        "position-grid-align-corners", "converters", "wrong orientation", "modeling_ivt/conversion_utils.py",
        'grid = torch.nn.functional.interpolate(grid, size=tuple(new_grid), mode="bilinear", align_corners=False)',
        'grid = torch.nn.functional.interpolate(grid, size=tuple(new_grid), mode="bilinear", align_corners=True)',
        CONVERSION_TESTS,
    ),
    Mutant(
        "position-grid-cls-replaced", "converters", "dropped term", "modeling_ivt/conversion_utils.py",
        "return torch.cat([cls_entry, grid], dim=1)",
        "return torch.cat([grid[:, :1], grid], dim=1)",
        CONVERSION_TESTS,
    ),
    Mutant(
        "vit-qkv-in-the-wrong-order", "converters", "wrong orientation", "modeling_ivt/convert_vit_bert.py",
        """
        tensors = take_tensors(state_dict, {**mapping, **qkv_parts}, "ViT")
        for index, kind in itertools.product(range(num_layers), KINDS):
            parts = [tensors.pop(f"encoder.layers.{index}.self_attn.{name}.{kind}") for name in ("query", "key", "value")]
        """,
        """
        tensors = take_tensors(state_dict, {**mapping, **qkv_parts}, "ViT")
        for index, kind in itertools.product(range(num_layers), KINDS):
            parts = [tensors.pop(f"encoder.layers.{index}.self_attn.{name}.{kind}") for name in ("key", "query", "value")]
        """,
        CONVERSION_TESTS,
    ),
    Mutant(
        "original-mlps-swapped", "converters", "wrong orientation", "modeling_ivt/convert_original_checkpoint.py",
        """
        "mlp_vis.fc1": "image_mlp.fc1",
        "mlp_vis.fc2": "image_mlp.fc2",
        "mlp_txt.fc1": "text_mlp.fc1",
        "mlp_txt.fc2": "text_mlp.fc2",
        """,
        """
        "mlp_vis.fc1": "text_mlp.fc1",
        "mlp_vis.fc2": "text_mlp.fc2",
        "mlp_txt.fc1": "image_mlp.fc1",
        "mlp_txt.fc2": "image_mlp.fc2",
        """,
        CONVERSION_TESTS,
    ),
]  # fmt: skip
