"""The DeepSeek-R1 recipe as one command (`mmr1 pipeline --config configs/r1_tiny.yaml`).

Stages run in the order the YAML lists them; each training stage starts from the previous
model stage's checkpoint folder and trains with the callbacks of `mmr1 fit` (atomic checkpoints,
exact resume, a stop on non-finite weights, export to `<stage>/export`). Every stage writes
`<out_dir>/<stage>/metrics.json` with its minutes; a stage whose model answers questions adds `mmr1 eval`'s
accuracy and format rate on `eval_manifest` (default: `eval_size` built-in synthetic test records), the mean
reward, and the accuracy with the image or the audio withheld. An alignment stage (contrastive, masked) trains
no answers, so it is not asked any: a contrastive stage reports its retrieval recall instead. A stage's
`data:` takes the datamodule's options, e.g. its own `train_manifest` and `val_manifest`.
A stage whose metrics.json exists is done and skipped; a killed stage resumes from its
`checkpoints/last.ckpt`. `--only NAME` runs one stage alone, `--rerun NAME` redoes it.
The recipe's model is copied to `<out_dir>/final`: the stage `final` names (the R1 recipe's last RL stage,
not the distilled student), by default the last stage that leaves a model. A table compares the stages.

A `clm` stage trains the reasoning core alone as a causal LM on the training records' text (chat format,
no media), packed into blocks: its `data:` takes `TextDataModule`'s options, and without `train_files`
the text of `synth_train_size` built-in training records, written to `<stage>/text.jsonl`.
A value "@stage" refers to another stage's output: its model folder, or for a
rejection-sampling stage its manifest. `init_from: scratch` starts a stage from the preset
(e.g. a smaller distillation student). `select: {monitor, mode, every[, keep_start]}` validates a training
stage every `every` steps and exports its best checkpoint by `monitor`, or with `keep_start: true` the model it
started from when no checkpoint beats it (`mmr1.callbacks.StartCandidate`; the choice goes to metrics.json).
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

# objective -> (LightningModule class path, LightningDataModule class path)
TRAINING = {
    "contrastive": ("mmr1.objectives.ContrastiveModule", "mmr1.datamodules.datamodules.PairedDataModule"),
    "clm": ("mmr1.objectives.CLMModule", "mmr1.datamodules.text.TextDataModule"),
    "masked": ("mmr1.objectives.MaskedModule", "mmr1.datamodules.datamodules.MaskedDataModule"),
    "sft": ("mmr1.objectives.SFTModule", "mmr1.datamodules.datamodules.SFTDataModule"),
    "grpo": ("mmr1.objectives.GRPOModule", "mmr1.datamodules.datamodules.RLPromptDataModule"),
    "dpo": ("mmr1.objectives.DPOModule", "mmr1.datamodules.datamodules.PreferenceDataModule"),
    "distill": ("mmr1.objectives.DistillModule", "mmr1.datamodules.datamodules.SFTDataModule"),
}
ALIGNMENT = {"contrastive", "masked"}  # objectives that train the encoders' features, not answers
SAMPLING = "sample"
SELECT_KEYS = {"monitor", "mode", "every", "keep_start"}
STAGE_KEYS = {"objective", "steps", "model", "data", "trainer", "init_from", "checkpoint_every", "sample", "select"}


@dataclass
class Recipe:
    out_dir: Path
    stages: dict[str, dict]
    preset: str = "tiny"
    seed: int = 0
    eval_manifest: Optional[str] = None  # the records every stage is scored on; None: eval_size synthetic ones
    eval_size: int = 100  # held-out synthetic test records answered after every stage (without eval_manifest)
    eval_batch_size: int = 32
    max_new_tokens: int = 96
    rewards: dict[str, float] = field(default_factory=lambda: {"accuracy": 1.0, "format": 0.5})
    final: Optional[str] = None  # the stage whose model is copied to <out_dir>/final; None: the last model stage

    @classmethod
    def from_file(cls, path: str | Path) -> "Recipe":
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from e
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping with out_dir and stages, got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}; expected some of {sorted(known)}")
        if not data.get("stages"):
            raise ValueError(f"{path}: 'stages' must list at least one stage")
        recipe = cls(**{**data, "out_dir": Path(data.get("out_dir", "runs/r1"))})
        for name, spec in recipe.stages.items():
            recipe._check_stage(path, name, spec)
        recipe.check_final(f"{path}: ")
        return recipe

    def check_final(self, where: str = "") -> None:
        """`final` must name a stage that trains a model (a sampling stage leaves a manifest)."""
        if self.final is not None and self.stages.get(self.final, {}).get("objective") not in TRAINING:
            models = [name for name, spec in self.stages.items() if spec.get("objective") in TRAINING]
            raise ValueError(f"{where}final: expected the name of a stage that trains a model, one of {models}; "
                             f"got {self.final!r}")

    def _check_stage(self, path, name: str, spec: dict) -> None:
        objective = spec.get("objective")
        if objective not in TRAINING and objective != SAMPLING:
            raise ValueError(f"{path}: stage {name!r}: objective {objective!r} is not one of "
                             f"{sorted(TRAINING) + [SAMPLING]}")
        unknown = sorted(set(spec) - STAGE_KEYS)
        if unknown:
            raise ValueError(f"{path}: stage {name!r}: unknown key(s) {unknown}; expected some of {sorted(STAGE_KEYS)}")
        if objective in TRAINING and not spec.get("steps"):
            raise ValueError(f"{path}: stage {name!r}: 'steps' (optimizer steps) is required")
        select = spec.get("select")
        if select is not None:
            if objective not in TRAINING or not isinstance(select, dict) or set(select) - SELECT_KEYS \
                    or not {"monitor", "mode", "every"} <= set(select):
                raise ValueError(f"{path}: stage {name!r}: select: expected a training stage's "
                                 f"{{monitor, mode, every[, keep_start]}}, got {select!r}")


class Pipeline:
    def __init__(self, recipe: Recipe, progress: bool = True):
        self.recipe = recipe
        self.progress = progress

    def stage_dir(self, name: str) -> Path:
        return self.recipe.out_dir / name

    def output(self, name: str) -> Path:
        """What a stage leaves for the next: a model folder, or a manifest for rejection sampling."""
        if name not in self.recipe.stages:
            raise ValueError(f"'@{name}': no stage of that name; stages are {list(self.recipe.stages)}")
        sampled = self.recipe.stages[name]["objective"] == SAMPLING
        path = self.stage_dir(name) / ("samples.jsonl" if sampled else "export")
        if not path.exists():
            raise FileNotFoundError(f"stage {name!r} has not produced {path} yet; run it first")
        return path

    def run(self, only: Optional[str] = None, rerun: tuple[str, ...] = ()) -> list[dict]:
        names = list(self.recipe.stages)
        for name in (only, *rerun):
            if name is not None and name not in names:
                raise ValueError(f"stage {name!r}: no such stage; stages are {names}")
        self.recipe.check_final()
        previous_model: Optional[Path] = None
        for name in names:
            spec = self.recipe.stages[name]
            done = (self.stage_dir(name) / "metrics.json").is_file()
            if (only is None or name == only) and (not done or name in rerun):
                if name in rerun:
                    shutil.rmtree(self.stage_dir(name), ignore_errors=True)
                self._run_stage(name, spec, previous_model)
            if spec["objective"] != SAMPLING and (self.stage_dir(name) / "export").is_dir():
                previous_model = self.stage_dir(name) / "export"
        summary = [self._metrics(name) for name in names if (self.stage_dir(name) / "metrics.json").is_file()]
        model = previous_model if self.recipe.final is None else self.stage_dir(self.recipe.final) / "export"
        if model is not None and model.is_dir():
            final = self.recipe.out_dir / "final"
            shutil.rmtree(final, ignore_errors=True)
            shutil.copytree(model, final)
        (self.recipe.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(table(summary))
        return summary

    def _metrics(self, name: str) -> dict:
        return {"stage": name, **json.loads((self.stage_dir(name) / "metrics.json").read_text())}

    # ---- stages -----------------------------------------------------------------------------
    def _run_stage(self, name: str, spec: dict, previous_model: Optional[Path]) -> None:
        print(f"== stage {name} ({spec['objective']}) ==", flush=True)
        folder = self.stage_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        if spec["objective"] == SAMPLING:
            model_folder = self._ref(spec.get("init_from"), previous_model)
            self._sample(spec, model_folder, folder)
        else:
            model_folder = self._train(name, spec, previous_model, folder)
        metrics = {} if spec["objective"] in ALIGNMENT else \
            evaluate(model_folder, self.recipe, self.eval_manifest(model_folder), folder)
        metrics["minutes"] = round((time.perf_counter() - start) / 60, 2)
        for extra in ("sampling.json", "retrieval.json", "selection.json"):
            if (folder / extra).is_file():
                metrics.update(json.loads((folder / extra).read_text()))
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    def eval_manifest(self, model_folder: Path) -> Path:
        """The recipe's eval_manifest, else `eval_size` synthetic test records written once under out_dir."""
        if self.recipe.eval_manifest is not None:
            path = Path(self.recipe.eval_manifest)
            if not path.is_file():
                raise FileNotFoundError(f"eval_manifest: {path}: no such manifest")
            return path
        path = self.recipe.out_dir / "eval_data" / "test.jsonl"
        if not path.is_file():
            from mmr1.config import Config
            from mmr1.datamodules.synth import image_size_for, write

            write(path.parent, self.recipe.eval_size, self.recipe.seed, "test",
                  image_size=image_size_for(Config.from_checkpoint(model_folder)))
        return path

    def _ref(self, value: Any, default: Optional[Path] = None) -> Any:
        if isinstance(value, str) and value.startswith("@"):
            return str(self.output(value[1:]))
        return default if value is None else value

    def _resolve_refs(self, mapping: dict) -> dict:
        return {k: self._ref(v) for k, v in (mapping or {}).items()}

    def _train(self, name: str, spec: dict, previous_model: Optional[Path], folder: Path) -> Path:
        import lightning as L
        from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
        from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

        from mmr1.callbacks import StartCandidate, add_run_callbacks, validate_start

        module_path, data_path = TRAINING[spec["objective"]]
        model_args = self._resolve_refs(spec.get("model"))
        init_from = None if spec.get("init_from") == "scratch" else self._ref(spec.get("init_from"), previous_model)
        if init_from is not None:
            model_args["init_from"] = str(init_from)
        else:
            model_args.setdefault("preset", self.recipe.preset)
        L.seed_everything(self.recipe.seed, workers=True, verbose=False)
        module = _load(module_path)(**model_args)
        data_args = {"seed": self.recipe.seed, **self._resolve_refs(spec.get("data"))}
        if spec["objective"] == "clm":
            data_args = self._text_corpus(data_args, module.config, folder)
        if init_from is not None and (Path(init_from) / "tokenizer.json").is_file():
            data_args.setdefault("tokenizer", str(init_from))
        if spec.get("select") and data_args.get("train_manifest") and not data_args.get("val_manifest"):
            data_args["val_manifest"] = str(self._val_manifest(name, data_args, module.config, folder))
        data = _load(data_path)(config=module.config, **data_args)
        checkpoints = ModelCheckpoint(dirpath=folder / "checkpoints", save_last=True,
                                      every_n_train_steps=spec.get("checkpoint_every", 50))
        trainer_args = {"accelerator": "auto", "devices": 1, "max_steps": spec["steps"], "limit_val_batches": 0,
                        "log_every_n_steps": 10, "enable_progress_bar": self.progress,
                        "enable_model_summary": False}
        callbacks = [checkpoints] + ([RichProgressBar()] if self.progress else [])
        select = spec.get("select")
        if select:  # validate every `every` steps and export the best (the start too with keep_start); the
            # monitoring checkpoint comes first, as `trainer.checkpoint_callback` (ExportBest reads it)
            best = ModelCheckpoint(dirpath=folder / "checkpoints", filename="best-{step}", monitor=select["monitor"],
                                   mode=select["mode"], save_top_k=1)
            callbacks = [best] + callbacks + ([StartCandidate()] if select.get("keep_start") else [])
            trainer_args.update(limit_val_batches=1.0, val_check_interval=select["every"], num_sanity_val_steps=0,
                                check_val_every_n_epoch=None)  # every `every` steps, across epochs
        trainer_args.update(spec.get("trainer") or {})
        loggers = [CSVLogger(folder, name="", version=""), TensorBoardLogger(folder, name="", version="")]  # as fit
        trainer = add_run_callbacks(L.Trainer(logger=loggers, default_root_dir=folder, callbacks=callbacks,
                                              **trainer_args))
        last = folder / "checkpoints" / "last.ckpt"
        resume = str(last) if last.is_file() else None
        validate_start(trainer, module, data, resume)
        trainer.fit(module, data, ckpt_path=resume)
        start, monitoring = StartCandidate.of(trainer), trainer.checkpoint_callback
        if start is not None and start.score is not None:
            best_score = monitoring.best_model_score
            (folder / "selection.json").write_text(json.dumps({
                "selected": Path(monitoring.best_model_path).stem if start.beaten_by(monitoring) else "start",
                "start_score": round(start.score, 4),
                "best_score": None if best_score is None else round(float(best_score), 4)}, indent=2) + "\n")
        if spec["objective"] == "contrastive":  # retrieval R@1 on held-out pairs, beside chance
            checker = L.Trainer(accelerator=trainer_args["accelerator"], devices=1, logger=False,
                                enable_progress_bar=False, enable_model_summary=False)
            recall = {k.removeprefix("val/"): round(v, 4) for k, v in checker.validate(module, data, verbose=False)[0]
                      .items() if "/r1_" in k}
            recall["r1_chance"] = round(1 / data.hparams.batch_size, 4)
            (folder / "retrieval.json").write_text(json.dumps(recall, indent=2) + "\n")
        return folder / "export"  # written by ExportBest (mmr1.callbacks) when fit ended

    def _val_manifest(self, name: str, data_args: dict, config, folder: Path) -> Path:
        """A selecting stage that trains on a manifest of its own validates on the built-in val records the
        synthetic stages validate on (`synth_val_size` of them, the recipe's seed), written under the stage;
        with the user's `eval_manifest`, it must name its own `val_manifest`."""
        if self.recipe.eval_manifest is not None:
            raise ValueError(f"stage {name!r}: select validates on a val split; give data.val_manifest beside "
                             f"train_manifest {data_args['train_manifest']}")
        from mmr1.datamodules.datamodules import SYNTH_VAL_SIZE
        from mmr1.datamodules.synth import image_size_for, write

        return write(folder / "val_data", data_args.get("synth_val_size", SYNTH_VAL_SIZE), self.recipe.seed, "val",
                     image_size=image_size_for(config))

    def _text_corpus(self, data_args: dict, config, folder: Path) -> dict:
        """A clm stage's data: its `train_files`, else the text of `synth_train_size` built-in training records."""
        size = data_args.pop("synth_train_size", None)
        if data_args.get("train_files"):
            if size is not None:
                raise ValueError(f"stage {folder.name!r}: give train_files or synth_train_size, not both")
            return data_args
        if size is not None and size < 1:
            raise ValueError(f"stage {folder.name!r}: synth_train_size: expected >= 1 records, got {size}")
        from mmr1.datamodules.synth import image_size_for, write_text

        corpus = write_text(folder / "text.jsonl", 2000 if size is None else size, self.recipe.seed, "train",
                            image_size=image_size_for(config))
        return {**data_args, "train_files": [str(corpus)]}

    def _sample(self, spec: dict, model_folder: Any, folder: Path) -> None:
        from mmr1.rl.rejection import rejection_sample

        if model_folder is None:
            raise ValueError("a rejection-sampling stage needs a model: put it after a training stage or set init_from")
        options = self._resolve_refs(spec.get("sample"))
        options.setdefault("rewards", self.recipe.rewards)  # the stage's own `rewards` may score what it keeps
        counts = rejection_sample(checkpoint=Path(model_folder), out=folder / "samples.jsonl", seed=self.recipe.seed,
                                  summary=folder / "sampling.json", **options)
        if not counts["written"]:
            raise ValueError(f"stage {folder.name!r}: rejection sampling kept none of {counts['samples']} samples "
                             f"(min_reward {options.get('min_reward')}); train the previous stage longer or lower "
                             "min_reward")


