"""Attacks on the promises: a checkpoint carries data, never code; a refused launch touches
nothing; no run restarts silently; nothing from a file escapes the data root or fakes output.

Every test asserts state: which files exist and their bytes, the exit status and the message.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import rnlvideo
from rnlvideo.checkpoint_format import CheckpointError, load_checkpoint
from rnlvideo.config import ConfigError, compose_config, validate_config
from rnlvideo.config.validation import interpolation_problem
from rnlvideo.data.lists import (
    UnsafePathError,
    check_filename_template,
    path_under,
    read_categories,
    read_video_list,
)
from rnlvideo.engine.distributed import init_distributed
from rnlvideo.engine.resume import RunDirectoryError, RunLock
from rnlvideo.engine.trainer import Trainer
from rnlvideo.files import FileWriteError, save_atomic
from rnlvideo.text import csv_text, printable
from tests.conftest import tiny_run_overrides
from tests.test_evaluation import save_checkpoint
from tools import predict as predict_tool
from tools import test as test_tool

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------- helpers
def snapshot(root: Path) -> dict[str, tuple]:
    """Every file's bytes (as a hash), every folder and link below ``root``."""
    state: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            state[key] = ("link", os.readlink(path))
        elif path.is_dir():
            state[key] = ("dir",)
        else:
            state[key] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return state


def train(*args: str, preexec_fn=None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "tools/train.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec_fn,
    )


def tool_refusal(tool, args: list[str], caplog) -> str:
    """Run a tool's ``main`` expecting a refusal: exit status 2, one message; returns it."""
    caplog.clear()
    with pytest.raises(SystemExit) as stop:
        tool.main(args)
    assert stop.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1, errors
    return errors[0]


def crafted(
    source: Path, destination: Path, config: dict | None = None, entries: dict | None = None
) -> Path:
    """``source`` with stored ``config`` keys set (dotted names) and top-level ``entries``."""
    state = load_checkpoint(source)
    state.update(entries or {})
    stored = OmegaConf.create(state["config"])
    for key, value in (config or {}).items():
        OmegaConf.update(stored, key, value, force_add=True, merge=False)
    state["config"] = OmegaConf.to_container(stored, resolve=False)
    save_atomic(state, destination)
    return destination


def with_victim(value, victim: Path):
    """``value`` with every ``VICTIM`` in its strings replaced by ``victim``'s path."""
    if isinstance(value, str):
        return value.replace("VICTIM", str(victim))
    if isinstance(value, dict):
        return {k: with_victim(v, victim) for k, v in value.items()}
    if isinstance(value, list):
        return [with_victim(v, victim) for v in value]
    return value


@pytest.fixture(scope="module")
def checkpoint(tiny_dataset: Path, module_tmp_path: Path) -> Path:
    run_dir = module_tmp_path / "ckpt"
    run_dir.mkdir()
    return save_checkpoint(run_dir / "last.pt", tiny_run_overrides(tiny_dataset, run_dir))


