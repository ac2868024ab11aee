"""Config and CLI errors, and safe loading.

Every command line (``explainable_ser.fit``, ``.evaluate``, ``.predict``, ``.compare``,
``data_modules.prepare``, ``data_modules.annotate``) answers a bad config, a missing or
incompatible file with exit status 2 and a short stderr naming the problem -- no traceback.
Each case runs in-process through ``main()`` (fast); the cases of the issue also run as real
``python -m`` subprocesses (those importing torch are marked slow).

Safe loading: checkpoints load with ``weights_only=True`` (an unsafe pickle is refused, its
payload never runs), no package source passes ``shell=True`` or calls ``os.system``, and
``trust_remote_code`` is off unless the config turns it on.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY_LLM

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("explainable_ser", "data_modules")


class Payload:
    """Pickles to ``os.system(cmd)``: a checkpoint holding it must be refused, never run."""

    def __init__(self, cmd: str):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny corpus, a run directory with a (compatible, untrained) checkpoint, bad files."""
    from data_modules.synthcraft import generate
    from explainable_ser.config import load_config, to_yaml
    from explainable_ser.training.assembly import build
    from explainable_ser.training.preparation import prepare
    from explainable_ser.training.stages import adaptable_names

    tmp = tmp_path_factory.mktemp("cli")
    corpus = tmp / "corpus"
    generate(corpus, n_train=6, n_dev=2, n_test=2, seed=5, progress=False)
    run_dir = tmp / "run"
    overrides = [*TINY_LLM, "model.encoder.kind=fbank", f"data.corpora.0.dir={corpus}", f"run_dir={run_dir}"]
    cfg = load_config(overrides)
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    _, module = build(cfg, run_dir, prepare(cfg, run_dir))  # saves the tokenizer and the random frozen weights
    keep = {f"model.{n}" for n in adaptable_names(module.model)}
    state = {k: v for k, v in module.state_dict().items() if k in keep}
    ckpt = run_dir / "stage2" / "final.ckpt"
    ckpt.parent.mkdir()
    torch.save({"state_dict": state}, ckpt)
    (run_dir / "stage1").mkdir()
    torch.save({"state_dict": state, "stage_name": "stage1"}, run_dir / "stage1" / "last.ckpt")

    marker = tmp / "payload-ran"
    bad = tmp / "bad-run" / "stage2"  # load_trained takes a checkpoint's grandparent as its run
    bad.mkdir(parents=True)
    torch.save({"state_dict": {"x": Payload(f"touch {marker}")}}, bad / "unsafe.ckpt")
    (bad / "corrupt.ckpt").write_bytes(b"PK\x03\x04 not really a zip" * 10)
    (tmp / "notes.ckpt").write_text("hello world\n")  # a text file named like a checkpoint
    (tmp / "bad.yaml").write_text("training:\n  stages: [\n")
    (tmp / "unknown.yaml").write_text("training:\n  nonexistent: 3\n")
    row = {"task": "ser_sed", "emotion_ref": "sad", "emotion": "sad", "transcript_ref": None, "transcript": None}
    for name, ids in (("a", ["u1", "u2"]), ("b", ["v1", "v2"])):
        (tmp / f"{name}.jsonl").write_text("".join(json.dumps({**row, "id": i}) + "\n" for i in ids))
    (tmp / "nofield.jsonl").write_text(json.dumps({"id": "u1", "task": "ser_sed"}) + "\n")
    (tmp / "binary.jsonl").write_bytes(b"\xff\xfe\x00garbage\n")
    audio = sorted((corpus / "audio" / "test").glob("*.flac"))[0]
    manifest = corpus / "synthcraft_cuts_dev.jsonl.gz"
    return {
        "tmp": tmp,
        "corpus": corpus,
        "run": run_dir,
        "ckpt": ckpt,
        "audio": audio,
        "manifest": manifest,
        "marker": marker,
        "overrides": overrides,
    }