def evaluate(model_folder: Path, recipe: Recipe, manifest: Path, folder: Path) -> dict:
    """`mmr1 eval` of the stage's model on `manifest` (greedy; its predictions in `folder`): accuracy, format
    rate and mean reward, then the accuracy with the image or the audio withheld (what the model gets from
    each modality)."""
    from mmr1.evaluate import evaluate as score
    from mmr1.inference import QAPipeline
    from mmr1.rl.rewards import Rewards

    qa = QAPipeline.from_pretrained(model_folder)
    options = {"batch_size": recipe.eval_batch_size, "progress": False, "max_new_tokens": recipe.max_new_tokens}
    summary = score(qa, manifest, output=folder / "predictions.jsonl", **options)
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    records = [{"answer": r["reference"], **({"reasoning": r["reference_reasoning"]} if r.get("reference_reasoning")
                                             else {})} for r in rows]  # what the rewards compare with
    total, _ = Rewards(recipe.rewards)([r["text"] for r in rows], records)
    return {
        "accuracy": round(summary.get("accuracy", 0.0), 4),
        "format_rate": round(summary["format_rate"], 4),
        "mean_reward": round(sum(total) / max(1, len(total)), 4),
        "accuracy_no_image": round(score(qa, manifest, withhold=("image",), **options).get("accuracy", 0.0), 4),
        "accuracy_no_audio": round(score(qa, manifest, withhold=("audio",), **options).get("accuracy", 0.0), 4),
        "eval_records": summary["n"],
    }


def table(summary: list[dict]) -> str:
    columns = ("stage", "accuracy", "format_rate", "mean_reward", "accuracy_no_image", "accuracy_no_audio",
               "minutes")
    rows = [columns] + [tuple(str(s.get(c, "")) for c in columns) for s in summary]
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows)


def _load(class_path: str):
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)
