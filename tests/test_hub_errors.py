"""Hub failures injected at the HfApi boundary (real huggingface_hub error objects built from
real HTTP responses): one clear sentence per status, bounded retries with injectable sleep,
no half-written output, tokens never shown. No network."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from huggingface_hub import HfApi
from huggingface_hub.utils import hf_raise_for_status
from PIL import Image

import wbcgen.hub.errors as hub_errors
import wbcgen.hub.publish as push_mod
from classifiers.runtime import UserError
from wbcgen.cli.hub_cmds import download_cmd, push_cmd
from wbcgen.data import CLASSES
from wbcgen.hub import download, push

try:
    import httpx2 as httpx  # the HTTP client of this huggingface_hub release
except ImportError:  # pragma: no cover - older releases
    import httpx

TOKEN = "hf_SeCrEtToKeN12345"


def hub_error(status: int, *, code: str | None = None, headers: dict | None = None,
              url: str = "https://hub.invalid/api/datasets/me/wbc"):
    """The exception huggingface_hub itself raises for this HTTP answer."""
    h = {**(headers or {}), **({"X-Error-Code": code} if code else {})}
    resp = httpx.Response(status, headers=h, request=httpx.Request("GET", url))
    try:
        hf_raise_for_status(resp)
    except Exception as e:  # noqa: BLE001
        return e
    raise AssertionError(f"{status} did not raise")


def tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def synth(tmp_path_factory, pbc_dir) -> Path:
    root = tmp_path_factory.mktemp("synth")
    rows = []
    for c in CLASSES:
        (root / c).mkdir()
        for i, f in enumerate(sorted((pbc_dir / c).iterdir())[:2]):
            Image.open(f).convert("RGB").resize((64, 64)).save(root / c / f"{i:06d}.png")
            rows.append({"file_name": f"{c}/{i:06d}.png", "label": c, "seed": "1", "index": str(i),
                         "generator_sha256": hashlib.sha256(c.encode()).hexdigest()})
    with open(root / "metadata.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    gens = {c: {"weights_sha256": hashlib.sha256(c.encode()).hexdigest(), "run_config": {}, "data_source": "pbc",
                "license": "cc-by-4.0", "train_images_sha256": None, "n_train_images": None} for c in CLASSES}
    (root / "generation.json").write_text(json.dumps({"kind": "wbcgen-synthetic-dataset", "version": 1, "seed": 1,
                                                       "n_per_class": 2, "generators": gens}))
    return root


@pytest.fixture()
def hub(monkeypatch):
    """HfApi with create_repo/create_branch/upload_folder replaced; ``fail`` lists errors to raise first."""
    st = {"create_repo": [], "create_branch": [], "uploads": [], "large": [], "sleep": [], "fail": [],
          "remote": {}, "deleted": []}    # remote: path -> local file of what the repo already holds

    def create_repo(self, repo_id, **kw):
        st["create_repo"].append((repo_id, kw))
        return repo_id

    def create_branch(self, repo_id, **kw):
        st["create_branch"].append((repo_id, kw))

    def upload_folder(self, **kw):
        st["uploads"].append((tree(kw["folder_path"]), kw))
        if st["fail"]:
            raise st["fail"].pop(0)
        return type("CommitInfo", (), {"commit_url": f"hub://{kw['repo_id']}/commit/abc"})()

    def upload_large_folder(self, **kw):
        st["large"].append((tree(kw["folder_path"]), kw))

    def hf_hub_download(self, repo_id, filename, **kw):
        if filename not in st["remote"]:
            raise hub_error(404, code="EntryNotFound")
        return str(st["remote"][filename])

    def list_repo_files(self, repo_id, **kw):
        return sorted(st["remote"])

    def delete_files(self, repo_id, delete_patterns, **kw):
        st["deleted"].append(sorted(delete_patterns))

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(HfApi, "upload_large_folder", upload_large_folder, raising=False)
    monkeypatch.setattr(HfApi, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(HfApi, "list_repo_files", list_repo_files)
    monkeypatch.setattr(HfApi, "delete_files", delete_files)
    return st


EXPECT = {401: ("HTTP 401", "HF_TOKEN"), 403: ("HTTP 403", "write access"), 404: ("not found", "HTTP 404"),
          429: ("HTTP 429", "after 4 attempts"), 500: ("HTTP 500", "after 4 attempts"),
          503: ("HTTP 503", "after 4 attempts")}


@pytest.mark.parametrize("status", sorted(EXPECT))
def test_push_errors_one_sentence_and_bounded_retries(status, synth, hub, tmp_path):
    hub["fail"] = [hub_error(status, code="RepoNotFound" if status == 404 else None) for _ in range(10)]
    with pytest.raises(UserError) as ei:
        push(synth, "me/wbc", sleep=hub["sleep"].append, progress=False)
    msg = str(ei.value)
    assert all(k in msg for k in EXPECT[status]) and "\n" not in msg and msg.endswith(".")
    retried = status == 429 or status >= 500
    assert len(hub["uploads"]) == (4 if retried else 1)
    assert hub["sleep"] == ([1.0, 2.0, 4.0] if retried else [])


def test_push_retries_then_uploads_the_dry_run_layout(synth, hub, tmp_path, monkeypatch):
    monkeypatch.setattr(hub_errors, "_sleep", hub["sleep"].append)   # the CLI's default sleep, made instant
    push(synth, "me/wbc", dry_run=True, to=tmp_path / "dry", progress=False)
    hub["fail"] = [hub_error(503), hub_error(429, headers={"Retry-After": "7"})]
    res = CliRunner().invoke(push_cmd, [str(synth), "--repo-id", "me/wbc", "--private", "--revision", "v1"])
    assert res.exit_code == 0, res.output
    assert "pushed dataset to dataset repo me/wbc: hub://me/wbc/commit/abc" in res.output
    assert "retrying in 1s" in res.output and "retrying in 7s" in res.output     # Retry-After honoured
    assert hub["sleep"] == [1.0, 7.0]
    assert len(hub["uploads"]) == 3 and all(t == tree(tmp_path / "dry") for t, _ in hub["uploads"])
    assert hub["uploads"][-1][1]["repo_type"] == "dataset" and hub["uploads"][-1][1]["revision"] == "v1"
    assert hub["create_repo"] == [("me/wbc", {"repo_type": "dataset", "private": True, "exist_ok": True})]
    assert hub["create_branch"][0][1]["branch"] == "v1"


def test_large_dataset_upload_path(synth, hub, monkeypatch):
    monkeypatch.setattr(push_mod, "LARGE_UPLOAD", 3)
    monkeypatch.setattr(push_mod, "_streams_large_folders", lambda: False)
    push(synth, "me/wbc", progress=False)
    assert len(hub["large"]) == 1 and not hub["uploads"] and "metadata.csv" in hub["large"][0][0]
    monkeypatch.setattr(push_mod, "_streams_large_folders", lambda: True)  # upload_folder streams big folders
    push(synth, "me/wbc", progress=False)
    assert len(hub["large"]) == 1 and len(hub["uploads"]) == 1


@pytest.fixture()
def repo_info_fails(monkeypatch):
    """Make the Hub's first answer inside the REAL snapshot_download an error."""
    st = {"calls": 0, "error": None}

    def repo_info(self, *a, **kw):
        st["calls"] += 1
        raise st["error"]

    monkeypatch.setattr(HfApi, "repo_info", repo_info)
    return st