@pytest.fixture(scope="module")
def finished_run(tiny_dataset: Path, module_tmp_path: Path) -> Path:
    """A run directory that tools/train.py completed (checkpoints, .hydra/, train.log, tb/)."""
    run_dir = module_tmp_path / "run"
    done = train(*tiny_run_overrides(tiny_dataset, run_dir, "train.checkpoint_every_epochs=0"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return run_dir


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy, symlinks=True)
    return copy


# ------------------------------------------------------------ 1-2: one resolution, no code
OPEN_VICTIM = (
    "{_target_: builtins.getattr, _args_: [{_target_: builtins.open, _args_: [VICTIM, w]}, "
    "x, blockres]}"
)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        # A reference that becomes a resolver call once resolved (the second-pass attack).
        ({"name": "$", "model.shift_place": "${name}{oc.create:" + OPEN_VICTIM + "}"}, "model"),
        # The escaped form: '\${' is text, '${name}' completes the resolver name.
        ({"name": "create", "model.shift_place": "\\${oc.${name}:" + OPEN_VICTIM + "}"}, "model"),
        # Built from two keys, in a list, in a dataset node, in the overrides record.
        (
            {
                "name": "$",
                "data.prepare_hint": "{",
                "model.shift_place": "${name}${data.prepare_hint}oc.env:HOME}",
            },
            "model",
        ),
        ({"name": "$", "overrides": ["${name}{oc.create:" + OPEN_VICTIM + "}"]}, "overrides"),
        ({"name": "$", "data.val.root": "${name}{oc.env:HOME}"}, "data.val.root"),
        # Resolver calls, whatever builds their name.
        ({"name": "env", "data.prepare_hint": "${oc.${name}:HOME}"}, "data.prepare_hint"),
        ({"data.prepare_hint": "${oc.decode:'[1, 2]'}"}, "data.prepare_hint"),
        ({"data.prepare_hint": "${hydra:runtime.cwd}"}, "data.prepare_hint"),
        ({"name": "root", "data.prepare_hint": "${data.${name}}"}, "data.prepare_hint"),
        # Hydra's instantiate options and foreign targets anywhere.
        ({"model._partial_": True}, "model._partial_"),
        ({"model._args_": [1]}, "model._args_"),
        ({"model.weights": {"_target_": "builtins.open", "file": "VICTIM"}}, "model.weights"),
        ({"data.val.transform._recursive_": False}, "data.val.transform._recursive_"),
    ],
)
def test_a_crafted_stored_config_runs_no_code_and_writes_nothing(
    checkpoint: Path, tiny_dataset: Path, tmp_path: Path, caplog, changes: dict, key: str
) -> None:
    victim = tmp_path / "pwned.txt"
    bad = crafted(checkpoint, tmp_path / "bad.pt", config=with_victim(changes, victim))
    before = snapshot(tmp_path)
    frames = tiny_dataset / "frames" / (tiny_dataset / "val.txt").read_text().split()[0]
    for tool, args in (
        (test_tool, [f"ckpt={bad}"]),
        (predict_tool, [f"ckpt={bad}", f"input={frames}"]),
    ):
        message = tool_refusal(tool, args, caplog)
        assert key in message, message
    with pytest.raises(ConfigError, match=re.escape(key)):
        rnlvideo.load_model(bad)
    assert not victim.exists()
    assert snapshot(tmp_path) == before


def test_the_grammar_check_accepts_references_and_refuses_the_rest() -> None:
    assert interpolation_problem("${data.root}/frames") is None
    assert interpolation_problem("plain text, $5 and {braces}") is None
    assert "resolvers" in interpolation_problem("${oc.env:HOME}")
    assert "resolvers" in interpolation_problem("a${oc.${x}:y}b")
    assert "fixed name" in interpolation_problem("${a.${b}}")
    assert "not a valid value" in interpolation_problem("${")


