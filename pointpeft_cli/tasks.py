"""Task identifiers and their upstream sampling/grouping defaults (cli.md, method.md §8)."""

from __future__ import annotations

from dataclasses import dataclass

from pointpeft_cli.errors import UsageError

MODELNET40_CLASSES: tuple[str, ...] = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone",
    "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard",
    "lamp", "laptop", "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio",
    "range_hood", "sink", "sofa", "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase",
    "wardrobe", "xbox",
)  # fmt: skip

SCANOBJECTNN_CLASSES: tuple[str, ...] = (
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table", "bed",
    "pillow", "sink", "sofa", "toilet",
)  # fmt: skip

SHAPES_CLASSES: tuple[str, ...] = (
    "airplane", "bed", "bookshelf", "bottle", "chair", "lamp", "mug", "sofa", "stool", "table",
    "guitar", "tent",
)  # fmt: skip


@dataclass(frozen=True)
class TaskSpec:
    """What a task feeds the model: class names (None = read from the data) and sampling."""

    name: str
    class_names: tuple[str, ...] | None
    points: int
    num_group: int
    group_size: int
    asset: str | None  # registry asset holding the data; None for generated/user data
    normalize: bool  # pc_normalize (centroid, unit sphere) as upstream does for this task

    @property
    def num_classes(self) -> int | None:
        return None if self.class_names is None else len(self.class_names)


TASKS: dict[str, TaskSpec] = {
    "modelnet40": TaskSpec("modelnet40", MODELNET40_CLASSES, 1024, 64, 32, "modelnet40", True),
    "scanobjectnn-objbg": TaskSpec(
        "scanobjectnn-objbg", SCANOBJECTNN_CLASSES, 2048, 128, 32, "scanobjectnn", False
    ),
    "scanobjectnn-objonly": TaskSpec(
        "scanobjectnn-objonly", SCANOBJECTNN_CLASSES, 2048, 128, 32, "scanobjectnn", False
    ),
    "scanobjectnn-hardest": TaskSpec(
        "scanobjectnn-hardest", SCANOBJECTNN_CLASSES, 2048, 128, 32, "scanobjectnn", False
    ),
    # few-shot: classes are the episode's `way` labels, known once the episode is loaded
    "modelnet40-fewshot": TaskSpec(
        "modelnet40-fewshot", None, 1024, 64, 32, "modelnet40-fewshot", True
    ),
    "shapes": TaskSpec("shapes", SHAPES_CLASSES, 1024, 64, 32, None, True),
    "folder": TaskSpec("folder", None, 1024, 64, 32, None, True),
}


def get_task(name: str) -> TaskSpec:
    """The TaskSpec for `name`, or a UsageError listing the known tasks."""
    try:
        return TASKS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, TASKS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known tasks: {', '.join(TASKS)}"
        raise UsageError(f"unknown task {name!r}", hint=hint) from None