# (case id, module, argv (str.format'ed with the env), text stderr must contain)
CASES = [
    ("fit-unknown-key", "explainable_ser.fit", ["training.nonexistent=3"], "nonexistent"),
    ("fit-wrong-type", "explainable_ser.fit", ["training.stages.0.epochs=abc"], "abc"),
    ("fit-missing-yaml", "explainable_ser.fit", ["{tmp}/missing.yaml"], "missing.yaml"),
    ("fit-bad-yaml", "explainable_ser.fit", ["{tmp}/bad.yaml"], "bad.yaml"),
    ("fit-unknown-key-in-yaml", "explainable_ser.fit", ["{tmp}/unknown.yaml"], "nonexistent"),
    ("fit-bad-interpolation", "explainable_ser.fit", ["name=${{nope}}"], "nope"),
    (
        "fit-missing-corpus",
        "explainable_ser.fit",
        [
            *TINY_LLM,
            "data.corpora.0.name=nocorpus",
            "data.corpora.0.dir={tmp}/nowhere",
            "run_dir={tmp}/run-missing-corpus",
        ],
        "nocorpus",
    ),
    pytest.param(
        "fit-incompatible-ckpt",
        "explainable_ser.fit",
        ["{run_copy}/config.yaml", "run_dir={run_copy}", "ckpt_path=last", "model.branch.latent_dim=4"],
        "incompatible",
    ),
    ("evaluate-missing-ckpt", "explainable_ser.evaluate", ["--ckpt", "{tmp}/nope/final.ckpt"], "checkpoint not found"),
    ("evaluate-run-dir-without-final", "explainable_ser.evaluate", ["--ckpt", "{tmp}/bad-run"], "found corrupt.ckpt"),
    ("evaluate-unknown-key", "explainable_ser.evaluate", ["--ckpt", "{ckpt}", "eval.nonexistent=1"], "nonexistent"),
    (
        "evaluate-missing-test-split",
        "explainable_ser.evaluate",
        ["--ckpt", "{ckpt}", "data.corpora.0.test_split=nosuchsplit"],
        "nosuchsplit",
    ),
    pytest.param(
        "evaluate-incompatible-ckpt",
        "explainable_ser.evaluate",
        ["--ckpt", "{ckpt}", "model.branch.latent_dim=4"],
        "incompatible",
    ),
    pytest.param(
        "evaluate-corrupt-ckpt",
        "explainable_ser.evaluate",
        ["--ckpt", "{tmp}/bad-run/stage2/corrupt.ckpt", "{run}/config.yaml"],
        "corrupt.ckpt",
    ),
    pytest.param(
        "evaluate-unsafe-ckpt",
        "explainable_ser.evaluate",
        ["--ckpt", "{tmp}/bad-run/stage2/unsafe.ckpt", "{run}/config.yaml"],
        "unsafe.ckpt",
    ),
    (
        "predict-missing-ckpt",
        "explainable_ser.predict",
        ["--ckpt", "{tmp}/nope.ckpt", "{audio}"],
        "checkpoint not found",
    ),
    ("predict-missing-audio", "explainable_ser.predict", ["--ckpt", "{ckpt}", "{tmp}/missing.wav"], "missing.wav"),
    pytest.param(
        "predict-incompatible-ckpt",
        "explainable_ser.predict",
        ["--ckpt", "{ckpt}", "{audio}", "--set", "model.branch.latent_dim=4"],
        "incompatible",
    ),
    pytest.param(
        "predict-incompatible-ckpt-positional",
        "explainable_ser.predict",
        ["--ckpt", "{ckpt}", "{audio}", "model.branch.latent_dim=4"],
        "incompatible",
    ),
    pytest.param(
        "evaluate-not-a-checkpoint",
        "explainable_ser.evaluate",
        ["--ckpt", "{tmp}/notes.ckpt", "{run}/config.yaml"],
        "is not a checkpoint",
    ),
    ("compare-missing-file", "explainable_ser.compare", ["{tmp}/a.jsonl", "{tmp}/missing.jsonl"], "missing.jsonl"),
    ("compare-disjoint-utterances", "explainable_ser.compare", ["{tmp}/a.jsonl", "{tmp}/b.jsonl"], "share no"),
    ("compare-not-predictions", "explainable_ser.compare", ["{tmp}/a.jsonl", "{tmp}/bad.yaml"], "bad.yaml"),
    ("compare-not-utf8", "explainable_ser.compare", ["{tmp}/a.jsonl", "{tmp}/binary.jsonl"], "binary.jsonl"),
    ("compare-missing-field", "explainable_ser.compare", ["{tmp}/nofield.jsonl", "{tmp}/nofield.jsonl"], "emotion_ref"),
    (
        "prepare-iemocap-missing-root",
        "data_modules.prepare",
        ["iemocap", "--root", "{tmp}/no-iemocap", "--out", "{tmp}/out"],
        "no-iemocap",
    ),
    (
        "prepare-meld-missing-root",
        "data_modules.prepare",
        ["meld", "--root", "{tmp}/no-meld", "--out", "{tmp}/out"],
        "no-meld",
    ),
    (
        "prepare-emosec-missing-root",
        "data_modules.prepare",
        ["emosec", "--root", "{tmp}/no-emosec", "--out", "{tmp}/out"],
        "no-emosec",
    ),
    (
        "prepare-speechcraft-missing-labels",
        "data_modules.prepare",
        ["speechcraft", "--labels", "{tmp}/no-labels", "--audio", "{tmp}", "--out", "{tmp}/out"],
        "no-labels",
    ),
    (
        "prepare-synthcraft-out-is-a-file",
        "data_modules.prepare",
        ["synthcraft", "--out", "{tmp}/a.jsonl", "--n-train", "1", "--n-dev", "1", "--n-test", "1", "--no-progress"],
        "a.jsonl",
    ),
    ("prepare-unknown-corpus", "data_modules.prepare", ["nocorpus"], "nocorpus"),
    (
        "annotate-missing-manifest",
        "data_modules.annotate",
        ["--manifest", "{tmp}/missing_cuts_dev.jsonl.gz", "--out", "{tmp}/ann/x_cuts_dev.jsonl.gz"],
        "missing_cuts_dev",
    ),
    pytest.param(
        "annotate-missing-stats",
        "data_modules.annotate",
        [
            "--manifest",
            "{manifest}",
            "--out",
            "{tmp}/ann/y_cuts_dev.jsonl.gz",
            "--reference-stats",
            "{tmp}/no-stats.json",
            "--no-progress",
        ],
        "no-stats.json",
    ),
    pytest.param(
        "annotate-out-is-input",
        "data_modules.annotate",
        ["--manifest", "{manifest}", "--out", "{manifest}", "--no-progress"],
        "--out",
    ),
]
# The cases the issue names, also run as real subprocesses.
SUBPROCESS_CASES = (
    "fit-unknown-key",
    "fit-wrong-type",
    "fit-missing-yaml",
    "evaluate-missing-ckpt",
    "predict-missing-ckpt",
    "predict-missing-audio",
    "compare-missing-file",
    "compare-disjoint-utterances",
    "prepare-iemocap-missing-root",
    "prepare-meld-missing-root",
    "prepare-emosec-missing-root",
    "prepare-speechcraft-missing-labels",
    "annotate-missing-manifest",
)
LIGHT_MODULES = ("data_modules.prepare", "data_modules.annotate", "explainable_ser.compare")  # no torch


