"""Small runtime helpers shared by every training loop in the project.

Atomic writes, one-file checkpoints (tensors in safetensors, everything else as JSON in
the safetensors metadata, so nothing is ever unpickled), RNG state capture/restore,
seeding and device/precision selection. ``wbcgen`` reuses these (it may import
``classifiers``; the reverse is forbidden).
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

# ----------------------------------------------------------------------------- files


@functools.cache
def _umask_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give (mkstemp's own is 0600). The umask
    can only be read by setting it, which is process-wide, so it is probed once."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def bundled_dir(name: str, marker: str | None = None) -> Path:
    """A folder the project ships beside its packages (``recipes``, ``cards``): the source
    tree's ``<name>/`` (checkout or editable install), else ``<prefix>/share/wbcgen/<name>``
    (a wheel's data files). With ``marker``, a folder counts only when it holds that file.
    When neither is there, the source-tree path (for the caller's error message)."""
    tree = Path(__file__).resolve().parents[1] / name
    shared = Path(sys.prefix) / "share" / "wbcgen" / name
    found = (lambda d: (d / marker).is_file()) if marker else Path.is_dir
    return next((d for d in (tree, shared) if found(d)), tree)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, _umask_mode())
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_safetensors_atomic(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                            metadata: dict[str, str] | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class UserError(Exception):
    """A mistake the user can fix (bad path, bad flag, bad file). The message is one clear
    sentence; the CLI prints it without a traceback. Every package of the project raises
    this (or a subclass) for user mistakes."""


class CheckpointError(UserError):
    """A checkpoint file is missing, truncated or not one of ours."""


# ------------------------------------------------------------------------ checkpoints


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = prefix or "_"
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise TypeError("checkpoint dict keys must be str or int")
        return {"__dict__": [[k, _flatten(v, f"{prefix}.{k}" if prefix else str(k), tensors)]
                             for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, f"{prefix}.{i}" if prefix else str(i), tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if isinstance(obj, np.ndarray):
        return _flatten(torch.from_numpy(np.ascontiguousarray(obj)), prefix, tensors) | {"__numpy__": True}
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} at {prefix!r}")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            t = tensors[obj["__tensor__"]]
            return t.numpy() if obj.get("__numpy__") else t
        if "__dict__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        raise CheckpointError("unknown node in checkpoint structure")
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Save a nested dict (state_dicts, RNG states, counters) as ONE safetensors file.

    Tensors are stored as safetensors tensors; the structure and all plain values are
    stored as JSON in the file's metadata. The write is atomic.
    """
    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, "", tensors)
    # safetensors refuses tensors that share storage: clone to be safe
    tensors = {k: v.detach().clone().contiguous().cpu() for k, v in tensors.items()}
    save_safetensors_atomic(tensors, path, metadata={"wbcgen_checkpoint": "1", "tree": json.dumps(tree)})


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (no unpickling involved)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        tree = json.loads(meta["tree"])
    except (KeyError, ValueError, OSError, RuntimeError, json.JSONDecodeError) as e:  # safetensors raises several
        raise CheckpointError(f"checkpoint {path} is corrupt or not a wbcgen checkpoint ({type(e).__name__})") from None
    except Exception as e:  # safetensors_rust.SafetensorError is not a subclass of the above
        raise CheckpointError(f"checkpoint {path} is corrupt or not a wbcgen checkpoint ({type(e).__name__})") from None
    return _unflatten(tree, tensors)


# ------------------------------------------------------------------------------ RNG


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG a training loop touches: python, numpy, torch CPU and CUDA."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- device


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` → CUDA when present, else CPU. Anything else must be ``cpu``, ``cuda``
    or ``cuda:N`` of a GPU that exists; otherwise a one-sentence :class:`UserError`."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        dev = device
    else:
        try:
            dev = torch.device(str(device).strip().lower())
        except (RuntimeError, ValueError, TypeError):
            raise UserError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"--device {device!r} is not supported; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise UserError(f"--device {device} asks for a GPU but torch sees none on this machine; "
                            "use --device cpu (or auto)")
        if dev.index is not None and dev.index >= n:
            raise UserError(f"--device {device} does not exist: this machine has {n} GPU(s) (cuda:0..cuda:{n - 1})")
    return dev


def check_batch_memory(batch_size: int, bytes_per_item: int, device: str | torch.device | None = None,
                       flag: str = "--batch-size") -> None:
    """Refuse a batch whose rough memory need (``bytes_per_item`` × batch) exceeds the memory
    of the device it would run on, before anything is allocated."""
    if int(batch_size) < 1:
        raise UserError(f"{flag} must be positive (got {batch_size})")
    dev = pick_device(device)
    need = int(batch_size) * int(bytes_per_item)
    if dev.type == "cuda":
        have, what = torch.cuda.get_device_properties(dev.index or 0).total_memory, "GPU memory"
    else:
        try:
            have, what = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "RAM"
        except (ValueError, OSError, AttributeError):
            return
    if need > have:
        raise UserError(f"{flag} {batch_size} needs roughly {need / 2**30:.0f} GiB but the {dev.type} has "
                        f"{have / 2**30:.0f} GiB of {what}; use a smaller {flag}")


def autocast_dtype(device: torch.device, enabled: bool = True, cpu: bool = False) -> torch.dtype | None:
    """What :func:`autocast` computes in on ``device``: bf16, or None (fp32, no autocast)."""
    if enabled and (device.type == "cuda" or (cpu and device.type == "cpu" and cpu_has_bf16())):
        return torch.bfloat16
    return None


def autocast(device: torch.device, enabled: bool = True, cpu: bool = False):
    """bf16 autocast on CUDA; a no-op context on CPU (fp32 keeps CPU runs bit-reproducible)
    unless ``cpu=True`` and the CPU has native bf16 (AVX512-BF16/AMX), where bf16 autocast
    roughly doubles convolution throughput (still deterministic on one machine)."""
    dtype = autocast_dtype(device, enabled, cpu)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def cpu_has_bf16() -> bool:
    """True when the CPU advertises native bf16 arithmetic (Linux /proc/cpuinfo flags)."""
    global _CPU_BF16
    if _CPU_BF16 is None:
        try:
            flags = Path("/proc/cpuinfo").read_text(errors="replace")
            _CPU_BF16 = "avx512_bf16" in flags or "amx_bf16" in flags
        except OSError:
            _CPU_BF16 = False
    return _CPU_BF16


_CPU_BF16: bool | None = None


def memory_format(device: torch.device) -> torch.memory_format:
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


# run_lock / os_error_message live in classifiers.safety and are part of this module's API
from classifiers.safety import LOCK_NAME, os_error_message, run_lock  # noqa: E402,F401