@pytest.mark.parametrize("status,code,words,calls", [
    (503, None, "server error (HTTP 503) for the dataset repo me/wbc after 4 attempts", 4),
    (429, None, "rate-limited", 4),
    (404, "RepoNotFound", "was not found on the Hub (HTTP 404)", 1),
    (403, "GatedRepo", "is gated", 1),
    (401, None, "HF_TOKEN", 1),
])
def test_download_errors_leave_no_output(status, code, words, calls, repo_info_fails, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    repo_info_fails["error"] = hub_error(status, code=code, headers={"X-Error-Message": f"bad token {TOKEN}"})
    sleeps: list[float] = []
    with pytest.raises(UserError, match=words.replace("(", r"\(").replace(")", r"\)")):
        download("me/wbc", tmp_path / "cells", cache_dir=tmp_path / "hub", sleep=sleeps.append, progress=False)
    assert repo_info_fails["calls"] == calls and len(sleeps) == calls - 1
    assert tree(tmp_path) == [] and not any(tmp_path.glob(".cells*"))


def test_cli_download_error_never_shows_token(repo_info_fails, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    repo_info_fails["error"] = hub_error(403, headers={"X-Error-Message": f"token {TOKEN} lacks scope"})
    res = CliRunner().invoke(download_cmd, ["me/wbc", "--out", str(tmp_path / "cells")])
    assert res.exit_code == 1 and "HTTP 403" in res.output and "Traceback" not in res.output
    assert TOKEN not in res.output and not (tmp_path / "cells").exists()


def test_failed_layout_leaves_no_half_written_folder(synth, tmp_path):
    repo = tmp_path / "repo"
    push(synth, "me/wbc", dry_run=True, to=repo, progress=False)
    rows = list(csv.DictReader(open(repo / "metadata.csv")))
    (repo / rows[-1]["file_name"]).unlink()        # the last listed image is missing: fails after copying others
    with pytest.raises(UserError, match="does not contain it"):
        download(repo, tmp_path / "cells", progress=False)
    assert not (tmp_path / "cells").exists() and not list(tmp_path.glob(".cells*"))
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / "mine.txt").write_text("keep")
    with pytest.raises(UserError, match="--overwrite"):
        download(repo, tmp_path / "cells", progress=False)
    with pytest.raises(UserError, match="does not contain it"):
        download(repo, tmp_path / "cells", overwrite=True, progress=False)
    assert tree(tmp_path / "cells") == ["mine.txt"] and not list(tmp_path.glob(".cells*"))
    with pytest.raises(UserError, match="neither an existing folder nor a Hub repo id"):
        download("no/such/thing", tmp_path / "o", progress=False)


def test_push_without_token_says_how_to_log_in(synth, hub, monkeypatch):
    from huggingface_hub.errors import LocalTokenNotFoundError

    def no_token(self, repo_id, **kw):
        raise LocalTokenNotFoundError("Token is required (`token=True`), but no token found.")

    monkeypatch.setattr(HfApi, "create_repo", no_token)
    res = CliRunner().invoke(push_cmd, [str(synth), "--repo-id", "me/wbc"])
    assert res.exit_code == 1 and "No Hub token found to create the dataset repo me/wbc" in res.output
    assert "HF_TOKEN" in res.output and not hub["uploads"]


def test_repush_deletes_stale_class_folders_and_files(synth, hub, tmp_path):
    """The repo already holds a previous push (wbcgen.json with a `blast` class and an old
    report) and a user's own file; re-pushing deletes exactly the stale wbcgen files."""
    from huggingface_hub.utils import filter_repo_objects

    old = tmp_path / "old-wbcgen.json"
    old.write_text(json.dumps({"kind": "dataset", "classes": ["monocyte", "blast"],
                               "sha256": {"metadata.csv": "0" * 64}, "editable": ["README.md", "report.html"]}))
    remote = ["README.md", "metadata.csv", "wbcgen.json", "report.html", "monocyte/000009.png",
              "blast/0000/000000.png", "blast/0001/000001.png", "basophil/000000.png", "notes/mine.txt",
              ".gitattributes"]
    hub["remote"] = {f: old if f == "wbcgen.json" else tmp_path / "x" for f in remote}
    push(synth, "me/wbc", progress=False)
    (uploaded, kw), = hub["uploads"]
    patterns = kw["delete_patterns"]
    assert "blast/*" in patterns and "monocyte/*" in patterns and "report.html" in patterns
    # what huggingface_hub's upload_folder does with them: match, then keep what this commit uploads
    gone = sorted(f for f in filter_repo_objects(remote, allow_patterns=patterns) if f not in uploaded)
    assert gone == ["blast/0000/000000.png", "blast/0001/000001.png", "monocyte/000009.png", "report.html"]
    # the large-folder path (no delete_patterns there) deletes the same files afterwards
    push_mod.LARGE_UPLOAD, saved = 3, push_mod.LARGE_UPLOAD
    try:
        import wbcgen.hub.publish as pm

        streams, pm._streams_large_folders = pm._streams_large_folders, lambda: False
        push(synth, "me/wbc", progress=False)
    finally:
        push_mod.LARGE_UPLOAD, pm._streams_large_folders = saved, streams
    assert hub["deleted"] == [gone]