def test_composed_configs_cannot_turn_a_value_into_an_interpolation(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    overrides = tiny_run_overrides(tiny_dataset, tmp_path)
    with pytest.raises(ConfigError, match=r"shift_place=.*holds '\$\{'"):
        compose_config([*overrides, "name='$'", "model.shift_place='${name}{oc.env:HOME}'"])


# --------------------------------------------------------------- 3: paths stay in the root
@pytest.mark.parametrize(
    "template",
    [
        "../../outside/1/{:05d}.jpg",
        "/tmp/{:05d}.jpg",
        "{:05d}/../../x.jpg",
        "{}{}.jpg",
        "frame.jpg",
        "{0.__class__}.jpg",
        "{:x}.jpg",
        "{!r}.jpg",
        "a\x1b{:05d}.jpg",
    ],
)
def test_a_frame_template_that_leaves_the_root_is_refused(
    checkpoint: Path, tmp_path: Path, caplog, template: str
) -> None:
    with pytest.raises(ValueError, match="filename_tmpl"):
        check_filename_template(template)
    stored = crafted(checkpoint, tmp_path / "bad.pt", {"data.val.filename_tmpl": template})
    before = snapshot(tmp_path)
    for args in (
        [f"ckpt={stored}"],
        [f"ckpt={checkpoint}", f"data.val.filename_tmpl={template!r}", f"out={tmp_path / 'o'}"],
    ):
        message = tool_refusal(test_tool, args, caplog)
        assert "data.val" in message and "filename_tmpl" in message, message
    assert snapshot(tmp_path) == before


def test_frame_templates_with_an_index_field_are_accepted() -> None:
    for template in ("{:05d}.jpg", "img_{:05d}.jpg", "{}.jpg", "{0:06d}.jpeg", "rgb/{:05d}.jpg"):
        check_filename_template(template)


def test_every_joined_path_stays_under_the_root(tmp_path: Path) -> None:
    assert path_under(tmp_path, "a/b", "00001.jpg") == tmp_path / "a" / "b" / "00001.jpg"
    for parts in (("..", "x"), ("a/../../x",), ("/etc/passwd",), ("a", "/abs.jpg"), ("",)):
        with pytest.raises(UnsafePathError, match="would leave the data root"):
            path_under(tmp_path, *parts)


# --------------------------------------------------------- 4-6: refused launches, no restart
def test_resume_never_touches_nothing(run_copy: Path, tiny_dataset: Path) -> None:
    before = snapshot(run_copy)
    result = train(*tiny_run_overrides(tiny_dataset, run_copy, "train.resume=never"))
    assert result.returncode == 2, result.stdout[-2000:]
    assert "train.resume=never: nothing was touched" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert snapshot(run_copy) == before


def test_a_launch_into_a_held_directory_leaves_the_running_runs_record(
    run_copy: Path, tiny_dataset: Path
) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from rnlvideo.engine.resume import RunLock\n"
            "lock = RunLock(sys.argv[1]); lock.accept(); print('held', flush=True)\n"
            "time.sleep(120)\n",
            str(run_copy),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(run_copy)
        config_yaml = (run_copy / ".hydra" / "config.yaml").read_bytes()
        result = train(*tiny_run_overrides(tiny_dataset, run_copy, "optim.lr=0.5"))
        assert result.returncode == 2, result.stdout[-2000:]
        assert "is in use by another run (pid" in result.stdout
        assert snapshot(run_copy) == before
        assert (run_copy / ".hydra" / "config.yaml").read_bytes() == config_yaml
        assert "lr: 0.5" not in config_yaml.decode()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["optim.lr=0.5"], "was trained with another config"),
        (["data.root=/nonexistent/data"], "not found"),
        (["~data.val._target_"], "data.val: expected a node with a _target_"),
        (["data.val.sampling=tsn_train", "data.val.on_error=resample"], "data.val.on_error"),
        (["data.val.num_classes=null"], "data.val.num_classes=None: must equal"),
        (["data.category_file=/nonexistent/category.txt"], "data.category_file"),
        (["--trust_code"], "did you mean --trust-code"),
    ],
)
def test_a_refused_launch_changes_no_byte(
    run_copy: Path, tiny_dataset: Path, extra: list[str], message: str
) -> None:
    before = snapshot(run_copy)
    result = train(*tiny_run_overrides(tiny_dataset, run_copy), *extra)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-2000:]
    assert message in output, output[-2000:]
    assert "Traceback" not in output
    assert snapshot(run_copy) == before


