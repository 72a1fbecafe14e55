"""Checkpoints as data, never code: an ``.npz`` of arrays plus a JSON header, written atomically.

Layout of a checkpoint file (a plain, uncompressed NumPy ``.npz``, read with ``allow_pickle=False``):

* ``__header__``: a uint8 array holding UTF-8 JSON: ``format`` (version), ``npgan`` (version), ``config_hash`` (the
  sha256 of the run's configuration, or null), ``meta`` (anything JSON-serialisable the caller adds: step,
  architecture summary, optimizer hyper-parameters, RNG state), ``keys`` (the array names in order) and ``sha256``;
* every other entry: one array, under a '/'-separated name (``G/0.weight``, ``opt_g/state/0/exp_avg``).

A training run's state (:func:`pack_state`, :func:`unpack_state`, :func:`apply_state`) puts each network's
``state_dict`` under its name (``G/…``, ``D/…``) and each optimizer's array state under
``NAME/state/INDEX/KEY``; ``meta`` holds ``step``, ``arch`` (parameter names and shapes), ``arch_hash``,
``config``, ``rng`` (npgan's generator state), ``optimizers`` (each one's ``param_groups`` and its non-array
state, ``scalars``), ``lr_scale``, ``skipped`` and ``env`` (npgan's thread count and the BLAS libraries' name,
version and threads: exact resume needs the same). Every field and array is validated before anything is
applied (:func:`unpack_state`, :func:`apply_state`).

``sha256`` (format 2) is taken over the canonical JSON of the header's other fields and then every array's name,
dtype, shape and bytes, in order: a flipped byte anywhere — in an array or in the step number — fails the check.
(Format 1 files, whose checksum covers only the arrays, are still read.)

Loading never runs code: the file is read into memory once, must be a zip of stored (uncompressed) ``.npy``
members whose sizes add up, and NumPy parses it with ``allow_pickle=False``; a pickle, an object array, a truncated
or altered file, a newer format or a missing header each give one :class:`CheckpointError` naming the file.

Writes go to a temporary file in the same directory (``.NAME.XXXX.tmp``), are flushed and fsync'ed, then renamed
over the target and the directory is fsync'ed: a crash at any moment leaves either the old or the new file, never
a half-written one; a failed write (disk full) removes its temporary file and raises
:class:`CheckpointWriteError`, leaving the previous checkpoint intact. A process killed between the two steps
leaves a stale temporary file, which :func:`npgan.files.remove_stale_temps` (run by ``npgan resume``) deletes.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import sys
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

from .. import __version__, backend
from ..errors import CheckpointError, CheckpointWriteError, FileKindError
from ..files import atomic_write_bytes, open_regular
from .machine import available_memory, format_bytes, run_environment

__all__ = ["FORMAT_VERSION", "CHECKPOINT_FILE", "KEPT_CHECKPOINTS", "kept_checkpoint",
           "CheckpointError", "CheckpointWriteError", "save_arrays", "load_arrays",
           "config_hash", "TrainingState", "pack_state", "unpack_state", "apply_state"]

FORMAT_VERSION = 2
#: a run directory's checkpoint, and the folder of the copies kept with ``keep_checkpoints`` (step_NNNNNN.npz)
CHECKPOINT_FILE = "checkpoint.npz"
KEPT_CHECKPOINTS = "checkpoints"
_READABLE_FORMATS = (1, 2)
_ZIP_MAGIC = b"PK\x03\x04"


def kept_checkpoint(out: str | os.PathLike, step: int) -> Path:
    """The path of the kept copy of a run's checkpoint at ``step`` (``keep_checkpoints``)."""
    return Path(out) / KEPT_CHECKPOINTS / f"step_{step:06d}.npz"


def nonfinite(arrays: dict[str, Any]) -> list[str]:
    """The names of the float arrays that hold nan or inf (a checkpoint refuses to save them)."""
    return [k for k, v in arrays.items()
            if backend.np.dtype(v.dtype).kind == "f" and not bool(backend.get_array_module(v).isfinite(v).all())]