def _case_id(case) -> str:
    return case.values[0] if hasattr(case, "marks") else case[0]


def _argv(env, argv: list[str]) -> list[str]:
    fields = {k: v for k, v in env.items() if isinstance(v, (str, Path))}
    if any("{run_copy}" in a for a in argv):
        copy = env["tmp"] / f"run-copy-{len(list(env['tmp'].glob('run-copy-*')))}"
        shutil.copytree(env["run"], copy)
        fields["run_copy"] = copy
    return [a.format(**fields) for a in argv]


def check_error_output(rc: int, err: str, mention: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, f"exit status {rc}, stderr:\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    assert 1 <= len(lines) < 5, f"{len(lines)} stderr lines:\n{err[-3000:]}"
    assert any(line.startswith(("error:", "usage:")) or ": error:" in line for line in lines), err
    assert mention in err, f"{mention!r} not named in:\n{err}"


@pytest.mark.parametrize("name,module,argv,mention", CASES, ids=[_case_id(c) for c in CASES])
def test_cli_error_in_process(name, module, argv, mention, env, capsys):
    main = importlib.import_module(module).main
    try:
        rc = main(_argv(env, argv))
    except SystemExit as exit_:  # argparse's own usage errors
        rc = exit_.code
    err = capsys.readouterr().err
    check_error_output(rc, err, mention)
    assert not env["marker"].exists(), "an unsafe checkpoint's payload ran"


PLAIN_CASES = {case[0]: case for case in CASES if not hasattr(case, "marks")}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=() if PLAIN_CASES[n][1] in LIGHT_MODULES else pytest.mark.slow) for n in SUBPROCESS_CASES],
)
def test_cli_error_subprocess(name, env):
    _, module, argv, mention = PLAIN_CASES[name]
    proc = subprocess.run(
        [sys.executable, "-m", module, *_argv(env, argv)],
        cwd=env["tmp"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    check_error_output(proc.returncode, proc.stderr, mention)


def test_predict_reports_each_unreadable_file_and_exits_1_when_others_worked(env, capsys):
    from explainable_ser.predict import main

    empty = env["tmp"] / "empty.wav"
    empty.write_bytes(b"")
    rc = main(["--ckpt", str(env["ckpt"]), str(env["audio"]), str(env["tmp"] / "gone.wav"), str(empty)])
    out, err = capsys.readouterr()
    rows = {Path(r["file"]).name: r for r in map(json.loads, out.splitlines())}
    assert rc == 1 and len(rows) == 3 and rows["gone.wav"]["error"] == "file not found"
    assert rows["empty.wav"]["error"] == "empty file (0 bytes)"
    assert "gone.wav" in err and "Traceback" not in err
    good = rows[Path(env["audio"]).name]
    assert good["emotion"] in good["emotion_scores"]  # an answer, generated or the top score
    if good["emotion_source"] == "scores":
        assert good["emotion"] == max(good["emotion_scores"], key=good["emotion_scores"].get)


def test_unsafe_checkpoint_is_refused_by_weights_only_loading(env):
    """The loaders' own call (``weights_only=True``) refuses the pickle; nothing runs."""
    import pickle

    from explainable_ser.training.checkpointing import AtomicCheckpointIO

    unsafe = env["tmp"] / "bad-run" / "stage2" / "unsafe.ckpt"
    with pytest.raises(pickle.UnpicklingError):
        torch.load(unsafe, map_location="cpu", weights_only=True)
    with pytest.raises(pickle.UnpicklingError):
        AtomicCheckpointIO().load_checkpoint(unsafe, map_location="cpu")
    assert not env["marker"].exists()


# ---------------------------------------------------------------------------- safe loading
def _package_sources():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, ast.parse(path.read_text(), filename=str(path))


def _call_name(node: ast.Call) -> str:
    parts, func = [], node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def test_sources_load_weights_only_and_never_use_a_shell():
    problems = []
    for path, tree in _package_sources():
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name, kw = _call_name(node), {k.arg: k.value for k in node.keywords}
            at = f"{where}:{node.lineno} {name}"
            if name in ("torch.load", "torch.serialization.load"):
                value = kw.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    problems.append(f"{at} without weights_only=True")
            shell = kw.get("shell")
            if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
                problems.append(f"{at} with shell=...")
            if name in (
                "os.system",
                "os.popen",
                "os.spawnl",
                "os.execl",
                "pickle.load",
                "pickle.loads",
                "eval",
                "exec",
                "yaml.load",
                "yaml.unsafe_load",
            ):
                problems.append(at)
            if name.startswith("subprocess.") and node.args and not isinstance(node.args[0], ast.List):
                problems.append(f"{at} with a command string")
            remote = kw.get("trust_remote_code")
            if isinstance(remote, ast.Constant) and remote.value is True:
                problems.append(f"{at} with trust_remote_code=True")
            if name.endswith(".from_pretrained") and "trust_remote_code" not in kw:
                problems.append(f"{at} without an explicit trust_remote_code")
    assert not problems, "\n".join(problems)


def test_trust_remote_code_is_off_unless_configured():
    from explainable_ser.config import load_config

    cfg = load_config([])
    assert cfg.model.llm.trust_remote_code is False and cfg.model.encoder.trust_remote_code is False
    on = load_config(["model.llm.trust_remote_code=true"])
    assert on.model.llm.trust_remote_code is True and on.model.encoder.trust_remote_code is False


CLI_MODULES = (
    "explainable_ser.fit",
    "explainable_ser.evaluate",
    "explainable_ser.predict",
    "explainable_ser.compare",
    "explainable_ser.crossval",
)


@pytest.mark.parametrize("module", CLI_MODULES)
def test_help_loads_neither_torch_nor_lhotse(module):
    """`--help` and argument errors answer before the model stack loads (it takes seconds)."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['{module}', '--help']\n"
        "try:\n"
        f"    runpy.run_module('{module}', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "print(sorted(m for m in ('torch', 'lhotse', 'lightning', 'transformers') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout[-500:]
