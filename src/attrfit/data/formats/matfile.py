"""MATLAB .mat files, both kinds, read into one plain Python form.

The field's annotation files are MATLAB files: PETA.mat, PA-100k's annotation.mat, RAPv2's
RAP_annotation.mat and the Market-1501/DukeMTMC attribute files are MATLAB 5 files (read with
scipy); a file re-saved with ``-v7.3`` is HDF5 (read with h5py, MATLAB's layout: arrays stored
transposed, char as uint16, cells as object references, structs as groups). Both become:

- a numeric or logical array: ``numpy.ndarray`` with MATLAB's shape (at least 2-D);
- a char array: ``str`` (a char matrix: its rows joined by newlines; never seen in these files);
- a cell array: ``numpy.ndarray`` of dtype object, MATLAB's shape, each element converted;
- a scalar struct: ``dict`` of field name -> value, in the file's field order; a struct
  array: an object ``numpy.ndarray`` of such dicts.

Both libraries are the optional extra ``attrfit[datasets]``; a missing one is an
:class:`AttrfitError` naming it. Nothing here runs code from the file (a .mat holds data only).

    >>> top = load_mat(Path("PETA.mat"))  # doctest: +SKIP
    >>> top["peta"]["data"].shape  # doctest: +SKIP
    (19000, 109)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attrfit.core.errors import AttrfitError

EXTRA = "pip install 'attrfit[datasets]'"
V5_HEADER = b"MATLAB 5.0 MAT-file"
V73_HEADER = b"MATLAB 7.3 MAT-file"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def load_mat(path: Path) -> dict:
    """Every variable of the .mat file ``path`` (name -> value, in the plain form above)."""
    path = Path(path)
    if not path.is_file():
        raise AttrfitError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(520)
    if head.startswith(V73_HEADER) or head[512:520] == HDF5_SIGNATURE or head.startswith(HDF5_SIGNATURE):
        return _load_v73(path)
    if head.startswith(b"MATLAB"):
        return _load_v5(path)
    raise AttrfitError(f"{path}: not a MATLAB .mat file (its first bytes are {head[:20]!r}); give the dataset's "
                       "annotation .mat file")


def _need(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise AttrfitError(f"reading MATLAB files needs {module}, which is not installed: {EXTRA} "
                           "(scipy reads MATLAB 5 files, h5py the -v7.3 ones)") from None


# ---------------------------------------------------------------- MATLAB 5 (scipy)

def _load_v5(path: Path) -> dict:
    _need("scipy")
    from scipy.io import loadmat

    try:
        raw = loadmat(path, squeeze_me=False, struct_as_record=True, mat_dtype=False, chars_as_strings=True)
    except Exception as e:  # scipy raises ValueError, TypeError, MatReadError ... on a damaged file
        raise AttrfitError(f"{path}: not a readable MATLAB file ({type(e).__name__}: {e})") from None
    return {k: _v5_value(v) for k, v in raw.items() if not k.startswith("__")}


def _v5_value(v):
    if isinstance(v, np.ndarray):
        if v.dtype.names is not None:  # a struct (array)
            return _struct_array(v, lambda rec, name: _v5_value(rec[name]))
        if v.dtype == object:  # a cell array
            out = np.empty(v.shape, dtype=object)
            for i, x in np.ndenumerate(v):
                out[i] = _v5_value(x)
            return out
        if v.dtype.kind == "U":  # chars_as_strings: an array of strings, one per row
            return "\n".join(str(s) for s in v.ravel())
        return v
    if isinstance(v, str):
        return v
    return np.atleast_2d(np.asarray(v))


def _struct_array(v: np.ndarray, field_value) -> dict | np.ndarray:
    names = list(v.dtype.names)
    if v.size == 1:
        rec = v.reshape(-1)[0]
        return {n: field_value(rec, n) for n in names}
    out = np.empty(v.shape, dtype=object)
    for i, rec in np.ndenumerate(v):
        out[i] = {n: field_value(rec, n) for n in names}
    return out


# ---------------------------------------------------------------- MATLAB 7.3 (HDF5, h5py)

def _load_v73(path: Path) -> dict:
    h5py = _need("h5py")
    try:
        with h5py.File(path, "r") as f:
            return {k: _h5_value(f[k], f) for k in f.keys() if not k.startswith("#")}
    except AttrfitError:
        raise
    except Exception as e:  # OSError, KeyError, ValueError ... on a damaged or foreign HDF5 file
        raise AttrfitError(f"{path}: not a readable MATLAB -v7.3 file ({type(e).__name__}: {e})") from None


def _matlab_class(obj) -> str:
    c = obj.attrs.get("MATLAB_class", b"")
    return c.decode() if isinstance(c, bytes) else str(c)


def _h5_value(obj, f):
    import h5py

    cls = _matlab_class(obj)
    if isinstance(obj, h5py.Group):
        return _h5_struct(obj, f)
    if obj.attrs.get("MATLAB_empty", 0):
        return np.zeros((0, 0)) if cls != "char" else ""
    data = obj[()]
    if cls == "cell" or data.dtype == h5py.ref_dtype:
        cells = np.asarray(data).T  # HDF5 keeps MATLAB's column-major order: shapes come reversed
        out = np.empty(cells.shape, dtype=object)
        for i, ref in np.ndenumerate(cells):
            out[i] = _h5_value(f[ref], f)
        return out
    if cls == "char":
        chars = np.atleast_2d(np.asarray(data).T)  # (rows, length) in MATLAB's shape
        return "\n".join("".join(chr(c) for c in row) for row in chars)
    arr = np.asarray(data).T
    if cls == "logical":
        arr = arr.astype(bool)
    return np.atleast_2d(arr)


def _h5_struct(group, f):
    import h5py

    fields = group.attrs.get("MATLAB_fields")
    names = ["".join(x.astype(str)) if isinstance(x, np.ndarray) else str(x) for x in fields] \
        if fields is not None else list(group.keys())
    names = [n for n in names if n in group]
    first = group[names[0]] if names else None
    if first is not None and isinstance(first, h5py.Dataset) and first.dtype == h5py.ref_dtype \
            and _matlab_class(first) != "cell":
        # a struct array: each field is an array of references, one per element
        refs = {n: np.asarray(group[n][()]).T for n in names}
        out = np.empty(refs[names[0]].shape, dtype=object)
        for i in np.ndindex(out.shape):
            out[i] = {n: _h5_value(f[refs[n][i]], f) for n in names}
        return out[0, 0] if out.size == 1 else out
    return {n: _h5_value(group[n], f) for n in names}


# ---------------------------------------------------------------- reading the plain form, with errors that name the field

def field(parent: dict, name: str, where: str):
    """``parent[name]``; an AttrfitError naming ``where`` (file and path) and the fields there are."""
    if not isinstance(parent, dict):
        raise AttrfitError(f"{where}: is not a MATLAB struct (found {describe(parent)})")
    if name not in parent:
        raise AttrfitError(f"{where}: has no field '{name}' (fields: {', '.join(parent) or 'none'})")
    return parent[name]


def strings(value, where: str) -> list[str]:
    """A cell array of char (any shape, read in MATLAB's column order) as a list of str."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, np.ndarray) or value.dtype != object:
        raise AttrfitError(f"{where}: expected a cell array of strings, found {describe(value)}")
    out = []
    for x in value.ravel(order="F"):
        while isinstance(x, np.ndarray) and x.dtype == object and x.size == 1:  # a cell in a cell
            x = x.reshape(-1)[0]
        if not isinstance(x, str):
            raise AttrfitError(f"{where}: expected a cell array of strings, one element is {describe(x)}")
        out.append(x)
    return out


def numbers(value, where: str, ndim: int = 1) -> np.ndarray:
    """A numeric array as int64: ``ndim`` 1 for a vector (1xN or Nx1), 2 for a matrix."""
    if not isinstance(value, np.ndarray) or value.dtype == object or value.dtype.kind not in "biuf":
        raise AttrfitError(f"{where}: expected a numeric array, found {describe(value)}")
    if value.dtype.kind == "f" and not np.all(np.isfinite(value) & (value == np.round(value))):
        raise AttrfitError(f"{where}: expected whole numbers, found fractions or NaN")
    if ndim == 1:
        if value.ndim > 2 or (value.ndim == 2 and min(value.shape) > 1 and value.size):
            raise AttrfitError(f"{where}: expected a vector, found a {'x'.join(map(str, value.shape))} array")
        return value.astype(np.int64).ravel()
    if value.ndim != 2:
        raise AttrfitError(f"{where}: expected a matrix, found {describe(value)}")
    return value.astype(np.int64)


def cells(value, where: str) -> list:
    """A cell array's elements in MATLAB's column order."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        return list(value.ravel(order="F"))
    if isinstance(value, dict):
        return [value]
    raise AttrfitError(f"{where}: expected a cell array, found {describe(value)}")


def describe(value) -> str:
    if isinstance(value, dict):
        return f"a struct with fields {', '.join(value)}"
    if isinstance(value, str):
        return f"the text {value[:30]!r}"
    if isinstance(value, np.ndarray):
        kind = "cell array" if value.dtype == object else f"{value.dtype} array"
        return f"a {'x'.join(map(str, value.shape))} {kind}"
    return type(value).__name__