def config_hash(config: dict[str, Any]) -> str:
    """sha256 (hex) of a configuration dict's canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(_canonical(config).encode("utf-8")).hexdigest()


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _digest(arrays: dict[str, Any], core: dict[str, Any] | None = None) -> str:
    """sha256 over the header's ``core`` fields (format 2; None for format 1) and every array, in order."""
    h = hashlib.sha256()
    if core is not None:
        h.update(_canonical(core).encode("utf-8"))
    for k, a in arrays.items():
        a = backend.np.asarray(a, order="C")  # (ascontiguousarray would turn 0-d into 1-d)
        h.update(k.encode())
        h.update(str(a.dtype.str).encode())
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


# ============================================================================ save
def save_arrays(path: str | os.PathLike, arrays: dict[str, Any], meta: dict[str, Any],
                config_hash: str | None = None) -> None:
    """Save host copies of ``arrays`` and the JSON ``meta`` atomically to ``path`` (an .npz).

    Raises :class:`CheckpointError` for an array that is not numeric or a reserved name, and
    :class:`CheckpointWriteError` (an OSError with the errno) when the file cannot be written; in both cases
    ``path`` is untouched.
    """
    path = Path(path)
    host = {k: backend.np.asarray(backend.to_numpy(a), order="C") for k, a in arrays.items()}
    for k, a in host.items():
        if a.dtype.kind not in "biuf":
            raise CheckpointError(f"{path}: array {k!r} has dtype {a.dtype}; only numeric arrays are stored")
        if k == "__header__" or not isinstance(k, str) or not k:
            raise CheckpointError(f"{path}: {k!r} is not a valid array name")
    try:
        core = json.loads(json.dumps({"format": FORMAT_VERSION, "npgan": __version__, "config_hash": config_hash,
                                      "meta": meta, "keys": list(host)}))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the metadata is not JSON-serialisable ({exc})") from None
    header = dict(core, sha256=_digest(host, core))
    buf = io.BytesIO()
    payload = {"__header__": backend.np.frombuffer(json.dumps(header).encode("utf-8"), dtype=backend.np.uint8)}
    payload.update(host)
    backend.np.savez(buf, **payload)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        code = errno.errorcode.get(exc.errno or 0, "?")
        state = (f"the previous checkpoint {path} is intact" if path.is_file()
                 else f"no checkpoint exists at {path}")
        raise CheckpointWriteError(exc.errno, f"could not write checkpoint {path}: {exc.strerror or exc} "
                                   f"({code}); {state}, no temporary file is left") from None


# ============================================================================ load
def _check_zip(path: Path, raw: bytes) -> None:
    """The file is a zip of stored .npy members whose sizes fit the file (no pickle, no zip bomb)."""
    if not raw.startswith(_ZIP_MAGIC):
        if raw[:1] == b"\x80":  # the PROTO opcode that starts every pickle of protocol 2 or later
            raise CheckpointError(f"checkpoint {path} is not an .npz (zip) file: it starts like a pickle, which "
                                  "npgan never loads (checkpoints are .npz data)")
        kind = "empty" if not raw else "not an .npz (zip) file"
        raise CheckpointError(f"checkpoint {path} is {kind}")
    try:
        infos = zipfile.ZipFile(io.BytesIO(raw)).infolist()
    except Exception as exc:  # noqa: BLE001 - zipfile raises many kinds (NotImplementedError for odd versions)
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}: {exc})") from None
    total = 0
    for info in infos:
        if not info.filename.endswith(".npy") or info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(f"checkpoint {path}: unexpected member {info.filename!r} (an npgan checkpoint "
                                  "holds only uncompressed .npy arrays)")
        total += info.file_size
    if total > len(raw):
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt (its members claim {total} bytes, the "
                              f"file has {len(raw)})")


def _check_size(path: Path) -> None:
    """Refuse, before reading it, a file larger than 90% of the available memory (a checkpoint is read whole):
    the message names the file and its size (a sparse 60 GB file is not "a batch too large")."""
    size = path.stat().st_size
    avail = available_memory()
    if avail is not None and size > 0.9 * avail:
        raise CheckpointError(f"checkpoint {path} is {format_bytes(size)}, more than the {format_bytes(avail)} of "
                              "memory available to read it; an npgan checkpoint holds the weights and optimizer "
                              "state (is it the right file?)")