def test_a_refused_launch_into_a_new_directory_leaves_nothing(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "new" / "run"
    result = train(*tiny_run_overrides(tiny_dataset, run_dir, "data.val.list_file=/missing.txt"))
    assert result.returncode == 2, result.stdout[-2000:]
    assert not (tmp_path / "new").exists()


def test_best_and_last_never_share_an_inode(finished_run: Path) -> None:
    last, best = finished_run / "last.pt", finished_run / "best.pt"
    assert last.stat().st_ino != best.stat().st_ino
    assert last.read_bytes() == best.read_bytes()  # the final epoch was the best one


def test_damage_to_last_pt_resumes_from_best_pt_with_a_warning(
    run_copy: Path, tiny_dataset: Path
) -> None:
    with (run_copy / "last.pt").open("r+b") as f:
        f.truncate(1000)
    result = train(*tiny_run_overrides(tiny_dataset, run_copy, "train.epochs=2"))
    assert result.returncode == 0, result.stdout[-2000:]
    assert "last.pt: not a readable checkpoint" in result.stdout
    assert "resuming from best.pt" in result.stdout
    assert "resumed from" in result.stdout and "best.pt at epoch 1" in result.stdout
    assert load_checkpoint(run_copy / "last.pt")["progress"]["epoch"] == 2


def test_no_loadable_checkpoint_stops_auto_resume_naming_each_file(
    run_copy: Path, tiny_dataset: Path
) -> None:
    for name in ("last.pt", "best.pt"):
        with (run_copy / name).open("r+b") as f:
            f.truncate(1000)
    before = snapshot(run_copy)
    result = train(*tiny_run_overrides(tiny_dataset, run_copy))
    assert result.returncode == 2, result.stdout[-2000:]
    assert "holds checkpoints but none of them loads" in result.stdout
    for name in ("last.pt", "best.pt"):
        assert f"{run_copy / name}: not a readable checkpoint" in result.stdout
    assert "train.resume=overwrite" in result.stdout
    assert snapshot(run_copy) == before


# ----------------------------------------------------------------- 7: no substituted video
def test_validation_and_test_never_substitute(
    checkpoint: Path, tiny_dataset: Path, tmp_path: Path, caplog
) -> None:
    overrides = tiny_run_overrides(tiny_dataset, tmp_path)
    with pytest.raises(ConfigError, match=r"data\.val\.on_error='resample'"):
        compose_config([*overrides, "data.val.sampling=tsn_train", "data.val.on_error=resample"])
    stored = crafted(checkpoint, tmp_path / "bad.pt", {"data.val.on_error": "resample"})
    for args in ([f"ckpt={stored}"], [f"ckpt={checkpoint}", "data.val.on_error=resample"]):
        assert "data.val.on_error='resample'" in tool_refusal(test_tool, args, caplog)


# ------------------------------------------------------------------------- class names
HOSTILE_NAMES = [
    '=HYPERLINK("http://x","y")',
    "@SUM(1+1)",
    "+cmd|' /C calc'!A0",
    "-2+3",
    "\tTAB",
    "\x1b[2J\x1b[31mred",
    "line\nbreak",
    "car\rriage",
    "rtl\u202eevil",
    "$\\frac{1}{0$",
    "$x^{2}$",
    "plain",
]


def test_hostile_class_names_are_neutralised_everywhere(
    checkpoint: Path, tiny_dataset: Path, tmp_path: Path, capsys
) -> None:
    named = crafted(checkpoint, tmp_path / "named.pt", entries={"class_names": HOSTILE_NAMES})
    metrics = test_tool.main([f"ckpt={named}", f"out={tmp_path / 'report'}"])
    assert metrics["num_videos"] == 12
    report = tmp_path / "report"
    assert (report / "confusion_matrix.png").stat().st_size > 0  # mathtext did not run
    with (report / "per_class_accuracy.csv").open(newline="") as f:
        cells = [row["class_name"] for row in csv.DictReader(f)]
    assert cells == [csv_text(name) for name in HOSTILE_NAMES]
    for cell in cells:
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    with (report / "predictions.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            assert not row["label_name"].startswith(("=", "+", "-", "@", "\t", "\r"))

    capsys.readouterr()
    video = (tiny_dataset / "val.txt").read_text().split()[0]
    predict_tool.main([f"ckpt={named}", f"input={tiny_dataset / 'frames' / video}", "topk=12"])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out
    assert out.count("\n") == 13  # the input line and 12 classes, no injected line
    assert "\\x1b[2J" in out and "\\u202e" in out


def test_a_class_name_count_other_than_num_classes_is_refused(
    checkpoint: Path, tmp_path: Path, caplog
) -> None:
    short = crafted(
        checkpoint,
        tmp_path / "short.pt",
        entries={"class_names": [str(i) for i in range(11)], "num_classes": 11},
    )
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="stores 11 class names for data.num_classes=12"):
        rnlvideo.load_model(short)
    assert "11 class names" in tool_refusal(test_tool, [f"ckpt={short}"], caplog)
    assert snapshot(tmp_path) == before


def test_printable_and_csv_text() -> None:
    assert printable("a\x1b[31mb\r\n\u202e\x7f\x85") == "a\\x1b[31mb\\x0d\\x0a\\u202e\\x7f\\x85"
    assert printable("two\nlines\r", keep_newlines=True) == "two\nlines\\x0d"
    assert printable("Ünïcödé 名前 ok") == "Ünïcödé 名前 ok"
    assert [csv_text(t) for t in ("=1", "+1", "-1", "@a", "\tx", "\rx", "a=1")] == [
        "'=1",
        "'+1",
        "'-1",
        "'@a",
        "'\tx",
        "'\rx",
        "a=1",
    ]


# -------------------------------------------------------------------------------- lists
def test_a_video_listed_twice_stops_with_both_lines(
    checkpoint: Path, tiny_dataset: Path, tmp_path: Path, caplog
) -> None:
    lines = (tiny_dataset / "val.txt").read_text().splitlines()
    listed = tmp_path / "val.txt"
    listed.write_text("\n".join([*lines, lines[3]]) + "\n")
    with pytest.raises(ValueError, match=r"val.txt:13: .* listed again \(first at .*val.txt:4\)"):
        read_video_list(listed, 12)
    message = tool_refusal(
        test_tool, [f"ckpt={checkpoint}", f"data.val.list_file={listed}"], caplog
    )
    assert f"{listed}:13" in message and f"{listed}:4" in message


def test_a_byte_order_mark_is_not_part_of_the_first_path(tmp_path: Path) -> None:
    listed = tmp_path / "list.txt"
    listed.write_bytes("\ufeffvideo/a 10 0\nvideo/b 12 1\n".encode())
    assert read_video_list(listed, 2)[0].path == "video/a"
    categories = tmp_path / "category.txt"
    categories.write_bytes("\ufeffopening\nclosing\n".encode())
    assert read_categories(categories) == ["opening", "closing"]


def test_label_checks_cannot_be_switched_off(
    checkpoint: Path, tiny_dataset: Path, tmp_path: Path, caplog
) -> None:
    overrides = tiny_run_overrides(tiny_dataset, tmp_path)
    for split in ("train", "val"):
        with pytest.raises(ConfigError, match=rf"data\.{split}\.num_classes=None: must equal"):
            compose_config([*overrides, f"data.{split}.num_classes=null"])
    message = tool_refusal(test_tool, [f"ckpt={checkpoint}", "data.val.num_classes=null"], caplog)
    assert "data.val.num_classes" in message


def test_a_misspelt_category_file_is_not_ignored(checkpoint: Path, tmp_path: Path, caplog) -> None:
    missing = tmp_path / "categroy.txt"
    message = tool_refusal(
        test_tool, [f"ckpt={checkpoint}", f"data.category_file={missing}"], caplog
    )
    assert "data.category_file=" in message and "no such file" in message
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------------- lock
def test_the_lock_does_not_follow_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").symlink_to(victim)
    with pytest.raises(RunDirectoryError, match="symbolic link"):
        RunLock(run_dir)
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("kind", ["fifo", "dir"])
def test_the_lock_must_be_a_regular_file(tmp_path: Path, kind: str) -> None:
    lock = tmp_path / ".lock"
    os.mkfifo(lock) if kind == "fifo" else lock.mkdir()
    with pytest.raises(RunDirectoryError, match=r"\.lock is not a regular file"):
        RunLock(tmp_path)
    assert lock.exists()


def test_a_refused_lock_removes_only_what_it_created(tmp_path: Path) -> None:
    run_dir = tmp_path / "a" / "b"
    RunLock(run_dir).release()  # never accepted
    assert not (tmp_path / "a").exists()
    held = RunLock(run_dir)
    held.accept()
    held.release()
    assert (run_dir / ".lock").read_text().startswith(f"pid {os.getpid()}")


# ------------------------------------------------------------------- crafted checkpoints
@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"progress": [1]}, "progress must be a mapping"),
        ({"progress": {"epoch": "3"}}, "progress.epoch='3': expected int"),
        ({"progress": {"epoch": True}}, "progress.epoch=True: expected int"),
        ({"progress": {"epoch": -1}}, "progress.epoch=-1: expected >= 0"),
        ({"progress": {"shell": 1}}, "unknown progress entry 'shell'"),
        ({"class_names": "abc"}, "class_names must be a list of strings"),
        ({"model": 5}, "the weights do not fit"),
    ],
)
def test_crafted_checkpoint_entries_are_refused_in_one_line(
    checkpoint: Path, tmp_path: Path, caplog, entries: dict, message: str
) -> None:
    bad = crafted(checkpoint, tmp_path / "bad.pt", entries=entries)
    assert message in tool_refusal(test_tool, [f"ckpt={bad}"], caplog)