def load_arrays(path: str | os.PathLike, header: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """(arrays as host numpy arrays, meta) from a checkpoint; :class:`CheckpointError` on any defect.

    With ``header=True`` the second item is the whole header (``format``, ``npgan``, ``config_hash``, ``meta``,
    ``keys``, ``sha256``). Refuses pickles and object arrays (nothing is ever unpickled), files that are not
    .npz, truncated or altered files (the checksum), and files of a newer format.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    _check_size(path)
    try:
        with open_regular(path, "checkpoint") as f:  # never a blocking read (a FIFO swapped in meanwhile)
            raw = f.read()
    except FileKindError as exc:
        raise CheckpointError(str(exc)) from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.strerror or exc})") from None
    except MemoryError:
        raise CheckpointError(f"checkpoint {path} ({path.stat().st_size:,} bytes) does not fit in memory; "
                              "is it the right file?") from None
    _check_zip(path, raw)
    try:
        with backend.np.load(io.BytesIO(raw), allow_pickle=False) as z:
            if "__header__" not in z.files:
                raise CheckpointError(f"checkpoint {path} has no npgan header (not an npgan checkpoint)")
            head = json.loads(bytes(z["__header__"]).decode("utf-8"))
            arrays = {k: z[k] for k in z.files if k != "__header__"}
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure of foreign bytes is one clear error
        if isinstance(exc, zipfile.BadZipFile) and "CRC" in str(exc):
            raise CheckpointError(f"checkpoint {path} fails its checksum: the file was altered or damaged "
                                  f"({exc})") from None
        if "pickle" in str(exc).lower():
            raise CheckpointError(f"checkpoint {path} holds pickled objects, which npgan never loads") from None
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}: {exc})") from None
    if not isinstance(head, dict) or "format" not in head:
        raise CheckpointError(f"checkpoint {path} has a malformed header")
    fmt = head["format"]
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise CheckpointError(f"checkpoint {path} has a malformed header (format {fmt!r})")
    if fmt not in _READABLE_FORMATS:
        raise CheckpointError(f"checkpoint {path} has format {fmt} (written by npgan {head.get('npgan', '?')}), "
                              f"newer than this npgan ({__version__}) reads (format {FORMAT_VERSION}); "
                              "upgrade npgan")
    keys = head.get("keys")
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(arrays):
        raise CheckpointError(f"checkpoint {path}: the arrays do not match the header's list")
    ordered = {k: arrays[k] for k in keys}
    core = None if fmt == 1 else {k: head.get(k) for k in ("format", "npgan", "config_hash", "meta", "keys")}
    if _digest(ordered, core) != head.get("sha256"):
        raise CheckpointError(f"checkpoint {path} fails its checksum: the file was altered or damaged")
    meta = head.get("meta", {})
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path} has a malformed header (meta is {type(meta).__name__})")
    return ordered, (head if header else meta)


# ============================================================================ a training run's state
class TrainingState(NamedTuple):
    """A training run's state as read from a checkpoint, checked and ready to apply."""

    nets: dict[str, dict[str, Any]]  # network name -> state_dict
    opts: dict[str, dict[str, Any]]  # optimizer name -> state_dict (state and param_groups)
    step: int
    lr_scale: float
    skipped: int
    rng: dict[str, Any]


def pack_state(nets: dict[str, Any], opts: dict[str, Any], *, step: int, arch: dict[str, Any], arch_hash: str,
               config: dict[str, Any], rng: dict[str, Any], lr_scale: float,
               skipped: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(arrays, meta) for :func:`save_arrays` from the networks and optimizers (by name) and the loop's state.

    Array state goes to the arrays; an optimizer's other state (e.g. Adam's step count) and its param_groups
    go to ``meta["optimizers"]`` (tuples as lists, which JSON keeps).
    """
    arrays: dict[str, Any] = {}
    meta: dict[str, Any] = {"step": step, "arch": arch, "arch_hash": arch_hash, "config": config, "rng": rng,
                            "optimizers": {}, "lr_scale": lr_scale, "skipped": skipped, "env": run_environment()}
    for prefix, net in nets.items():
        for k, v in net.state_dict().items():
            arrays[f"{prefix}/{k}"] = v
    for name, opt in opts.items():
        sd = opt.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for i, st in sd["state"].items():
            for k, v in st.items():
                if backend.is_array(v):
                    arrays[f"{name}/state/{i}/{k}"] = v
                else:
                    scalars.setdefault(str(i), {})[k] = v
        groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
        meta["optimizers"][name] = {"param_groups": groups, "scalars": scalars}
    return arrays, meta


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _nonneg_int(path: Any, field: str, v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise CheckpointError(f"checkpoint {path}: {field} must be a non-negative integer, got {v!r}")
    return v


#: the optimizer hyper-parameters a checkpoint's param_groups may hold, and the values each may take
_GROUP_RULES: dict[str, tuple[str, Any]] = {
    "lr": ("a finite number > 0", lambda v: _is_real(v) and v > 0),
    "eps": ("a finite number >= 0", lambda v: _is_real(v) and v >= 0),
    "weight_decay": ("a finite number >= 0", lambda v: _is_real(v) and v >= 0),
    "momentum": ("a finite number >= 0", lambda v: _is_real(v) and v >= 0),
    "dampening": ("a finite number >= 0", lambda v: _is_real(v) and v >= 0),
    "alpha": ("a number in [0, 1]", lambda v: _is_real(v) and 0 <= v <= 1),
    "betas": ("a pair of numbers in [0, 1)",
              lambda v: isinstance(v, list) and len(v) == 2 and all(_is_real(b) and 0 <= b < 1 for b in v)),
    "params": ("a list of parameter indices",
               lambda v: isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                                      for i in v)),
}


def _check_groups(path: Any, name: str, groups: Any) -> None:
    """Each optimizer param_group's hyper-parameters are of the right type and range (:data:`_GROUP_RULES`;
    any other key must be a bool or a finite number)."""
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise CheckpointError(f"checkpoint {path}: {name}.param_groups must be a list of tables, got {groups!r}")
    for gi, g in enumerate(groups):
        for k, v in g.items():
            what, ok = _GROUP_RULES.get(k, ("true, false or a finite number",
                                            lambda v: isinstance(v, bool) or _is_real(v)))
            if not ok(v):
                raise CheckpointError(f"checkpoint {path}: {name}.param_groups[{gi}].{k} must be {what}, "
                                      f"got {v!r}")


def _check_rng(path: Any, rng: Any) -> None:
    """The RNG state is complete: numpy's ``bit_generator`` state, or CuPy's ``state``/``size``/``seed``
    (an empty or partial one would reseed the generator and the resume would no longer be exact)."""
    ok = isinstance(rng, dict) and isinstance(rng.get("device"), str)
    if ok and rng.get("kind", "numpy") == "numpy":
        bg = rng.get("bit_generator")
        ok = (isinstance(bg, dict) and isinstance(bg.get("bit_generator"), str)
              and isinstance(bg.get("state"), dict) and bool(bg["state"]))
    elif ok:
        ok = (isinstance(rng.get("state"), str) and isinstance(rng.get("size"), int)
              and isinstance(rng.get("seed"), int))
    if not ok:
        raise CheckpointError(f"checkpoint {path}: rng is not a complete random-generator state (got "
                              f"{_short(rng)}); resuming from it would silently reseed the generator")


def _short(v: Any, n: int = 80) -> str:
    r = repr(v)
    return r if len(r) <= n else r[:n] + "..."


#: configuration fields a resumed session may change without making the checkpoint another run's (the model
#: file's SHA-256 changes with ``resume --allow-changed-model``)
SESSION_FIELDS = ("device", "train.steps", "train.on_nan", "model_sha256")


def _config_key(config: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """``config`` less the session fields and less the fields ``other`` lacks (a field added to RunConfig after a
    checkpoint was written is not in that checkpoint's copy, and cannot tell two runs apart)."""
    t_other = dict(other.get("train") or {})
    d = {k: v for k, v in config.items() if k != "train" and k not in SESSION_FIELDS and k in other}
    d["train"] = {k: v for k, v in dict(config.get("train") or {}).items()
                  if f"train.{k}" not in SESSION_FIELDS and k in t_other}
    return d


def check_config(path: Any, saved: Any, config: dict[str, Any]) -> None:
    """The checkpoint's configuration is the run's: :func:`config_hash` of both, leaving out the fields a
    session may change (:data:`SESSION_FIELDS`) and those only one side has, must agree; else
    :class:`CheckpointError` naming the fields."""
    if not isinstance(saved, dict):
        raise CheckpointError(f"checkpoint {path}: config must be a table, got {_short(saved)}")
    a, b = _config_key(saved, config), _config_key(config, saved)
    if config_hash(a) == config_hash(b):
        return
    diff = [f"{k} ({a.get(k)!r} here, {b.get(k)!r} in config.toml)" for k in sorted(set(a) | set(b))
            if k != "train" and a.get(k) != b.get(k)]
    diff += [f"train.{k} ({a['train'].get(k)!r} here, {b['train'].get(k)!r} in config.toml)"
             for k in sorted(set(a["train"]) | set(b["train"])) if a["train"].get(k) != b["train"].get(k)]
    raise CheckpointError(f"checkpoint {path} belongs to another run: its configuration differs from the run's "
                          f"config.toml in {', '.join(diff[:3])}{' ...' if len(diff) > 3 else ''}")


def unpack_state(path: str | os.PathLike, arrays: dict[str, Any], meta: dict[str, Any], nets: tuple[str, ...],
                 opts: tuple[str, ...], config: dict[str, Any] | None = None) -> TrainingState:
    """The inverse of :func:`pack_state` for the networks and optimizers named; :class:`CheckpointError` naming
    ``path`` and the field for an unexpected array or any header field of the wrong type or range:

    * ``step``, ``skipped``: non-negative integers (not 12.7, not Infinity); ``lr_scale`` in (0, 1];
    * each optimizer's ``param_groups`` (:data:`_GROUP_RULES`: lr > 0, betas in [0, 1), eps >= 0 ...) and its
      scalar state (``step`` a non-negative integer, anything else a finite number);
    * ``rng``: a complete generator state (an empty one would reseed silently);
    * ``config`` (when the run's ``config`` is given): the same run (:func:`check_config`);
    * ``env`` (npgan threads, BLAS): when it differs from this process, one warning line on stderr
      (exact resume needs the same thread count and BLAS, see docs/reliability.md).

    Arrays' dtypes and finiteness are checked against the networks by :func:`apply_state`, before it applies.
    """
    sds: dict[str, dict[str, Any]] = {n: {} for n in nets}
    opt_states: dict[str, dict[int, dict[str, Any]]] = {n: {} for n in opts}
    for k, v in arrays.items():
        head, _, rest = k.partition("/")
        parts = rest.split("/")
        if head in sds:
            sds[head][rest] = v
        elif head in opt_states and len(parts) == 3 and parts[0] == "state" and parts[1].isdigit():
            opt_states[head].setdefault(int(parts[1]), {})[parts[2]] = v
        else:
            raise CheckpointError(f"checkpoint {path}: unexpected entry {k!r}")
    for field in ("step", "rng", "optimizers"):
        if field not in meta:
            raise CheckpointError(f"checkpoint {path} is incomplete: no {field!r} in its header")
    step = _nonneg_int(path, "step", meta["step"])
    skipped = _nonneg_int(path, "skipped", meta.get("skipped", 0))
    lr_scale = meta.get("lr_scale", 1.0)
    if not (_is_real(lr_scale) and 0 < lr_scale <= 1):
        raise CheckpointError(f"checkpoint {path}: lr_scale must be a number in (0, 1], got {lr_scale!r}")
    rng = meta["rng"]
    _check_rng(path, rng)
    if config is not None and "config" in meta:
        check_config(path, meta["config"], config)
    opt_sd = {}
    optimizers = meta["optimizers"]
    for name, st in opt_states.items():
        info = optimizers.get(name) if isinstance(optimizers, dict) else None
        if not isinstance(info, dict) or not isinstance(info.get("scalars", {}), dict):
            raise CheckpointError(f"checkpoint {path} is incomplete: no optimizer state {name!r} in its header")
        _check_groups(path, name, info.get("param_groups"))
        for i, sc in info.get("scalars", {}).items():
            if not str(i).isdigit() or not isinstance(sc, dict):
                raise CheckpointError(f"checkpoint {path}: {name}.scalars has an entry {i!r}: {_short(sc)}")
            for k, v in sc.items():
                if k == "step":
                    _nonneg_int(path, f"{name}.scalars.{i}.step", v)
                elif not (isinstance(v, bool) or _is_real(v)):
                    raise CheckpointError(f"checkpoint {path}: {name}.scalars.{i}.{k} must be a finite number, "
                                          f"got {v!r}")
            st.setdefault(int(i), {}).update(sc)
        opt_sd[name] = {"state": st, "param_groups": info["param_groups"]}
    return TrainingState(sds, opt_sd, step, float(lr_scale), skipped, rng)


def _check_arrays(path: Any, state: TrainingState, nets: dict[str, Any], opts: dict[str, Any]) -> None:
    """Every array has exactly the dtype of what it replaces (a network's parameter or buffer, an optimizer's
    parameter), and every float array is finite; :class:`CheckpointError` naming the array otherwise."""
    def check(name: str, v: Any, want: Any) -> None:
        dt = getattr(v, "dtype", None)
        if dt is None or dt != want:
            raise CheckpointError(f"checkpoint {path}: array {name} has dtype {dt}, expected {backend.np.dtype(want)}"
                                  " (a checkpoint's arrays are never cast)")
        xp = backend.get_array_module(v)
        if dt.kind == "f" and not bool(xp.isfinite(v).all()):
            raise CheckpointError(f"checkpoint {path}: array {name} holds nan or inf; a checkpoint holds only "
                                  "finite weights and optimizer state")

    for n, m in nets.items():
        own = m.state_dict()
        for k, v in state.nets.get(n, {}).items():
            if k in own:  # a missing or unexpected key is load_state_dict's error
                check(f"{n}/{k}", v, own[k].dtype)
    for n, o in opts.items():
        indexed = list(o._indexed())
        params = [p for _, _, p in indexed]
        for i, st in state.opts.get(n, {}).get("state", {}).items():
            if st and 0 <= i < len(indexed):  # a parameter updated at least once: its state is complete
                lacking = [k for k in o.state_keys(indexed[i][1]) if k not in st]
                if lacking:
                    raise CheckpointError(f"checkpoint {path}: the state of {n}'s parameter {i} lacks "
                                          f"{', '.join(lacking)} (it holds {', '.join(sorted(st))}); the next step "
                                          "would fail")
            for k, v in st.items():
                if backend.is_array(v) and 0 <= i < len(params):
                    if getattr(v, "ndim", 0) == 0 and v.dtype.kind in "iu":
                        continue  # an integer count kept as an array
                    check(f"{n}/state/{i}/{k}", v, params[i].dtype)


def warn_environment(path: Any, saved: Any) -> None:
    """One warning line when a checkpoint's recorded environment (``meta["env"]``: npgan's threads, the BLAS) is
    not this process's: a resume from it is not bit-exact. For resume only; a reader (sample, info, export) is
    not affected by it and says nothing."""
    if not isinstance(saved, dict):
        return
    here = run_environment()
    if saved == here:
        return
    def fmt(e: Any) -> str:
        b = e.get("blas") if isinstance(e, dict) else None
        libs = ", ".join(f"{x.get('name')} {x.get('version')} x{x.get('threads')}" for x in b
                         if isinstance(x, dict)) if isinstance(b, list) else "?"
        return f"{e.get('threads')} npgan thread(s), BLAS {libs or 'none'}"
    print(f"npgan: warning: checkpoint {path} was written with {fmt(saved)}, this process has {fmt(here)}; "
          "the resume is not bit-exact (exact resume needs the same thread count and BLAS)", file=sys.stderr)


def apply_state(path: str | os.PathLike, state: TrainingState, nets: dict[str, Any], opts: dict[str, Any]) -> None:
    """Load ``state`` into the networks and optimizers and npgan's generator, all or nothing: if any part does
    not fit, everything is put back as it was and :class:`CheckpointError` names ``path``.

    First every array is checked (:func:`_check_arrays`: exactly the dtype of what it replaces, finite), so that
    a float64 or float16 array, a NaN weight or an infinite Adam ``exp_avg_sq`` is refused before anything
    changes."""
    _check_arrays(path, state, nets, opts)
    before = ({n: {k: v.copy() for k, v in m.state_dict().items()} for n, m in nets.items()},
              {n: o.state_dict() for n, o in opts.items()}, backend.get_rng_state())
    try:
        for n, m in nets.items():
            m.load_state_dict(state.nets[n])
        for n, o in opts.items():
            o.load_state_dict(state.opts[n])
        backend.set_rng_state(state.rng)
    except Exception as exc:  # noqa: BLE001 - put everything back, then one clear error
        for n, m in nets.items():
            m.load_state_dict(before[0][n])
        for n, o in opts.items():
            o.load_state_dict(before[1][n])
        backend.set_rng_state(before[2])
        raise CheckpointError(f"checkpoint {path} does not fit this run ({type(exc).__name__}: {exc}); "
                              "nothing was changed") from None