def test_yaml_tags_in_a_format_1_checkpoint_are_refused(checkpoint: Path, tmp_path: Path, caplog):
    state = load_checkpoint(checkpoint)
    for key in ("format_version", "class_names", "num_classes", "versions"):
        state.pop(key)
    state["config"] = "!!python/object/apply:os.system ['touch pwned']\n"
    save_atomic(state, tmp_path / "legacy.pt")
    message = tool_refusal(test_tool, [f"ckpt={tmp_path / 'legacy.pt'}"], caplog)
    assert "stored YAML config cannot be read" in message
    assert not (REPO / "pwned").exists() and not (tmp_path / "pwned").exists()


def test_epoch_files_of_a_resumed_checkpoint_cannot_name_other_files(
    tiny_dataset: Path, finished_run: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.pt"
    victim.write_text("keep")
    state = load_checkpoint(finished_run / "last.pt")
    state["progress"]["epoch_files"] = ["../victim.pt"]
    save_atomic(state, tmp_path / "crafted.pt")
    cfg = compose_config(
        tiny_run_overrides(tiny_dataset, tmp_path / "run", f"train.resume={tmp_path}/crafted.pt")
    )
    with pytest.raises(CheckpointError, match=r"epoch_files holds '\.\./victim\.pt'"):
        Trainer(cfg, init_distributed("cpu"), tmp_path / "run")
    assert victim.read_text() == "keep"
    assert not (tmp_path / "run").exists()


def test_a_config_of_plain_data_validates(checkpoint: Path) -> None:
    config = load_checkpoint(checkpoint)["config"]
    assert validate_config(config, stored=True).data.num_classes == 12


# ------------------------------------------------------------------------ failed writes
def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails (EFBIG) instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_failed_checkpoint_write_names_the_file_and_leaves_no_temporary(tmp_path: Path):
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, torch\n"
            "from rnlvideo.files import save_atomic\n"
            "save_atomic({'w': torch.zeros(10**6)}, sys.argv[1])\n",
            str(tmp_path / "last.pt"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size(100_000),
    )
    assert result.returncode != 0
    assert f"FileWriteError: cannot write {tmp_path / 'last.pt'}: File too large" in result.stderr
    assert not any(tmp_path.iterdir())
    with pytest.raises(FileWriteError):
        raise FileWriteError("an OSError subclass")


def test_a_full_disk_stops_training_with_one_message(tiny_dataset: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    result = train(*tiny_run_overrides(tiny_dataset, run_dir), preexec_fn=_limit_file_size(2**21))
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    last_line = result.stdout.strip().splitlines()[-1]
    assert f"cannot write {run_dir / 'last.pt'}: File too large" in last_line
    assert not list(run_dir.glob(".*.tmp")) and not (run_dir / "last.pt").exists()


def test_torch_save_of_a_tensor_is_unaffected(tmp_path: Path) -> None:
    save_atomic({"x": torch.ones(3)}, tmp_path / "a.pt")
    assert torch.equal(load_checkpoint(tmp_path / "a.pt")["x"], torch.ones(3))
